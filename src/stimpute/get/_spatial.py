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
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._constants import IMAGE_KEYS, LIBRARY_COLUMN, SCALEF, SPATIAL_KEY, SPOT_DIAMETER
from .._validate import check_adata, check_obs_column

__all__ = [
    "image",
    "img_key",
    "library_id",
    "scale_factor",
    "source_image_path",
    "spatial_coords",
    "spot_crops",
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


def library_groups(adata: AnnData, library_key: str | None) -> np.ndarray | None:
    """Each spot's section as an integer code from ``adata.obs[library_key]``, for the spatial graphs.

    Code ``i`` is the ``i``-th of the sorted library names (:func:`library_names`).

    ``None`` when the object holds one section (``library_key=None``). With ``library_key=None`` this raises
    when ``adata.uns['spatial']`` holds several libraries (unless an obs column says every spot is of one of
    them: one section cut out of a joined object) or ``obs['library_id']`` names several: coordinates of
    different sections share one pixel frame, so a nearest-neighbour search over all spots would mix
    sections silently. A key whose values are not the libraries of ``uns['spatial']`` gives a warning.
    """
    if library_key is None:
        spatial = adata.uns.get(SPATIAL_KEY)
        several_uns = isinstance(spatial, Mapping) and len(spatial) > 1
        several_obs = LIBRARY_COLUMN in adata.obs.columns and adata.obs[LIBRARY_COLUMN].nunique() > 1
        if several_uns and not several_obs and single_library(adata) is not None:
            return None  # one section cut out of a joined object (uns keeps every library)
        if several_uns or several_obs:
            column = suggested_library_key(adata)
            hint = (
                f"`library_key={column!r}`" if column else "`library_key=` (the obs column naming each spot's library)"
            )
            what = (
                f"`adata.uns['spatial']` holds several libraries {sorted(map(str, spatial))}"
                if several_uns
                else f"`adata.obs[{LIBRARY_COLUMN!r}]` names several sections"
            )
            msg = (
                f"{what}, and spots of different sections must not be neighbours: pass {hint}, so that neighbours "
                "are searched within each section. (To treat every spot as one section, e.g. in an aligned frame, "
                "pass a column with one value.)"
            )
            raise ValueError(msg)
        return None
    values = check_obs_column(adata, library_key, name="library_key", why="every spot needs its library (section).")
    codes, names = pd.factorize(values.astype(str), sort=True)
    spatial = adata.uns.get(SPATIAL_KEY)
    # (a key with one value is the documented way to treat every spot as one section)
    if (
        isinstance(spatial, Mapping)
        and len(spatial) > 1
        and len(names) > 1
        and not set(names) <= set(map(str, spatial))
    ):
        logg.warning(
            f"`adata.obs[{library_key!r}]` holds values that are not libraries of `adata.uns['spatial']` "
            f"{sorted(map(str, spatial))}, e.g. {[n for n in names if n not in set(map(str, spatial))][:3]}; is "
            "`library_key` the column naming each spot's section?"
        )
    return codes.astype(np.int64)


def uns_libraries(adata: AnnData, library_key: str | None) -> tuple[np.ndarray | None, list[str]]:
    """Each spot's library code and the library names (in code order), every one a library of
    ``adata.uns['spatial']`` (a :class:`KeyError` names those missing); ``(None, [])`` without a key, after
    :func:`library_groups`' check that the object holds one section.
    """
    groups = library_groups(adata, library_key)
    if library_key is None:
        return None, []
    libraries = library_names(adata, library_key)
    spatial = adata.uns.get(SPATIAL_KEY)
    known = set(map(str, spatial)) if isinstance(spatial, Mapping) else set()
    missing = [lib for lib in libraries if lib not in known]
    if missing:
        msg = (
            f"`adata.obs[{library_key!r}]` names libraries {missing} that are not in `adata.uns['spatial']` "
            f"(it holds {sorted(known)}); each spot's library must have its image and scale factors there."
        )
        raise KeyError(msg)
    return groups, libraries


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


def _library_columns(adata: AnnData) -> list[tuple[str, set[str]]]:
    """The text or categorical obs columns whose values (no missing one) are all libraries of
    ``adata.uns['spatial']``, each with the libraries it holds; ``"library_id"`` first.
    """
    spatial = adata.uns.get(SPATIAL_KEY)
    if not isinstance(spatial, Mapping) or not spatial:
        return []
    libs = set(map(str, spatial))
    columns = [LIBRARY_COLUMN] if LIBRARY_COLUMN in adata.obs.columns else []
    columns += [c for c in adata.obs.columns if c != LIBRARY_COLUMN]
    found = []
    for c in columns:
        values = adata.obs[c]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):  # e.g. in_tissue = 1
            continue
        if values.isna().any():
            continue
        present = set(map(str, values.unique()))
        if present and present <= libs:
            found.append((str(c), present))
    return found


def library_column(adata: AnnData) -> str | None:
    """The ``adata.obs`` column whose values are all libraries of ``adata.uns['spatial']`` (``"library_id"``, as
    :func:`anndata.concat` with ``label="library_id"`` and squidpy name it, when it qualifies; else the first
    text or categorical column that does); ``None`` when there is none.
    """
    columns = _library_columns(adata)
    return columns[0][0] if columns else None


def single_library(adata: AnnData) -> str | None:
    """The one library of ``adata.uns['spatial']`` every spot belongs to, when obs says so unambiguously: every
    text or categorical obs column whose values are all libraries holds that same single library (a section cut
    out of a joined object). ``None`` when no such column exists or one of them names several libraries.
    """
    found = set().union(*(present for _, present in _library_columns(adata)))
    return next(iter(found)) if len(found) == 1 else None


def suggested_library_key(adata: AnnData) -> str | None:
    """The ``library_key`` to suggest for an object holding several sections: the column :func:`library_column`
    finds (also for one section cut out of a joined object, whose column holds one library), else
    ``"library_id"`` when that column names several sections; else ``None``.
    """
    column = library_column(adata)
    if column is not None:
        return column
    if LIBRARY_COLUMN in adata.obs.columns and adata.obs[LIBRARY_COLUMN].nunique() > 1:
        return LIBRARY_COLUMN
    return None


def other_sections_possible(adata: AnnData, library_id: str) -> bool:
    """Whether spots of ``adata`` may come from another section than ``library_id``: ``adata.uns['spatial']``
    holds several libraries, and the obs columns do not say that every spot is ``library_id``'s
    (see :func:`single_library`).
    """
    spatial = adata.uns.get(SPATIAL_KEY)
    if not isinstance(spatial, Mapping) or len(spatial) < 2:
        return False
    return single_library(adata) != str(library_id)


def library_names(adata: AnnData, library_key: str) -> list[str]:
    """The libraries of ``adata.obs[library_key]`` in the order of :func:`library_groups`' codes."""
    _, names = pd.factorize(adata.obs[library_key].astype(str), sort=True)
    return [str(n) for n in names]


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
        if isinstance(obs_names, str):
            obs_names = [obs_names]
        if not adata.obs_names.is_unique:
            msg = "`adata.obs_names` are not unique; run `adata.obs_names_make_unique()` to pick spots by name."
            raise ValueError(msg)
        idx = adata.obs_names.get_indexer(list(obs_names))
        if (idx < 0).any():
            missing = [n for n, i in zip(obs_names, idx, strict=True) if i < 0][:5]
            msg = f"`obs_names` contains names not in `adata.obs_names`, e.g. {missing}."
            raise KeyError(msg)
        coords = coords[idx]
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
