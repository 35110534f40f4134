"""``st.pl.tiles``: the image tiles cut around spots, to check by eye that they sit on the spots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from .._validate import check_adata, check_positive_int, check_random_state
from ._utils import check_ncols, check_save, finish, make_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["tiles"]

#: Tiles from a JPEG may be decoded at a reduced scale, but never below this many pixels per side.
_MIN_PLOT_SIDE = 128


def tiles(
    adata: AnnData,
    n: int = 16,
    *,
    obs_names: Sequence[str] | None = None,
    img_key: str | None = None,
    source_image: str | os.PathLike | np.ndarray | None = None,
    library_id: str | None = None,
    tile_scale: float = 1.0,
    ncols: int = 4,
    panel_size: float = 2.2,
    random_state: int | None = 0,
    ax: Axes | Sequence[Axes] | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
    show: bool | None = None,
) -> Figure | Axes | list[Axes] | None:
    """Show the image tiles of some spots, each with its spot circle and centre.

    The tiles are cut exactly as :func:`stimpute.pp.image_features` cuts them (same image choice,
    same scale factor, same side of ``tile_scale`` spot diameters; shown before resizing). A red
    circle marks the spot and a cross its centre, so a wrong scale factor, coordinates in the wrong
    pixel frame or swapped x/y (the classic coordinate bug) show up as tiles that miss the tissue
    pattern of the spots, e.g. the array's faint spot marks sitting off-centre. Like
    :func:`stimpute.pp.image_features`, it also warns when the spots would sit on the tissue clearly
    better with x and y swapped or an axis flipped.

    Parameters
    ----------
    adata
        Annotated data with ``obsm['spatial']`` and ``uns['spatial']``.
    n
        Number of spots drawn at random (ignored when ``obs_names`` is given; at most ``n_obs``).
    obs_names
        The spots to show.
    img_key
        Stored image (``"hires"``, ``"lowres"``); ``None``: the same choice as
        :func:`stimpute.pp.image_features`.
    source_image
        Path to the full-resolution image (or the image as an array).
    library_id
        Library of ``adata.uns['spatial']``; ``None`` picks the only one.
    tile_scale
        Tile side in spot diameters.
    ncols
        Panels per row.
    panel_size
        Side of one panel in inches.
    random_state
        Seed for the choice of spots.
    ax
        ``n`` axes to draw into (default: a new figure).
    return_fig
        Return the figure.
    show
        Show the figure; ``None`` shows it when it was created here, ``return_fig`` is False and ``save`` is None.
    save
        Write the figure to this path (``fig.savefig(save, bbox_inches="tight")``); the suffix picks the format,
        any of matplotlib's: ``.png``, ``.pdf``, ``.svg``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``, ``.eps``,
        ``.ps``, ``.webp``, ``.pgf``, ``.svgz``, ``.raw``/``.rgba``. The figure is then not shown unless
        ``show=True``.

    Returns
    -------
    The figure when ``return_fig=True``; the axes when not shown (``show=False``, or ``save`` without ``show=True``); otherwise ``None``.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> fig = st.pl.tiles(adata, n=8, tile_scale=2.0, return_fig=True)
    >>> len(fig.axes)
    8
    """
    from .._image._io import to_rgb_uint8
    from .._image._tiles import prepare_tiles

    check_adata(adata)
    check_save(save)
    ncols = check_ncols(ncols)
    if not (isinstance(panel_size, Real) and not isinstance(panel_size, bool) and 0 < panel_size < np.inf):
        msg = f"`panel_size` must be a positive number of inches, got {panel_size!r}."
        raise ValueError(msg)
    if obs_names is None:
        n = check_positive_int(n, name="n")
        rng = check_random_state(random_state)
        chosen = np.sort(rng.choice(adata.n_obs, size=min(n, adata.n_obs), replace=False))
        obs_names = list(adata.obs_names[chosen])
    else:
        obs_names = [obs_names] if isinstance(obs_names, str) else list(obs_names)
        if len(obs_names) == 0:
            msg = "`obs_names` is empty; pass at least one spot name or use `n=`."
            raise ValueError(msg)
    spec = prepare_tiles(
        adata,
        library_id=library_id,
        img_key=img_key,
        source_image=source_image,
        tile_scale=tile_scale,
        obs_names=obs_names,
    )
    try:
        spec.reduce_for(_MIN_PLOT_SIDE)
        source = spec.source
        value_max = source.value_max if np.issubdtype(source.dtype, np.floating) else 255.0
        images = to_rgb_uint8(source.crops(spec.centres, spec.radius), value_max=value_max)
        centres, radius, scale = spec.centres, spec.radius, source.scale
        title = f"{source.kind} image {source.name!r}: tiles {spec.side} px, tile_scale {spec.tile_scale:g}"
    finally:
        spec.source.close()

    from matplotlib.patches import Circle

    fig, axes, created = make_axes(len(obs_names), ncols=ncols, ax=ax, panel_size=(panel_size, panel_size), name="ax")
    spot_radius = spec.diameter * scale / 2
    for axis, name, img, centre in zip(axes, obs_names, images, centres, strict=True):
        # tile pixel (i, j) is image pixel (rint(centre) - radius + (i, j)); plot in offsets from the rounded centre
        axis.imshow(img, extent=(-radius - 0.5, radius + 0.5, radius + 0.5, -radius - 0.5), interpolation="nearest")
        dx, dy = centre - np.rint(centre)
        axis.add_patch(Circle((dx, dy), spot_radius, fill=False, edgecolor="red", linewidth=1.0))
        axis.plot([dx], [dy], marker="+", color="red", markersize=8, markeredgewidth=1.0)
        axis.set_xlim(-radius - 0.5, radius + 0.5)
        axis.set_ylim(radius + 0.5, -radius - 0.5)
        axis.set_title(str(name), fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    if created:
        fig.suptitle(title, fontsize=9)
    return finish(fig, axes, show=show, return_fig=return_fig, created=created, save=save)
