"""The no-training ``"knn"`` imputation and the sparse ``log1p`` helpers it shares with the networks.

Neighbourhoods come from :func:`stimpute._graph.spatial_graph` (sparse CSR, ``n_obs * k`` stored
entries): nothing here builds a dense spots x spots matrix.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._sparse import as_csr

__all__ = [
    "gene_log_mean_nonzero",
    "knn_impute_log1p",
    "log1p_csr",
    "neighbour_sums",
]


def log1p_csr(X: np.ndarray | sparse.spmatrix) -> sparse.csr_matrix:
    """``log1p`` of a count matrix as float32 CSR without explicit zeros or duplicate entries (copies)."""
    X = as_csr(X, np.float32, copy=True)
    X.eliminate_zeros()
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
        Row-normalised spatial graph (:func:`stimpute._graph.spatial_graph`).
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
