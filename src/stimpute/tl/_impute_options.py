"""Options of ``st.tl.impute``: per-method defaults, their checks, and the typed record of one run.

The network's default sizes come from :data:`stimpute._nn._config.NETWORK_DEFAULTS` and the training defaults
from :class:`stimpute._nn._config.TrainingOptions`: this module only says which method takes which option and
where a method's default differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
from anndata import AnnData

from .._constants import IMPUTED_PREFIX, LOSSES, MAX_SEED, METHODS, MODALITIES, OUTPUTS
from .._lineage import data_id_of, holdout_id_of
from .._nn._config import METHOD_TRAINING_OPTIONS, NETWORK_DEFAULTS, TrainingOptions
from .._settings import check_device_name, settings
from .._validate import check_adata, check_bool, check_choice, check_key_string, check_positive_int
from ._readout import check_output

_N = NETWORK_DEFAULTS
_T = TrainingOptions()
# options every learned method takes: the training ones, the detection head and the shared architecture
_TRAINING = {k: getattr(_T, k) for k in METHOD_TRAINING_OPTIONS}
_TRAINING = {  # in the order of the docstring: the detection head's switch before its weight
    **{k: v for k, v in _TRAINING.items() if k != "detection_weight"},
    "detection": _N["detection"],
    "detection_weight": _T.detection_weight,
}
_ARCH = {k: _N[k] for k in ("latent_dim", "decoder_hidden", "dropout", "library_size")}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "knn": {"n_neighbors": 30, "shrinkage": _N["shrinkage"]},
    "autoencoder": {
        **_TRAINING,
        **_ARCH,
        "count_hidden": (512,),
        "count_pcs": 0,
        "spatial_reg": _N["spatial_reg"],
        "n_neighbors": _N["n_neighbors"],
    },
    "positional": {
        **_TRAINING,
        **_ARCH,
        "position_hidden": (32, 64, 256),
        "n_frequencies": _N["n_frequencies"],
        "poly_degree": _N["poly_degree"],
    },
    "image": {**_TRAINING, **_ARCH, "image_hidden": _N["image_hidden"]},
    "multimodal": {
        **_TRAINING,
        **_ARCH,
        "modalities": MODALITIES,
        "count_hidden": _N["count_hidden"],
        "count_pcs": 64,
        "normalize_counts": True,
        "neighbours": True,
        "neighbour_skip": True,
        "n_neighbors": 18,
        "shrinkage": _N["shrinkage"],
        "position_hidden": _N["position_hidden"],
        "n_frequencies": _N["n_frequencies"],
        "poly_degree": _N["poly_degree"],
        "image_hidden": _N["image_hidden"],
        "modality_dropout": _T.modality_dropout,
        "spatial_reg": _N["spatial_reg"],
        "graph_hops": 4,
        "graph_neighbors": _N["graph_neighbors"],
        "graph_hidden": _N["graph_hidden"],
    },
}
METHOD_MODALITIES = {"autoencoder": ("counts",), "positional": ("position",), "image": ("image",)}
MAX_EPOCHS = _T.max_epochs


@dataclass
class ImputeRun:
    """The checked options of one ``st.tl.impute`` call."""

    method: str
    key_added: str
    layer: str | None
    image_key: str
    library_key: str | None
    device: str | None
    max_epochs: int
    batch_size: int
    learning_rate: float
    loss: str
    output: str
    keep_observed: bool
    max_dense_gb: float
    random_state: int
    progress: bool
    return_model: bool
    copy: bool
    opts: dict[str, Any] = field(default_factory=dict)
    modalities: tuple[str, ...] = ()
    needs_coords: bool = False
    n_params: int = 0
    #: the fused model on its default modalities: without an image it runs on the others (``drop_image``)
    image_optional: bool = False

    def drop_image(self) -> None:
        """Leave the image modality out (a fused model on default modalities, for a section without an image)."""
        self.modalities = tuple(m for m in self.modalities if m != "image")
        self.opts["modalities"] = self.modalities

    def training(self) -> TrainingOptions:
        """The training options of a learned method."""
        return TrainingOptions(
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            **{k: self.opts[k] for k in METHOD_TRAINING_OPTIONS},
            modality_dropout=float(self.opts.get("modality_dropout", 0.0)),
        )

    def params(self, adata: AnnData) -> dict[str, Any]:
        """The ``uns[key_added]['params']`` record (h5ad-friendly values)."""
        params: dict[str, Any] = {
            "method": self.method,
            "layer": "X" if self.layer is None else self.layer,
            "image_key": self.image_key if "image" in self.modalities else "none",
            "loss": self.loss if self.method != "knn" else "none",
            "output": self.output,
            "keep_observed": bool(self.keep_observed),
            "random_state": self.random_state,
            "holdout_id": holdout_id_of(adata, self.layer),
            **{k: _plain(v) for k, v in self.opts.items()},
        }
        if self.method != "knn":  # the training values' fingerprint: its model's predictions carry it
            params["data_id"] = data_id_of(adata, self.layer)
        params["library_key"] = "none" if self.library_key is None else self.library_key
        if self.method != "knn":
            params.update(
                {"max_epochs": self.max_epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate}
            )
        return params

    def network_config(self) -> dict[str, Any]:
        """The JSON-serialisable description of the network (saved with a model)."""
        return network_config(
            self.method,
            self.loss,
            self.output,
            self.opts,
            self.modalities,
            self.image_key,
            self.keep_observed,
            self.max_dense_gb,
        )


def resolve_run(
    adata: AnnData,
    method: str,
    *,
    layer: str | None,
    key_added: str | None,
    image_key: str,
    library_key: str | None,
    device: str | None,
    max_epochs: int | None,
    batch_size: int,
    learning_rate: float,
    loss: str,
    output: str,
    keep_observed: bool | None,
    max_dense_gb: float,
    random_state: int,
    progress: bool | None,
    return_model: bool,
    copy: bool,
    method_kwargs: dict[str, Any],
) -> ImputeRun:
    """Check every argument of ``st.tl.impute`` (before ``adata``'s contents are read) and fill in the defaults."""
    check_adata(adata)
    check_choice(method, METHODS, name="method")
    check_choice(loss, LOSSES, name="loss")
    check_choice(output, OUTPUTS, name="output")
    key_added = (
        IMPUTED_PREFIX + method if key_added is None else check_key_string(key_added, name="key_added", writes_uns=True)
    )
    check_key_string(image_key, name="image_key")
    if device is not None:
        check_device_name(device)
    if max_epochs is None:
        max_epochs = MAX_EPOCHS
    elif method != "knn":
        max_epochs = check_positive_int(max_epochs, name="max_epochs")
    batch_size = check_positive_int(batch_size, name="batch_size", minimum=2)
    learning_rate = _check_positive_float(learning_rate, "learning_rate")
    max_dense_gb = _check_positive_float(max_dense_gb, "max_dense_gb")
    random_state = _check_random_state(random_state)
    progress = check_bool(progress, name="progress", allow_none=True)
    progress = settings.progress_bar if progress is None else progress
    keep_observed = check_bool(keep_observed, name="keep_observed", allow_none=True)
    return_model = check_bool(return_model, name="return_model")
    copy = check_bool(copy, name="copy")
    if method == "knn" and return_model:
        msg = "`method='knn'` trains no model; use `return_model=False` (the default)."
        raise ValueError(msg)
    opts = method_options(method, method_kwargs)
    keep_observed = (output == "conditional") if keep_observed is None else keep_observed
    if method != "knn" and opts["detection"] and loss != "mse":
        # the detection head is trained only with the masked log1p loss; a count likelihood already gives
        # P(count > 0): refuse rather than drop it silently while the record says detection=True
        msg = (
            f"`detection=True` cannot be combined with `loss={loss!r}`: the detection head is trained only with "
            f"`loss='mse'`, and `loss={loss!r}` already models P(count > 0) through its likelihood. Drop "
            "`detection=True` (its `output='expected'` works as it is), or use `loss='mse'` with `detection=True`."
        )
        raise ValueError(msg)
    if method != "knn":
        check_output(output, {"loss": loss, "detection": opts["detection"]})
    modalities = tuple(opts.get("modalities", METHOD_MODALITIES.get(method, ())))
    needs_coords = method in ("knn", "positional") or (
        method == "multimodal" and ("position" in modalities or opts["neighbours"] or opts["graph_hops"] > 0)
    )
    needs_coords = needs_coords or opts.get("spatial_reg", 0.0) > 0
    n_params = 0 if method == "knn" else estimate_parameters(method, opts, adata.n_vars, modalities)
    return ImputeRun(
        method=method,
        key_added=key_added,
        layer=layer,
        image_key=image_key,
        library_key=library_key,
        device=device,
        max_epochs=max_epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        loss=loss,
        output=output,
        keep_observed=keep_observed,
        max_dense_gb=max_dense_gb,
        random_state=random_state,
        progress=progress,
        return_model=return_model,
        copy=copy,
        opts=opts,
        modalities=modalities,
        needs_coords=needs_coords,
        n_params=n_params,
        image_optional=method == "multimodal" and "modalities" not in method_kwargs,
    )


def _check_random_state(random_state: Any) -> int:
    if isinstance(random_state, bool) or not isinstance(random_state, Integral) or random_state < 0:
        msg = f"`random_state` must be a non-negative integer (CPU runs are deterministic for a fixed seed), got {random_state!r}."
        raise TypeError(msg)
    if random_state > MAX_SEED:
        msg = f"`random_state` must be at most 2**32 - 1 (numpy, torch and scikit-learn seeds), got {random_state}."
        raise ValueError(msg)
    return int(random_state)


def network_config(
    method: str,
    loss: str,
    output: str,
    opts: dict[str, Any],
    modalities: tuple[str, ...],
    image_key: str,
    keep_observed: bool,
    max_dense_gb: float,
) -> dict[str, Any]:
    """The JSON-serialisable description of the network (saved with a model)."""
    return {
        "method": method,
        "loss": loss,
        "modalities": list(modalities),
        # options a method does not take are recorded at the network's defaults (their encoders are not built)
        "count_hidden": list(opts.get("count_hidden", _N["count_hidden"])),
        "position_hidden": list(opts.get("position_hidden", _N["position_hidden"])),
        "image_hidden": list(opts.get("image_hidden", _N["image_hidden"])),
        "decoder_hidden": list(opts["decoder_hidden"]),
        "latent_dim": opts["latent_dim"],
        "neighbours": bool(opts.get("neighbours", _N["neighbours"])),
        "neighbour_skip": bool(opts.get("neighbour_skip", _N["neighbour_skip"])),
        "shrinkage": float(opts.get("shrinkage", _N["shrinkage"])),
        "n_neighbors": int(opts.get("n_neighbors", _N["n_neighbors"])),
        "library_size": bool(opts["library_size"]),
        "dropout": float(opts["dropout"]),
        "n_frequencies": int(opts.get("n_frequencies", _N["n_frequencies"])),
        "poly_degree": int(opts.get("poly_degree", _N["poly_degree"])),
        "spatial_reg": float(opts.get("spatial_reg", _N["spatial_reg"])),
        "count_pcs": int(opts.get("count_pcs", _N["count_pcs"])),
        "normalize_counts": bool(opts.get("normalize_counts", _N["normalize_counts"])),
        "detection": bool(opts["detection"]) and loss == "mse",
        "output": output,
        "image_key": image_key,
        "keep_observed": bool(keep_observed),
        "max_dense_gb": max_dense_gb,
        "graph_hops": int(opts.get("graph_hops", _N["graph_hops"])),
        "graph_neighbors": int(opts.get("graph_neighbors", _N["graph_neighbors"])),
        "graph_hidden": list(opts.get("graph_hidden", _N["graph_hidden"])),
    }


def estimate_parameters(method: str, opts: dict[str, Any], n_genes: int, modalities: tuple[str, ...]) -> int:
    """Rough number of network weights (the gene-sized layers dominate)."""
    latent = opts["latent_dim"]
    dec = list(opts["decoder_hidden"])
    n = 0
    if "counts" in modalities:
        h = opts["count_hidden"][0]
        pcs = int(opts.get("count_pcs", 0))
        n += (pcs or n_genes) * h * (2 if opts.get("neighbours") else 1) + n_genes * pcs + h * latent
    widths = [latent + 1, *dec]
    n += sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    n += (dec[-1] if dec else latent + 1) * n_genes * (2 if opts.get("detection") else 1)
    return int(n)


def _check_positive_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value <= 0:
        msg = f"`{name}` must be a positive number, got {value!r}."
        raise ValueError(msg)
    return float(value)


def _plain(value: Any) -> Any:
    """Parameters as h5ad-friendly values (tuples to lists of the same type)."""
    if isinstance(value, tuple | list):
        if all(isinstance(v, str) for v in value):
            return [str(v) for v in value]
        return [int(v) if isinstance(v, Integral) else float(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    return value


def method_options(method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    defaults = METHOD_DEFAULTS[method]
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        msg = (
            f"Unknown option(s) {unknown} for `method={method!r}`; it accepts {sorted(defaults)} "
            "and the arguments of `st.tl.impute` itself (`max_epochs`, `batch_size`, `learning_rate`, `loss`, "
            "`output`, ...; see its docstring)."
        )
        raise TypeError(msg)
    opts = {**defaults, **kwargs}
    for name in ("latent_dim", "patience", "n_neighbors", "n_frequencies", "graph_neighbors"):
        if name in opts:
            opts[name] = check_positive_int(opts[name], name=name)
    for name in ("count_pcs", "graph_hops"):
        if name in opts:
            opts[name] = check_positive_int(opts[name], name=name, minimum=0)
    if "poly_degree" in opts:
        opts["poly_degree"] = check_positive_int(opts["poly_degree"], name="poly_degree", minimum=0)
    for name in ("count_hidden", "position_hidden", "image_hidden", "decoder_hidden", "graph_hidden"):
        if name in opts:
            sizes = opts[name]
            if isinstance(sizes, np.ndarray) and sizes.ndim == 1:  # e.g. a record read back from h5ad
                sizes = sizes.tolist()
            if isinstance(sizes, Integral):
                sizes = (sizes,)
            if not isinstance(sizes, tuple | list) or not all(
                isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes
            ):
                msg = f"`{name}` must be a tuple of positive layer widths, e.g. (256,), got {opts[name]!r}."
                raise ValueError(msg)
            if name != "decoder_hidden" and len(sizes) == 0:
                msg = f"`{name}` needs at least one layer width, e.g. (64,)."
                raise ValueError(msg)
            opts[name] = tuple(int(s) for s in sizes)
    for name in ("weight_decay", "observed_weight", "detection_weight", "dropout", "spatial_reg", "shrinkage"):
        if name in opts:
            v = opts[name]
            if isinstance(v, bool) or not isinstance(v, Real) or not np.isfinite(v) or v < 0:
                msg = f"`{name}` must be a non-negative number, got {v!r}."
                raise ValueError(msg)
            opts[name] = float(v)
    if opts.get("spot_mask") is not None:
        v = opts["spot_mask"]
        if isinstance(v, bool) or not isinstance(v, Real) or not 0 <= v <= 0.9:
            msg = f"`spot_mask` must be None (automatic) or a number in [0, 0.9], got {v!r}."
            raise ValueError(msg)
        opts["spot_mask"] = float(v)
    if "lr_decay" in opts:
        v = opts["lr_decay"]
        if isinstance(v, bool) or not isinstance(v, Real) or not 0 < v <= 1:
            msg = f"`lr_decay` must be in (0, 1] (1 keeps the learning rate fixed), got {v!r}."
            raise ValueError(msg)
        opts["lr_decay"] = float(v)
    for name, upper in (("val_fraction", 0.5), ("mask_fraction", 0.95), ("dropout", 0.9), ("modality_dropout", 0.9)):
        if name in opts:
            if isinstance(opts[name], bool) or not isinstance(opts[name], Real):
                msg = f"`{name}` must be a number, got {opts[name]!r}."
                raise TypeError(msg)
            v = float(opts[name])
            lower_ok = v > 0 if name == "mask_fraction" else v >= 0
            if not (lower_ok and v <= upper):
                msg = f"`{name}` must be in {'(0' if name == 'mask_fraction' else '[0'}, {upper}], got {opts[name]!r}."
                raise ValueError(msg)
            opts[name] = v
    for name in ("library_size", "neighbours", "neighbour_skip", "detection", "normalize_counts"):
        if name in opts and not isinstance(opts[name], bool | np.bool_):
            msg = f"`{name}` must be True or False, got {opts[name]!r}."
            raise TypeError(msg)
    if "modalities" in opts:
        mods = opts["modalities"]
        if isinstance(mods, np.ndarray) and mods.ndim == 1:  # e.g. a record read back from h5ad
            mods = [str(m) for m in mods.tolist()]
        if isinstance(mods, str):
            mods = (mods,)
        if not isinstance(mods, Sequence):
            msg = f"`modalities` must be a modality name or a list of them from {list(MODALITIES)}, got {mods!r}."
            raise TypeError(msg)
        bad = [m for m in mods if m not in MODALITIES]
        if bad or len(mods) == 0:
            msg = f"`modalities` must be a non-empty subset of {list(MODALITIES)}, got {opts['modalities']!r}."
            raise ValueError(msg)
        opts["modalities"] = tuple(m for m in MODALITIES if m in mods)
        if "counts" not in opts["modalities"]:
            opts["neighbours"] = False
    if opts.get("graph_hops", 0) > 0 and ("counts" not in opts.get("modalities", ()) or opts.get("count_pcs", 0) == 0):
        opts["graph_hops"] = 0  # the graph encoder propagates the projected counts: off without them
    return opts
