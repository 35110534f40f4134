"""Checks of a saved model's ``config.json``: a damaged or foreign file fails with a message naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._constants import LOSSES, NETWORK_METHODS

FORMAT_VERSION = 1
RESAVE = "save the model again with `model.save(dirname, overwrite=True)`, or retrain it."
_NEEDED = ("n_genes", "modalities", "var_names", "norm", "method", "loss")
_NORM_KEYS = ("library_mean", "library_std", "library_median", "gene_max", "gene_mean")


def read_config(file: Path) -> dict:
    """The saved ``config.json``, checked enough that a damaged or foreign file fails with a clear message."""
    try:
        with open(file) as fh:
            config = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"{str(file)!r} is not valid JSON ({err}); {RESAVE}"
        raise ValueError(msg) from err
    except OSError as err:
        msg = f"{str(file)!r} cannot be read ({type(err).__name__}: {err}); {RESAVE}"
        raise ValueError(msg) from err
    if not isinstance(config, dict):
        msg = f"{str(file)!r} holds a JSON {type(config).__name__}, not a stimpute model configuration; {RESAVE}"
        raise ValueError(msg)
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        msg = f"{str(file)!r} has `format_version={version!r}`, expected a whole number; {RESAVE}"
        raise ValueError(msg)
    if version < 0:
        msg = f"{str(file)!r} has `format_version={version!r}`, expected a whole number >= 0; {RESAVE}"
        raise ValueError(msg)
    if version > FORMAT_VERSION:
        msg = f"{str(file.parent)!r} was saved by a newer stimpute ({config.get('stimpute_version')}); upgrade stimpute to load it."
        raise ValueError(msg)
    missing = [k for k in _NEEDED if k not in config]
    if missing:
        msg = f"{str(file)!r} lacks {missing}: it was not written by `ImputationModel.save`; {RESAVE}"
        raise ValueError(msg)
    problems = []
    n_genes, names, norm = config["n_genes"], config["var_names"], config["norm"]
    if isinstance(n_genes, bool) or not isinstance(n_genes, int) or n_genes < 1:
        problems.append(f"`n_genes={n_genes!r}` is not a positive whole number")
    elif not isinstance(names, list) or len(names) != n_genes or not all(isinstance(v, str) for v in names):
        problems.append(f"`var_names` is not a list of {n_genes} gene names")
    if not isinstance(norm, dict) or not all(k in norm for k in _NORM_KEYS):
        problems.append(f"`norm` is not a mapping with {list(_NORM_KEYS)}")
    modalities = config.get("modalities")
    n_image = None
    if isinstance(modalities, list) and "image" in modalities:
        n_image = config.get("n_image_features")
        if isinstance(n_image, bool) or not isinstance(n_image, int) or n_image < 1:
            problems.append(f"`n_image_features={n_image!r}` is not a positive whole number")
            n_image = None
    if isinstance(norm, dict) and not problems:
        problems += _norm_problems(norm, n_genes, n_image)
    if "image_features" in config:
        problems += _image_record_problems(config["image_features"], n_image)
    if config["method"] not in NETWORK_METHODS:
        problems.append(f"`method={config['method']!r}` is not one of {list(NETWORK_METHODS)}")
    if config["loss"] not in LOSSES:
        problems.append(f"`loss={config['loss']!r}` is not one of {list(LOSSES)}")
    if problems:
        msg = f"{str(file)!r} is not a valid stimpute model configuration: {'; '.join(problems)}; {RESAVE}"
        raise ValueError(msg)
    return config


def _norm_problems(norm: dict, n_genes: int, n_image: int | None) -> list[str]:
    """What is wrong with the stored normalisation constants (they are used as numbers at prediction)."""
    problems = []
    for key in ("library_mean", "library_std", "library_median"):
        v = norm[key]
        if not _finite_number(v):
            problems.append(f"`norm[{key!r}]={v!r}` is not a finite number")
        elif key != "library_mean" and v <= 0:
            problems.append(f"`norm[{key!r}]={v!r}` is not positive")
    lists = {"gene_max": n_genes, "gene_mean": n_genes}
    if "gene_mean_normalised" in norm:
        lists["gene_mean_normalised"] = n_genes
    if n_image is not None:  # an image model standardises its inputs with these
        lists.update(dict.fromkeys(("image_mean", "image_std"), n_image))
    for key, n in lists.items():
        v = norm.get(key)
        if not (isinstance(v, list) and len(v) == n and all(_finite_number(x) for x in v)):
            what = "gene" if key.startswith("gene") else "image feature"
            problems.append(f"`norm[{key!r}]` is not a list of {n} finite numbers (one per {what})")
        elif key == "image_std" and min(v, default=1.0) <= 0:
            problems.append(f"`norm[{key!r}]` has values that are not positive")
        elif key == "gene_max" and min(v, default=0.0) < 0:
            problems.append("`norm['gene_max']` has negative values (largest observed counts)")
    return problems


def _finite_number(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, int | float) and bool(np.isfinite(x))


def _image_record_problems(record, n_image: int | None) -> list[str]:
    from .._image._reference import record_problems

    return [f"`image_features`: {p}" for p in record_problems(record, n_outputs=n_image)]
