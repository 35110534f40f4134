"""Image features of one section on another section's axes: which record a ``reference`` stands for, whether a
call's settings give comparable features, and the call that computes them (for error messages).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .._constants import CNN_INPUT_SIDE, HANDCRAFTED_INPUT_SIDE, IMAGE_FEATURES_KEY, IMAGE_N_COMPS
from .._validate import plain_values
from .._warnings import ImageFeatureWarning, warn
from ._projection import PROJECTION_KEY, SETTINGS, check_projection

__all__ = [
    "check_reference_settings",
    "checkpoint_sha256",
    "record_problems",
    "reference_call",
    "reference_record",
]

#: Tiles whose side in source pixels differs from the reference's by more than this factor get a warning.
RESOLUTION_FACTOR = 1.5


def checkpoint_sha256(weights) -> str:
    """SHA-256 of a checkpoint file (``""`` for ``"none"``/``"imagenet"``/``"random"``)."""
    if not isinstance(weights, str | os.PathLike) or str(weights) in ("imagenet", "random"):
        return ""
    digest = hashlib.sha256()
    with open(Path(weights).expanduser(), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_problems(record, *, n_outputs: int | None = None) -> list[str]:
    """What is wrong with an image-feature record (``params`` + ``projection``); empty when usable."""
    if not isinstance(record, Mapping) or not isinstance(record.get("params"), Mapping):
        return ["it is not a mapping with `params`"]
    params = record["params"]
    missing = [k for k in SETTINGS if k not in params]
    if missing:
        return [f"its `params` lack {missing}"]
    problems = []
    for name in ("encoder", "weights"):
        if not isinstance(params[name], str):
            problems.append(f"`params[{name!r}]={params[name]!r}` is not a string")
    scale = params["tile_scale"]
    if isinstance(scale, bool) or not isinstance(scale, Real) or not (np.isfinite(scale) and scale > 0):
        problems.append(f"`params['tile_scale']={scale!r}` is not a positive number")
    for name in ("tile_size", "n_comps", "n_features"):
        v = params.get(name, 1)
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            problems.append(f"`params[{name!r}]={v!r}` is not a positive whole number")
    if "key" in record and not isinstance(record["key"], str):
        problems.append(f"`key={record['key']!r}` is not a string")
    if problems:
        return problems
    n_features = params.get("n_features")
    problem = check_projection(record.get(PROJECTION_KEY), None if n_features is None else int(n_features))
    if problem:
        return [f"its `{PROJECTION_KEY}` is unusable: {problem}"]
    if n_outputs is not None and _n_outputs(record) != n_outputs:
        return [f"its `{PROJECTION_KEY}` gives {_n_outputs(record)} features, not {n_outputs}"]
    return []


def reference_record(reference, key: str) -> dict:
    """The image-feature record that ``reference`` stands for (checked), as plain Python values."""
    if isinstance(reference, AnnData):
        if key not in reference.uns:
            msg = (
                f"`reference` has no `uns[{key!r}]`: run `st.pp.image_features(reference, key_added={key!r})` on it "
                "first, or pass the record of another key itself (`reference=ref.uns['<key>']`)."
            )
            raise KeyError(msg)
        record, where = reference.uns[key], f"`reference.uns[{key!r}]`"
    elif isinstance(reference, Mapping):
        record, where = reference, "`reference`"
        if "params" not in reference and key in reference:
            msg = f"`reference` looks like a whole `.uns`; pass its image-feature record, `reference=ref.uns[{key!r}]`."
            raise ValueError(msg)
    elif isinstance(getattr(reference, "config", None), dict):
        record, where = reference.config.get("image_features"), "the model"
        if record is None:
            msg = (
                "`reference` is a model that stores no image-feature axes (it was trained without image features, "
                "with features not made by `st.pp.image_features`, or by an older stimpute); pass the training "
                "section's AnnData instead."
            )
            raise ValueError(msg)
    else:
        msg = (
            "`reference` must be an AnnData processed by `st.pp.image_features`, its `uns` record or a trained "
            f"`ImputationModel`, got {type(reference).__name__}."
        )
        raise TypeError(msg)
    if not isinstance(record, Mapping) or not isinstance(record.get("params"), Mapping) or PROJECTION_KEY not in record:
        msg = (
            f"{where} is not an image-feature record of `st.pp.image_features` with its axes (`params` and "
            f"`{PROJECTION_KEY}`); recompute the reference's features with this stimpute version."
        )
        raise ValueError(msg)
    plain = plain_values(
        {"key": record.get("key", key), "params": record["params"], PROJECTION_KEY: record[PROJECTION_KEY]}
    )
    problems = record_problems(plain)
    if problems:
        msg = (
            f"{where} is not a usable image-feature record: {'; '.join(problems)}. Recompute the reference's features."
        )
        raise ValueError(msg)
    return plain


def check_reference_settings(
    ref: dict,
    *,
    encoder: str,
    weights: str,
    weights_sha256: str,
    random_state: int | None,
    tile_scale: float,
    tile_size: int,
    n_comps: int | None,
    from_model: bool,
    library_key: str | None = None,
) -> None:
    """Raise unless this call's settings give features comparable with the reference's."""
    params = ref["params"]
    wanted = {"encoder": encoder, "weights": weights, "tile_scale": float(tile_scale), "tile_size": int(tile_size)}
    for name, value in wanted.items():
        theirs = params[name]
        same = np.isclose(float(theirs), value) if name == "tile_scale" else str(theirs) == str(value)
        if not same:
            msg = f"`{name}={value!r}` differs from the reference's ({theirs!r}); both sections need the same {name}. "
            call = reference_call(ref, model=from_model, library_key=library_key)
            raise ValueError(msg + f"Compute the features with `{call}`.")
    theirs_sha = params.get("weights_sha256", "")
    if weights_sha256 and theirs_sha and weights_sha256 != theirs_sha:
        msg = (
            f"The checkpoint passed as `weights` is not the reference's ({params['weights']!r}, sha256 "
            f"{theirs_sha[:12]}...; this file: {weights_sha256[:12]}...); pass the path of the reference's checkpoint."
        )
        raise ValueError(msg)
    if params["weights"] == "random":
        theirs_seed = int(params.get("random_state", -1))
        ours_seed = -1 if random_state is None else int(random_state)
        if theirs_seed != ours_seed:
            msg = (
                f"`random_state={random_state!r}` differs from the reference's ({theirs_seed}): with "
                "`weights='random'` the seed is the network."
            )
            raise ValueError(msg)
    components = ref[PROJECTION_KEY].get("components")
    if components is None and n_comps is not None:
        msg = "The reference kept its standardised features without PCA; pass `n_comps=None`."
        raise ValueError(msg)
    if components is not None:
        k = len(components)
        if n_comps is None or n_comps < k:
            msg = f"The reference has {k} principal components; pass `n_comps={k}`."
            raise ValueError(msg)
        if n_comps > k:
            logg.info(f"    `n_comps={n_comps}`: the reference has {k} components, all are used")


def warn_resolution(ref: dict, side: int, source: str) -> None:
    """Warn when the tiles were cut at a very different resolution from the reference's."""
    theirs = ref["params"].get("tile_size_source_px")
    if not theirs or not side:
        return
    ratio = side / float(theirs)
    if ratio > RESOLUTION_FACTOR or ratio < 1 / RESOLUTION_FACTOR:
        where = ref["params"].get("image", "?")
        warn(
            f"Tiles are {side} px wide in {source}, the reference's were {int(theirs)} px in {where!r}: features of "
            "images at so different resolutions are not comparable. Tile both sections from images of similar "
            "resolution (`img_key=` / `source_image=`).",
            ImageFeatureWarning,
        )


def reference_call(
    record: Mapping, *, target: str = "adata", model: bool = True, library_key: str | None = None
) -> str:
    """The ``st.pp.image_features`` call that puts ``target``'s features on ``record``'s axes (``library_key``: an
    object holding several sections).
    """
    params = record["params"]
    args = [target]
    if library_key is not None:
        args.append(f"library_key={library_key!r}")
    key = record.get("key", IMAGE_FEATURES_KEY)
    if key != IMAGE_FEATURES_KEY:
        args.append(f"key_added={key!r}")
    args.append("reference=model" if model else "reference=ref")
    if params["encoder"] != "handcrafted":
        args.append(f"encoder={str(params['encoder'])!r}")
        weights = str(params["weights"])
        args.append(f"weights={weights!r}" if weights in ("imagenet", "random") else f"weights='<path to {weights}>'")
    if not np.isclose(float(params["tile_scale"]), 1.0):
        args.append(f"tile_scale={float(params['tile_scale']):g}")
    default_side = HANDCRAFTED_INPUT_SIDE if params["encoder"] == "handcrafted" else CNN_INPUT_SIDE
    if int(params["tile_size"]) != default_side:
        args.append(f"tile_size={int(params['tile_size'])}")
    components = record[PROJECTION_KEY].get("components")
    if components is None:
        args.append("n_comps=None")
    elif len(components) > IMAGE_N_COMPS:
        args.append(f"n_comps={len(components)}")
    return f"st.pp.image_features({', '.join(args)})"


def _n_outputs(record: Mapping) -> int:
    projection = record[PROJECTION_KEY]
    return len(projection["components"]) if "components" in projection else len(projection["mean"])
