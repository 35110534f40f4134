"""A trained imputation model: predict on any AnnData with the same genes, save and load it.

A saved model is a folder with ``model.pt`` (the ``state_dict``, written by :func:`torch.save`) and
``config.json`` (method, architecture, gene names, normalisation constants, stimpute version). Loading
uses ``torch.load(..., weights_only=True)``, which never unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from anndata import AnnData

from .. import _logging as logg
from .._constants import NETWORK_METHODS
from .._graph import warn_small_sections
from .._lineage import holdout_id_of
from .._validate import check_adata, check_bool, check_key_string, check_output_key, plain_values
from ..get._spatial import suggested_library_key
from ._checkpoint import read_weights
from ._data import attach_projection, prepare
from ._device import float32_default, resolve_device
from ._module import ImputeNet
from ._train import LOSSES, predict

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


def build_net(config: dict) -> ImputeNet:
    """The (untrained) network described by ``config``."""
    return ImputeNet(
        config["n_genes"],
        config["modalities"],
        n_position_features=config.get("n_position_features", 0),
        n_image_features=config.get("n_image_features", 0),
        count_hidden=config["count_hidden"],
        position_hidden=config["position_hidden"],
        image_hidden=config["image_hidden"],
        decoder_hidden=config["decoder_hidden"],
        latent_dim=config["latent_dim"],
        neighbours=config["neighbours"],
        library_size=config["library_size"],
        neighbour_skip=config.get("neighbour_skip", False),
        count_pcs=config.get("count_pcs", 0),
        normalize_counts=config.get("normalize_counts", False),
        detection=config.get("detection", False),
        dropout=config["dropout"],
    )


def reference_library(norm: dict) -> float:
    """Standardised log library size of the reference (median) depth."""
    return float((np.log1p(norm["library_median"]) - norm["library_mean"]) / norm["library_std"])


class ImputationModel:
    """A trained :func:`stimpute.tl.impute` network that imputes any section with the same genes.

    Get one with ``st.tl.impute(..., return_model=True)`` or :func:`stimpute.tl.load_model`.

    Attributes
    ----------
    method
        ``"autoencoder"``, ``"positional"``, ``"image"`` or ``"multimodal"``.
    var_names
        The genes, in the order the network expects.
    config
        Architecture, normalisation constants and training parameters (JSON-serialisable).
    device
        Where the network sits.
    """

    def __init__(self, net: ImputeNet, config: dict, var_names: list[str], device: torch.device):
        self.net = net
        self.config = config
        self.var_names = list(var_names)
        self.device = device

    @property
    def method(self) -> str:
        """The imputation method."""
        return str(self.config["method"])

    @property
    def fusion_weights(self) -> dict[str, float]:
        """The weights lambda of the modalities in the fused latent vector."""
        with torch.no_grad():
            w = self.net.fusion_weights().cpu().numpy()
        return {m: float(v) for m, v in zip(self.net.modalities, w, strict=True)}

    def __repr__(self) -> str:
        n_par = sum(p.numel() for p in self.net.parameters())
        return (
            f"ImputationModel(method={self.method!r}, modalities={list(self.net.modalities)}, "
            f"n_genes={len(self.var_names)}, loss={self.config['loss']!r}, parameters={n_par:,}, device={str(self.device)!r})"
        )

    # ------------------------------------------------------------------------------------------------
    def predict(
        self,
        adata: AnnData,
        *,
        layer: str | None = None,
        key_added: str | None = None,
        image_key: str | None = None,
        library_key: str | None = None,
        keep_observed: bool | None = None,
        output: str | None = None,
        copy: bool = False,
    ) -> AnnData | None:
        """Impute ``adata`` with the trained network (no training).

        Parameters
        ----------
        adata
            Annotated data with exactly the model's genes (same names, same order), raw counts in
            ``layer``, and ``obsm['spatial']`` / ``obsm[image_key]`` when the model uses them.
        layer
            Layer with the counts; ``None`` uses ``adata.X``.
        key_added
            Layer (and ``uns`` key) to write; default ``"imputed_" + method``.
        image_key
            Key of the image features in ``adata.obsm``; default: the one used in training. For
            another section, compute them on the training section's axes first:
            ``st.pp.image_features(adata, reference=model)``. Features made by
            :func:`stimpute.pp.image_features` on other axes (its PCA fitted to this section) are
            refused with a :class:`ValueError`.
        library_key
            Column of ``adata.obs`` naming each spot's section when ``adata`` holds several: neighbours are
            searched within a section and positions are normalised per section, as in training. Required when
            the model reads positions or neighbours and ``adata`` holds several sections (see
            :func:`stimpute.tl.impute`).
        keep_observed
            Keep the observed non-zero values (rescaled to the reference depth for ``"normalized"``);
            ``None``: as in training when ``output`` is the training's output, else ``True`` for
            ``output="conditional"`` and ``False`` for the denoised readouts ``"normalized"`` and ``"expected"``
            (see :func:`stimpute.tl.impute`).
        output
            ``"conditional"``, ``"normalized"`` or ``"expected"`` (see :func:`stimpute.tl.impute`); default: as
            in training.
        copy
            Return a modified copy instead of writing to ``adata``.

        Returns
        -------
        ``None``, or the modified copy when ``copy=True``. Sets ``adata.layers[key_added]`` (float32,
        count scale) and ``adata.uns[key_added]`` (``params``, ``device``, ``wall_time``, and the
        training ``history``/``best_epoch`` of the model).
        """
        from ..tl._impute import _check_inputs, _check_output, _write_result
        from ..tl._impute import _restore as restore_observed

        start = time.perf_counter()
        key_added = (
            f"imputed_{self.method}"
            if key_added is None
            else check_key_string(key_added, name="key_added", writes_uns=True)
        )
        if image_key is not None:
            image_key = check_key_string(image_key, name="image_key")
        image_key = self.config.get("image_key", "X_image") if image_key is None else image_key
        trained_output = self.config.get("output", "conditional")
        output = trained_output if output is None else output
        keep_observed = check_bool(keep_observed, name="keep_observed", allow_none=True)
        if keep_observed is None:  # as in training for the training's output, else the output's own default
            default = output == "conditional"
            keep_observed = bool(self.config.get("keep_observed", default)) if output == trained_output else default
        copy = check_bool(copy, name="copy")
        _check_output(output, self.config)
        check_adata(adata)
        self._check_genes(adata)  # first: other genes make every other check moot
        uses_image = "image" in self.config["modalities"]
        has_axes = self.config.get("image_features") is not None
        # the image_features call suggested in messages names the object's library column when it holds several
        hint_key = library_key if library_key is not None or not uses_image else suggested_library_key(adata)
        X, coords, groups, image = _check_inputs(
            adata,
            self.method,
            layer=layer,
            library_key=library_key,
            image_key=image_key,
            modalities=self.config["modalities"],
            needs_coords=self._needs_coords(),
            max_dense_gb=float(self.config.get("max_dense_gb", 8.0)),
            n_params=sum(p.numel() for p in self.net.parameters()),
            compute_image=False,
            training=False,
            image_fix=self._image_call(image_key, hint_key) if uses_image and has_axes else None,
        )
        check_output_key(adata, key_added, inputs=["X" if layer is None else layer, image_key], methods=NETWORK_METHODS)
        if uses_image and image.shape[1] != self.config["n_image_features"]:
            fix = (
                f"compute them on the model's axes: `{self._image_call(image_key, hint_key)}`"
                if has_axes
                else "compute them with the training section's `st.pp.image_features` settings"
            )
            msg = (
                f"`adata.obsm[{image_key!r}]` has {image.shape[1]} features but the model was trained on "
                f"{self.config['n_image_features']}; {fix}."
            )
            raise ValueError(msg)
        if uses_image:
            self._check_image_axes(adata, image_key, hint_key)
        if self.config.get("neighbours"):
            warn_small_sections(groups, int(self.config["n_neighbors"]))
        prep = prepare(X, config=self.config, norm=self.config["norm"], coords=coords, image=image, groups=groups)
        attach_projection(prep, self.net)
        out = predict(
            self.net,
            prep,
            self.device,
            loss=self.config["loss"],
            output=output,
            gene_max=self.config["norm"].get("gene_max"),
            reference_library=reference_library(self.config["norm"]),
        )
        if keep_observed:
            restore_observed(out, X, to_depth=self.config["norm"]["library_median"] if output == "normalized" else None)
        if copy:
            adata = adata.copy()
        params = dict(self.config.get("params", {}))
        params.update(
            {
                "layer": "X" if layer is None else layer,
                "holdout_id": holdout_id_of(adata, layer),
                "keep_observed": keep_observed,
                "image_key": image_key,
                "output": output,
            }
        )
        params["library_key"] = "none" if library_key is None else library_key  # this object's, not training's
        _write_result(
            adata,
            key_added,
            out,
            params=params,
            history=self.config.get("history", {"epoch": [], "train_loss": [], "val_loss": []}),
            best_epoch=int(self.config.get("best_epoch", -1)),
            device=str(self.device),
            wall_time=time.perf_counter() - start,
            extra={"fusion_weights": self.fusion_weights, "trained": False},
        )
        logg.info(
            f"    imputed with the trained {self.method} model: added `adata.layers[{key_added!r}]`", time_start=start
        )
        return adata if copy else None

    def _check_image_axes(self, adata: AnnData, image_key: str, library_key: str | None = None) -> None:
        """Refuse image features put on other axes than the training section's (PCA fitted to each section)."""
        from .._image._projection import PROJECTION_KEY, same_projection

        ours = self.config.get("image_features")
        if ours is None:  # trained on features without a stored record (or by an older stimpute): cannot check
            return
        record = adata.uns.get(image_key)
        theirs = record.get(PROJECTION_KEY) if isinstance(record, Mapping) else None
        if theirs is None:
            logg.warning(
                f"`adata.uns[{image_key!r}]` does not say how `adata.obsm[{image_key!r}]` was made, so it cannot be "
                f"checked against the model's image axes; compute it with `{self._image_call(image_key, library_key)}`."
            )
            return
        if not same_projection(theirs, ours[PROJECTION_KEY]):
            msg = (
                f"`adata.obsm[{image_key!r}]` is on other axes than the features the model was trained on (image "
                "features are standardised and reduced with a PCA fitted to each section, so the same column means "
                f"something else). Recompute them on the model's axes: `{self._image_call(image_key, library_key)}`."
            )
            raise ValueError(msg)

    def _image_call(self, image_key: str, library_key: str | None = None) -> str:
        """The ``st.pp.image_features`` call that gives ``obsm[image_key]`` on the model's axes."""
        from .._image._reference import reference_call

        return reference_call({**self.config["image_features"], "key": image_key}, library_key=library_key)

    def _needs_coords(self) -> bool:
        c = self.config
        return "position" in c["modalities"] or bool(c.get("neighbours"))  # spatial_reg: training only

    def _check_genes(self, adata: AnnData) -> None:
        names = list(map(str, adata.var_names))
        if names == self.var_names:
            return
        ours, theirs = set(self.var_names), set(names)
        missing = [g for g in self.var_names if g not in theirs]
        extra = [g for g in names if g not in ours]
        if len(names) != len(theirs):
            msg = (
                f"`adata.var_names` are not unique ({len(names) - len(theirs)} repeated); the model's genes are "
                "unique: run `adata.var_names_make_unique()` or drop the repeats."
            )
        elif not missing and not extra:
            msg = (
                "`adata` has the model's genes in a different order; reorder them first: "
                "`adata = adata[:, model.var_names].copy()`."
            )
        else:
            parts = []
            if missing:
                parts.append(f"{len(missing)} of the model's genes are missing (e.g. {missing[:3]})")
            if extra:
                parts.append(f"{len(extra)} genes are not in the model (e.g. {extra[:3]})")
            fix = (
                "subset both to the shared genes and retrain"
                if missing
                else "every model gene is present: use `adata[:, model.var_names].copy()`"
            )
            msg = f"`adata` has different genes from the model ({len(self.var_names)} genes): {' and '.join(parts)}; {fix}."
        raise ValueError(msg)

    # ------------------------------------------------------------------------------------------------
    def save(self, dirname: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write ``model.pt`` (state dict) and ``config.json`` into folder ``dirname``.

        Parameters
        ----------
        dirname
            Folder to create (or reuse when empty).
        overwrite
            Replace an existing saved model in ``dirname``.
        """
        if not isinstance(dirname, str | os.PathLike):
            msg = f"`dirname` must be a folder path (str or os.PathLike), got {dirname!r}."
            raise TypeError(msg)
        path = Path(dirname)
        if path.exists() and not path.is_dir():
            msg = f"`dirname={str(path)!r}` exists and is not a folder; pass a folder path."
            raise FileExistsError(msg)
        if (path / MODEL_FILE).exists() or (path / CONFIG_FILE).exists():
            if not overwrite:
                msg = f"{str(path)!r} already holds a saved model; pass `overwrite=True` to replace it."
                raise FileExistsError(msg)
        path.mkdir(parents=True, exist_ok=True)
        from .. import __version__

        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        torch.save(state, path / MODEL_FILE)
        config = dict(self.config)
        config["var_names"] = self.var_names
        config["stimpute_version"] = __version__
        config["format_version"] = FORMAT_VERSION
        with open(path / CONFIG_FILE, "w") as fh:
            json.dump(plain_values(config), fh, indent=1)
        logg.info(f"saved {self.method} model to {str(path)!r}")


@float32_default()
def load_model(dirname: str | os.PathLike, device: str | None = None) -> ImputationModel:
    """Load a model written by :meth:`ImputationModel.save` (``weights_only=True``)."""
    if not isinstance(dirname, str | os.PathLike):
        msg = f"`dirname` must be a folder path (str or os.PathLike), got {dirname!r}."
        raise TypeError(msg)
    path = Path(dirname)
    if not (path / MODEL_FILE).exists() or not (path / CONFIG_FILE).exists():
        msg = f"{str(path)!r} holds no saved model (expected {MODEL_FILE!r} and {CONFIG_FILE!r}); save one with `model.save(dir)`."
        raise FileNotFoundError(msg)
    config = _read_config(path / CONFIG_FILE)
    dev = resolve_device(device)
    try:
        net = build_net(config)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        msg = (
            f"{str(path / CONFIG_FILE)!r} does not describe a stimpute network ({type(err).__name__}: {err}); {_RESAVE}"
        )
        raise ValueError(msg) from err
    state = _read_state(path / MODEL_FILE, dev)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        msg = (
            f"The weights in {str(path / MODEL_FILE)!r} do not fit the network described by {CONFIG_FILE!r} "
            f"({str(err).splitlines()[0]} ...); the two files come from different models. {_RESAVE}"
        )
        raise ValueError(msg) from err
    net.to(dev)
    net.eval()
    var_names = config.pop("var_names")
    return ImputationModel(net, config, var_names, dev)


_RESAVE = "save the model again with `model.save(dirname, overwrite=True)`, or retrain it."
_NEEDED = ("n_genes", "modalities", "var_names", "norm", "method", "loss")
_NORM_KEYS = ("library_mean", "library_std", "library_median", "gene_max", "gene_mean")


def _read_config(file: Path) -> dict:
    """The saved ``config.json``, checked enough that a damaged or foreign file fails with a clear message."""
    try:
        with open(file) as fh:
            config = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"{str(file)!r} is not valid JSON ({err}); {_RESAVE}"
        raise ValueError(msg) from err
    except OSError as err:
        msg = f"{str(file)!r} cannot be read ({type(err).__name__}: {err}); {_RESAVE}"
        raise ValueError(msg) from err
    if not isinstance(config, dict):
        msg = f"{str(file)!r} holds a JSON {type(config).__name__}, not a stimpute model configuration; {_RESAVE}"
        raise ValueError(msg)
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        msg = f"{str(file)!r} has `format_version={version!r}`, expected a whole number; {_RESAVE}"
        raise ValueError(msg)
    if version < 0:
        msg = f"{str(file)!r} has `format_version={version!r}`, expected a whole number >= 0; {_RESAVE}"
        raise ValueError(msg)
    if version > FORMAT_VERSION:
        msg = f"{str(file.parent)!r} was saved by a newer stimpute ({config.get('stimpute_version')}); upgrade stimpute to load it."
        raise ValueError(msg)
    missing = [k for k in _NEEDED if k not in config]
    if missing:
        msg = f"{str(file)!r} lacks {missing}: it was not written by `ImputationModel.save`; {_RESAVE}"
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
        msg = f"{str(file)!r} is not a valid stimpute model configuration: {'; '.join(problems)}; {_RESAVE}"
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


def _read_state(file: Path, device) -> dict:
    """The saved state dict, read with ``weights_only=True``."""
    state = read_weights(file, device, label=repr(str(file)), fix=_RESAVE)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        what = type(state).__name__ if not isinstance(state, dict) else "dict with non-string keys or non-tensors"
        msg = f"{str(file)!r} holds a {what}, not a state dict; {_RESAVE}"
        raise ValueError(msg)
    return state
