"""The clusterings behind ``st.tl.compare_clusters``: PCA of a layer, Leiden tuned to a number of clusters,
k-means, and the agreement scores (ARI, NMI) between clusterings.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._sparse import as_csr
from .._warnings import StimputeWarning, warn

_MAX_BISECTIONS = 30
_SCAN_STEPS = 64  # resolutions scanned when bisection steps over the target count
_SCAN_LEVELS = 3  # scans, each over the span where the counts came closest to the target (64x finer each time)
_MAX_RESOLUTION = 64.0


def agreement(
    ref: np.ndarray, pred: np.ndarray, labels: np.ndarray | None, known: np.ndarray | None
) -> dict[str, float]:
    """ARI and NMI of ``pred`` against the reference clusters ``ref`` and against ``labels`` where ``known``
    (NaN without labels, or with fewer than two known).
    """
    out = {"ari_reference": _ari(ref, pred), "nmi_reference": _nmi(ref, pred)}
    out["ari_labels"] = out["nmi_labels"] = float("nan")
    if labels is not None and int(known.sum()) >= 2:
        out["ari_labels"] = _ari(labels[known].astype(str), pred[known])
        out["nmi_labels"] = _nmi(labels[known].astype(str), pred[known])
    return out


def _pca(M, *, n_top_genes: int, n_pcs: int, random_state: int | None, where: str = "a layer") -> np.ndarray:
    """normalize_total -> log1p -> HVG (seurat) -> PCA on a private float32 copy of ``M``."""
    import scanpy as sc

    X = as_csr(M, np.float32, copy=True) if sparse.issparse(M) else np.array(M, dtype=np.float32)
    expressed = np.asarray((X != 0).sum(axis=0)).ravel() > 0
    if not expressed.all():
        X = X[:, expressed]
    if X.shape[1] < 2:  # checked per layer by `_check_values`; kept for direct callers
        msg = "a layer has fewer than two expressed genes; nothing to cluster on."
        raise ValueError(msg)
    tmp = AnnData(X)
    with warnings.catch_warnings():
        # spots with no counts stay all-zero, which is fine here
        warnings.filterwarnings("ignore", message="Some cells have zero counts", category=UserWarning)
        sc.pp.normalize_total(tmp)
    sc.pp.log1p(tmp)
    spread = np.asarray(tmp.X.max(axis=0).toarray() if sparse.issparse(tmp.X) else tmp.X.max(axis=0)).ravel()
    spread = spread - np.asarray(tmp.X.min(axis=0).toarray() if sparse.issparse(tmp.X) else tmp.X.min(axis=0)).ravel()
    if not (spread > 0).any():  # every gene equal in every spot (HVG selection would fail inside scanpy)
        msg = f"{where} has the same (depth-normalised) profile in every spot; there is nothing to cluster."
        raise ValueError(msg)
    if n_top_genes < tmp.n_vars:
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat", subset=True)
    n_comps = int(min(n_pcs, tmp.n_obs - 1, tmp.n_vars - 1))
    if n_comps < 1:
        return np.asarray(tmp.X.toarray() if sparse.issparse(tmp.X) else tmp.X, dtype=np.float64)
    sc.pp.pca(tmp, n_comps=n_comps, random_state=0 if random_state is None else random_state)
    return np.asarray(tmp.obsm["X_pca"], dtype=np.float64)


def _neighbors(pca: np.ndarray, *, n_neighbors: int, random_state: int | None) -> AnnData:
    import scanpy as sc

    tmp = AnnData(obsm={"X_pca": pca}, obs=pd.DataFrame(index=[str(i) for i in range(pca.shape[0])]))
    sc.pp.neighbors(
        tmp,
        n_neighbors=int(min(n_neighbors, pca.shape[0] - 1)),
        use_rep="X_pca",
        random_state=0 if random_state is None else random_state,
    )
    return tmp


def _leiden_once(graph: AnnData, resolution: float, random_state: int | None) -> np.ndarray:
    import scanpy as sc

    sc.tl.leiden(
        graph,
        resolution=resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=0 if random_state is None else random_state,
        key_added="_leiden",
    )
    return graph.obs["_leiden"].astype(int).to_numpy()


def _leiden(
    graph: AnnData, n_clusters: int | None, resolution: float, random_state: int | None, layer: str
) -> tuple[np.ndarray, float]:
    if n_clusters is None:
        return _leiden_once(graph, resolution, random_state), float(resolution)
    tried: dict[float, np.ndarray] = {}

    def count(res: float) -> int:
        if res not in tried:
            tried[res] = _leiden_once(graph, res, random_state)
        return int(np.unique(tried[res]).size)

    # bracket the target count, then bisect
    lo, hi = 0.0, float(resolution)
    n = count(hi)
    while n < n_clusters and hi < _MAX_RESOLUTION:
        lo, hi = hi, hi * 2
        n = count(hi)
    top = hi
    if n != n_clusters:
        for _ in range(_MAX_BISECTIONS):
            mid = (lo + hi) / 2
            n = count(mid)
            if n == n_clusters:
                break
            if n < n_clusters:
                lo = mid
            else:
                hi = mid
    if n != n_clusters:
        # the count is not monotonic in the resolution (6, 7, 6, 8, ... on real sections), so bisection can end
        # on a jump over the target while a narrow window elsewhere gives it: scan the bracket, lowest first,
        # then scan again, finer, the span where the counts came within one of the target (windows of 7 clusters
        # narrower than 1/64 of the bracket are common on the DLPFC sections)
        lo_s, hi_s = 0.0, top
        for _ in range(_SCAN_LEVELS):
            if any(count(float(res)) == n_clusters for res in np.linspace(lo_s, hi_s, _SCAN_STEPS + 1)[1:]):
                break
            lo_s, hi_s = _closest_span(tried, n_clusters, top)
    best = min(tried, key=lambda r: (abs(np.unique(tried[r]).size - n_clusters), r))
    found = int(np.unique(tried[best]).size)
    if found != n_clusters:
        warn(
            f"no Leiden resolution gives {n_clusters} clusters for layer {layer!r}; "
            f"using resolution {best:.4g} with {found} clusters.",
            StimputeWarning,
        )
    return tried[best], float(best)


def _closest_span(tried: dict[float, np.ndarray], n_clusters: int, top: float) -> tuple[float, float]:
    """The resolutions around those tried whose count came within one of (or, failing that, closest to) the target.

    Spans from the tried resolution just below the first such one to the one just above the last (0 and ``top``
    at the ends).
    """
    res = sorted(r for r in tried if r <= top)
    off = np.array([abs(np.unique(tried[r]).size - n_clusters) for r in res])
    near = np.flatnonzero(off <= max(1, int(off.min())))
    lo = res[near[0] - 1] if near[0] > 0 else 0.0
    hi = res[near[-1] + 1] if near[-1] + 1 < len(res) else top
    return float(lo), float(hi)


def _kmeans(pca: np.ndarray, n_clusters: int, random_state: int | None) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_clusters, n_init=10, random_state=random_state).fit_predict(pca).astype(np.int64)


# ---- labels: ordering, Hungarian alignment, scores -------------------------------------------------


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Rename clusters 0..k-1 from the largest to the smallest (ties by first occurrence)."""
    uniq, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new_id = np.empty(uniq.size, dtype=np.int64)
    new_id[order] = np.arange(uniq.size)
    return new_id[inverse.ravel()]


def _align(labels: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Rename ``labels`` to the ids of ``ref`` (0..k-1) by maximum-overlap matching; the rest get k, k+1, ..."""
    from scipy.optimize import linear_sum_assignment

    lab = _by_size(labels)
    n_lab, n_ref = int(lab.max()) + 1, int(ref.max()) + 1
    table = np.zeros((n_lab, n_ref), dtype=np.int64)
    np.add.at(table, (lab, ref), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    new_id = np.full(n_lab, -1, dtype=np.int64)
    new_id[rows] = cols
    unmatched = np.flatnonzero(new_id < 0)  # already ordered by size
    new_id[unmatched] = n_ref + np.arange(unmatched.size)
    return new_id[lab]


def _ari(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a, b))


def _nmi(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(a, b))
