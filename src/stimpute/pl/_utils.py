"""Shared plotting helpers: spot maps over the tissue image, panel grids, ``show``/``return_fig``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import get
from .._constants import (
    HOLDOUT_KEY,
    IMPUTED_PREFIX,
    LATENT_PREFIX,
    LIBRARY_COLUMN,
    LOSSES,
    METHODS,
    OUTPUTS,
    SPATIAL_KEY,
    TEST_SUFFIX,
    TRAIN_SUFFIX,
)
from .._graph import median_neighbour_distance
from .._warnings import SectionWarning, warn
from ..get._sections import other_sections_possible, suggested_library_key

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.collections import Collection
    from matplotlib.figure import Figure

__all__ = [
    "SpatialCanvas",
    "category_colors",
    "check_ncols",
    "check_save",
    "draw_spots",
    "finish",
    "layer_label",
    "make_axes",
    "spatial_canvas",
]

PANEL_SIZE = 4.0  # inches per panel side
NA_COLOR = "#d3d3d3"
_MARGIN_SPOTS = 2.0  # view margin around the spots, in spot diameters


@dataclass
class SpatialCanvas:
    """Where to draw spots: positions and diameter in plot units, and the (cropped) image behind them.

    Plot units are pixels of the chosen image, or full-resolution pixels when there is no image.
    """

    xy: np.ndarray
    diameter: float
    image: np.ndarray | None
    image_extent: tuple[float, float, float, float] | None
    xlim: tuple[float, float]
    ylim: tuple[float, float]  # (bottom, top): the y axis points down, as in the image


def spatial_canvas(
    adata: AnnData,
    *,
    img_key: str | None = None,
    library_id: str | None = None,
    spot_size: float | None = None,
) -> SpatialCanvas:
    """Spot positions, spot diameter and image crop for a spatial map.

    The image is the highest-resolution one (or ``img_key``); positions are
    ``obsm['spatial'] * scale_factor``. Without ``adata.uns['spatial']`` or without images (and
    ``img_key=None``), the spots are drawn in full-resolution pixels with no image. ``spot_size`` is
    the spot diameter in full-resolution pixels; ``None`` takes ``spot_diameter_fullres``, or, when it
    is missing, the median distance between neighbouring spots.
    """
    coords = get.spatial_coords(adata)  # KeyError naming obsm['spatial'] when missing
    if spot_size is not None and (
        isinstance(spot_size, bool) or not isinstance(spot_size, Real) or not 0 < spot_size < np.inf
    ):
        msg = f"`spot_size` must be a positive number (spot diameter in full-resolution pixels), got {spot_size!r}."
        raise ValueError(msg)
    img, scale, diameter_full = None, 1.0, None
    if library_id is not None and SPATIAL_KEY in adata.uns:
        get.library_id(adata, library_id)  # an unknown library is a KeyError listing those present
        if other_sections_possible(adata, library_id):
            column = suggested_library_key(adata) or LIBRARY_COLUMN
            warn(
                f"`adata.uns['spatial']` holds several libraries; every spot is drawn with the scale and image of "
                f"library {library_id!r}. Keep only that section's spots if the others come from other sections "
                f"(e.g. `adata[adata.obs[{column!r}] == {library_id!r}]`).",
                SectionWarning,
            )
    if img_key is not None or _has_images(adata, library_id):
        key = get.img_key(adata, library_id, img_key)
        img = get.image(adata, library_id, key)
        scale = get.scale_factor(adata, library_id, key)
    if spot_size is None:
        try:
            diameter_full = get.spot_diameter(adata, library_id, "fullres")
        except KeyError:
            diameter_full = _neighbour_distance(coords)
    else:
        diameter_full = float(spot_size)
    xy = coords * scale
    diameter = diameter_full * scale
    margin = _MARGIN_SPOTS * diameter + 0.02 * float(np.ptp(xy, axis=0).max())
    x0, y0 = xy.min(axis=0) - margin
    x1, y1 = xy.max(axis=0) + margin
    extent = None
    if img is not None:
        h, w = img.shape[:2]
        r0, r1 = max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)) + 1)
        c0, c1 = max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)) + 1)
        if r1 > r0 and c1 > c0:
            img = _displayable(img[r0:r1, c0:c1])
            extent = (c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5)
        else:  # spots outside the image: draw no image
            img = None
    return SpatialCanvas(xy=xy, diameter=diameter, image=img, image_extent=extent, xlim=(x0, x1), ylim=(y1, y0))


def _has_images(adata: AnnData, library_id: str | None) -> bool:
    """Whether ``uns['spatial']`` exists and the library has at least one image."""
    try:
        get.img_key(adata, library_id)
    except KeyError:
        return False
    return True


def _neighbour_distance(coords: np.ndarray) -> float:
    d = median_neighbour_distance(coords)
    return d if d > 0 else 1.0


def draw_spots(
    ax: Axes,
    canvas: SpatialCanvas,
    *,
    colors: Sequence | np.ndarray | None = None,
    values: np.ndarray | None = None,
    cmap=None,
    norm=None,
    alpha: float = 1.0,
) -> Collection:
    """Draw the image (if any) and one circle per spot whose diameter is in plot units.

    Give either ``colors`` (one colour per spot) or ``values`` (mapped through ``cmap``/``norm``).
    """
    from matplotlib.collections import EllipseCollection

    if canvas.image is not None:
        ax.imshow(canvas.image, extent=canvas.image_extent, interpolation="nearest")
    n = canvas.xy.shape[0]
    d = np.full(n, canvas.diameter)
    coll = EllipseCollection(
        d, d, np.zeros(n), units="xy", offsets=canvas.xy, offset_transform=ax.transData, alpha=alpha
    )
    coll.set_edgecolor("none")
    if values is not None:
        coll.set_array(np.asarray(values, dtype=np.float64))
        coll.set_cmap(cmap)
        if norm is not None:
            coll.set_norm(norm)
    elif colors is not None:
        coll.set_facecolor(colors)
    ax.add_collection(coll)
    ax.set_xlim(*canvas.xlim)
    ax.set_ylim(*canvas.ylim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return coll


def category_colors(n: int) -> list[str]:
    """``n`` distinct colours, scanpy's default palettes (colour ``i`` is always the same)."""
    from scanpy.plotting.palettes import default_20, default_102

    palette = default_20 if n <= len(default_20) else default_102
    return [palette[i % len(palette)] for i in range(n)]


def make_axes(
    n_panels: int,
    *,
    ncols: int,
    ax: Axes | Sequence[Axes] | None,
    panel_size: tuple[float, float] = (PANEL_SIZE, PANEL_SIZE),
    name: str = "ax",
) -> tuple[Figure, list[Axes], bool]:
    """A grid of ``n_panels`` axes (unused cells removed), or the axes the user passed.

    Returns the figure, the axes and whether the figure was created here.
    """
    import matplotlib.pyplot as plt

    axes = check_ax(ax, n_panels, name=name)
    if axes is not None:
        return axes[0].get_figure(), axes, False
    ncols = max(1, min(int(ncols), n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    fig, grid = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
        squeeze=False,
        layout="constrained",
    )
    flat = list(grid.ravel())
    for extra in flat[n_panels:]:
        extra.remove()
    return fig, flat[:n_panels], True


def _displayable(img: np.ndarray) -> np.ndarray:
    """Any stored image (grey, grey + alpha, RGB(A); uint8, uint16, bool, floats in [0, 1] or [0, 255]) as RGB uint8.

    The conversions of the tiles (``st.pp.image_features``, ``st.pl.tiles``), so the maps show what the features see.
    """
    from .._image._io import to_rgb_uint8

    a = np.asarray(img)
    tiles = a[None, ..., None] if a.ndim == 2 else a[None]
    value_max = float(np.nanmax(a)) if np.issubdtype(a.dtype, np.floating) and a.size else 255.0
    return to_rgb_uint8(tiles, value_max=value_max)[0]


def check_ax(ax: Axes | Sequence[Axes] | None, n_panels: int, *, name: str = "ax") -> list[Axes] | None:
    """The user's axes as a list of ``n_panels`` Axes (``None`` for a new figure); a clear error otherwise."""
    from matplotlib.axes import Axes

    if ax is None:
        return None
    axes = [ax] if isinstance(ax, Axes) else list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) != n_panels or not all(isinstance(a, Axes) for a in axes):
        msg = (
            f"`{name}` must be {'one Axes' if n_panels == 1 else f'a list of {n_panels} Axes'} "
            f"for {n_panels} panel(s), got {ax!r}; or pass `{name}=None` to make a new figure."
        )
        raise ValueError(msg)
    return axes


def name_list(value, *, name: str, what: str, allow_none: bool = False) -> list:
    """A name or a list-like of names (list, tuple, numpy array, pandas Index) as a non-empty list.

    ``None`` entries are kept when ``allow_none`` (``adata.X`` among layers); anything else is a TypeError.
    """
    if isinstance(value, str) or (value is None and allow_none):
        return [value]
    if isinstance(value, np.ndarray | pd.Index | pd.Series):
        value = value.tolist()
    ok = isinstance(value, Sequence) and len(value) > 0
    if ok:
        ok = all(isinstance(v, str) or (v is None and allow_none) for v in value)
    if not ok:
        msg = f"`{name}` must be a {what} name or a non-empty list of {what} names, got {value!r}."
        raise TypeError(msg)
    return list(value)


def check_ncols(ncols) -> int:
    """Check that ``ncols`` is a positive integer."""
    if isinstance(ncols, bool) or not isinstance(ncols, int | np.integer) or ncols < 1:
        msg = f"`ncols` must be a positive integer, got {ncols!r}."
        raise ValueError(msg)
    return int(ncols)


_LABEL_WORDS = {"smoothed": "smoothed", **{w: w for w in (*OUTPUTS, *LOSSES)}}


def layer_label(key: str | None) -> str:
    """A short readable label for a layer or ``obsm`` key that stimpute wrote; any other key as it is.

    Examples
    --------
    >>> layer_label("imputed_multimodal_normalized_smoothed")
    'multimodal, normalized, smoothed'
    >>> layer_label("holdout_train"), layer_label("X"), layer_label("X_imputed_multimodal")
    ('training matrix', 'original counts', 'multimodal latent')
    >>> layer_label("my_layer")
    'my_layer'
    """
    if key is None or key == "X":
        return "original counts"
    if key == HOLDOUT_KEY + TRAIN_SUFFIX:
        return "training matrix"
    if key == HOLDOUT_KEY + TEST_SUFFIX:
        return "held-out values"
    if key.endswith("_smoothed") and key[: -len("_smoothed")] in ("X", HOLDOUT_KEY + TRAIN_SUFFIX):
        return f"{layer_label(key[: -len('_smoothed')])}, smoothed"
    if key.startswith(LATENT_PREFIX + IMPUTED_PREFIX):
        inner = layer_label(key[len(LATENT_PREFIX) :])
        return key if inner == key[len(LATENT_PREFIX) :] else f"{inner} latent"
    if key.startswith(IMPUTED_PREFIX):
        rest = key[len(IMPUTED_PREFIX) :]
        for method in sorted(METHODS, key=len, reverse=True):
            if rest == method or rest.startswith(method + "_"):
                words = [w for w in rest[len(method) :].split("_") if w]
                if all(w in _LABEL_WORDS for w in words):
                    return ", ".join([method, *(_LABEL_WORDS[w] for w in words)])
    return key


def check_save(save) -> str | os.PathLike | None:
    """Check ``save``: ``None`` or a path whose suffix is a format matplotlib writes, in an existing folder."""
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    if save is None:
        return None
    if isinstance(save, bool) or not isinstance(save, str | os.PathLike):
        msg = f"`save` must be a file path (str or os.PathLike) or None, got {save!r}."
        raise TypeError(msg)
    path = Path(save)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        msg = (
            f"`save={str(save)!r}` needs a file suffix naming the format, one of {formats} (e.g. `save='figure.png'`)."
        )
        raise ValueError(msg)
    if not path.parent.is_dir():
        msg = f"`save={str(save)!r}`: the folder {str(path.parent)!r} does not exist; create it first."
        raise ValueError(msg)
    return save


def finish(
    fig: Figure,
    axes: list[Axes],
    *,
    show: bool | None,
    return_fig: bool,
    created: bool,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | list[Axes] | None:
    """Save, return or show a figure following scanpy's convention.

    ``save`` writes the figure to that path first. ``return_fig`` gives the figure (not shown); otherwise show
    it (by default when the figure was made here and not saved) and return ``None``, or return the axes when
    it is not shown.
    """
    if save is not None:
        fig.savefig(save, bbox_inches="tight")
    if return_fig:
        return fig
    if show is None:
        show = created and save is None
    if show:
        import matplotlib.pyplot as plt

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-interactive.*", category=UserWarning)
            plt.show()
        return None
    return axes[0] if len(axes) == 1 else axes
