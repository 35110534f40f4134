"""Hidden true values against imputed values: ``st.pl.holdout``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from .._constants import HOLDOUT_KEY, TEST_SUFFIX, TRAIN_SUFFIX
from .._validate import as_csr, check_adata, check_layer, check_positive_int, get_matrix
from ..tl._evaluate import _gather, _pearson, _scored_entries
from ._utils import check_ncols, check_save, finish, make_axes, name_list

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["holdout"]


def holdout(
    adata: AnnData,
    layers: str | Sequence[str],
    *,
    holdout_key: str = HOLDOUT_KEY,
    gridsize: int = 40,
    cmap: str = "viridis",
    ncols: int = 4,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | list[Axes] | None:
    """Hidden true values against imputed values, one hexbin panel per layer.

    Both axes are ``log1p`` of the values at the entries that :func:`stimpute.tl.evaluate` scores
    (hidden non-zero entries, or all genes of hidden spots, or every entry for binomial thinning,
    where predictions are rescaled to the test depth). Negative predictions are drawn at 0. Each
    title gives the RMSE on ``log1p`` values and Pearson's r, computed from the plotted values with the
    definitions of :func:`stimpute.tl.evaluate` (``rmse_log1p`` and ``pearson_log1p``; nothing is stored).
    All panels share one colour scale of entry counts.

    Parameters
    ----------
    adata
        Annotated data on which :func:`stimpute.pp.holdout` was run.
    layers
        Imputed layer(s) to plot, in the count scale of the source layer.
    holdout_key
        The ``key_added`` of :func:`stimpute.pp.holdout`.
    gridsize
        Number of hexagons along the x axis.
    cmap
        Colour map of the entry counts (log scale).
    ncols
        Number of panels per row.
    ax
        An Axes (one layer) or a list of Axes (one per layer) to draw into.
    show
        Show the figure; ``None`` shows it when it was created here, ``return_fig`` is False and ``save`` is None.
    return_fig
        Return the :class:`~matplotlib.figure.Figure`.
    save
        Write the figure to this path (``fig.savefig(save, bbox_inches="tight")``); the suffix picks the format,
        any of matplotlib's: ``.png``, ``.pdf``, ``.svg``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``, ``.eps``,
        ``.ps``, ``.webp``, ``.pgf``, ``.svgz``, ``.raw``/``.rgba``. The figure is then not shown unless
        ``show=True``.

    Returns
    -------
    The figure with ``return_fig=True``; the Axes (a list for several layers) when not shown (``show=False``, or ``save`` without ``show=True``);
    else ``None``.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50)
    >>> st.pp.holdout(adata, fraction=0.5)
    >>> adata.layers["plus_one"] = adata.layers["holdout_train"].toarray() + 1.0
    >>> fig = st.pl.holdout(adata, ["holdout_train", "plus_one"], return_fig=True)
    >>> [ax.get_xlabel() for ax in fig.axes[:2]]
    ['hidden true value, log1p', 'hidden true value, log1p']
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    check_adata(adata)
    check_save(save)
    stored = adata.uns.get(holdout_key)
    if not isinstance(stored, Mapping) or "params" not in stored:
        msg = f"`adata.uns[{holdout_key!r}]` not found; run `st.pp.holdout(adata, key_added={holdout_key!r})` first."
        raise KeyError(msg)
    layers = name_list(layers, name="layers", what="layer")
    train_key, test_key = holdout_key + TRAIN_SUFFIX, holdout_key + TEST_SUFFIX
    check_layer(adata, train_key, name="holdout_key")
    check_layer(adata, test_key, name="holdout_key")
    for layer in layers:
        check_layer(adata, layer, name="layers")
    gridsize = check_positive_int(gridsize, name="gridsize", minimum=2)
    ncols = check_ncols(ncols)

    params = stored["params"]
    strategy, fraction = str(params["strategy"]), float(params["fraction"])
    test = as_csr(adata.layers[test_key])
    rows, cols = _scored_entries(adata, holdout_key, strategy, test)
    if rows.size == 0:
        msg = f"`adata.layers[{test_key!r}]` holds no hidden entries; nothing to plot."
        raise ValueError(msg)
    truth = np.log1p(_gather(test, rows, cols))
    scale = fraction / (1 - fraction) if strategy == "thinning" else 1.0
    preds, titles = [], []
    for layer in layers:
        pred = _gather(get_matrix(adata, layer), rows, cols) * scale
        if not np.isfinite(pred).all():
            msg = f"`adata.layers[{layer!r}]` has NaN or infinite values at hidden entries; check the imputation."
            raise ValueError(msg)
        lp = np.log1p(np.clip(pred, 0, None))
        # computed from what is plotted (stored scores can predate a layer imputed again under the same key)
        rmse, r = float(np.sqrt(np.mean((lp - truth) ** 2))), _pearson(truth, lp)
        preds.append(lp)
        titles.append(f"{layer}\nRMSE {rmse:.3f}, Pearson {r:.3f}")

    fig, axes, created = make_axes(len(layers), ncols=ncols, ax=ax, panel_size=(3.6, 3.2))
    hi = float(max(truth.max(), *(p.max() for p in preds)))
    hi = hi * 1.02 if hi > 0 else 1.0
    lims = (0.0, hi)
    bins = []
    for a, lp, title in zip(axes, preds, titles, strict=True):
        hb = a.hexbin(truth, lp, gridsize=gridsize, extent=(*lims, *lims), mincnt=1, cmap=cmap, linewidths=0)
        bins.append(hb)
        a.plot(lims, lims, color="0.3", linestyle="--", linewidth=0.8)
        a.set_xlim(*lims)
        a.set_ylim(*lims)
        a.set_aspect("equal")
        a.set_xlabel("hidden true value, log1p")
        a.set_ylabel("imputed value, log1p")
        a.set_title(title)
    vmax = max(float(np.ma.max(hb.get_array())) if hb.get_array().size else 1.0 for hb in bins)
    norm = LogNorm(vmin=1, vmax=max(vmax, 2))
    for hb in bins:
        hb.set_norm(norm)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="entries", shrink=0.8)
    return finish(fig, axes, show=show, return_fig=return_fig, created=created, save=save)
