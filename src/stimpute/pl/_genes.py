"""Spatial expression maps of chosen genes in several layers: ``st.pl.genes``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData
from scipy import sparse

from .._validate import check_adata, check_layer, get_matrix
from ._utils import check_save, draw_spots, finish, make_axes, name_list, spatial_canvas

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["genes"]


def genes(
    adata: AnnData,
    genes: str | Sequence[str],
    layers: str | Sequence[str | None] | None = None,
    *,
    log: bool = True,
    percentile: float = 99.0,
    cmap: str = "viridis",
    img_key: str | None = None,
    library_id: str | None = None,
    spot_size: float | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | list[Axes] | None:
    r"""Spatial expression of chosen genes: one row per gene, one column per layer.

    Every row (gene) has one colour scale shared by its panels, from 0 (or the smallest value) to the
    largest ``percentile``-th percentile of the gene over the layers, so that a few extreme spots do
    not wash out the map; larger values get the top colour.

    Parameters
    ----------
    adata
        Annotated data with ``adata.obsm['spatial']``.
    genes
        Gene name(s) from ``adata.var_names``.
    layers
        Layers to show, for example ``["X", "holdout_train", "imputed_multimodal"]``; ``"X"`` or
        ``None`` means ``adata.X``. ``None`` shows ``adata.X`` only.
    log
        Show ``log1p`` of the values (negative values are drawn as 0).
    percentile
        Percentile (0 to 100] of each gene's values that sets the top of its colour scale.
    cmap
        Colour map.
    img_key
        Image under the spots; ``None`` picks the highest resolution present (none when there is no image).
    library_id
        Library of ``adata.uns['spatial']``; ``None`` picks the only one.
    spot_size
        Spot diameter in full-resolution pixels; ``None`` uses ``spot_diameter_fullres``.
    ax
        An Axes (one gene and one layer) or a list of Axes (genes x layers, row by row) to draw into.
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
    The figure with ``return_fig=True``; the Axes (a list for several panels) when not shown (``show=False``, or ``save`` without ``show=True``);
    else ``None``.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50)
    >>> st.pp.holdout(adata, fraction=0.5)
    >>> fig = st.pl.genes(adata, ["gene_0000", "gene_0001"], ["X", "holdout_train"], return_fig=True)
    >>> [ax.get_title() for ax in fig.axes[:2]]
    ['gene_0000\nX', 'gene_0000\nholdout_train']
    """
    check_adata(adata)
    check_save(save)
    genes = name_list(genes, name="genes", what="gene")
    if not adata.var_names.is_unique:
        msg = "`adata.var_names` are not unique; run `adata.var_names_make_unique()` first to pick genes by name."
        raise ValueError(msg)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        msg = f"genes {missing} not found in `adata.var_names` (`genes`); e.g. {list(adata.var_names[:5])}."
        raise KeyError(msg)
    layers = name_list(layers, name="layers", what="layer", allow_none=True)
    for layer in layers:
        check_layer(adata, layer, name="layers")
    layers = ["X" if layer is None else layer for layer in layers]
    if isinstance(percentile, bool) or not isinstance(percentile, Real) or not 0 < percentile <= 100:
        msg = f"`percentile` must be in (0, 100], got {percentile!r}."
        raise ValueError(msg)
    canvas = spatial_canvas(adata, img_key=img_key, library_id=library_id, spot_size=spot_size)

    idx = adata.var_names.get_indexer(genes)
    values = {}  # layer -> (n_obs, n_genes)
    for layer in layers:
        sub = get_matrix(adata, layer)[:, idx]
        sub = np.asarray(sub.toarray() if sparse.issparse(sub) else sub, dtype=np.float64)
        values[layer] = np.log1p(np.clip(sub, 0, None)) if log else sub

    fig, axes, created = make_axes(len(genes) * len(layers), ncols=len(layers), ax=ax)
    from matplotlib.colors import Normalize

    for g, gene in enumerate(genes):
        cols = [values[layer][:, g] for layer in layers]
        finite = [c[np.isfinite(c)] for c in cols]
        lo = min((float(c.min()) for c in finite if c.size), default=0.0)
        lo = min(lo, 0.0)
        hi = max((float(np.percentile(c, percentile)) for c in finite if c.size), default=1.0)
        if hi <= lo:
            hi = lo + 1.0
        norm = Normalize(vmin=lo, vmax=hi)
        row = axes[g * len(layers) : (g + 1) * len(layers)]
        coll = None
        for a, layer, c in zip(row, layers, cols, strict=True):
            coll = draw_spots(a, canvas, values=c, cmap=cmap, norm=norm)
            a.set_title(f"{gene}\n{layer}")
        fig.colorbar(coll, ax=row, label="log1p(value)" if log else "value", shrink=0.8)
    return finish(fig, axes, show=show, return_fig=return_fig, created=created, save=save)
