"""Square crops of the H&E image around each spot: ``st.get.spot_crops``."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
from anndata import AnnData

from ._spatial import image, scale_factor, spatial_coords, spot_diameter

__all__ = ["spot_crops"]


def spot_crops(
    adata: AnnData,
    *,
    library_id: str | None = None,
    img_key: str | None = None,
    spot_scale: float = 1.0,
    obs_names: Sequence[str] | None = None,
    cval: float = 0,
    img: np.ndarray | None = None,
    scale: float | None = None,
) -> np.ndarray:
    """Square image crops centred on spots, cut in one vectorised gather.

    Each crop covers ``spot_scale`` spot diameters and has side ``2 * radius + 1`` pixels, where
    ``radius = max(1, round(diameter * spot_scale / 2))`` in pixels of the chosen image. Parts of
    a crop outside the image are filled with ``cval``. The image is never copied or padded as a whole.

    Parameters
    ----------
    adata
        Annotated data with ``adata.obsm['spatial']`` and ``adata.uns['spatial']``.
    library_id
        Library id; ``None`` picks the only one.
    img_key
        Image key; ``None`` picks the highest resolution present.
    spot_scale
        Crop side in spot diameters.
    obs_names
        Crop only these spots (default: all, in ``adata.obs_names`` order).
    cval
        Fill value for pixels outside the image.
    img, scale
        An image and its scale factor to use instead of the stored one (for example a
        full-resolution image read from disk, ``scale=1.0``). The spot diameter is then
        ``spot_diameter_fullres * scale``.

    Returns
    -------
    Array of shape ``(n_spots, side, side, channels)`` with the image's dtype (a 2-D image gives one channel).

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> crops = st.get.spot_crops(adata, spot_scale=1.0)
    >>> crops.shape[0], crops.shape[1] == crops.shape[2]
    (100, True)
    """
    if not _positive(spot_scale):
        msg = f"`spot_scale` must be a positive number, got {spot_scale!r}."
        raise ValueError(msg)
    if img is None and scale is not None:
        msg = "`scale` is only used together with `img` (the factor from full-resolution pixels to `img` pixels)."
        raise ValueError(msg)
    if img is not None:
        if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
            msg = f"`img` must be a numpy array of shape (height, width) or (height, width, channels), got {img!r:.80}."
            raise TypeError(msg)
        if scale is not None and not _positive(scale):
            msg = f"`scale` must be a positive number (image pixels per full-resolution pixel), got {scale!r}."
            raise ValueError(msg)
    coords = spatial_coords(adata)
    if obs_names is not None:
        coords = coords[spot_indices(adata, [obs_names] if isinstance(obs_names, str) else obs_names)]
    if img is None:
        img = image(adata, library_id, img_key)
        scale = scale_factor(adata, library_id, img_key)
    elif scale is None:
        msg = "`scale` is required together with `img` (the factor from full-resolution pixels to `img` pixels)."
        raise ValueError(msg)
    dtype = np.asarray(img).dtype
    if isinstance(cval, bool) or not isinstance(cval, Real) or not np.isfinite(cval):
        msg = f"`cval` must be a finite number, got {cval!r}."
        raise TypeError(msg)
    if np.issubdtype(dtype, np.integer) and not (
        float(cval).is_integer() and np.iinfo(dtype).min <= cval <= np.iinfo(dtype).max
    ):
        msg = f"`cval={cval!r}` does not fit the image's dtype {dtype} (an integer in its range)."
        raise ValueError(msg)
    diameter = spot_diameter(adata, library_id, "fullres") * float(scale)
    radius = max(1, int(round(diameter * spot_scale / 2)))
    return crop_centred(img, coords * float(scale), radius, cval=cval)


def spot_indices(adata: AnnData, obs_names: Sequence[str]) -> np.ndarray:
    """Row positions of the spots ``obs_names`` (unique ``adata.obs_names`` needed; unknown names are a KeyError)."""
    if not adata.obs_names.is_unique:
        msg = "`adata.obs_names` are not unique; run `adata.obs_names_make_unique()` to pick spots by name."
        raise ValueError(msg)
    idx = adata.obs_names.get_indexer(list(obs_names))
    if (idx < 0).any():
        missing = [n for n, i in zip(obs_names, idx, strict=True) if i < 0][:5]
        msg = f"`obs_names` contains names not in `adata.obs_names`, e.g. {missing}."
        raise KeyError(msg)
    return idx


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, Real) and bool(np.isfinite(value)) and value > 0


def crop_centred(img: np.ndarray, centres_xy: np.ndarray, radius: int, *, cval: float = 0) -> np.ndarray:
    """Cut ``(2 * radius + 1)``-pixel squares around ``centres_xy`` (image pixels, x then y), padding with ``cval``."""
    arr = img if img.ndim == 3 else img[..., None]
    h, w = arr.shape[:2]
    cx = np.rint(centres_xy[:, 0]).astype(np.int64)
    cy = np.rint(centres_xy[:, 1]).astype(np.int64)
    offsets = np.arange(-radius, radius + 1)
    rows = cy[:, None] + offsets[None, :]  # (n, s)
    cols = cx[:, None] + offsets[None, :]
    row_ok = (rows >= 0) & (rows < h)
    col_ok = (cols >= 0) & (cols < w)
    crops = arr[np.clip(rows, 0, h - 1)[:, :, None], np.clip(cols, 0, w - 1)[:, None, :]]  # (n, s, s, c)
    inside = row_ok[:, :, None] & col_ok[:, None, :]
    if not inside.all():
        crops[~inside] = cval
    return crops
