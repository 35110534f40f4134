"""Training curves of an imputation model: ``st.pl.history``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from .._validate import check_adata
from ._utils import check_save, finish, make_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["history"]

_CURVES = (("train_loss", "training"), ("val_loss", "validation"))


def history(
    adata: AnnData,
    key: str,
    *,
    logy: bool = False,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | None:
    """Training and validation loss per epoch of an imputation model.

    Reads ``adata.uns[key]['history']``, a mapping with ``epoch`` and ``train_loss`` and/or
    ``val_loss`` (sequences of equal length), and marks ``adata.uns[key]['best_epoch']`` (the epoch
    whose weights were kept) when present.

    Parameters
    ----------
    adata
        Annotated data on which an imputation was run.
    key
        The ``key_added`` of the imputation.
    logy
        Logarithmic loss axis.
    ax
        Axes to draw into.
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
    The figure with ``return_fig=True``; the Axes when not shown (``show=False``, or ``save`` without ``show=True``); else ``None``.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> adata.uns["imputed"] = {
    ...     "history": {"epoch": [0, 1, 2], "train_loss": [3.0, 2.0, 1.5], "val_loss": [3.2, 2.4, 2.5]},
    ...     "best_epoch": 1,
    ... }
    >>> ax = st.pl.history(adata, "imputed", show=False)
    >>> [line.get_label() for line in ax.get_lines()][:2]
    ['training', 'validation']
    """
    check_adata(adata)
    check_save(save)
    if not isinstance(key, str):
        msg = f"`key` must be a string naming an entry of `adata.uns`, got {type(key).__name__}."
        raise TypeError(msg)
    entry = adata.uns.get(key)
    if not isinstance(entry, Mapping):
        msg = f"`adata.uns[{key!r}]` not found; pass the `key_added` of the imputation that trained a model."
        raise KeyError(msg)
    hist = entry.get("history")
    if not isinstance(hist, Mapping):
        msg = f"`adata.uns[{key!r}]['history']` not found: that entry holds no training history."
        raise KeyError(msg)
    if "epoch" not in hist:
        msg = f"`adata.uns[{key!r}]['history']['epoch']` not found."
        raise KeyError(msg)
    epoch = np.asarray(hist["epoch"], dtype=np.float64).ravel()
    if epoch.size == 0:
        method = entry.get("params", {}).get("method") if isinstance(entry.get("params"), Mapping) else None
        why = " (method='knn' trains no model)" if method == "knn" else ""
        msg = f"`adata.uns[{key!r}]['history']` is empty{why}: there is no training history to plot."
        raise ValueError(msg)
    curves = []
    for name, label in _CURVES:
        if name in hist:
            values = np.asarray(hist[name], dtype=np.float64).ravel()
            if values.size != epoch.size:
                msg = (
                    f"`adata.uns[{key!r}]['history'][{name!r}]` has {values.size} values but 'epoch' has "
                    f"{epoch.size}; they must have equal length."
                )
                raise ValueError(msg)
            curves.append((values, label))
    if not curves:
        msg = f"`adata.uns[{key!r}]['history']` has neither 'train_loss' nor 'val_loss'."
        raise KeyError(msg)
    best = entry.get("best_epoch")
    best = None if best is None or int(best) < 0 else int(best)

    fig, axes, created = make_axes(1, ncols=1, ax=ax, panel_size=(4.5, 3.2))
    a = axes[0]
    for values, label in curves:
        a.plot(epoch, values, label=label, marker="o" if epoch.size <= 30 else None, markersize=3)
    if best is not None:
        a.axvline(best, color="0.4", linestyle="--", linewidth=1, label=f"best epoch ({best})")
    if logy:
        a.set_yscale("log")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.set_title(key)
    a.legend(frameon=False)
    return finish(fig, axes, show=show, return_fig=return_fig, created=created, save=save)
