"""Impute a spatial count matrix: ``st.tl.impute`` and ``st.tl.load_model``.

torch is imported only inside the functions that train or load a network.
"""

from __future__ import annotations

import copy as copy_module
import time
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from .. import _logging as logg
from .._constants import IMAGE_FEATURES_KEY, IMPUTED_PREFIX, MAX_SEED, NETWORK_METHODS, SPATIAL_KEY
from .._graph import warn_small_sections
from .._lineage import holdout_id_of
from .._settings import check_device_name, settings
from .._validate import (
    as_csr,
    check_adata,
    check_bool,
    check_choice,
    check_counts,
    check_key_string,
    check_output_key,
    check_positive_int,
    get_matrix,
    is_whole,
    plain_values,
)
from ..get._spatial import library_groups, spatial_coords

if TYPE_CHECKING:
    from .._model._io import ImputationModel

__all__ = ["impute", "load_model"]

Method = Literal["multimodal", "autoencoder", "positional", "image", "knn"]
METHODS = (*NETWORK_METHODS, "knn")
LOSSES = ("mse", "nb", "poisson")
OUTPUTS = ("conditional", "expected", "normalized")
MODALITIES = ("counts", "position", "image")

# Defaults of the method-specific keyword arguments, chosen by measurement on the two DLPFC
# sections (benchmarks/results/impute_dlpfc.md). Shared training options first, then per method.
_TRAINING = {
    "weight_decay": 1e-5,
    "patience": 4,
    "lr_decay": 0.3,
    "val_fraction": 0.1,
    "mask_fraction": 0.3,
    "spot_mask": None,
    "observed_weight": 0.0,
    "detection": False,
    "detection_weight": 1.0,
}
_ARCH = {
    "latent_dim": 64,
    "decoder_hidden": (128,),
    "dropout": 0.0,
    "library_size": True,
}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "knn": {"n_neighbors": 30, "shrinkage": 2.0},
    "autoencoder": {
        **_TRAINING,
        **_ARCH,
        "count_hidden": (512,),
        "count_pcs": 0,
        "spatial_reg": 0.0,
        "n_neighbors": 6,
    },
    "positional": {
        **_TRAINING,
        **_ARCH,
        "position_hidden": (32, 64, 256),
        "n_frequencies": 6,
        "poly_degree": 3,
    },
    "image": {**_TRAINING, **_ARCH, "image_hidden": (64,)},
    "multimodal": {
        **_TRAINING,
        **_ARCH,
        "modalities": MODALITIES,
        "count_hidden": (256,),
        "count_pcs": 64,
        "normalize_counts": True,
        "neighbours": True,
        "neighbour_skip": True,
        "n_neighbors": 18,
        "shrinkage": 2.0,
        "position_hidden": (64, 128),
        "n_frequencies": 6,
        "poly_degree": 3,
        "image_hidden": (64,),
        "modality_dropout": 0.0,
        "spatial_reg": 0.0,
    },
}
_METHOD_MODALITIES = {"autoencoder": ("counts",), "positional": ("position",), "image": ("image",)}
MAX_EPOCHS = 100


def impute(
    adata: AnnData,
    method: Method = "multimodal",
    *,
    layer: str | None = None,
    key_added: str | None = None,
    image_key: str = IMAGE_FEATURES_KEY,
    library_key: str | None = None,
    device: str | None = None,
    max_epochs: int | None = None,
    batch_size: int = 256,
    learning_rate: float = 3e-3,
    loss: Literal["mse", "nb", "poisson"] = "mse",
    output: Literal["conditional", "expected", "normalized"] = "conditional",
    keep_observed: bool | None = None,
    max_dense_gb: float = 8.0,
    random_state: int = 0,
    progress: bool | None = None,
    return_model: bool = False,
    copy: bool = False,
    **method_kwargs: Any,
) -> AnnData | ImputationModel | tuple[AnnData, ImputationModel] | None:
    """Impute the counts of a spatial section from its counts, spot positions and H&E image features.

    Every learned method is a network trained on the observed non-zero entries of ``layer`` with a
    denoising mask: in each minibatch a random part (``mask_fraction``) of each spot's observed
    non-zero counts is hidden from the input and the loss is computed on those entries, just as
    :func:`stimpute.pp.holdout` hides entries. A validation set of observed entries (``val_fraction`` of the
    entries of at most 2,048 spots; never an entry that is zero in ``layer``) drives a learning-rate decay and early stopping, and the
    weights of the best epoch are kept. Inputs and targets are ``log1p`` counts; the written layer is
    back in the count scale of ``layer``, capped at each gene's largest observed count.

    Methods (the four ideas of the reference MSc project, plus a baseline):

    ``"multimodal"``
        Three encoders, each to a latent vector: counts (the spot's own masked ``log1p`` counts and the
        mean ``log1p`` counts of its ``n_neighbors`` nearest spots, both projected on ``count_pcs``
        fixed principal axes), position (Fourier and polynomial features of the normalised (x, y)) and
        image (``obsm[image_key]``, standardised). The latents are summed with learned weights lambda (a
        softmax, recorded in ``uns[key_added]['fusion_weights']``) and decoded to all genes. A per-gene
        linear term in the neighbours' values of the same gene (``neighbour_skip``) carries the
        gene-specific spatial signal past the shared latent vector. ``modality_dropout > 0`` drops each
        modality of each spot with that probability during training. ``modalities=`` leaves modalities
        out (ablations).
    ``"autoencoder"``
        Counts only (AutoRec style): the spot's masked counts -> hidden (512, ReLU) -> latent -> genes.
        ``spatial_reg > 0`` adds a penalty pulling each spot's prediction towards the mean prediction of
        its ``n_neighbors`` nearest spots (it keeps every spot's last prediction: a second dense spots x
        genes float32 matrix, counted against ``max_dense_gb``).
    ``"positional"``
        A function of position only: (x, y) features -> MLP (32-64-256) -> latent -> genes.
    ``"image"``
        Image features only: ``obsm[image_key]`` -> MLP -> genes.
    ``"knn"``
        No training: the mean ``log1p`` value of the gene's observed non-zero counts among the spot's
        ``n_neighbors`` nearest spots, shrunk towards the gene's mean by ``shrinkage`` pseudo-neighbours.

    All learned methods also read each spot's log library size (``library_size=True``), because hidden
    counts scale with sequencing depth.

    **Spots without counts** (hidden whole by :func:`stimpute.pp.holdout` with ``strategy="spots"``, or
    empty in ``layer``) are unobserved, not spots of zeros: they are never trained on and never act as
    anyone's neighbour; their depth is guessed from their 6 nearest spots with counts, and the fused model
    reads them through position, image and the neighbours' values only. Training hides the counts of the
    same share of spots from the input (``spot_mask``), so the model has learnt that case. Whole hidden
    spots are scored on every gene, zeros included: predict them with ``detection=True,
    output="expected"`` (see ``benchmarks/results/image_her2st.md``).

    **What the layer holds** (``output``). Hidden non-zero entries and true zeros look the same in
    ``layer``, so one number per entry cannot serve every use:

    ``"conditional"`` (default)
        The expected count *given that the gene is detected*, at the spot's own depth. This is what a
        holdout of non-zero entries (:func:`stimpute.pp.holdout` with ``"entries"``) scores, and
        what :func:`stimpute.tl.evaluate` should see.
    ``"normalized"``
        The prediction at the median depth of ``layer`` for every spot (depth-normalised, denoised
        expression; observed values are left out unless ``keep_observed=True``, then rescaled to that
        depth). Use it for clustering: cluster maps of ``"conditional"`` layers follow sequencing
        depth rather than tissue domains (see the benchmark). Like ``"conditional"``, it is the level
        *given detection*, so a gene detected in few spots (a rare domain marker) looks flatter than
        in the counts; for maps of such genes, train with ``detection=True`` and read out
        ``"expected"``, which keeps how often the gene is detected.
    ``"expected"``
        The expected count including dropouts at the spot's own depth; needs ``detection=True`` or a
        count likelihood (``loss="nb"``/``"poisson"``). The denoised count: observed values are replaced
        too, unless ``keep_observed=True``. This is the readout for a holdout that scores every entry,
        zeros included (``strategy="thinning"``), where keeping the observed counts would keep their noise: on
        DLPFC 151673 (2,000 genes) the fused model with ``loss="nb"`` or ``detection=True`` scores 0.280 log1p
        RMSE with the observed counts replaced, against 0.357 with them kept and 0.287 for MAGIC
        (``benchmarks/README.md``).

    ``loss="mse"`` (default) is the squared error on ``log1p`` values of observed non-zero entries
    (the reference's masked loss). ``"nb"``/``"poisson"`` are count likelihoods with per-spot size
    factors fitted on all entries, zeros included; on DLPFC they score worse on the holdout (see the
    benchmark), and their ``"conditional"`` output is ``mean / P(count > 0)``.

    Parameters
    ----------
    adata
        Annotated data with raw counts (spots x genes) and, depending on the method,
        ``obsm['spatial']`` (positional, multimodal, knn) and ``obsm[image_key]`` (image, multimodal).
    method
        ``"multimodal"``, ``"autoencoder"``, ``"positional"``, ``"image"`` or ``"knn"``.
    layer
        Layer with the counts to learn from; ``None`` uses ``adata.X``. Typically ``"holdout_train"``
        after :func:`stimpute.pp.holdout`. Never modified.
    key_added
        Layer and ``uns`` key to write; default ``"imputed_" + method``.
    image_key
        Key of the per-spot image features in ``adata.obsm``. When missing and the method needs them,
        they are computed with ``st.pp.image_features(adata, key_added=image_key)`` (logged).
    library_key
        Column of ``adata.obs`` naming each spot's section, for an object that holds several (as
        :func:`anndata.concat` and squidpy's ``library_key`` make them): spatial neighbours are then
        searched within a spot's own section and positions are normalised per section (each section's
        bounding box to the unit square: this assumes the sections share an orientation, as adjacent
        serial sections do; rotated or mirrored sections need aligned coordinates first), while one
        network is trained on all spots. Required (a :class:`ValueError` says so) when the method reads
        positions or neighbours and ``adata.uns['spatial']`` holds several libraries (unless every spot is
        of one of them: a section cut out of a joined object) or ``obs['library_id']`` names several
        sections; ``None``: one section.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``; ``None`` uses ``st.settings.device``.
    max_epochs
        Upper bound on training epochs (early stopping usually ends sooner); default 100.
    batch_size
        Spots per minibatch.
    learning_rate
        Initial Adam learning rate (multiplied by ``lr_decay`` whenever the validation loss stalls).
    loss
        ``"mse"``, ``"nb"`` or ``"poisson"`` (see above).
    output
        ``"conditional"``, ``"normalized"`` or ``"expected"`` (see above). A model returned with
        ``return_model=True`` gives the others without retraining: ``model.predict(adata, output=...)``.
    keep_observed
        Keep the observed non-zero values of ``layer`` and impute only its zeros. ``None``: ``True``
        for ``output="conditional"``, ``False`` for the denoised readouts ``"normalized"`` and ``"expected"``.
        It does not change the scores of holdouts that hide entries (``"entries"``, ``"gene_folds"``,
        ``"spots"``: they score entries that are zero in ``layer``); under ``"thinning"``, which scores every
        entry, keeping the observed counts keeps their sampling noise.
    max_dense_gb
        Refuse to run when the dense float32 output plus the network (with gradients and optimiser
        state) would exceed this many GB; subset genes (e.g. highly variable ones) instead.
    random_state
        Seed of the weights, minibatch order, masks and the validation split. On CPU the same seed gives
        bit-identical output; on a GPU the draws are the same but kernels round differently (close, not
        bit-identical results). The caller's torch random state is left as it was.
    progress
        Show a tqdm bar with the losses; ``None`` uses ``st.settings.progress_bar``.
    return_model
        Also return the trained :class:`~stimpute.tl.ImputationModel` (to save it, get another
        ``output``, or impute another section with the same genes).
    copy
        Work on and return a copy of ``adata``.
    **method_kwargs
        Method options (defaults in brackets):

        all learned methods
            ``weight_decay`` [1e-5] (L2 penalty), ``patience`` [4] (epochs without a 0.1% drop of the
            validation loss before stopping), ``lr_decay`` [0.3] (learning-rate factor when the
            validation loss stalls; 1 keeps it fixed), ``val_fraction`` [0.1], ``mask_fraction`` [0.3]
            (share of each spot's entries hidden from the input in every minibatch), ``spot_mask``
            [None] (share of the spots of each minibatch whose counts are hidden from the input
            entirely, with the library size set to the mean, so that the model learns to predict a
            spot it has no counts for; ``None``: the share of spots without any count in ``layer``,
            e.g. those hidden by ``st.pp.holdout(strategy="spots")``, so 0 when every spot has counts),
            ``observed_weight`` [0.0] (loss weight of the entries left in the input), ``detection``
            [False] (add a head for ``P(count > 0)``, trained with cross-entropy), ``detection_weight``
            [1.0], ``latent_dim`` [64], ``decoder_hidden`` [(128,)], ``dropout`` [0.0],
            ``library_size`` [True].
        ``"autoencoder"``
            ``count_hidden`` [(512,)], ``count_pcs`` [0] (all genes in), ``spatial_reg`` [0.0],
            ``n_neighbors`` [6].
        ``"positional"``
            ``position_hidden`` [(32, 64, 256)], ``n_frequencies`` [6], ``poly_degree`` [3].
        ``"image"``
            ``image_hidden`` [(64,)].
        ``"multimodal"``
            ``modalities`` [("counts", "position", "image")], ``count_hidden`` [(256,)],
            ``count_pcs`` [64], ``normalize_counts`` [True] (the count encoder reads counts scaled to a
            common depth; depth enters only through the library size), ``neighbours`` [True],
            ``neighbour_skip`` [True], ``n_neighbors`` [18], ``shrinkage`` [2.0], ``position_hidden``
            [(64, 128)], ``n_frequencies`` [6], ``poly_degree`` [3], ``image_hidden`` [(64,)],
            ``modality_dropout`` [0.0], ``spatial_reg`` [0.0].
        ``"knn"``
            ``n_neighbors`` [30], ``shrinkage`` [2.0].

    Returns
    -------
    ``None``; the copy when ``copy=True``; the model when ``return_model=True``; ``(copy, model)``
    with both. Sets:

    ``adata.layers['imputed_{method}' | key_added]``
        Dense float32 imputed counts in the scale of ``layer``.
    ``adata.uns['imputed_{method}' | key_added]``
        ``params`` (every option used), ``history`` (``{"epoch", "train_loss", "val_loss"}``; empty for
        ``"knn"``), ``best_epoch`` (the epoch whose weights were kept; -1 for ``"knn"``), ``device``,
        ``wall_time`` (seconds), ``train_time``, ``stopped_early``, ``n_parameters`` and
        ``fusion_weights`` (modality -> lambda).

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50)
    >>> st.pp.holdout(adata, fraction=0.5)
    >>> adata.obsm["X_image"] = st.get.spot_crops(adata).mean(axis=(1, 2))  # mean colour per spot
    >>> model = st.tl.impute(adata, "multimodal", layer="holdout_train", max_epochs=5, return_model=True)
    >>> adata.layers["imputed_multimodal"].dtype
    dtype('float32')
    >>> model.predict(adata, layer="holdout_train", output="normalized", key_added="for_clustering")
    >>> st.tl.impute(adata, "knn", layer="holdout_train")
    >>> sorted(adata.uns["imputed_knn"])[:3]
    ['best_epoch', 'device', 'fusion_weights']
    """
    start = time.perf_counter()
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
    if isinstance(random_state, bool) or not isinstance(random_state, Integral) or random_state < 0:
        msg = f"`random_state` must be a non-negative integer (CPU runs are deterministic for a fixed seed), got {random_state!r}."
        raise TypeError(msg)
    if random_state > MAX_SEED:
        msg = f"`random_state` must be at most 2**32 - 1 (numpy, torch and scikit-learn seeds), got {random_state}."
        raise ValueError(msg)
    random_state = int(random_state)
    progress = check_bool(progress, name="progress", allow_none=True)
    progress = settings.progress_bar if progress is None else progress
    keep_observed = check_bool(keep_observed, name="keep_observed", allow_none=True)
    return_model = check_bool(return_model, name="return_model")
    copy = check_bool(copy, name="copy")
    if method == "knn" and return_model:
        msg = "`method='knn'` trains no model; use `return_model=False` (the default)."
        raise ValueError(msg)
    opts = _method_options(method, method_kwargs)
    keep_observed = (output == "conditional") if keep_observed is None else keep_observed
    if method != "knn":
        _check_output(output, {"loss": loss, "detection": opts["detection"]})
    modalities = tuple(opts.get("modalities", _METHOD_MODALITIES.get(method, ())))
    needs_coords = method in ("knn", "positional") or (
        method == "multimodal" and ("position" in modalities or opts["neighbours"])
    )
    needs_coords = needs_coords or opts.get("spatial_reg", 0.0) > 0
    n_params = 0 if method == "knn" else _estimate_parameters(method, opts, adata.n_vars, modalities)
    X, coords, groups, image = _check_inputs(
        adata,
        method,
        layer=layer,
        library_key=library_key,
        image_key=image_key,
        modalities=modalities,
        needs_coords=needs_coords,
        max_dense_gb=max_dense_gb,
        n_params=n_params,
        compute_image=True,
        # the spatial_reg cache holds every output column (two per gene with a detection head)
        dense_copies=1 + ((2 if opts.get("detection") else 1) if opts.get("spatial_reg", 0.0) > 0 else 0),
    )
    check_output_key(adata, key_added, inputs=["X" if layer is None else layer, image_key], methods=METHODS)
    if "n_neighbors" in opts and (method == "knn" or opts.get("neighbours") or opts.get("spatial_reg", 0.0) > 0):
        warn_small_sections(groups, opts["n_neighbors"])
    dev = None
    if method != "knn":  # the device is checked before anything is written (image features, a copy)
        from .._model._device import resolve_device

        dev = resolve_device(device)

    if copy:
        adata = adata.copy()
        X = get_matrix(adata, layer)
    computed_image = image is None and "image" in modalities
    previous_record = adata.uns.get(image_key)  # an earlier st.pp.image_features record, put back on failure
    if computed_image:
        image = _compute_image_features(adata, image_key, library_key)

    try:  # a failed run must leave adata as it found it (see the except clause)
        layer_name = "X" if layer is None else layer
        params: dict[str, Any] = {
            "method": method,
            "layer": layer_name,
            "image_key": image_key if "image" in modalities else "none",
            "loss": loss if method != "knn" else "none",
            "output": output,
            "keep_observed": bool(keep_observed),
            "random_state": random_state,
            "holdout_id": holdout_id_of(adata, layer),
            **{k: _plain(v) for k, v in opts.items()},
        }
        params["library_key"] = "none" if library_key is None else library_key
        logg.info(f"imputing {'adata.X' if layer is None else f'adata.layers[{layer!r}]'} with method={method!r}")

        if method == "knn":
            out = _knn_predict(X, coords, opts, output, groups)
            if keep_observed:
                _restore(out, X, to_depth=_median_total(X) if output == "normalized" else None)
            _write_result(
                adata,
                key_added,
                out,
                params=params,
                history={"epoch": [], "train_loss": [], "val_loss": []},
                best_epoch=-1,
                device="cpu",
                wall_time=time.perf_counter() - start,
                extra={"fusion_weights": {}, "train_time": 0.0, "stopped_early": False, "n_parameters": 0},
            )
            logg.info(
                f"    finished: added `adata.layers[{key_added!r}]` and `adata.uns[{key_added!r}]`", time_start=start
            )
            return adata if copy else None

        from .._model._fit import fit_model
        from .._model._io import reference_library
        from .._model._train import predict

        params.update({"max_epochs": max_epochs, "batch_size": batch_size, "learning_rate": learning_rate})
        config = _network_config(method, loss, output, opts, modalities, image_key, keep_observed, max_dense_gb)
        if "image" in modalities:
            record = _image_record(adata, image_key, n_columns=image.shape[1])
            if record is not None:  # lets another section's features be put on these axes
                config["image_features"] = record
        training = {
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            **{k: opts[k] for k in _TRAINING if k != "detection"},
            "modality_dropout": float(opts.get("modality_dropout", 0.0)),
        }
        model, record, prep = fit_model(
            X,
            var_names=list(map(str, adata.var_names)),
            coords=coords,
            image=image,
            config=config,
            training=training,
            device=dev,
            random_state=random_state,
            progress=progress,
            groups=groups,
        )
        params["spot_mask"] = float(record["spot_mask"])  # the share used (None: automatic)
        norm = model.config["norm"]
        out = predict(
            model.net,
            prep,
            dev,
            loss=loss,
            output=output,
            gene_max=norm["gene_max"],
            reference_library=reference_library(norm),
        )
        if keep_observed:
            _restore(out, X, to_depth=norm["library_median"] if output == "normalized" else None)
        history = {k: list(v) for k, v in record["history"].items()}
        model.config.update({"params": params, "history": history, "best_epoch": record["best_epoch"]})
        n_parameters = int(sum(p.numel() for p in model.net.parameters()))
        _write_result(
            adata,
            key_added,
            out,
            params=params,
            history=history,
            best_epoch=record["best_epoch"],
            device=str(dev),
            wall_time=time.perf_counter() - start,
            extra={
                "fusion_weights": model.fusion_weights,
                "train_time": float(record["train_time"]),
                "stopped_early": bool(record["stopped_early"]),
                "n_parameters": n_parameters,
            },
        )
        logg.info(
            f"    finished: kept epoch {record['best_epoch']} of {len(history['epoch'])} (lowest validation loss"
            + (
                f"; stopped: no relative improvement above min_delta for {opts['patience']} epochs"
                if record["stopped_early"]
                else ""
            )
            + f"); added `adata.layers[{key_added!r}]` and `adata.uns[{key_added!r}]`",
            time_start=start,
        )
        if return_model and copy:
            return adata, model
        if return_model:
            return model
        return adata if copy else None
    except BaseException:
        if computed_image:  # a failed run leaves adata as it found it: drop the features it computed
            adata.obsm.pop(image_key, None)
            adata.uns.pop(image_key, None)
            if previous_record is not None:
                adata.uns[image_key] = previous_record
        raise


def load_model(dirname, device: str | None = None) -> ImputationModel:
    """Load a model saved with ``model.save(dirname)``.

    Parameters
    ----------
    dirname
        Folder holding ``model.pt`` and ``config.json``.
    device
        Where to put the network; ``None`` uses ``st.settings.device``.

    Returns
    -------
    The :class:`~stimpute.tl.ImputationModel`; impute a section with the same genes with
    ``model.predict(adata, layer=...)``.

    Raises
    ------
    FileNotFoundError
        ``dirname`` lacks ``model.pt`` or ``config.json``.
    ValueError
        The folder was saved by a newer stimpute, or its files are damaged or do not belong together (not
        valid JSON, keys missing, weights of another architecture, a file ``torch.load(..., weights_only=True)``
        cannot read); the message names the file.

    Examples
    --------
    >>> import tempfile
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50)
    >>> model = st.tl.impute(adata, "autoencoder", max_epochs=2, progress=False, return_model=True)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     model.save(folder, overwrite=True)
    ...     st.tl.load_model(folder).predict(adata, key_added="imputed_again")
    >>> adata.layers["imputed_again"].shape
    (200, 50)
    """
    if device is not None:
        check_device_name(device)
    from .._model._io import load_model as _load

    return _load(dirname, device)


# ---------------------------------------------------------------------------------------------------
# helpers


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


def _method_options(method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
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
    for name in ("latent_dim", "patience", "n_neighbors", "n_frequencies"):
        if name in opts:
            opts[name] = check_positive_int(opts[name], name=name)
    if "count_pcs" in opts:
        opts["count_pcs"] = check_positive_int(opts["count_pcs"], name="count_pcs", minimum=0)
    if "poly_degree" in opts:
        opts["poly_degree"] = check_positive_int(opts["poly_degree"], name="poly_degree", minimum=0)
    for name in ("count_hidden", "position_hidden", "image_hidden", "decoder_hidden"):
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
    return opts


def _network_config(
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
        "count_hidden": list(opts.get("count_hidden", (256,))),
        "position_hidden": list(opts.get("position_hidden", (64,))),
        "image_hidden": list(opts.get("image_hidden", (64,))),
        "decoder_hidden": list(opts["decoder_hidden"]),
        "latent_dim": opts["latent_dim"],
        "neighbours": bool(opts.get("neighbours", False)),
        "neighbour_skip": bool(opts.get("neighbour_skip", False)),
        "shrinkage": float(opts.get("shrinkage", 2.0)),
        "n_neighbors": int(opts.get("n_neighbors", 6)),
        "library_size": bool(opts["library_size"]),
        "dropout": float(opts["dropout"]),
        "n_frequencies": int(opts.get("n_frequencies", 6)),
        "poly_degree": int(opts.get("poly_degree", 3)),
        "spatial_reg": float(opts.get("spatial_reg", 0.0)),
        "count_pcs": int(opts.get("count_pcs", 0)),
        "normalize_counts": bool(opts.get("normalize_counts", False)),
        "detection": bool(opts["detection"]) and loss == "mse",
        "output": output,
        "image_key": image_key,
        "keep_observed": bool(keep_observed),
        "max_dense_gb": max_dense_gb,
    }


def _estimate_parameters(method: str, opts: dict[str, Any], n_genes: int, modalities: tuple[str, ...]) -> int:
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


def _check_inputs(
    adata: AnnData,
    method: str,
    *,
    layer: str | None,
    image_key: str,
    modalities,
    needs_coords: bool,
    max_dense_gb: float,
    n_params: int,
    compute_image: bool,
    dense_copies: int = 1,
    training: bool = True,
    image_fix: str | None = None,
    library_key: str | None = None,
) -> tuple[sparse.spmatrix | np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validate everything a method reads; returns (counts, coords, sections, image features), each but the
    counts ``None`` when not read; sections are the integer codes of ``obs[library_key]`` (see ``library_groups``).

    ``dense_copies`` is the number of dense float32 spots x genes matrices the method holds: the output,
    plus the cache of last predictions when ``spatial_reg > 0``. ``image_fix`` is the call a trained model
    suggests when its image features are missing.
    """
    check_adata(adata)
    X = get_matrix(adata, layer)
    name = "adata.X" if layer in (None, "X") else f"adata.layers[{layer!r}]"
    check_counts(X, name=name, integer=False)
    if training and not is_whole(X):
        logg.warning(
            f"`{name}` holds non-integer values; the models expect raw counts (a normalised or log-transformed "
            "layer is imputed as if it were counts). Pass `layer=` naming raw counts if you have them."
        )
    coords = None
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
        coords = spatial_coords(adata)
        groups = library_groups(adata, library_key)
    else:
        # a wrong key is an error even where positions are optional
        given = library_groups(adata, library_key) if library_key is not None else None
        groups = None
        if SPATIAL_KEY in adata.obsm:
            # optional: the depth of spots without counts is then guessed from their nearest spots (in their section)
            try:
                coords = spatial_coords(adata)
            except (KeyError, ValueError, TypeError):
                coords = None
            if coords is not None:
                try:
                    groups = given if library_key is not None else library_groups(adata, None)
                except ValueError as err:  # several sections and no key: no neighbours across them
                    logg.info(
                        "    positions left unused (a spot without counts gets the mean depth, not its neighbours'): "
                        f"{err}"
                    )
                    coords = None
    image = None
    if "image" in modalities:
        if image_key in adata.obsm:
            image = np.asarray(adata.obsm[image_key])
            if hasattr(adata.obsm[image_key], "to_numpy"):
                image = adata.obsm[image_key].to_numpy()
            if image.ndim != 2 or not np.issubdtype(image.dtype, np.number):
                msg = (
                    f"`adata.obsm[{image_key!r}]` must be a numeric (n_obs, n_features) array, got shape {image.shape}."
                )
                raise ValueError(msg)
            if not np.isfinite(image).all():
                msg = f"`adata.obsm[{image_key!r}]` contains NaN or infinite values; recompute the image features."
                raise ValueError(msg)
        elif not training:  # a trained model: its modalities are fixed
            fix = (
                f"Compute them on the model's axes: `{image_fix}`."
                if image_fix
                else f"Compute them with `st.pp.image_features(adata, key_added={image_key!r})` and the settings "
                "used for the training section (encoder, tile_scale, n_comps)."
            )
            msg = f"The {method} model reads image features from `adata.obsm[{image_key!r}]`, which is missing. {fix}"
            raise KeyError(msg)
        else:
            lacking = _libraries_without_image(adata, library_key) if compute_image else []
            if not compute_image or lacking:
                call = f"st.pp.image_features(adata, key_added={image_key!r}" + (
                    f", library_key={library_key!r})" if library_key is not None else ")"
                )
                where = (
                    ""
                    if not compute_image
                    else ", and there is no H&E image in `adata.uns['spatial']` to compute them from"
                    if lacking == [None]
                    else f", and libraries {lacking} have no H&E image in `adata.uns['spatial']` to compute them from"
                )
                msg = (
                    f"`method={method!r}` needs image features in `adata.obsm[{image_key!r}]`, which is missing{where}. "
                    f"Compute them with `{call}` (needs the images), or use `method='autoencoder'`/`'positional'`"
                    + (" or `modalities=('counts', 'position')`." if method == "multimodal" else ".")
                )
                raise KeyError(msg)
    n_obs, n_vars = adata.shape
    if training and method != "knn":
        if n_vars < 2:
            msg = f"`adata` has {n_vars} gene(s); the networks impute a gene from the others, so at least 2 are needed."
            raise ValueError(msg)
        n_with = int((np.asarray(X.sum(axis=1), dtype=np.float64).ravel() > 0).sum())
        if n_with < 2:
            msg = f"Only {n_with} spot(s) of {name} have counts; at least 2 are needed to train."
            raise ValueError(msg)
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
    return X, coords, groups, image


def _libraries_without_image(adata: AnnData, library_key: str | None) -> list[str | None]:
    """The libraries ``st.pp.image_features`` finds no image for (``[None]``: the object's only one, or no
    ``uns['spatial']``); raises on libraries missing from ``uns['spatial']`` and on several libraries without a key.
    """
    from ..get._spatial import has_image, uns_libraries

    _, libraries = uns_libraries(adata, library_key)
    return [lib for lib in libraries or [None] if not has_image(adata, lib)]


def _compute_image_features(adata: AnnData, image_key: str, library_key: str | None) -> np.ndarray:
    from .. import pp

    call = f"st.pp.image_features(adata, key_added={image_key!r}" + (
        f", library_key={library_key!r})" if library_key is not None else ")"
    )
    logg.info(f"    `adata.obsm[{image_key!r}]` not found: computing it with `{call}`")
    pp.image_features(adata, key_added=image_key, library_key=library_key)
    feats = adata.obsm[image_key]
    feats = feats.to_numpy() if hasattr(feats, "to_numpy") else np.asarray(feats)
    return np.asarray(feats, dtype=np.float64)


def _image_record(adata: AnnData, image_key: str, *, n_columns: int) -> dict | None:
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


def _knn_predict(X, coords: np.ndarray, opts: dict[str, Any], output: str, groups: np.ndarray | None) -> np.ndarray:
    from .._graph import spatial_graph
    from ._knn import knn_impute_log1p, log1p_csr

    # spots without any count (e.g. hidden whole) are unobserved: they are predicted, not averaged in
    has_counts = np.asarray(X.sum(axis=1), dtype=np.float64).ravel() > 0
    graph = spatial_graph(coords, opts["n_neighbors"], sources=has_counts, groups=groups)
    if output in ("expected", "normalized"):  # plain mean of the neighbours' counts, zeros included
        out = np.empty(X.shape, dtype=np.float32)
        C = as_csr(X, np.float32)  # read only (float16 layers too)
        if output == "normalized":  # every spot scaled to the median depth first
            C = sparse.diags(_depth_scale(C, _median_total(C))) @ C
        for start in range(0, X.shape[0], 512):
            out[start : start + 512] = (graph[start : start + 512] @ C).toarray()
        return out
    L = log1p_csr(X)
    out = knn_impute_log1p(L, graph, shrinkage=opts["shrinkage"])
    np.expm1(out, out=out)
    return out


def _check_output(output: str, config: dict) -> None:
    check_choice(output, OUTPUTS, name="output")
    if output == "expected" and config.get("loss", "mse") == "mse" and not config.get("detection", False):
        msg = (
            "`output='expected'` needs the probability that a gene is detected: train with `detection=True` "
            "(adds a detection head) or `loss='nb'`; or use `output='conditional'` or `'normalized'`."
        )
        raise ValueError(msg)


def _median_total(X) -> float:
    totals = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()  # float64: a float16 layer's totals overflow
    return float(np.median(totals[totals > 0])) if (totals > 0).any() else 1.0


def _depth_scale(C: sparse.csr_matrix, to_depth: float) -> np.ndarray:
    totals = np.asarray(C.sum(axis=1)).ravel().astype(np.float64)
    return np.divide(to_depth, totals, out=np.ones_like(totals), where=totals > 0).astype(np.float32)


def _restore(out: np.ndarray, X, to_depth: float | None = None) -> None:
    """Put the observed non-zero values of ``X`` back into ``out`` (scaled to depth ``to_depth`` if given)."""
    C = as_csr(X, np.float32, copy=True)  # eliminate_zeros works in place
    C.eliminate_zeros()
    rows = np.repeat(np.arange(C.shape[0]), np.diff(C.indptr))
    values = C.data
    if to_depth is not None:
        values = values * _depth_scale(C, to_depth)[rows]
    out[rows, C.indices] = values.astype(np.float32)


def _write_result(
    adata: AnnData,
    key_added: str,
    out: np.ndarray,
    *,
    params: dict[str, Any],
    history: dict[str, list],
    best_epoch: int,
    device: str,
    wall_time: float,
    extra: dict[str, Any],
) -> None:
    adata.layers[key_added] = np.ascontiguousarray(out, dtype=np.float32)
    adata.uns[key_added] = {
        "params": copy_module.deepcopy(params),  # not shared with a model's config (editing one edits the other)
        "history": {
            "epoch": np.asarray(history["epoch"], dtype=np.int64),
            "train_loss": np.asarray(history["train_loss"], dtype=np.float64),
            "val_loss": np.asarray(history["val_loss"], dtype=np.float64),
        },
        "best_epoch": int(best_epoch),
        "device": str(device),
        "wall_time": float(wall_time),
        **extra,
    }
