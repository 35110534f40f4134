"""The one spatial k-nearest-neighbour graph builder (numpy/scipy/sklearn only).

Used by the ``"knn"`` imputation, the networks' neighbour features and :func:`stimpute.pp.spatial_smooth`.
The graph is a sparse CSR matrix with at most ``n_obs * (k + 1)`` stored entries: nothing builds a dense spots x spots
matrix.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._warnings import SectionWarning, warn

__all__ = ["median_neighbour_distance", "spatial_graph", "warn_small_sections"]


def median_neighbour_distance(coords: np.ndarray) -> float:
    """Median distance from each spot to its nearest other spot (the spot pitch); 0.0 for fewer than two spots."""
    if coords.shape[0] < 2:
        return 0.0
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=2).fit(coords).kneighbors(coords)
    return float(np.median(dist[:, 1]))


def spatial_graph(
    coords: np.ndarray,
    n_neighbors: int,
    *,
    include_self: bool = False,
    sources: np.ndarray | None = None,
    groups: np.ndarray | None = None,
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
    groups
        Integer section of every spot (e.g. codes of ``obs['library_id']``): neighbours are searched within
        a spot's own section only, each section exactly as if it were alone. ``None``: one section.

    Returns
    -------
    CSR matrix ``(n_obs, n_obs)`` whose row ``i`` averages spot ``i``'s neighbours (rows sum to 1; a row is
    empty only when no other spot is a source and ``include_self`` is False). Every row has ``n_neighbors``
    neighbours when there are enough sources; with fewer, a source has one neighbour fewer than a spot that
    is not one.
    Spots tied in distance with the k-th neighbour (exact lattices, e.g. array coordinates) are chosen
    by scikit-learn's tree search: the same input gives the same graph, but which tied spot is kept
    depends on the spot order, not on a documented rule.
    """
    if groups is not None:
        return _grouped(coords, n_neighbors, include_self=include_self, sources=sources, groups=groups)
    from sklearn.neighbors import NearestNeighbors

    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    pool = np.arange(n) if sources is None else np.flatnonzero(np.asarray(sources, dtype=bool))
    n_query = int(min(n_neighbors + 1, pool.size))  # the spot itself may be among them
    if n_query < 1 or (n_query == 1 and sources is None):  # no other spot to average over
        eye = sparse.identity(n, dtype=np.float32, format="csr")
        return eye if include_self else sparse.csr_matrix((n, n), dtype=np.float32)
    nn = NearestNeighbors(n_neighbors=n_query).fit(coords[pool])
    dist, j = nn.kneighbors(coords)
    idx = pool[j]
    # drop the spot itself (it need not come first when several spots share a position, and it is
    # absent when it is not a source): push it to the end and keep the n_neighbors nearest others
    is_self = idx == np.arange(n)[:, None]
    order = np.argsort(np.where(is_self, np.inf, dist), axis=1, kind="stable")
    neighbours = np.take_along_axis(idx, order, axis=1)[:, :n_neighbors]
    valid = ~np.take_along_axis(is_self, order, axis=1)[:, :n_neighbors]
    if include_self:
        neighbours = np.column_stack([np.arange(n), neighbours])
        valid = np.column_stack([np.ones(n, dtype=bool), valid])
    if valid.all():  # every spot has as many neighbours (the usual case)
        m = neighbours.shape[1]
        data = np.full(n * m, 1.0 / m, dtype=np.float32)
        graph = sparse.csr_matrix((data, neighbours.ravel(), np.arange(0, n * m + 1, m)), shape=(n, n))
    else:  # few sources: a source has one neighbour fewer than a spot that is not one
        counts = valid.sum(axis=1)
        weights = np.divide(1.0, counts, out=np.zeros(n), where=counts > 0).astype(np.float32)
        data = np.repeat(weights, counts)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        graph = sparse.csr_matrix((data, neighbours[valid], indptr), shape=(n, n))
    graph.sort_indices()
    return graph


def _grouped(
    coords: np.ndarray, n_neighbors: int, *, include_self: bool, sources: np.ndarray | None, groups: np.ndarray
) -> sparse.csr_matrix:
    """Block-diagonal graph: one :func:`spatial_graph` per section, spots renumbered back to the whole object."""
    coords = np.asarray(coords, dtype=np.float64)
    groups = np.asarray(groups)
    n = coords.shape[0]
    sources = None if sources is None else np.asarray(sources, dtype=bool)
    rows, cols, data = [], [], []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        sub = spatial_graph(
            coords[members],
            n_neighbors,
            include_self=include_self,
            sources=None if sources is None else sources[members],
        ).tocoo()
        rows.append(members[sub.row])
        cols.append(members[sub.col])
        data.append(sub.data)
    graph = sparse.csr_matrix(
        (np.concatenate(data).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    graph.sort_indices()
    return graph


def warn_small_sections(groups: np.ndarray | None, n_neighbors: int) -> None:
    """Warn when a section has too few spots for ``n_neighbors`` neighbours (they then average over all of them)."""
    if groups is None:
        return
    sizes = np.unique(groups, return_counts=True)[1]
    small = sizes <= n_neighbors
    if small.any():
        warn(
            f"{int(small.sum())} section(s) have at most {n_neighbors} spots (the smallest: {int(sizes.min())}); "
            f"their spots have fewer than `n_neighbors={n_neighbors}` neighbours: all the other spots of their section.",
            SectionWarning,
        )
