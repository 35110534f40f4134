"""Accessors for the spatial layout of an AnnData.

This module is the only place in stimpute that knows how ``adata.uns["spatial"]`` is laid out
(scanpy's Visium layout)::

    adata.obsm["spatial"]                      # (n_obs, 2) full-resolution pixels, column 0 = x, 1 = y
    adata.uns["spatial"][library_id] = {
        "images": {"hires": array, "lowres": array},
        "scalefactors": {"tissue_hires_scalef": float, "tissue_lowres_scalef": float,
                         "spot_diameter_fullres": float, ...},
        "metadata": {...},
    }

Image pixel coordinates are full-resolution coordinates times ``tissue_{img_key}_scalef``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from anndata import AnnData

from .._constants import IMAGE_KEYS, SCALEF, SPATIAL_KEY, SPOT_DIAMETER
from .._validate import check_adata
from ._sections import single_library, suggested_library_key

__all__ = [
    "image",
    "img_key",
    "library_id",
    "scale_factor",
    "source_image_path",
    "spatial_coords",
    "spot_diameter",
]


def _spatial_uns(adata: AnnData) -> Mapping[str, Any]:
    spatial = adata.uns.get(SPATIAL_KEY)
    if not isinstance(spatial, Mapping) or len(spatial) == 0:
        msg = (
            f"`adata.uns[{SPATIAL_KEY!r}]` is missing or empty: no image or scale factors. Read the data with "
            "`st.read_visium(path)` (or `squidpy.read.visium`), which fills it."
        )
        raise KeyError(msg)
    return spatial


def library_id(adata: AnnData, library_id: str | None = None) -> str:
    """Resolve the library id of ``adata.uns['spatial']``.

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns['spatial']``.
    library_id
        The library to use. ``None`` picks the only one present and raises when there are several.

    Returns
    -------
    The library id, a key of ``adata.uns['spatial']``.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> st.get.library_id(adata)
    'synthetic'
    """
    spatial = _spatial_uns(adata)
    if library_id is None:
        if len(spatial) > 1:
            only = single_library(adata)
            if only is not None:  # one section cut out of a joined object: its obs say which library
                return only
            column = suggested_library_key(adata)
            named = (
                f"the obs column naming each spot's library, here {column!r}"
                if column
                else "the obs column naming each spot's library"
            )
            cut = f"`adata[adata.obs[{column!r}] == lib]`" if column else "that section's spots"
            msg = (
                f"`adata.uns['spatial']` holds several libraries {list(spatial)}; pass `library_id=` to pick one. For "
                "an object holding several sections, `st.pp.image_features`, `st.pp.spatial_smooth`, `st.tl.impute`, "
                f"`model.predict` and `st.tl.compare_clusters` take `library_key=` ({named}); plots draw one "
                f"section: {cut} with `library_id=lib`."
            )
            raise ValueError(msg)
        return next(iter(spatial))
    if not isinstance(library_id, str):
        msg = f"`library_id` must be a string, got {type(library_id).__name__}."
        raise TypeError(msg)
    if library_id not in spatial:
        msg = f"`library_id={library_id!r}` not found in `adata.uns['spatial']`; available: {list(spatial)}."
        raise KeyError(msg)
    return library_id


def _library(adata: AnnData, library_id_: str | None) -> tuple[str, Mapping[str, Any]]:
    lib = library_id(adata, library_id_)
    return lib, adata.uns[SPATIAL_KEY][lib]


def img_key(adata: AnnData, library_id: str | None = None, img_key: str | None = None) -> str:
    """Resolve which image of a library to use.

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns['spatial']``.
    library_id
        Library id; ``None`` picks the only one.
    img_key
        Image key such as ``"hires"`` or ``"lowres"``. ``None`` picks the highest-resolution image
        present (``"hires"``, then ``"lowres"``, then any other).

    Returns
    -------
    The key of the image in ``adata.uns['spatial'][library_id]['images']``.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> st.get.img_key(adata)
    'hires'
    """
    lib, entry = _library(adata, library_id)
    images = entry.get("images") or {}
    if img_key is not None:
        if img_key not in images:
            msg = (
                f"`img_key={img_key!r}` not found in `adata.uns['spatial'][{lib!r}]['images']`; "
                f"available: {list(images)}."
            )
            raise KeyError(msg)
        return img_key
    if len(images) == 0:
        msg = (
            f"`adata.uns['spatial'][{lib!r}]['images']` is empty: no H&E image for library {lib!r}. "
            "Read the data with its image (`st.read_visium(path, source_image=...)`) or use a method that needs no image."
        )
        raise KeyError(msg)
    for key in IMAGE_KEYS:
        if key in images:
            return key
    # any other key: take the largest image
    return max(images, key=lambda k: np.asarray(images[k]).shape[0] * np.asarray(images[k]).shape[1])


def image(adata: AnnData, library_id: str | None = None, img_key: str | None = None) -> np.ndarray:
    """Return the tissue image of a library.

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns['spatial']``.
    library_id
        Library id; ``None`` picks the only one.
    img_key
        ``"hires"``, ``"lowres"``...; ``None`` picks the highest resolution present.

    Returns
    -------
    The image as stored: ``(height, width, channels)`` or ``(height, width)``. Not a copy.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> st.get.image(adata).shape[2]
    3
    """
    key = globals()["img_key"](adata, library_id, img_key)
    _, entry = _library(adata, library_id)
    return np.asarray(entry["images"][key])


def scale_factor(adata: AnnData, library_id: str | None = None, img_key: str | None = None) -> float:
    """Scale factor from full-resolution pixels to pixels of the chosen image.

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns['spatial']``.
    library_id
        Library id; ``None`` picks the only one.
    img_key
        Image key; ``None`` picks the highest resolution present.

    Returns
    -------
    ``scalefactors['tissue_{img_key}_scalef']``, or 1.0 for an image key without a scale factor
    (a full-resolution image).

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> round(st.get.scale_factor(adata, img_key="lowres"), 3)
    0.05
    """
    key = globals()["img_key"](adata, library_id, img_key)
    lib, entry = _library(adata, library_id)
    factors = entry.get("scalefactors") or {}
    name = SCALEF.format(img_key=key)
    if name not in factors:
        if key in IMAGE_KEYS:
            msg = (
                f"`adata.uns['spatial'][{lib!r}]['scalefactors'][{name!r}]` is missing, so image {key!r} cannot be "
                "aligned with `adata.obsm['spatial']`. Add the scale factor from Space Ranger's scalefactors_json.json."
            )
            raise KeyError(msg)
        return 1.0
    value = float(factors[name])
    if not np.isfinite(value) or value <= 0:
        msg = f"`adata.uns['spatial'][{lib!r}]['scalefactors'][{name!r}]` must be a positive number, got {value}."
        raise ValueError(msg)
    return value


def spot_diameter(adata: AnnData, library_id: str | None = None, img_key: str | None = None) -> float:
    """Spot diameter in pixels of the chosen image (full resolution when ``img_key="fullres"``).

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns['spatial']``.
    library_id
        Library id; ``None`` picks the only one.
    img_key
        Image key; ``None`` picks the highest resolution present; ``"fullres"`` gives full-resolution pixels.

    Returns
    -------
    ``spot_diameter_fullres`` times the image's scale factor.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> st.get.spot_diameter(adata, img_key="fullres") > 0
    True
    """
    lib, entry = _library(adata, library_id)
    factors = entry.get("scalefactors") or {}
    if SPOT_DIAMETER not in factors:
        msg = (
            f"`adata.uns['spatial'][{lib!r}]['scalefactors'][{SPOT_DIAMETER!r}]` is missing; add the spot diameter in "
            "full-resolution pixels (Space Ranger's scalefactors_json.json has it)."
        )
        raise KeyError(msg)
    diameter = float(factors[SPOT_DIAMETER])
    if not np.isfinite(diameter) or diameter <= 0:
        msg = f"`adata.uns['spatial'][{lib!r}]['scalefactors'][{SPOT_DIAMETER!r}]` must be positive, got {diameter}."
        raise ValueError(msg)
    if img_key == "fullres":
        return diameter
    return diameter * scale_factor(adata, lib, img_key)


def source_image_path(adata: AnnData, library_id: str | None = None) -> str | None:
    """Path of the full-resolution image recorded for a library, if any.

    Readers and dataset loaders store it in ``adata.uns['spatial'][library_id]['metadata']['source_image_path']``.

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns['spatial']``.
    library_id
        Library id; ``None`` picks the only one.

    Returns
    -------
    The recorded path as a string (it may no longer exist), or ``None`` when nothing is recorded.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> st.get.source_image_path(adata) is None
    True
    """
    _, entry = _library(adata, library_id)
    path = (entry.get("metadata") or {}).get("source_image_path")
    if path is None or (isinstance(path, str) and path in ("", "none")):
        return None
    return str(path)


def spatial_coords(adata: AnnData, *, key: str = SPATIAL_KEY) -> np.ndarray:
    """Full-resolution spot coordinates ``(x, y)`` from ``adata.obsm[key]``, validated.

    Parameters
    ----------
    adata
        Annotated data.
    key
        Key in ``adata.obsm``.

    Returns
    -------
    A float64 array of shape ``(n_obs, 2)``; column 0 is x (image column), column 1 is y (image row).

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> st.get.spatial_coords(adata).shape
    (100, 2)
    """
    check_adata(adata)
    if key not in adata.obsm:
        msg = (
            f"`adata.obsm[{key!r}]` not found: spot coordinates are needed. Read the data with "
            "`st.read_visium(path)` or set `adata.obsm['spatial']` to an (n_obs, 2) array of (x, y) pixels."
        )
        raise KeyError(msg)
    coords = np.asarray(adata.obsm[key])
    if coords.ndim != 2 or coords.shape[1] < 2 or not np.issubdtype(coords.dtype, np.number):
        msg = (
            f"`adata.obsm[{key!r}]` must be a numeric (n_obs, 2) array of (x, y) coordinates, got shape {coords.shape}."
        )
        raise ValueError(msg)
    coords = coords[:, :2].astype(np.float64)
    if not np.isfinite(coords).all():
        msg = f"`adata.obsm[{key!r}]` contains NaN or infinite coordinates; drop those spots first."
        raise ValueError(msg)
    return coords


def has_image(adata: AnnData, library_id: str | None = None) -> bool:
    """Whether a library has an image to cut tiles from: a stored one, or an existing recorded full-resolution file."""
    try:
        image(adata, library_id)
        return True
    except (KeyError, ValueError):
        pass
    try:
        path = source_image_path(adata, library_id)
    except (KeyError, ValueError):
        return False
    return path is not None and os.path.isfile(path)


def set_spatial(
    adata: AnnData,
    library_id: str,
    *,
    images: Mapping[str, np.ndarray] | None = None,
    scalefactors: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write one library into ``adata.uns['spatial']`` (used by readers and dataset generators)."""
    spatial = adata.uns.setdefault(SPATIAL_KEY, {})
    spatial[library_id] = {
        "images": dict(images or {}),
        "scalefactors": {k: float(v) for k, v in (scalefactors or {}).items()},
        "metadata": dict(metadata or {}),
    }
