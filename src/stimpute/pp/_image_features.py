"""``st.pp.image_features``: per-spot features of the H&E image around each spot."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .._constants import CNN_INPUT_SIDE, HANDCRAFTED_INPUT_SIDE, IMAGE_FEATURES_KEY, IMAGE_N_COMPS
from .._image._projection import PROJECTION_KEY, apply_projection, fit_projection, variance_ratio
from .._image._reference import (
    RESOLUTION_FACTOR,
    check_reference_settings,
    checkpoint_sha256,
    reference_record,
    warn_resolution,
)
from .._image._tiles import check_tile_scale, warn_small_tiles
from .._settings import check_device_name, settings
from .._validate import check_adata, check_key_string, check_own_keys, check_positive_int, check_seed
from .._warnings import ImageFeatureWarning, SectionWarning, warn
from ..get._sections import other_sections_possible, uns_libraries

if TYPE_CHECKING:
    from ..tl._model import ImputationModel

__all__ = ["image_features"]

HANDCRAFTED = "handcrafted"


def image_features(
    adata: AnnData,
    *,
    encoder: str = HANDCRAFTED,
    weights: str | os.PathLike | None = None,
    img_key: str | None = None,
    source_image: str | os.PathLike | np.ndarray | None = None,
    library_id: str | None = None,
    library_key: str | None = None,
    tile_scale: float = 1.0,
    tile_size: int | None = None,
    n_comps: int | None = IMAGE_N_COMPS,
    device: str | None = None,
    batch_size: int = 128,
    progress: bool | None = None,
    key_added: str = IMAGE_FEATURES_KEY,
    reference: AnnData | Mapping | ImputationModel | None = None,
    random_state: int | None = 0,
    copy: bool = False,
) -> AnnData | None:
    """Describe the H&E image around every spot with a feature vector.

    A square tile covering ``tile_scale`` spot diameters is cut around each spot from the
    highest-resolution image available, resized to the encoder's input, and encoded. The features
    are standardised and reduced with PCA, fitted to this section or, with ``reference``, taken from
    another section (so that a model trained there reads this section's features on its own axes).

    **Image.** In order of preference: ``source_image`` (a full-resolution image file, whose pixels
    are those of ``adata.obsm['spatial']``); else, when ``img_key`` is None, the file recorded in
    ``adata.uns['spatial'][library_id]['metadata']['source_image_path']`` (set by
    :func:`stimpute.read_visium` and the dataset loaders) if it exists; else the stored image
    ``img_key`` (default ``"hires"``, then ``"lowres"``). The tile side in pixels of that image is
    ``2 * round(spot_diameter_fullres * scale * tile_scale / 2) + 1``, ``scale`` being its scale
    factor (1 for a full-resolution file). A TIFF is memory-mapped (or read tile by tile when
    compressed); a JPEG/PNG is decoded once, and a JPEG is decoded at 1/2, 1/4 or 1/8 of its size
    when the tiles still come out at least as large as the encoder's input. Tiles are never cut
    from a padded copy of the image: parts outside the image are white.

    **Coordinate checks.** Spots outside the image raise an error that says which conversion would fit
    them (hires/lowres pixels instead of full-resolution ones, x and y swapped). Spots that fit in the
    image but sit clearly better on its tissue with x and y swapped or an axis flipped (the share of spots
    on tissue in the smallest stored image, from Otsu thresholds on grey level and saturation; spots with
    ``obs['in_tissue'] == 0`` left out) give a warning: ``obsm['spatial']`` must hold full-resolution
    pixels with column 0 = x = image column and column 1 = y = image row, y pointing down.

    **Pixel conversions.** Grey images are repeated into R, G and B; RGBA drops the alpha channel;
    ``uint8`` is used as is, ``uint16`` divided by 257, floats in [0, 1] multiplied by 255 (other
    floats clipped to [0, 255]).

    **Encoders.** ``"handcrafted"`` (default; no weights, CPU): colour statistics (RGB) and
    haematoxylin/eosin optical densities from colour deconvolution, each in the whole tile and in
    the spot disc, grey-level co-occurrence texture at three distances and local binary pattern
    histograms at two scales (88 features; tiles resized to 64 px). torchvision CNNs
    (``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"``, ``"densenet121"``,
    ``"efficientnet_b0"``): the globally average-pooled output of the last convolutional stage for
    224 px tiles normalised with the ImageNet mean and standard deviation.

    Parameters
    ----------
    adata
        Annotated data with ``obsm['spatial']`` (full-resolution pixels) and ``uns['spatial']``
        (scale factors, and images unless ``source_image`` is given).
    encoder
        ``"handcrafted"`` or the name of a torchvision CNN (see above).
    weights
        CNN weights: ``"imagenet"`` (torchvision's published weights; needs internet once, or the
        file in torch's hub cache), a path to a local state-dict checkpoint (loaded with
        ``torch.load(..., weights_only=True)``; a ``"state_dict"`` wrapper is unwrapped, a common key
        prefix such as ``"module."``/``"model."`` stripped and the classification head dropped; for
        example a histology-pretrained ResNet), or ``"random"`` (random initialisation; for tests
        and timing only, the features are meaningless). Must be ``None`` for ``"handcrafted"``;
        required for CNNs.
    img_key
        Stored image to tile (``"hires"``, ``"lowres"``); ``None`` picks as described above.
    source_image
        Path to the full-resolution H&E image (jpg, png, tif) in the pixel frame of
        ``obsm['spatial']``, or such an image as an array. Its size is checked against the stored
        images and their scale factors.
    library_id
        Library of ``adata.uns['spatial']``; ``None`` picks the only one.
    library_key
        Column of ``adata.obs`` naming each spot's library, for an object that holds several sections
        (e.g. ``"library_id"`` after :func:`anndata.concat`): each spot is cut from its own library's
        image, and one standardisation and PCA is fitted to all spots (or taken from ``reference``).
        Its values must be libraries of ``adata.uns['spatial']``; ``library_id`` and ``source_image``
        must then be ``None`` (a library's full-resolution file is found through its
        ``metadata['source_image_path']``).
    tile_scale
        Tile side in spot diameters (1: the spot itself; 2 or 3 add the surrounding tissue).
    tile_size
        Side in pixels of the encoder's input that tiles are resized to; ``None``: 64 for
        ``"handcrafted"``, 224 for CNNs.
    n_comps
        Number of principal components kept (at most the number of features and of spots minus
        one); ``None`` keeps all standardised features without PCA.
    device
        Torch device for CNNs (``None``: ``st.settings.device``). Ignored by ``"handcrafted"``.
    batch_size
        Tiles read and encoded at a time.
    progress
        Show a progress bar; ``None`` follows ``st.settings.progress_bar``.
    key_added
        Key of the result in ``adata.obsm`` and ``adata.uns``.
    reference
        Put the features on the axes of another section instead of fitting new ones: an AnnData
        processed by this function (its ``uns[key_added]`` record is used), such a record itself, or
        an :class:`~stimpute.tl.ImputationModel` trained with image features (it stores the record
        of its training section). The features are z-scored with the reference's means and
        standard deviations and projected on its principal axes. PCA axes fitted on two sections
        differ in sign, order and mixing, and a trained model reads its image inputs by position:
        compute a new section's features this way before ``model.predict``. ``encoder``,
        ``weights``, ``tile_scale`` and ``tile_size`` must equal the reference's, and ``n_comps``
        give at least its number of components (``None`` when it has no PCA).
    random_state
        Seed for ``weights="random"``; PCA uses the deterministic full SVD.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with

    ``adata.obsm['X_image' | key_added]``
        ``float32`` array ``(n_obs, n_comps)``, one row per spot in ``obs_names`` order.
    ``adata.uns['X_image' | key_added]['params']``
        ``encoder``, ``weights`` (``"none"``, ``"imagenet"``, ``"random"`` or the checkpoint's file
        name), ``weights_sha256`` (the checkpoint file's SHA-256, else ``""``), ``img_source``
        (``"file"``, ``"uns"`` or ``"array"``), ``image`` (file name or image key), ``library_id``, ``scale`` (image pixels per full-resolution pixel, after any reduced
        JPEG decode), ``tile_size_source_px`` (tile side in pixels of that image), ``tile_scale``,
        ``tile_size`` (encoder input side), ``n_features`` (before PCA), ``n_comps``,
        ``explained_variance_ratio`` (empty without PCA; with ``reference``, the share of this
        section's standardised variance on each reference axis), ``random_state`` (-1 for None),
        ``projection`` (``"fitted"`` or ``"reference"``) and ``library_key`` (``"none"`` when absent);
        over several libraries ``library_id`` and ``image`` join the libraries' values, and ``scale``
        and ``tile_size_source_px`` are their medians.
    ``adata.uns['X_image' | key_added]['libraries']``
        With ``library_key``: per library, its ``img_source``, ``image``, ``scale`` and
        ``tile_size_source_px``.
    ``adata.uns['X_image' | key_added]['projection']``
        The standardisation and axes used: ``mean`` and ``scale`` per feature (scale 0: a
        constant feature, set to 0) and ``components`` ``(n_comps, n_features)`` (absent without
        PCA). It is what ``reference`` reads.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> st.pp.image_features(adata, n_comps=10)
    >>> adata.obsm["X_image"].shape
    (100, 10)
    >>> other = st.datasets.synthetic_visium(n_spots=80, n_genes=20, random_state=1)
    >>> st.pp.image_features(other, n_comps=10, reference=adata)  # on adata's axes
    >>> adata.uns["X_image"]["params"]["image"]
    'hires'
    """
    r = _check_options(
        adata,
        encoder=encoder,
        weights=weights,
        img_key=img_key,
        source_image=source_image,
        library_id=library_id,
        library_key=library_key,
        tile_scale=tile_scale,
        tile_size=tile_size,
        n_comps=n_comps,
        device=device,
        batch_size=batch_size,
        progress=progress,
        key_added=key_added,
        reference=reference,
        random_state=random_state,
        copy=copy,
    )
    sections, specs = _open_images(adata, r)
    first = specs[0]
    where = (
        f"{first.source.kind} image {first.source.name!r}"
        if r.groups is None
        else f"the images of {len(specs)} libraries (`library_key={r.library_key!r}`)"
    )
    start = logg.info(
        f"computing {r.encoder} image features of {adata.n_obs:,} spots from {where} (tile_scale={r.tile_scale})"
    )
    features, per_library = _encode(adata, r, sections, specs)
    reduced, ratio, projection = _project(features, r)
    target = adata.copy() if copy else adata
    summary = _write_features(target, r, features, reduced, ratio, projection, per_library)
    logg.info(
        f"    added `adata.obsm[{r.key_added!r}]` ({reduced.shape[1]} components of {features.shape[1]} features; "
        f"tiles {summary['tile_size_source_px']} px in the source image)",
        time_start=start,
    )
    return target if copy else None


@dataclass
class _Run:
    """The checked options of one ``image_features`` call."""

    encoder: str
    weights: str | os.PathLike | None
    weights_label: str
    weights_sha256: str
    input_side: int
    n_comps: int | None
    batch_size: int
    key_added: str
    random_state: int | None
    device: str | None
    progress: bool
    tile_scale: float
    groups: np.ndarray | None
    libraries: list[str]
    ref: dict | None
    library_key: str | None
    img_key: str | None
    source_image: str | os.PathLike | np.ndarray | None
    library_id: str | None


def _check_options(
    adata: AnnData,
    *,
    encoder: str,
    weights: str | os.PathLike | None,
    img_key: str | None,
    source_image: str | os.PathLike | np.ndarray | None,
    library_id: str | None,
    library_key: str | None,
    tile_scale: float,
    tile_size: int | None,
    n_comps: int | None,
    device: str | None,
    batch_size: int,
    progress: bool | None,
    key_added: str,
    reference: AnnData | Mapping | ImputationModel | None,
    random_state: int | None,
    copy: bool,
) -> _Run:
    """Validate everything before reading the image or touching ``adata``."""
    from .._nn._encoders import CNN_ENCODERS

    check_adata(adata)
    if not isinstance(encoder, str) or (encoder != HANDCRAFTED and encoder not in CNN_ENCODERS):
        msg = f"`encoder` must be {HANDCRAFTED!r} or one of {list(CNN_ENCODERS)}, got {encoder!r}."
        raise ValueError(msg)
    weights_label = _check_weights(encoder, weights)
    input_side = HANDCRAFTED_INPUT_SIDE if encoder == HANDCRAFTED else CNN_INPUT_SIDE
    if tile_size is not None:
        input_side = check_positive_int(tile_size, name="tile_size", minimum=16 if encoder == HANDCRAFTED else 32)
    if n_comps is not None:
        n_comps = check_positive_int(n_comps, name="n_comps")
    batch_size = check_positive_int(batch_size, name="batch_size")
    key_added = check_key_string(key_added, name="key_added", writes_uns=True)
    check_own_keys(adata, key_added, fields=("encoder", "tile_scale"), writer="st.pp.image_features")
    check_seed(random_state)
    if device is not None:
        check_device_name(device)
    if progress is None:
        progress = settings.progress_bar
    elif not isinstance(progress, bool):
        msg = f"`progress` must be True, False or None, got {progress!r}."
        raise TypeError(msg)
    if not isinstance(copy, bool):
        msg = f"`copy` must be True or False, got {copy!r}."
        raise TypeError(msg)
    check_tile_scale(tile_scale)
    groups, libraries = _check_libraries(adata, library_key, library_id=library_id, source_image=source_image)
    weights_sha256 = checkpoint_sha256(weights) if encoder != HANDCRAFTED else ""
    ref = None
    if reference is not None:
        ref = reference_record(reference, key_added)
        check_reference_settings(
            ref,
            encoder=encoder,
            weights=weights_label,
            weights_sha256=weights_sha256,
            random_state=random_state,
            tile_scale=tile_scale,
            tile_size=input_side,
            n_comps=n_comps,
            from_model=not isinstance(reference, AnnData | Mapping),
            library_key=library_key,
        )
    elif adata.n_obs < 2:
        msg = f"`adata` has {adata.n_obs} spot; image features need at least 2 spots (they are standardised)."
        raise ValueError(msg)
    return _Run(
        encoder=encoder,
        weights=weights,
        weights_label=weights_label,
        weights_sha256=weights_sha256,
        input_side=input_side,
        n_comps=n_comps,
        batch_size=batch_size,
        key_added=key_added,
        random_state=random_state,
        device=device,
        progress=progress,
        tile_scale=tile_scale,
        groups=groups,
        libraries=libraries,
        ref=ref,
        library_key=library_key,
        img_key=img_key,
        source_image=source_image,
        library_id=library_id,
    )


def _open_images(adata: AnnData, r: _Run) -> tuple[list, list]:
    """Each section's spots and its opened, checked image (every image before any tile is encoded)."""
    from .._image._tiles import prepare_tiles

    if r.groups is None:
        sections = [(None, r.library_id)]
    else:
        sections = [(np.flatnonzero(r.groups == code), lib) for code, lib in enumerate(r.libraries)]
    specs = []
    try:  # every image is opened and checked before any tile is encoded
        for members, lib in sections:
            part = adata if members is None else adata[members]
            specs.append(
                prepare_tiles(
                    part,
                    library_id=lib,
                    img_key=r.img_key,
                    source_image=r.source_image,
                    tile_scale=r.tile_scale,
                    per_library=r.groups is not None,
                )
            )
    except Exception:
        for spec in specs:
            spec.source.close()
        raise
    if r.groups is not None:
        warn_small_tiles(specs, per_library=True)
    if r.groups is None and other_sections_possible(adata, specs[0].library_id):
        warn(
            f"`adata.uns['spatial']` holds several libraries; every spot is cut from library {specs[0].library_id!r}'s "
            "image. Keep only that section's spots if the others come from other sections, or pass `library_key=`.",
            SectionWarning,
        )

    return sections, specs


def _encode(adata: AnnData, r: _Run, sections: list, specs: list) -> tuple[np.ndarray, dict[str, dict]]:
    """Encode every section's tiles (closing each image when done): features (n_obs, n_features), per library."""
    from .._image._tiles import iter_tiles

    n_done = 0  # libraries encoded (their images already closed)
    try:
        if r.encoder != HANDCRAFTED:
            from .._nn._device import resolve_device
            from .._nn._encoders import encode_tiles, load_encoder

            torch_device = resolve_device(r.device)
            model = load_encoder(r.encoder, r.weights, random_state=r.random_state).to(torch_device)
        features = np.empty((adata.n_obs, 0))
        per_library = {}
        if r.encoder == HANDCRAFTED:
            from .._image._handcrafted import handcrafted_features

        def encode(tiles: np.ndarray, spec) -> np.ndarray:
            if r.encoder == HANDCRAFTED:
                # read when the first tiles arrive: iter_tiles may first reduce a JPEG's decoding scale
                return handcrafted_features(tiles, spot_fraction=spec.spot_fraction)
            return encode_tiles(model, tiles, torch_device)

        for (members, _), spec in zip(sections, specs, strict=True):
            chunks = [
                encode(tiles, spec)
                for _, tiles in iter_tiles(spec, r.input_side, batch_size=r.batch_size, progress=r.progress)
            ]
            part = np.concatenate(chunks, axis=0).astype(np.float64)
            if members is None:
                features = part
            else:
                if features.shape[1] == 0:
                    features = np.empty((adata.n_obs, part.shape[1]))
                features[members] = part
            per_library[spec.library_id] = {
                "img_source": spec.source.kind,
                "image": spec.source.name,
                "scale": float(spec.source.scale),
                "tile_size_source_px": int(spec.side),
            }
            spec.source.close()  # a decoded image is released before the next library's is read
            n_done += 1
            if r.ref is not None:
                warn_resolution(r.ref, spec.side, f"{spec.source.kind} image {spec.source.name!r}")
    finally:
        for spec in specs[n_done:]:
            spec.source.close()
    if not np.isfinite(features).all():  # pragma: no cover - a CNN in half precision could overflow
        msg = "Image features contain NaN or infinite values."
        raise ValueError(msg)
    return features, per_library


def _project(features: np.ndarray, r: _Run) -> tuple[np.ndarray, np.ndarray, dict]:
    """Standardise and reduce with a PCA fitted here, or on the reference's axes."""
    if r.ref is None:
        reduced, ratio, projection = fit_projection(features, r.n_comps)
    else:
        projection = r.ref[PROJECTION_KEY]
        n_ref = len(np.asarray(projection["mean"]))
        if features.shape[1] != n_ref:
            msg = (
                f"The encoder gave {features.shape[1]} features but the reference has {n_ref}; compute both "
                "sections' features with the same encoder and weights."
            )
            raise ValueError(msg)
        reduced = apply_projection(features, projection)
        ratio = variance_ratio(features, projection, reduced)

    return reduced, ratio, projection


def _write_features(
    target: AnnData,
    r: _Run,
    features: np.ndarray,
    reduced: np.ndarray,
    ratio: np.ndarray,
    projection: dict,
    per_library: dict[str, dict],
) -> dict:
    """``obsm[key_added]`` and ``uns[key_added]``; returns the per-library summary."""
    sides = {lib: v["tile_size_source_px"] for lib, v in per_library.items()}
    if len(sides) > 1 and max(sides.values()) > RESOLUTION_FACTOR * min(sides.values()):
        warn(
            f"The libraries' tiles were cut at very different resolutions (tile side in source pixels: {sides}): "
            "their features are not comparable, and one standardisation and PCA mixes them. Give every library an "
            "image of similar resolution (`img_key=`, or each library's full-resolution file in its metadata).",
            ImageFeatureWarning,
        )
    summary = _summary(per_library)
    target.obsm[r.key_added] = reduced.astype(np.float32)
    target.uns[r.key_added] = {
        "params": {
            "encoder": r.encoder,
            "weights": r.weights_label,
            "weights_sha256": r.weights_sha256,
            "img_source": summary["img_source"],
            "image": summary["image"],
            "library_id": summary["library_id"],
            "scale": summary["scale"],
            "tile_size_source_px": summary["tile_size_source_px"],
            "tile_scale": float(r.tile_scale),
            "tile_size": int(r.input_side),
            "n_features": int(features.shape[1]),
            "n_comps": int(reduced.shape[1]),
            "explained_variance_ratio": ratio.astype(np.float64),
            "random_state": -1 if r.random_state is None else int(r.random_state),
            "projection": "fitted" if r.ref is None else "reference",
        },
        PROJECTION_KEY: {name: np.asarray(v, dtype=np.float64).copy() for name, v in projection.items()},
    }
    target.uns[r.key_added]["params"]["library_key"] = "none" if r.library_key is None else r.library_key
    if r.groups is not None:
        target.uns[r.key_added]["libraries"] = per_library
    return summary


def _check_libraries(
    adata: AnnData, library_key: str | None, *, library_id: str | None, source_image
) -> tuple[np.ndarray | None, list[str]]:
    """Each spot's library code and the libraries (in code order) for ``library_key``; ``(None, [])`` without."""
    if library_key is None:
        return None, []
    if library_id is not None:
        msg = (
            f"Pass either `library_key={library_key!r}` (every library) or `library_id={library_id!r}` (one), not both."
        )
        raise ValueError(msg)
    if source_image is not None:
        msg = (
            "`source_image` is one image, but `library_key` asks for one per library: leave it None and record each "
            "library's full-resolution file in `adata.uns['spatial'][library]['metadata']['source_image_path']` "
            "(as `st.read_visium` does), or compute the features per section."
        )
        raise ValueError(msg)
    return uns_libraries(adata, library_key)


def _summary(per_library: dict[str, dict]) -> dict:
    """The record's single-image fields: the image itself, or over several libraries the common value (median
    scale and tile side; image names joined).
    """
    libs = list(per_library)
    if len(libs) == 1:
        return {"library_id": libs[0], **per_library[libs[0]]}

    def joined(field: str) -> str:
        return ", ".join(dict.fromkeys(str(v[field]) for v in per_library.values()))

    return {
        "library_id": ", ".join(libs),
        "img_source": joined("img_source"),
        "image": joined("image"),
        "scale": float(np.median([v["scale"] for v in per_library.values()])),
        "tile_size_source_px": int(np.median([v["tile_size_source_px"] for v in per_library.values()])),
    }


def _check_weights(encoder: str, weights: str | os.PathLike | None) -> str:
    """Validate ``weights`` for ``encoder`` and return how to record it (a string)."""
    if encoder == HANDCRAFTED:
        if weights is not None:
            msg = f"`weights` must be None for encoder='handcrafted' (it has no weights), got {weights!r}."
            raise ValueError(msg)
        return "none"
    if weights is None:
        msg = (
            f"encoder={encoder!r} needs `weights`: a CNN with random weights gives meaningless features. Pass "
            "`weights='imagenet'` (torchvision's weights; needs internet once), `weights='/path/to/checkpoint.pt'` "
            "(a local state dict, for example histology-pretrained), `weights='random'` explicitly (tests and "
            "timing only), or use `encoder='handcrafted'`, which needs no weights."
        )
        raise ValueError(msg)
    if isinstance(weights, str) and weights in ("imagenet", "random"):
        return weights
    if not isinstance(weights, str | os.PathLike):
        msg = f"`weights` must be 'imagenet', 'random' or a path to a checkpoint file, got {type(weights).__name__}."
        raise TypeError(msg)
    path = Path(weights).expanduser()
    if not path.is_file():
        msg = (
            f"`weights={str(weights)!r}` is neither 'imagenet' nor 'random' nor an existing checkpoint file; pass "
            "the path of a local state dict (`torch.save(model.state_dict(), path)`)."
        )
        raise FileNotFoundError(msg)
    return path.name
