"""Do the spots sit on the tissue of their image, or would they with x and y swapped or an axis flipped?

Visium and ST spots lie under the tissue (the spots outside it are usually filtered out, or flagged by
``obs['in_tissue']``). When ``obsm['spatial']`` holds (row, column) instead of (x = column, y = row), or comes from
a reader whose y axis points up, the spots still fit in a square-ish image, so the bounds checks of
:mod:`._tiles` pass, yet every tile is cut from the wrong place. This check compares the share of spots on tissue
as placed with the share under each of those mix-ups, on the smallest image stored in ``uns['spatial']``, and
returns a warning when a mix-up fits the tissue clearly better.
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ..get import _spatial
from ._io import to_rgb_uint8

#: The check warns only when at least this share of the spots is off tissue as placed.
MIN_OFF_TISSUE = 0.05
#: A mix-up is reported when its share of spots off tissue is at most this fraction of the placed share.
BETTER_BY = 0.5
#: The tissue mask is trusted only when it covers a share of the image in this range.
MASK_COVERAGE = (0.03, 0.9)


def tissue_mask(img: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the stained tissue (darker or more saturated than the glass), or None when unclear.

    Otsu thresholds on grey level and on saturation (max minus min channel); ``None`` when the mask covers less
    than 3% or more than 90% of the image (no background to tell tissue from).
    """
    from skimage.filters import threshold_otsu

    img = np.asarray(img)
    img = img[..., None] if img.ndim == 2 else img
    finite = img[np.isfinite(img)] if np.issubdtype(img.dtype, np.floating) else img
    rgb = to_rgb_uint8(img[None], value_max=float(finite.max(initial=0)))[0].astype(np.float32)
    grey = rgb.mean(axis=-1)
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    if np.ptp(grey) == 0:
        return None
    mask = grey < threshold_otsu(grey)
    if np.ptp(saturation) > 0:
        mask |= saturation > threshold_otsu(saturation)
    coverage = float(mask.mean())
    return mask if MASK_COVERAGE[0] <= coverage <= MASK_COVERAGE[1] else None


def on_tissue_share(mask: np.ndarray, centres: np.ndarray) -> float | None:
    """Share of the pixel centres ``(x, y)`` on the mask; None when more than a quarter fall outside the image."""
    h, w = mask.shape
    x, y = np.floor(centres[:, 0]).astype(np.int64), np.floor(centres[:, 1]).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    if inside.mean() < 0.75:
        return None
    on = np.zeros(len(x), dtype=bool)
    on[inside] = mask[y[inside], x[inside]]
    return float(on.mean())


def mixups(centres: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """The spot centres under each coordinate mix-up checked, in pixels of an image of ``shape`` (rows, columns)."""
    h, w = shape
    x, y = centres[:, 0], centres[:, 1]
    return {
        "x and y swapped": np.c_[y, x],
        "the y axis flipped": np.c_[x, h - y],
        "the x axis flipped": np.c_[w - x, y],
    }


def orientation_warning(adata: AnnData, lib: str, coords: np.ndarray) -> str | None:
    """A warning when the spots of library ``lib`` (full-resolution ``coords``) fit the tissue clearly better after
    a mix-up of axes.

    None otherwise, and when there is no stored image or no clear tissue mask to judge by.
    """
    if len(coords) < 10:
        return None
    for key in ("lowres", "hires"):  # the smallest stored image is enough
        try:
            img, scale = _spatial.image(adata, lib, key), _spatial.scale_factor(adata, lib, key)
        except (KeyError, ValueError):
            continue
        break
    else:
        return None
    mask = tissue_mask(img)
    if mask is None:
        return None
    if "in_tissue" in adata.obs and len(coords) == adata.n_obs:  # spots flagged off tissue are not expected on it
        flagged = np.asarray(adata.obs["in_tissue"]) != 0
        if flagged.sum() >= 10:
            coords = coords[flagged]
    centres = coords * scale
    placed = on_tissue_share(mask, centres)
    if placed is None:
        return None
    off = 1 - placed
    shares = {name: on_tissue_share(mask, c) for name, c in mixups(centres, mask.shape).items()}
    shares = {name: s for name, s in shares.items() if s is not None}
    if not shares or off < MIN_OFF_TISSUE:
        return None
    best = max(shares, key=shares.get)
    if 1 - shares[best] > BETTER_BY * off:
        return None
    return (
        f"Only {placed:.0%} of the spots of library {lib!r} sit on tissue in its {key} image, against "
        f"{shares[best]:.0%} with {best}: `adata.obsm['spatial']` may be in another orientation than the image "
        "(it must hold full-resolution pixels, column 0 = x = image column, column 1 = y = image row, y pointing "
        "down). Check with `st.pl.tiles(adata)` (or squidpy's `sq.pl.spatial_scatter`) before using image features."
    )
