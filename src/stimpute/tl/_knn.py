"""Spatial k-nearest-neighbour graphs and the no-training ``"knn"`` imputation (numpy/scipy/sklearn only).

Every neighbourhood here is a sparse CSR graph with ``n_obs * k`` stored entries: nothing builds a
dense spots x spots matrix.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = [
    "gene_log_mean_nonzero",
    "knn_impute_log1p",
    "log1p_csr",
    "neighbour_sums",
    "spatial_graph",
]


def spatial_graph(
    coords: np.ndarray, n_neighbors: int, *, include_self: bool = False, sources: np.ndarray | None = None
) -> sparse.csr_matrix:
    """Row-normalised kNN graph over spot coordinates.

    Parameters
    ----------
    coords
        ``(n_obs, 2)`` coordinates.
    n_neighbors
        Number of nearest other spots per spot (capped at the number of candidate neighbours).
    include_self
        Also give each spot itself a weight (the mean then runs over ``n_neighbors + 1`` spots).
    sources
        Boolean mask of the spots that may be neighbours (default: all). Spots without any count in the
        training layer (e.g. spots hidden by ``st.pp.holdout(strategy="spots")``) are unobserved, not
        empty, so they must not pass their zeros on to their neighbours.

    Returns
    -------
    CSR matrix ``(n_obs, n_obs)`` whose row ``i`` averages spot ``i``'s neighbours (rows sum to 1).
    Ties in distance are broken by spot index, so the graph is deterministic.
    """
    from sklearn.neighbors import NearestNeighbors

    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    pool = np.arange(n) if sources is None else np.flatnonzero(np.asarray(sources, dtype=bool))
    k = int(min(n_neighbors, pool.size - 1))  # n - 1 when every spot is a source
    if k < 1:
        eye = sparse.identity(n, dtype=np.float32, format="csr")
        return eye if include_self else sparse.csr_matrix((n, n), dtype=np.float32)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(coords[pool])
    dist, j = nn.kneighbors(coords)
    idx = pool[j]
    # drop the spot itself (it need not come first when several spots share a position, and it is
    # absent when it is not a source): push it to the end and keep the k nearest others
    dist = np.where(idx == np.arange(n)[:, None], np.inf, dist)
    order = np.argsort(dist, axis=1, kind="stable")
    neighbours = np.take_along_axis(idx, order, axis=1)[:, :k]
    cols = neighbours
    if include_self:
        cols = np.column_stack([np.arange(n), neighbours])
    m = cols.shape[1]
    data = np.full(n * m, 1.0 / m, dtype=np.float32)
    graph = sparse.csr_matrix((data, cols.ravel(), np.arange(0, n * m + 1, m)), shape=(n, n))
    graph.sort_indices()
    return graph


def log1p_csr(X: np.ndarray | sparse.spmatrix) -> sparse.csr_matrix:
    """``log1p`` of a count matrix as float32 CSR without explicit zeros (copies)."""
    X = sparse.csr_matrix(X, dtype=np.float32, copy=True)
    X.eliminate_zeros()
    X.sort_indices()
    np.log1p(X.data, out=X.data)
    return X


def gene_log_mean_nonzero(L: sparse.csr_matrix) -> np.ndarray:
    """Per-gene mean of the stored (non-zero) values of ``L``; 0 for genes without any."""
    n_vars = L.shape[1]
    nnz = np.bincount(L.indices, minlength=n_vars)
    sums = np.bincount(L.indices, weights=L.data.astype(np.float64), minlength=n_vars)
    return np.divide(sums, nnz, out=np.zeros(n_vars), where=nnz > 0)


def neighbour_sums(graph: sparse.csr_matrix, L: sparse.csr_matrix) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Weighted sums of neighbours' values and of their non-zero indicators, both CSR ``(n_obs, n_vars)``."""
    B = L.copy()
    B.data = np.ones_like(B.data)
    return (graph @ L).tocsr(), (graph @ B).tocsr()


def knn_impute_log1p(
    L: sparse.csr_matrix,
    graph: sparse.csr_matrix,
    *,
    shrinkage: float,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Dense ``log1p`` prediction: mean of the neighbours' observed non-zero values, shrunk to the gene mean.

    For spot ``i`` and gene ``g``, with ``S`` the (graph-weighted) sum of the neighbours' non-zero
    ``log1p`` values, ``C`` the weighted number of neighbours where ``g`` is non-zero and ``m_g``
    the gene's mean over all observed non-zero values::

        pred = (S + shrinkage * m_g / k) / (C + shrinkage / k)

    so ``shrinkage`` acts as a number of pseudo-neighbours holding the gene mean. With
    ``shrinkage=0`` it is the plain mean of the neighbours' non-zero values, and the gene mean
    where no neighbour has the gene.

    Parameters
    ----------
    L
        ``log1p`` counts, CSR without explicit zeros.
    graph
        Row-normalised spatial graph (:func:`spatial_graph`).
    shrinkage
        Pseudo-neighbours at the gene mean (>= 0).
    rows
        Compute only these spots (default: all).

    Returns
    -------
    float32 array ``(len(rows), n_vars)`` of ``log1p`` predictions.
    """
    gene_mean = gene_log_mean_nonzero(L).astype(np.float32)
    rows = np.arange(L.shape[0]) if rows is None else np.asarray(rows)
    out = np.empty((rows.size, L.shape[1]), dtype=np.float32)
    B = L.copy()
    B.data = np.ones_like(B.data)
    # weights per neighbour are 1/k for a row-normalised graph: convert the pseudo-count to that scale
    row_nnz = np.diff(graph.indptr)
    chunk = 512
    for start in range(0, rows.size, chunk):
        sel = rows[start : start + chunk]
        g = graph[sel]
        s = (g @ L).toarray()
        c = (g @ B).toarray()
        w = (shrinkage / np.maximum(row_nnz[sel], 1)).astype(np.float32)[:, None]
        num = s + w * gene_mean[None, :]
        den = c + w
        block = np.divide(num, den, out=np.broadcast_to(gene_mean, num.shape).copy(), where=den > 0)
        out[start : start + sel.size] = block
    return out
