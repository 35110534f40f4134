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
import pandas as pd
from anndata import AnnData

from .._graph import median_neighbour_distance
from ..get import _spatial
from ._io import to_rgb_uint8

#: The check warns only when at least this share of the spots is off tissue as placed.
MIN_OFF_TISSUE = 0.08
#: A mix-up is reported when its share of spots off tissue is at most this fraction of the placed share.
BETTER_BY = 0.5
#: ... and when it puts at least this many more spots on tissue.
MIN_GAIN_SPOTS = 10
#: The spots must cover at least this share of the tissue mask (number of spots x squared spot pitch, which no
#: mix-up changes): a part of a section (one domain, a cropped region) fits other parts of the tissue after a flip.
MIN_SPOT_COVERAGE = 0.3
#: The tissue mask is trusted only when it covers a share of the image in this range.
MASK_COVERAGE = (0.03, 0.9)
#: The image is read with a stride that keeps its longer side at most this many pixels.
MAX_SIDE = 1000


def tissue_mask(img: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the stained tissue (darker or more saturated than the glass), or None when unclear.

    Otsu thresholds on grey level and on saturation (max minus min channel); non-finite pixels count as glass.
    ``None`` when the mask covers less than 3% or more than 90% of the image (no background to tell tissue from).
    """
    from skimage.filters import threshold_otsu

    img = np.asarray(img)
    img = img[..., None] if img.ndim == 2 else img
    if np.issubdtype(img.dtype, np.floating):
        finite = np.isfinite(img)
        value_max = float(img[finite].max(initial=0))
        if not finite.all():
            img = np.where(finite, img, value_max)
    else:
        value_max = float(img.max(initial=0))
    rgb = to_rgb_uint8(img[None], value_max=value_max)[0].astype(np.float32)
    grey = rgb.mean(axis=-1)
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    if np.ptp(grey) == 0:
        return None
    mask = grey < threshold_otsu(grey)
    if np.ptp(saturation) > 0:
        mask |= saturation > threshold_otsu(saturation)
    coverage = float(mask.mean())
    return mask if MASK_COVERAGE[0] <= coverage <= MASK_COVERAGE[1] else None


def on_tissue(mask: np.ndarray, centres: np.ndarray) -> np.ndarray | None:
    """Which pixel centres ``(x, y)`` are on the mask; None when more than a quarter fall outside the image."""
    h, w = mask.shape
    x, y = np.floor(centres[:, 0]).astype(np.int64), np.floor(centres[:, 1]).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    if inside.mean() < 0.75:
        return None
    on = np.zeros(len(x), dtype=bool)
    on[inside] = mask[y[inside], x[inside]]
    return on


def mixups(centres: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """The spot centres under each coordinate mix-up checked, in pixels of an image of ``shape`` (rows, columns)."""
    h, w = shape
    x, y = centres[:, 0], centres[:, 1]
    return {
        "x and y swapped": np.c_[y, x],
        "the y axis flipped": np.c_[x, h - y],
        "the x axis flipped": np.c_[w - x, y],
    }


def in_tissue_flags(adata: AnnData) -> np.ndarray | None:
    """``obs['in_tissue']`` as booleans (numbers, booleans, or strings such as "1"/"0" and "True"/"False")."""
    if "in_tissue" not in adata.obs:
        return None
    values = adata.obs["in_tissue"]
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        flags = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        return None if np.isnan(flags).any() else flags != 0
    words = values.astype(str).str.strip().str.lower()
    known = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if not words.isin(list(known)).all():
        return None
    return words.map(known).to_numpy(dtype=bool)


def orientation_warning(adata: AnnData, lib: str, coords: np.ndarray) -> str | None:
    """A warning when the spots of library ``lib`` (full-resolution ``coords``) fit the tissue clearly better after
    a mix-up of axes.

    None otherwise, and when there is no stored image, no clear tissue mask, or too few spots to cover the tissue.
    """
    if len(coords) < MIN_GAIN_SPOTS:
        return None
    for key in ("lowres", "hires"):  # the smallest stored image is enough
        try:
            img, scale = _spatial.image(adata, lib, key), _spatial.scale_factor(adata, lib, key)
        except (KeyError, ValueError):
            continue
        break
    else:
        return None
    step = max(1, int(np.ceil(max(img.shape[:2]) / MAX_SIDE)))
    mask = tissue_mask(np.asarray(img)[::step, ::step])
    if mask is None:
        return None
    flags = in_tissue_flags(adata) if len(coords) == adata.n_obs else None
    if flags is not None and flags.sum() >= MIN_GAIN_SPOTS:  # spots flagged off tissue are not expected on it
        coords = coords[flags]
    centres = coords * (scale / step)
    if len(centres) * median_neighbour_distance(centres) ** 2 < MIN_SPOT_COVERAGE * mask.sum():
        return None
    placed = on_tissue(mask, centres)
    if placed is None or 1 - placed.mean() < MIN_OFF_TISSUE:
        return None
    shares = {}
    for name, moved in mixups(centres, mask.shape).items():
        on = on_tissue(mask, moved)
        if (
            on is not None
            and 1 - on.mean() <= BETTER_BY * (1 - placed.mean())
            and on.sum() - placed.sum() >= MIN_GAIN_SPOTS
        ):
            shares[name] = float(on.mean())
    if not shares:
        return None
    best = max(shares, key=shares.get)
    return (
        f"Only {placed.mean():.0%} of the spots of library {lib!r} sit on tissue in its {key} image, against "
        f"{shares[best]:.0%} with {best}: `adata.obsm['spatial']` may be in another orientation than the image "
        "(it must hold full-resolution pixels, column 0 = x = image column, column 1 = y = image row, y pointing "
        "down). Check with `st.pl.tiles(adata)` (or squidpy's `sq.pl.spatial_scatter`) before using image features."
    )
