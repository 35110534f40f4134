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
from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .._constants import IMAGE_FEATURES_KEY, IMPUTED_PREFIX, NETWORK_METHODS
from .._docs import DOC_LIBRARY_KEY, doc_params
from .._graph import warn_small_sections
from .._lineage import holdout_id_of
from .._validate import check_adata, check_bool, check_key_string, check_output_key, plain_values
from .._warnings import ImageFeatureWarning, warn
from ..get._sections import suggested_library_key
from ._impute_inputs import check_memory, read_counts, read_image_features, read_positions
from ._model_config import FORMAT_VERSION, RESAVE, read_config
from ._readout import EMPTY_HISTORY, check_output, restore_observed, write_result

if TYPE_CHECKING:
    import torch

    from .._nn._config import TrainingOptions
    from .._nn._module import ImputeNet

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"


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
        import torch

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
    @classmethod
    def fit(
        cls,
        X,
        *,
        var_names: list[str],
        coords: np.ndarray | None,
        groups: np.ndarray | None,
        image: np.ndarray | None,
        config: dict,
        training: TrainingOptions,
        device: torch.device,
        random_state: int,
        progress: bool,
    ) -> tuple[ImputationModel, dict, Any]:
        """Train the network described by ``config`` on counts ``X`` (arrays, not AnnData).

        Returns the model, the training record (history, best epoch, ...) and the prepared inputs, which
        :meth:`readout` reads the training section's imputation from.
        """
        from .._nn._fit import fit_network

        net, config, record, prep = fit_network(
            X,
            coords=coords,
            image=image,
            config=config,
            training=training,
            device=device,
            random_state=random_state,
            progress=progress,
            groups=groups,
        )
        return cls(net, config, var_names, device), record, prep

    def readout(self, prep: Any, X, *, output: str, keep_observed: bool) -> tuple[np.ndarray, np.ndarray]:
        """Imputed counts (float32, spots x genes) of the prepared inputs ``prep`` of counts ``X``, and the fused
        latent vectors (float32, spots x ``latent_dim``) from the same pass.
        """
        from .._nn._config import reference_library
        from .._nn._predict import predict

        norm = self.config["norm"]
        latent = np.empty((prep.n_obs, self.net.latent_dim), dtype=np.float32)
        out = predict(
            self.net,
            prep,
            self.device,
            loss=self.config["loss"],
            output=output,
            gene_max=norm.get("gene_max"),
            reference_library=reference_library(norm),
            latent_out=latent,
        )
        if keep_observed:
            restore_observed(out, X, to_depth=norm["library_median"] if output == "normalized" else None)
        return out, latent

    @doc_params(library_key=DOC_LIBRARY_KEY)
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
            {library_key}
            As in training. Required when the model reads positions or neighbours and ``adata`` holds
            several sections (see :func:`stimpute.tl.impute`).
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
        count scale), ``adata.obsm['X_' + key_added]`` (the fused latent, float32) and ``adata.uns[key_added]`` (``params``, ``device``, ``wall_time``, and the
        training ``history``/``best_epoch`` of the model).
        """
        start = time.perf_counter()
        key_added, image_key, output, keep_observed, copy = self._predict_options(
            key_added=key_added, image_key=image_key, output=output, keep_observed=keep_observed, copy=copy
        )
        X, coords, groups, image = self._prediction_inputs(
            adata, layer=layer, key_added=key_added, image_key=image_key, library_key=library_key
        )
        from .._nn._data import attach_projection, prepare

        prep = prepare(X, config=self.config, norm=self.config["norm"], coords=coords, image=image, groups=groups)
        attach_projection(prep, self.net)
        out, latent = self.readout(prep, X, output=output, keep_observed=keep_observed)
        if copy:
            adata = adata.copy()
        params = dict(self.config.get("params", {}))
        trained = {"model_layer": params.get("layer"), "model_data_id": params.pop("data_id", None)}
        params.update({k: str(v) for k, v in trained.items() if v is not None})  # the weights' lineage
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
        write_result(
            adata,
            key_added,
            out,
            params=params,
            history=self.config.get("history", EMPTY_HISTORY),
            best_epoch=int(self.config.get("best_epoch", -1)),
            device=str(self.device),
            wall_time=time.perf_counter() - start,
            extra={"fusion_weights": self.fusion_weights, "trained": False},
            latent=latent,
        )
        logg.info(
            f"    imputed with the trained {self.method} model: added `adata.layers[{key_added!r}]`", time_start=start
        )
        return adata if copy else None

    def _predict_options(
        self,
        *,
        key_added: str | None,
        image_key: str | None,
        output: str | None,
        keep_observed: bool | None,
        copy: bool,
    ) -> tuple[str, str, str, bool, bool]:
        """``predict``'s options checked, with the training's values as defaults."""
        key_added = (
            IMPUTED_PREFIX + self.method
            if key_added is None
            else check_key_string(key_added, name="key_added", writes_uns=True)
        )
        if image_key is not None:
            image_key = check_key_string(image_key, name="image_key")
        image_key = self.config.get("image_key", IMAGE_FEATURES_KEY) if image_key is None else image_key
        trained_output = self.config.get("output", "conditional")
        output = trained_output if output is None else output
        keep_observed = check_bool(keep_observed, name="keep_observed", allow_none=True)
        if keep_observed is None:  # as in training for the training's output, else the output's own default
            default = output == "conditional"
            keep_observed = bool(self.config.get("keep_observed", default)) if output == trained_output else default
        copy = check_bool(copy, name="copy")
        check_output(output, self.config)
        return key_added, image_key, output, keep_observed, copy

    def _prediction_inputs(
        self, adata: AnnData, *, layer: str | None, key_added: str, image_key: str, library_key: str | None
    ) -> tuple[Any, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """What the network reads from ``adata`` (counts, positions, sections, image features), checked."""
        check_adata(adata)
        self._check_genes(adata)  # first: other genes make every other check moot
        uses_image = "image" in self.config["modalities"]
        has_axes = self.config.get("image_features") is not None
        # the image_features call suggested in messages names the object's library column when it holds several
        hint_key = library_key if library_key is not None or not uses_image else suggested_library_key(adata)
        X, _ = read_counts(adata, layer, training=False)
        coords, groups = read_positions(adata, self.method, needs_coords=self._needs_coords(), library_key=library_key)
        image = read_image_features(adata, image_key) if uses_image else None
        if uses_image and image is None:  # a trained model: its modalities are fixed
            self._missing_image(image_key, hint_key)
        n_params = sum(p.numel() for p in self.net.parameters())
        check_memory(adata.shape, n_params=n_params, max_dense_gb=float(self.config.get("max_dense_gb", 8.0)))
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
        return X, coords, groups, image

    def _check_image_axes(self, adata: AnnData, image_key: str, library_key: str | None = None) -> None:
        """Refuse image features put on other axes than the training section's (PCA fitted to each section)."""
        from .._image._projection import PROJECTION_KEY, same_projection

        ours = self.config.get("image_features")
        if ours is None:  # trained on features without a stored record (or by an older stimpute): cannot check
            return
        record = adata.uns.get(image_key)
        theirs = record.get(PROJECTION_KEY) if isinstance(record, Mapping) else None
        if theirs is None:
            warn(
                f"`adata.uns[{image_key!r}]` does not say how `adata.obsm[{image_key!r}]` was made, so it cannot be "
                f"checked against the model's image axes; compute it with `{self._image_call(image_key, library_key)}`.",
                ImageFeatureWarning,
            )
            return
        if not same_projection(theirs, ours[PROJECTION_KEY]):
            msg = (
                f"`adata.obsm[{image_key!r}]` is on other axes than the features the model was trained on (image "
                "features are standardised and reduced with a PCA fitted to each section, so the same column means "
                f"something else). Recompute them on the model's axes: `{self._image_call(image_key, library_key)}`."
            )
            raise ValueError(msg)

    def _missing_image(self, image_key: str, hint_key: str | None) -> None:
        fix = (
            f"Compute them on the model's axes: `{self._image_call(image_key, hint_key)}`."
            if self.config.get("image_features") is not None
            else f"Compute them with `st.pp.image_features(adata, key_added={image_key!r})` and the settings "
            "used for the training section (encoder, tile_scale, n_comps)."
        )
        msg = f"The {self.method} model reads image features from `adata.obsm[{image_key!r}]`, which is missing. {fix}"
        raise KeyError(msg)

    def _image_call(self, image_key: str, library_key: str | None = None) -> str:
        """The ``st.pp.image_features`` call that gives ``obsm[image_key]`` on the model's axes."""
        from .._image._reference import reference_call

        return reference_call({**self.config["image_features"], "key": image_key}, library_key=library_key)

    def _needs_coords(self) -> bool:
        c = self.config
        # spatial_reg: training only
        return "position" in c["modalities"] or bool(c.get("neighbours")) or int(c.get("graph_hops", 0)) > 0

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
        from .._nn._checkpoint import write_state
        from .._version import __version__

        write_state(self.net, path / MODEL_FILE)
        config = dict(self.config)
        config["var_names"] = self.var_names
        config["stimpute_version"] = __version__
        config["format_version"] = FORMAT_VERSION
        with open(path / CONFIG_FILE, "w") as fh:
            json.dump(plain_values(config), fh, indent=1)
        logg.info(f"saved {self.method} model to {str(path)!r}")


def load_model(dirname: str | os.PathLike, device: str | None = None) -> ImputationModel:
    """Load a model written by :meth:`ImputationModel.save` (``weights_only=True``)."""
    from .._nn._device import float32_default

    with float32_default():
        return _load_model(dirname, device)


def _load_model(dirname: str | os.PathLike, device: str | None) -> ImputationModel:
    from .._nn._checkpoint import read_state
    from .._nn._device import resolve_device
    from .._nn._module import build_net

    if not isinstance(dirname, str | os.PathLike):
        msg = f"`dirname` must be a folder path (str or os.PathLike), got {dirname!r}."
        raise TypeError(msg)
    path = Path(dirname)
    if not (path / MODEL_FILE).exists() or not (path / CONFIG_FILE).exists():
        msg = f"{str(path)!r} holds no saved model (expected {MODEL_FILE!r} and {CONFIG_FILE!r}); save one with `model.save(dir)`."
        raise FileNotFoundError(msg)
    config = read_config(path / CONFIG_FILE)
    dev = resolve_device(device)
    try:
        net = build_net(config)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        msg = (
            f"{str(path / CONFIG_FILE)!r} does not describe a stimpute network ({type(err).__name__}: {err}); {RESAVE}"
        )
        raise ValueError(msg) from err
    state = read_state(path / MODEL_FILE, dev, fix=RESAVE)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        msg = (
            f"The weights in {str(path / MODEL_FILE)!r} do not fit the network described by {CONFIG_FILE!r} "
            f"({str(err).splitlines()[0]} ...); the two files come from different models. {RESAVE}"
        )
        raise ValueError(msg) from err
    net.to(dev)
    net.eval()
    var_names = config.pop("var_names")
    return ImputationModel(net, config, var_names, dev)
