"""Impute a spatial count matrix: ``st.tl.impute`` and ``st.tl.load_model``.

``impute`` is a pipeline of named steps: options (:mod:`._impute_options`) -> inputs (:mod:`._impute_inputs`)
-> fit (:meth:`ImputationModel.fit`, the torch layer :mod:`stimpute._nn` below it) -> readout -> write
(:mod:`._readout`). torch is imported only inside the functions that train or load a network.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .._constants import IMAGE_FEATURES_KEY
from .._docs import DOC_LIBRARY_KEY, doc_params
from .._settings import check_device_name
from .._validate import get_matrix
from ._impute_inputs import Inputs, gather_inputs, image_features_if_missing
from ._impute_options import METHOD_DEFAULTS, ImputeRun, resolve_run
from ._readout import EMPTY_HISTORY, knn_predict, median_total, restore_observed, write_result

if TYPE_CHECKING:
    from ._model import ImputationModel

__all__ = ["METHOD_DEFAULTS", "impute", "load_model"]

Method = Literal["multimodal", "autoencoder", "positional", "image", "knn"]


@doc_params(library_key=DOC_LIBRARY_KEY)
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
        Four encoders, each to a latent vector: counts (the spot's own masked ``log1p`` counts and the
        mean ``log1p`` counts of its ``n_neighbors`` nearest spots, both projected on ``count_pcs``
        fixed principal axes), position (Fourier and polynomial features of the normalised (x, y)),
        image (``obsm[image_key]``, standardised) and a graph encoder (``graph_hops`` [4] hops of the
        sparse kNN graph of the spots, ``graph_neighbors`` [6] per spot: the depth-normalised counts
        projected on the same axes and propagated over the graph, ``[A P, A^2 P, ...]``, read by an MLP,
        so each spot's latent sees its neighbourhood a few spots wide; the propagation is sparse and done
        once, so minibatches stay rows). The latents are summed with learned weights lambda (a
        softmax, recorded in ``uns[key_added]['fusion_weights']``; the graph encoder as ``"graph"``), written
        to ``obsm['X_' + key_added]`` (the fused latent, for ``sc.pp.neighbors(use_rep=...)``) and decoded to
        all genes. On a section without image features nor an H&E image to compute them from, the fused
        model on its default modalities runs on counts and positions and says so (an
        :class:`~stimpute.ImageFeatureWarning`). A per-gene
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
    counts scale with sequencing depth. By default ``"image"`` and ``"positional"`` are therefore not
    single-modality: they also read each spot's depth from its counts. **Pure single-modality networks**:
    ``library_size=False`` leaves the library size out of the decoder, so that, with ``loss="mse"`` (the
    default), no readout reads any count of the spot it predicts (the counts are only the training targets):
    the ``"image"`` network is a function of ``obsm[image_key]`` alone, the ``"positional"`` one of the
    position alone. Use it for ablations that credit the image or the position by itself, e.g.
    ``st.tl.impute(adata, "image", layer="holdout_train", library_size=False)``. With ``loss="nb"``/
    ``"poisson"`` the ``"conditional"`` and ``"expected"`` readouts are still scaled by each spot's size factor
    (read ``output="normalized"`` for a depth-free map).

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
        zeros included (``strategy="thinning"``), where keeping the observed counts would keep their noise
        (see ``benchmarks/README.md``).

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
        {library_key}
        One network is trained on all spots. Required (a :class:`ValueError` says so)
        when the method reads positions or neighbours and ``adata.uns['spatial']`` holds several libraries
        (unless every spot is of one of them: a section cut out of a joined object) or ``obs['library_id']``
        names several sections; ``None``: one section.
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
            [False] (add a head for ``P(count > 0)``, trained with cross-entropy; with ``loss="mse"`` only, since
            ``"nb"``/``"poisson"`` give that probability already: combining them is a ValueError), ``detection_weight``
            [1.0], ``latent_dim`` [64], ``decoder_hidden`` [(128,)], ``dropout`` [0.0],
            ``library_size`` [True] (the decoder also reads the spot's log library size; ``False`` runs
            ``"image"`` and ``"positional"`` as pure single-modality networks, see above).
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
            ``modality_dropout`` [0.0], ``spatial_reg`` [0.0], ``graph_hops`` [4] (0: no graph encoder),
            ``graph_neighbors`` [6], ``graph_hidden`` [(256,)].
        ``"knn"``
            ``n_neighbors`` [30], ``shrinkage`` [2.0].

    Returns
    -------
    ``None``; the copy when ``copy=True``; the model when ``return_model=True``; ``(copy, model)``
    with both. Sets:

    ``adata.layers['imputed_{method}' | key_added]``
        Dense float32 imputed counts in the scale of ``layer``.
    ``adata.obsm['X_imputed_{method}' | 'X_' + key_added]``
        The learned methods' fused latent vector of each spot (float32, spots x ``latent_dim``), like scVI's
        ``X_scVI``: a representation for ``sc.pp.neighbors(adata, use_rep=...)``, Leiden, squidpy and
        :func:`stimpute.tl.compare_clusters`.
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
    >>> adata.obsm["X_imputed_multimodal"].shape  # the fused latent
    (200, 64)
    >>> sorted(adata.uns["imputed_knn"])[:3]
    ['best_epoch', 'device', 'fusion_weights']
    """
    start = time.perf_counter()
    run = resolve_run(
        adata,
        method,
        layer=layer,
        key_added=key_added,
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
        method_kwargs=method_kwargs,
    )
    inputs = gather_inputs(adata, run)
    if run.copy:
        adata = adata.copy()
        inputs.X = get_matrix(adata, run.layer)
    model = None
    with image_features_if_missing(adata, run, inputs):  # a failed run leaves adata as it found it
        params = run.params(adata)
        logg.info(f"imputing {'adata.X' if layer is None else f'adata.layers[{layer!r}]'} with method={method!r}")
        if run.method == "knn":
            out, result = _impute_knn(run, inputs)
        else:
            out, result, model = _impute_network(adata, run, inputs, params)
        write_result(adata, run.key_added, out, params=params, wall_time=time.perf_counter() - start, **result)
    logg.info(
        f"    finished: {_training_summary(run, result)}added `adata.layers[{run.key_added!r}]` and "
        f"`adata.uns[{run.key_added!r}]`",
        time_start=start,
    )
    if run.return_model:
        return (adata, model) if run.copy else model
    return adata if run.copy else None


def _impute_knn(run: ImputeRun, inputs: Inputs) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``"knn"`` readout (no training) and its record."""
    out = knn_predict(inputs.X, inputs.coords, run.opts, run.output, inputs.groups)
    if run.keep_observed:
        restore_observed(out, inputs.X, to_depth=median_total(inputs.X) if run.output == "normalized" else None)
    result = {
        "history": EMPTY_HISTORY,
        "best_epoch": -1,
        "device": "cpu",
        "extra": {"fusion_weights": {}, "train_time": 0.0, "stopped_early": False, "n_parameters": 0},
    }
    return out, result


def _impute_network(
    adata: AnnData, run: ImputeRun, inputs: Inputs, params: dict[str, Any]
) -> tuple[np.ndarray, dict[str, Any], ImputationModel]:
    """Fit the network of a learned method, read the training section out and return its record."""
    from ._impute_inputs import image_record
    from ._model import ImputationModel

    config = run.network_config()
    if "image" in run.modalities:
        record = image_record(adata, run.image_key, n_columns=inputs.image.shape[1])
        if record is not None:  # lets another section's features be put on these axes
            config["image_features"] = record
    model, record, prep = ImputationModel.fit(
        inputs.X,
        var_names=list(map(str, adata.var_names)),
        coords=inputs.coords,
        groups=inputs.groups,
        image=inputs.image,
        config=config,
        training=run.training(),
        device=inputs.device,
        random_state=run.random_state,
        progress=run.progress,
    )
    params["spot_mask"] = float(record["spot_mask"])  # the share used (None: automatic)
    out, latent = model.readout(prep, inputs.X, output=run.output, keep_observed=run.keep_observed)
    history = {k: list(v) for k, v in record["history"].items()}
    model.config.update({"params": params, "history": history, "best_epoch": record["best_epoch"]})
    extra = {
        "fusion_weights": model.fusion_weights,
        "train_time": float(record["train_time"]),
        "stopped_early": bool(record["stopped_early"]),
        "n_parameters": int(sum(p.numel() for p in model.net.parameters())),
    }
    result = {
        "history": history,
        "best_epoch": record["best_epoch"],
        "device": str(inputs.device),
        "extra": extra,
        "latent": latent,
    }
    return out, result, model


def _training_summary(run: ImputeRun, result: dict[str, Any]) -> str:
    """The log's note on which epoch was kept (empty for ``"knn"``)."""
    if run.method == "knn":
        return ""
    stopped = result["extra"]["stopped_early"]
    return (
        f"kept epoch {result['best_epoch']} of {len(result['history']['epoch'])} (lowest validation loss"
        + (f"; stopped: no relative improvement above min_delta for {run.opts['patience']} epochs" if stopped else "")
        + "); "
    )


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
    from ._model import load_model as _load

    return _load(dirname, device)
