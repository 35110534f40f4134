"""Cluster every layer the same way and compare the clusterings: ``st.tl.compare_clusters``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import _logging as logg
from .._constants import CLUSTERS_KEY, DEFAULT_COMPARED_LAYERS, MAX_SEED
from .._settings import settings
from .._validate import (
    check_adata,
    check_choice,
    check_key_string,
    check_layer,
    check_output_key,
    check_positive_int,
    check_real_matrix,
    check_seed,
    get_matrix,
    is_whole,
    missing_obs_column,
)
from .._warnings import InputWarning, warn
from ..get._sections import library_groups, library_names
from ._clustering import _align, _by_size, _kmeans, _leiden, _neighbors, _pca, agreement

__all__ = ["compare_clusters"]

METHODS = ("leiden", "kmeans")
SCORE_COLUMNS = ("ari_reference", "nmi_reference", "ari_labels", "nmi_labels", "n_clusters", "resolution")
AGREEMENT = ("ari_reference", "nmi_reference", "ari_labels", "nmi_labels")


def compare_clusters(
    adata: AnnData,
    layers: Sequence[str | None] = DEFAULT_COMPARED_LAYERS,
    *,
    method: Literal["leiden", "kmeans"] = "leiden",
    n_clusters: int | None = None,
    resolution: float = 1.0,
    labels_key: str | None = None,
    library_key: str | None = None,
    reference: str | None = None,
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    key_added: str = CLUSTERS_KEY,
    random_state: int | None = 0,
    n_repeats: int = 1,
    copy: bool = False,
) -> AnnData | None:
    """Cluster each layer with the same standard pipeline and score the clusterings against each other.

    Every layer goes through the same steps on a private copy of its matrix (sparse input stays
    sparse; ``adata.X`` and the layers are never changed): library-size normalisation
    (:func:`scanpy.pp.normalize_total`), ``log1p``, the ``n_top_genes`` most variable genes
    (``flavor="seurat"``, which works on non-integer imputed values), PCA with ``n_pcs`` components,
    a ``n_neighbors`` nearest-neighbour graph, then Leiden clustering (or k-means on the PCA).
    Genes that are zero in every spot of a layer are left out of that layer's gene selection.

    Cluster ids of every layer are renamed to match the reference layer's (Hungarian matching on the
    contingency table), so the same domain has the same id, and the same colour, in every layer.
    Clusters without a partner get new ids after the matched ones.

    Parameters
    ----------
    adata
        Annotated data (spots x genes) with counts in ``X`` and/or the layers.
    layers
        Layers to cluster; ``"X"`` or ``None`` means ``adata.X``. A key of ``adata.obsm`` that is not a layer
        (e.g. the fused latent ``"X_imputed_multimodal"`` written by :func:`stimpute.tl.impute`) is a
        representation: it is clustered as it is (k-means on it, or Leiden on its neighbour graph), without
        normalisation or PCA. Imputed layers may be dense and
        non-integer but must be finite and non-negative.
    method
        ``"leiden"`` (:func:`scanpy.tl.leiden`, igraph flavour) or ``"kmeans"`` (scikit-learn
        k-means on the PCA, ``n_init=10``; needs ``n_clusters``).
    n_clusters
        Number of clusters. With ``method="leiden"`` the resolution is searched by bisection so that
        every layer gets this many clusters, then, as the count is not monotonic in the resolution, by a
        scan of 64 resolutions when bisection steps over it, refined twice (64 resolutions each) over the
        span where the counts came closest; the closest count is used, with a warning, when no resolution
        tried gives it exactly. ``None`` uses ``resolution`` as is.
    resolution
        Leiden resolution when ``n_clusters`` is ``None``; the first resolution tried otherwise.
    labels_key
        Column of ``adata.obs`` with known domains (for example manual layer annotations). Every layer
        is also scored against it; spots with a missing label are left out of those scores.
    library_key
        Column of ``adata.obs`` naming each spot's section, for an object that holds several: the
        clustering stays one over all spots (a domain gets one id in every section), and the agreement
        scores are also computed for each section's spots (``uns[key_added]['scores_by_library']``).
    reference
        The layer whose cluster ids the others are aligned to and scored against; ``None`` takes the
        first of ``layers``.
    n_top_genes
        Number of highly variable genes (all genes when there are fewer).
    n_pcs
        Number of principal components.
    n_neighbors
        Number of neighbours of the graph used by Leiden.
    key_added
        Prefix of the written keys.
    random_state
        Seed of PCA, Leiden and k-means (``None`` counts as 0, so runs are always reproducible). The
        pipeline runs with the BLAS and OpenMP thread pools limited to one thread: with more, the PCA of
        a dense layer and the neighbour graph change in the last digits with the machine's thread count,
        which can move Leiden's clusters noticeably.
    n_repeats
        Cluster every layer this many times, with seeds ``random_state``, ``random_state + 1``, ...
        (``None`` counts as 0). One Leiden run can move the ARI of a matrix by 0.1-0.2 between
        seeds on real sections, so compare layers over several repeats: the agreement scores are
        then means over the repeats, with their standard deviations in ``*_sd`` columns. The cluster
        ids written to ``obs``, ``n_clusters`` and ``resolution`` are those of the first repeat.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``. Sets:

    ``adata.obs['{key_added}_{layer}']``
        Categorical cluster ids (``"0"``, ``"1"``, ...) of each layer, aligned to the reference layer.
    ``adata.uns['{key_added}']['scores']``
        A :class:`~pandas.DataFrame` indexed by layer with ``ari_reference``, ``nmi_reference``
        (adjusted Rand index and normalised mutual information against the reference layer),
        ``ari_labels``, ``nmi_labels`` (against ``obs[labels_key]``; NaN without labels),
        ``n_clusters`` and ``resolution`` (the Leiden resolution used; NaN for k-means), and the
        standard deviations ``ari_reference_sd``, ``nmi_reference_sd``, ``ari_labels_sd``,
        ``nmi_labels_sd`` over the repeats (NaN with ``n_repeats=1``).
    ``adata.uns['{key_added}']['repeats']``
        One row per layer and repeat (columns ``layer``, ``seed``, the four agreement scores,
        ``n_clusters`` and ``resolution``): the spread behind the means, e.g. the lowest and highest ARI.
    ``adata.uns['{key_added}']['scores_by_library']``
        With ``library_key``: one row per section and layer (columns ``library``, ``layer``,
        ``n_spots``, the four agreement scores as means over the repeats and their ``*_sd``).
    ``adata.uns['{key_added}']['params']``
        The parameters (``layers``, ``reference``, ``labels_key`` and ``library_key`` (``"none"`` when
        absent), ``n_clusters`` (-1 when absent), ``n_obs`` and ``obs_names_sha1`` (the number and the names
        of the spots clustered), ...).

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50)
    >>> st.pp.holdout(adata, fraction=0.5)
    >>> st.tl.compare_clusters(adata, ["X", "holdout_train"], n_clusters=4, labels_key="domain")
    >>> adata.obs["clusters_holdout_train"].cat.categories.tolist()
    ['0', '1', '2', '3']
    >>> adata.uns["clusters"]["scores"].columns.tolist()[:4]
    ['ari_reference', 'nmi_reference', 'ari_labels', 'nmi_labels']
    """
    o = _check_options(
        adata,
        layers,
        method=method,
        n_clusters=n_clusters,
        resolution=resolution,
        labels_key=labels_key,
        library_key=library_key,
        reference=reference,
        n_top_genes=n_top_genes,
        n_pcs=n_pcs,
        n_neighbors=n_neighbors,
        key_added=key_added,
        random_state=random_state,
        n_repeats=n_repeats,
    )
    if copy:
        adata = adata.copy()
    start = logg.info(f"clustering {len(o.layers)} layer(s) with {o.method}")
    runs = _cluster_repeats(adata, o)
    scores, repeats, by_library = _summarise(runs, o)
    _write_clusters(adata, o, runs[0][0], scores, repeats, by_library)
    logg.info(
        f"    finished: added {[f'{o.key_added}_{layer}' for layer in o.layers]} to `adata.obs` "
        f"and `adata.uns[{o.key_added!r}]`",
        time_start=start,
    )
    return adata if copy else None


@dataclass
class _Options:
    """The checked options of one ``compare_clusters`` call."""

    layers: list[str]
    method: str
    n_clusters: int | None
    resolution: float
    labels_key: str | None
    library_key: str | None
    reference: str
    n_top_genes: int
    n_pcs: int
    n_neighbors: int
    key_added: str
    random_state: int | None
    n_repeats: int
    groups: np.ndarray | None = None
    libraries: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        first = 0 if self.random_state is None else int(self.random_state)
        return [first + r for r in range(self.n_repeats)]


def _check_options(
    adata: AnnData,
    layers,
    *,
    method: str,
    n_clusters: int | None,
    resolution: float,
    labels_key: str | None,
    library_key: str | None,
    reference: str | None,
    n_top_genes: int,
    n_pcs: int,
    n_neighbors: int,
    key_added: str,
    random_state: int | None,
    n_repeats: int,
) -> _Options:
    """Validate everything before touching ``adata``."""
    check_adata(adata)
    layers = _check_layers(adata, layers)
    method = check_choice(method, METHODS, name="method")
    if n_clusters is not None:
        n_clusters = check_positive_int(n_clusters, name="n_clusters", minimum=2)
        if n_clusters > adata.n_obs:
            msg = f"`n_clusters={n_clusters}` is larger than the number of spots ({adata.n_obs}); pass a smaller `n_clusters`."
            raise ValueError(msg)
    elif method == "kmeans":
        msg = "`method='kmeans'` needs `n_clusters`; pass `n_clusters=` or use `method='leiden'`."
        raise ValueError(msg)
    if isinstance(resolution, bool) or not isinstance(resolution, int | float) or not (0 < resolution < np.inf):
        msg = f"`resolution` must be a positive number, got {resolution!r}."
        raise ValueError(msg)
    if labels_key is not None:
        if not isinstance(labels_key, str):
            msg = f"`labels_key` must be a column name of `adata.obs` or None, got {type(labels_key).__name__}."
            raise TypeError(msg)
        if labels_key not in adata.obs:
            raise missing_obs_column(adata, labels_key, name="labels_key")
        if adata.obs[labels_key].notna().sum() < 2:
            msg = f"`adata.obs[{labels_key!r}]` has fewer than two non-missing labels; nothing to score against."
            raise ValueError(msg)
    groups, libraries = None, []
    if library_key is not None:
        groups = library_groups(adata, library_key)
        libraries = library_names(adata, library_key)
    if reference is None:
        reference = layers[0]
    elif reference not in layers:
        msg = f"`reference={reference!r}` must be one of `layers` {layers}."
        raise ValueError(msg)
    n_top_genes = check_positive_int(n_top_genes, name="n_top_genes", minimum=2)
    n_pcs = check_positive_int(n_pcs, name="n_pcs", minimum=1)
    n_neighbors = check_positive_int(n_neighbors, name="n_neighbors", minimum=2)
    key_added = check_key_string(key_added, name="key_added", writes_uns=True)
    check_seed(random_state)
    n_repeats = check_positive_int(n_repeats, name="n_repeats")
    if (0 if random_state is None else int(random_state)) + n_repeats - 1 > MAX_SEED:
        msg = f"`random_state + n_repeats - 1` must be at most 2**32 - 1 (numpy's seeds), got {random_state!r}."
        raise ValueError(msg)
    check_output_key(adata, key_added, inputs=[], methods=METHODS, writer="compare_clusters", writes_layer=False)
    previous = adata.uns[key_added]["params"]["layers"] if key_added in adata.uns else []
    for layer in layers:  # the obs columns written must not replace the labels or someone else's column
        col = f"{key_added}_{layer}"
        if col == labels_key or (col in adata.obs and layer not in list(previous)):
            what = "the labels (`labels_key`)" if col == labels_key else "a column no earlier clustering wrote"
            msg = f"`key_added={key_added!r}` would overwrite `adata.obs[{col!r}]`, {what}; pass another `key_added`."
            raise ValueError(msg)
    if adata.n_obs < 3:
        msg = f"`adata` has {adata.n_obs} spots; clustering needs at least 3."
        raise ValueError(msg)
    for layer in layers:
        if is_representation(adata, layer):
            _check_representation(adata, layer)
        else:
            _check_values(get_matrix(adata, layer), layer)
    if "X" in layers and "log1p" in adata.uns:
        M = get_matrix(adata, "X")
        if not is_whole(M):
            warn(
                "`adata.X` looks log-normalised (`adata.uns['log1p']` is set and it holds non-integer values); "
                "every layer is normalised and log-transformed here, so X would be transformed twice. Cluster "
                "the layer that holds the raw counts instead (e.g. 'counts').",
                InputWarning,
            )

    return _Options(
        layers=layers,
        method=method,
        n_clusters=n_clusters,
        resolution=resolution,
        labels_key=labels_key,
        library_key=library_key,
        reference=reference,
        n_top_genes=n_top_genes,
        n_pcs=n_pcs,
        n_neighbors=n_neighbors,
        key_added=key_added,
        random_state=random_state,
        n_repeats=n_repeats,
        groups=groups,
        libraries=libraries,
        previous=list(previous),
    )


def _cluster_repeats(adata: AnnData, o: _Options) -> list[tuple[dict, dict, list]]:
    """Cluster and score every layer once per seed: (aligned ids per layer, score rows, per-library rows)."""
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    truth, has_label = None, None
    if o.labels_key is not None:
        lab = adata.obs[o.labels_key]
        has_label = lab.notna().to_numpy()
        truth = lab.astype(str).to_numpy()[has_label]
    # BLAS and OpenMP on one thread, so that the clusters do not depend on the machine's thread count
    with threadpool_limits(limits=1):
        return [
            _cluster_and_score(
                adata,
                o.layers,
                reference=o.reference,
                method=o.method,
                n_clusters=o.n_clusters,
                resolution=o.resolution,
                n_top_genes=o.n_top_genes,
                n_pcs=o.n_pcs,
                n_neighbors=o.n_neighbors,
                random_state=seed,
                truth=truth,
                has_label=has_label,
                groups=o.groups,
            )
            for seed in tqdm(
                o.seeds,
                desc="clustering repeats",
                unit="seed",
                disable=o.n_repeats == 1 or not settings.progress_bar,
            )
        ]


def _summarise(runs: list, o: _Options) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Scores (means over the repeats, with their spread), one row per layer and seed, and per-library scores."""
    layers, n_repeats, seeds = o.layers, o.n_repeats, o.seeds
    _, first_rows, _ = runs[0]  # n_clusters and resolution come from the first repeat
    scores = pd.DataFrame.from_dict(first_rows, orient="index")[list(SCORE_COLUMNS)]
    stacked = pd.concat([pd.DataFrame.from_dict(rows, orient="index") for _, rows, _ in runs])
    repeats = stacked.rename_axis("layer").reset_index()
    repeats.insert(1, "seed", np.repeat(np.asarray(seeds, dtype=np.int64), len(layers)))
    repeats["n_clusters"] = repeats["n_clusters"].astype(np.int64)
    repeats = repeats[["layer", "seed", *SCORE_COLUMNS]]
    for col in AGREEMENT:
        by_layer = stacked[col].groupby(level=0, sort=False)
        scores[col] = by_layer.mean().reindex(scores.index)
        scores[f"{col}_sd"] = by_layer.std(ddof=1).reindex(scores.index) if n_repeats > 1 else float("nan")
    scores["n_clusters"] = scores["n_clusters"].astype(np.int64)
    scores.index.name = "layer"
    by_library = None
    if o.groups is not None:
        per = pd.DataFrame([row for _, _, lib_rows in runs for row in lib_rows])
        per["library"] = [o.libraries[c] for c in per["library"]]
        grouped = per.groupby(["library", "layer"], sort=False)
        by_library = grouped[["n_spots", *AGREEMENT]].mean()
        for col in AGREEMENT:
            by_library[f"{col}_sd"] = grouped[col].std(ddof=1) if n_repeats > 1 else float("nan")
        by_library = by_library.reset_index()
        by_library["n_spots"] = by_library["n_spots"].astype(np.int64)
    return scores, repeats, by_library


def _write_clusters(
    adata: AnnData,
    o: _Options,
    aligned: dict[str, np.ndarray],
    scores: pd.DataFrame,
    repeats: pd.DataFrame,
    by_library: pd.DataFrame | None,
) -> None:
    """``obs[f"{key_added}_{layer}"]`` (the first repeat's clusters) and ``uns[key_added]``."""
    key_added = o.key_added
    for layer in o.previous:  # columns of an earlier call under this key that this call does not rewrite
        if layer not in o.layers and f"{key_added}_{layer}" in adata.obs:
            del adata.obs[f"{key_added}_{layer}"]
    for layer in o.layers:
        ids = aligned[layer]
        categories = [str(i) for i in range(int(ids.max()) + 1) if (ids == i).any()]
        adata.obs[f"{key_added}_{layer}"] = pd.Categorical(ids.astype(str), categories=categories)
    adata.uns[key_added] = {
        "params": {
            "layers": list(o.layers),
            "method": o.method,
            "n_clusters": -1 if o.n_clusters is None else int(o.n_clusters),
            "resolution": float(o.resolution),
            "labels_key": "none" if o.labels_key is None else o.labels_key,
            "reference": o.reference,
            "n_top_genes": int(o.n_top_genes),
            "n_pcs": int(o.n_pcs),
            "n_neighbors": int(o.n_neighbors),
            "random_state": -1 if o.random_state is None else int(o.random_state),
            "n_repeats": int(o.n_repeats),
            "library_key": "none" if o.library_key is None else o.library_key,
            "n_obs": int(adata.n_obs),
            "obs_names_sha1": obs_names_digest(adata),
        },
        "scores": scores,
        "repeats": repeats,
    }
    if by_library is not None:
        adata.uns[key_added]["scores_by_library"] = by_library


# ---- validation helpers ---------------------------------------------------------------------------


def _check_layers(adata: AnnData, layers) -> list[str]:
    if layers is None or isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Sequence) or len(layers) == 0:
        msg = f"`layers` must be a non-empty list of layer names ('X' or None for `adata.X`), got {layers!r}."
        raise TypeError(msg)
    names = []
    for layer in layers:
        if not is_representation(adata, layer):  # an obsm representation (e.g. a fused latent) is clustered as is
            check_layer(adata, layer, name="layers", also=adata.obsm)
        names.append("X" if layer is None else layer)
    if len(set(names)) != len(names):
        msg = f"`layers` contains duplicates: {names}."
        raise ValueError(msg)
    return names


def is_representation(adata: AnnData, name: str | None) -> bool:
    """Whether ``name`` names an ``obsm`` representation (and no layer): clustered as it is, without PCA."""
    return isinstance(name, str) and name != "X" and name not in adata.layers and name in adata.obsm


def _check_representation(adata: AnnData, key: str) -> None:
    rep = adata.obsm[key]
    rep = rep.to_numpy() if hasattr(rep, "to_numpy") else rep
    if sparse.issparse(rep) or np.ndim(rep) != 2 or not np.issubdtype(np.asarray(rep).dtype, np.number):
        msg = f"`adata.obsm[{key!r}]` must be a dense numeric (n_obs, n_dims) array to be clustered, got {type(rep).__name__}."
        raise ValueError(msg)
    if not np.isfinite(np.asarray(rep)).all():
        msg = f"`adata.obsm[{key!r}]` contains NaN or infinite values; recompute it before clustering."
        raise ValueError(msg)


def _representation(adata: AnnData, key: str) -> np.ndarray:
    rep = adata.obsm[key]
    return np.asarray(rep.to_numpy() if hasattr(rep, "to_numpy") else rep, dtype=np.float64)


def _check_values(M, layer: str) -> None:
    where = "adata.X" if layer == "X" else f"adata.layers[{layer!r}]"
    vals = check_real_matrix(M, where, purpose="clustering needs finite counts")
    if vals.size and vals.min() < 0:
        msg = (
            f"`{where}` contains negative values (min {vals.min()}); clustering normalises counts, so clip "
            "the layer at 0 first (for example `np.clip(layer, 0, None)`)."
        )
        raise ValueError(msg)
    # from the stored values: `M != 0` would sum duplicates and sort indices of the user's matrix in place
    if sparse.issparse(M):
        C = M.tocsr()
        expressed = int(np.unique(C.indices[C.data != 0]).size)
    else:
        expressed = int(np.count_nonzero(np.asarray(M).any(axis=0)))
    if expressed < 2:
        msg = f"`{where}` has {expressed} gene(s) with any non-zero value; clustering needs at least two."
        raise ValueError(msg)


# ---- the pipeline ---------------------------------------------------------------------------------


def _cluster_and_score(
    adata: AnnData,
    layers: list[str],
    *,
    reference: str,
    method: str,
    n_clusters: int | None,
    resolution: float,
    n_top_genes: int,
    n_pcs: int,
    n_neighbors: int,
    random_state: int | None,
    truth: np.ndarray | None,
    has_label: np.ndarray | None,
    groups: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, dict], list[dict]]:
    """Cluster every layer with one seed; align the ids to the reference layer and score them (also per section
    of ``groups``: rows with ``library`` (the section's code), ``layer``, ``n_spots`` and the agreement scores).
    """
    labels_of: dict[str, np.ndarray] = {}
    resolution_of: dict[str, float] = {}
    for layer in layers:
        pca = (
            _representation(adata, layer)
            if is_representation(adata, layer)
            else _pca(
                get_matrix(adata, layer),
                n_top_genes=n_top_genes,
                n_pcs=n_pcs,
                random_state=random_state,
                where="`adata.X`" if layer == "X" else f"`adata.layers[{layer!r}]`",
            )
        )
        if method == "kmeans":
            labels_of[layer] = _kmeans(pca, n_clusters, random_state)
            resolution_of[layer] = float("nan")
        else:
            graph = _neighbors(pca, n_neighbors=n_neighbors, random_state=random_state)
            labels_of[layer], resolution_of[layer] = _leiden(graph, n_clusters, resolution, random_state, layer)
        logg.debug(f"    {layer}: {np.unique(labels_of[layer]).size} clusters (seed {random_state})")
    ref = _by_size(labels_of[reference])
    aligned = {layer: ref if layer == reference else _align(labels_of[layer], ref) for layer in layers}
    labels = None  # the labels of every spot (None where missing), for the agreement scores
    if truth is not None:
        labels = np.empty(has_label.size, dtype=object)
        labels[has_label] = truth
    rows = {}
    for layer in layers:
        pred = aligned[layer]
        rows[layer] = {
            **agreement(ref, pred, labels, has_label),
            "n_clusters": int(np.unique(pred).size),
            "resolution": resolution_of[layer],
        }
    lib_rows = []
    if groups is not None:
        for code in np.unique(groups):
            m = groups == code
            for layer in layers:
                row = {"library": int(code), "layer": layer, "n_spots": int(m.sum())}
                row.update(
                    agreement(
                        ref[m],
                        aligned[layer][m],
                        None if labels is None else labels[m],
                        None if labels is None else has_label[m],
                    )
                )
                lib_rows.append(row)
    return aligned, rows, lib_rows


def obs_names_digest(adata: AnnData) -> str:
    """SHA-1 of the spot names in order: which spots a clustering was scored on (plots of other spots rescore)."""
    import hashlib

    return hashlib.sha1("\n".join(map(str, adata.obs_names)).encode()).hexdigest()
