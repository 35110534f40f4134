"""Inputs of ``st.tl.impute`` and ``ImputationModel.predict``: what a method reads from ``adata``, checked.

Counts, spot positions (and sections), image features (computed when missing and allowed) and the memory the
method needs; ``gather_inputs`` runs these checks for ``st.tl.impute`` in the order their errors are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData
from scipy import sparse

from .. import _logging as logg
from .._constants import METHODS, SPATIAL_KEY
from .._graph import warn_small_sections
from .._validate import check_adata, check_counts, check_output_key, get_matrix, is_whole, plain_values
from .._warnings import ImageFeatureWarning, InputWarning, warn
from ..get._sections import library_groups
from ..get._spatial import spatial_coords

if TYPE_CHECKING:
    import torch

    from ._impute_options import ImputeRun


@dataclass
class Inputs:
    """What a method reads, checked: counts, positions, section codes, image features and the torch device."""

    X: sparse.spmatrix | np.ndarray
    coords: np.ndarray | None
    groups: np.ndarray | None
    image: np.ndarray | None
    device: torch.device | None = None


def gather_inputs(adata: AnnData, run: ImputeRun) -> Inputs:
    """Check everything ``run`` reads from ``adata`` (nothing is written yet)."""
    opts = run.opts
    X, name = read_counts(adata, run.layer, training=True)
    coords, groups = read_positions(adata, run.method, needs_coords=run.needs_coords, library_key=run.library_key)
    image = read_image_features(adata, run.image_key) if "image" in run.modalities else None
    if "image" in run.modalities and image is None:  # computed later (after a copy), if there is an image
        if run.image_optional and no_image_at_all(adata, run.library_key):
            run.drop_image()  # the fused model's default modalities: run on the others (e.g. her2st B1/D1)
            warn(
                f"No image features in `adata.obsm[{run.image_key!r}]` and no H&E image in `adata.uns['spatial']` "
                f"to compute them from: the {run.method} model runs on {' and '.join(run.modalities)} only. Pass "
                "`modalities=('counts', 'position')` to say so and silence this warning.",
                ImageFeatureWarning,
            )
        else:
            check_image_computable(adata, run.method, run.image_key, run.library_key)
    if run.method != "knn":
        check_trainable(X, name)
    # the spatial_reg cache holds every output column (two per gene with a detection head)
    dense_copies = 1 + ((2 if opts.get("detection") else 1) if opts.get("spatial_reg", 0.0) > 0 else 0)
    check_memory(adata.shape, n_params=run.n_params, max_dense_gb=run.max_dense_gb, dense_copies=dense_copies)
    layer = "X" if run.layer is None else run.layer
    check_output_key(adata, run.key_added, inputs=[layer, run.image_key], methods=METHODS)
    if "n_neighbors" in opts and (run.method == "knn" or opts.get("neighbours") or opts.get("spatial_reg", 0.0) > 0):
        warn_small_sections(groups, opts["n_neighbors"])
    device = None
    if run.method != "knn":  # the device is checked before anything is written (image features, a copy)
        from .._nn._device import resolve_device

        device = resolve_device(run.device)
    return Inputs(X, coords, groups, image, device)


@contextmanager
def image_features_if_missing(adata: AnnData, run: ImputeRun, inputs: Inputs):
    """Compute ``obsm[image_key]`` when the method needs it and it is missing; drop it again if the run fails."""
    computed = inputs.image is None and "image" in run.modalities
    previous_record = adata.uns.get(run.image_key)  # an earlier st.pp.image_features record, put back on failure
    if computed:
        inputs.image = compute_image_features(adata, run.image_key, run.library_key)
    try:
        yield inputs
    except BaseException:
        if computed:  # a failed run leaves adata as it found it: drop the features it computed
            adata.obsm.pop(run.image_key, None)
            adata.uns.pop(run.image_key, None)
            if previous_record is not None:
                adata.uns[run.image_key] = previous_record
        raise


def read_counts(adata: AnnData, layer: str | None, *, training: bool) -> tuple[sparse.spmatrix | np.ndarray, str]:
    """The count matrix ``layer`` (checked) and its name in messages; training warns on non-integer values."""
    check_adata(adata)
    X = get_matrix(adata, layer)
    name = "adata.X" if layer in (None, "X") else f"adata.layers[{layer!r}]"
    check_counts(X, name=name, integer=False)
    if training and not is_whole(X):
        warn(
            f"`{name}` holds non-integer values; the models expect raw counts (a normalised or log-transformed "
            "layer is imputed as if it were counts). Pass `layer=` naming raw counts if you have them.",
            InputWarning,
        )
    return X, name


def read_positions(
    adata: AnnData, method: str, *, needs_coords: bool, library_key: str | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Spot coordinates and section codes (``obs[library_key]``, see ``library_groups``); ``None`` when not read.

    Where positions are optional they are still read when present: the depth of spots without counts is then
    guessed from their nearest spots (in their section).
    """
    if needs_coords:
        if SPATIAL_KEY not in adata.obsm:
            msg = (
                f"`method={method!r}` needs spot coordinates in `adata.obsm['spatial']` (x, y), which is missing. "
                "Read the data with `st.read_visium(path)` or set `adata.obsm['spatial']`"
            )
            if method == "knn":
                msg += "."
            elif method in ("autoencoder", "image"):  # coordinates only for the spatial regulariser
                msg += "; or pass `spatial_reg=0`, which needs no coordinates."
            else:
                msg += "; or use `method='autoencoder'` or `'image'`, which need no coordinates."
            raise KeyError(msg)
        return spatial_coords(adata), library_groups(adata, library_key)
    # a wrong key is an error even where positions are optional
    given = library_groups(adata, library_key) if library_key is not None else None
    if SPATIAL_KEY not in adata.obsm:
        return None, None
    try:
        coords = spatial_coords(adata)
    except (KeyError, ValueError, TypeError):
        return None, None
    try:
        groups = given if library_key is not None else library_groups(adata, None)
    except ValueError as err:  # several sections and no key: no neighbours across them
        logg.info(f"    positions left unused (a spot without counts gets the mean depth, not its neighbours'): {err}")
        return None, None
    return coords, groups


def read_image_features(adata: AnnData, image_key: str) -> np.ndarray | None:
    """``obsm[image_key]`` as a checked numeric (n_obs, n_features) array; ``None`` when missing."""
    if image_key not in adata.obsm:
        return None
    image = np.asarray(adata.obsm[image_key])
    if hasattr(adata.obsm[image_key], "to_numpy"):
        image = adata.obsm[image_key].to_numpy()
    if image.ndim != 2 or not np.issubdtype(image.dtype, np.number):
        msg = f"`adata.obsm[{image_key!r}]` must be a numeric (n_obs, n_features) array, got shape {image.shape}."
        raise ValueError(msg)
    if not np.isfinite(image).all():
        msg = f"`adata.obsm[{image_key!r}]` contains NaN or infinite values; recompute the image features."
        raise ValueError(msg)
    return image


def check_image_computable(adata: AnnData, method: str, image_key: str, library_key: str | None) -> None:
    """Raise when ``obsm[image_key]`` is missing and there is no H&E image to compute it from."""
    lacking = libraries_without_image(adata, library_key)
    if not lacking:
        return
    call = f"st.pp.image_features(adata, key_added={image_key!r}" + (
        f", library_key={library_key!r})" if library_key is not None else ")"
    )
    where = (
        ", and there is no H&E image in `adata.uns['spatial']` to compute them from"
        if lacking == [None]
        else f", and libraries {lacking} have no H&E image in `adata.uns['spatial']` to compute them from"
    )
    msg = (
        f"`method={method!r}` needs image features in `adata.obsm[{image_key!r}]`, which is missing{where}. "
        f"Compute them with `{call}` (needs the images), or use `method='autoencoder'`/`'positional'`"
        + (" or `modalities=('counts', 'position')`." if method == "multimodal" else ".")
    )
    raise KeyError(msg)


def check_trainable(X: sparse.spmatrix | np.ndarray, name: str) -> None:
    """A network needs at least 2 genes and 2 spots with counts."""
    n_vars = X.shape[1]
    if n_vars < 2:
        msg = f"`adata` has {n_vars} gene(s); the networks impute a gene from the others, so at least 2 are needed."
        raise ValueError(msg)
    n_with = int((np.asarray(X.sum(axis=1), dtype=np.float64).ravel() > 0).sum())
    if n_with < 2:
        msg = f"Only {n_with} spot(s) of {name} have counts; at least 2 are needed to train."
        raise ValueError(msg)


def check_memory(shape: tuple[int, int], *, n_params: int, max_dense_gb: float, dense_copies: int = 1) -> None:
    """Refuse a run whose dense output (``dense_copies`` float32 spots x genes matrices: the output, plus the
    cache of last predictions when ``spatial_reg > 0``) and network would exceed ``max_dense_gb``.
    """
    n_obs, n_vars = shape
    dense_gb = dense_copies * n_obs * n_vars * 4 / 1e9
    model_gb = n_params * 4 * 4 / 1e9  # weights, gradients and two Adam moments
    if dense_gb + model_gb > max_dense_gb:
        msg = (
            f"Imputing {n_obs:,} spots x {n_vars:,} genes needs about {dense_gb + model_gb:.1f} GB "
            f"(dense float32 output{' and spatial_reg cache' if dense_copies > 1 else ''} {dense_gb:.1f} GB + network "
            f"{model_gb:.1f} GB), above `max_dense_gb={max_dense_gb}`. "
            "Subset genes first, e.g. `sc.pp.highly_variable_genes(adata, n_top_genes=3000, flavor='seurat_v3')` then "
            "`adata = adata[:, adata.var.highly_variable].copy()`, or raise `max_dense_gb` if the memory is there."
        )
        raise ValueError(msg)


def no_image_at_all(adata: AnnData, library_key: str | None) -> bool:
    """Whether no library of ``adata`` has an H&E image (some with and some without is a mistake to report)."""
    from ..get._sections import uns_libraries

    try:
        _, libraries = uns_libraries(adata, library_key)
    except (KeyError, ValueError):  # reported by `check_image_computable`
        return False
    return len(libraries_without_image(adata, library_key)) == len(libraries or [None])


def libraries_without_image(adata: AnnData, library_key: str | None) -> list[str | None]:
    """The libraries ``st.pp.image_features`` finds no image for (``[None]``: the object's only one, or no
    ``uns['spatial']``); raises on libraries missing from ``uns['spatial']`` and on several libraries without a key.
    """
    from ..get._sections import uns_libraries
    from ..get._spatial import has_image

    _, libraries = uns_libraries(adata, library_key)
    return [lib for lib in libraries or [None] if not has_image(adata, lib)]


def compute_image_features(adata: AnnData, image_key: str, library_key: str | None) -> np.ndarray:
    from .. import pp

    call = f"st.pp.image_features(adata, key_added={image_key!r}" + (
        f", library_key={library_key!r})" if library_key is not None else ")"
    )
    logg.info(f"    `adata.obsm[{image_key!r}]` not found: computing it with `{call}`")
    pp.image_features(adata, key_added=image_key, library_key=library_key)
    feats = adata.obsm[image_key]
    feats = feats.to_numpy() if hasattr(feats, "to_numpy") else np.asarray(feats)
    return np.asarray(feats, dtype=np.float64)


def image_record(adata: AnnData, image_key: str, *, n_columns: int) -> dict | None:
    """The ``st.pp.image_features`` record (settings and axes) behind ``obsm[image_key]``, when it fits it.

    Plain Python values (the model's configuration is saved as JSON and shares no memory with ``adata``).
    """
    from .._image._projection import PROJECTION_KEY
    from .._image._reference import record_problems

    record = adata.uns.get(image_key)
    if not isinstance(record, Mapping) or PROJECTION_KEY not in record:
        return None
    record = plain_values({"key": image_key, "params": record.get("params"), PROJECTION_KEY: record[PROJECTION_KEY]})
    if record_problems(record, n_outputs=n_columns):  # e.g. obsm[image_key] replaced after st.pp.image_features
        return None
    keep = (
        "encoder",
        "weights",
        "weights_sha256",
        "random_state",
        "img_source",
        "image",
        "tile_size_source_px",
        "tile_scale",
        "tile_size",
        "n_features",
        "n_comps",
    )
    record["params"] = {k: record["params"][k] for k in keep if k in record["params"]}
    return record
