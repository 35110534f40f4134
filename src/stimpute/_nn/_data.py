"""Inputs of the imputation network, built from sparse rows (numpy/scipy; torch only for batches).

The count matrix stays CSR throughout: minibatches densify only their own rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import sparse

from .._graph import spatial_graph
from .._knn import gene_log_mean_nonzero, log1p_csr
from .._sparse import as_csr


def split_observed(
    L: sparse.csr_matrix, fraction: float, rng: np.random.Generator, rows: np.ndarray | None = None
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Split the stored (observed non-zero) entries of ``L`` into a fitting part and a validation part.

    Only stored entries can be drawn, so entries that are zero in ``L`` (true zeros and entries hidden
    by :func:`stimpute.pp.holdout`) never enter the validation set. ``fit + val == L`` exactly.

    Parameters
    ----------
    L
        CSR matrix without explicit zeros.
    fraction
        Fraction of the stored entries (of ``rows``) to put in the validation part (0 gives an empty one).
    rng
        Random generator.
    rows
        Draw validation entries only from these rows (default: all rows).

    Returns
    -------
    ``(fit, val)``, two CSR matrices of ``L``'s shape with disjoint stored entries.
    """
    L = sparse.csr_matrix(L)
    row_of = np.repeat(np.arange(L.shape[0]), np.diff(L.indptr))
    candidates = np.arange(L.nnz) if rows is None else np.flatnonzero(np.isin(row_of, rows))
    n_val = int(round(fraction * candidates.size))
    is_val = np.zeros(L.nnz, dtype=bool)
    if n_val > 0:
        is_val[rng.choice(candidates, size=n_val, replace=False)] = True

    def part(keep: np.ndarray) -> sparse.csr_matrix:
        m = sparse.csr_matrix(
            (np.where(keep, L.data, 0).astype(L.dtype), L.indices.copy(), L.indptr.copy()), shape=L.shape
        )
        m.eliminate_zeros()
        return m

    return part(~is_val), part(is_val)


def zero_holdout(rows: np.ndarray, n_genes: int, fraction: float, seed: int) -> np.ndarray:
    """A fixed ``fraction`` of every spot's entries (``(len(rows), n_genes)`` booleans), set aside for validation.

    Entry ``(i, g)`` is chosen when ``(g + offset_i) % period == 0`` with ``period = round(1 / fraction)``
    and a per-spot offset from ``seed``: stateless, cheap and the same in every epoch.
    """
    if fraction <= 0:
        return np.zeros((len(rows), n_genes), dtype=bool)
    period = max(2, int(round(1 / fraction)))
    offset = (np.asarray(rows, dtype=np.int64) * 7919 + int(seed) * 104729) % period
    return (np.arange(n_genes)[None, :] + offset[:, None]) % period == 0


def position_features(
    coords: np.ndarray, *, n_frequencies: int, degree: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Fourier and polynomial features of (x, y) normalised to the unit square of the section.

    Coordinates are shifted to start at 0 and divided by the larger of the two extents (aspect kept),
    per section when ``groups`` gives each spot's section (each section in its own unit square).
    Features: ``sin``/``cos`` of ``2 pi f x`` and ``2 pi f y`` for ``f = 1, 2, 4, ..., 2**(n_frequencies-1)``
    cycles per section, then the monomials of the centred coordinates up to ``degree``.
    """
    coords = np.asarray(coords, dtype=np.float64)[:, :2]
    u = np.empty_like(coords)
    for members in [slice(None)] if groups is None else [np.asarray(groups) == g for g in np.unique(groups)]:
        c = coords[members]
        lo = c.min(axis=0)
        extent = float(np.max(c.max(axis=0) - lo))
        u[members] = (c - lo) / (extent if extent > 0 else 1.0)
    feats = []
    for k in range(n_frequencies):
        f = 2.0 * np.pi * (2**k)
        feats += [np.sin(f * u), np.cos(f * u)]
    c = u - 0.5
    for d in range(1, degree + 1):
        for i in range(d + 1):
            feats.append((c[:, 0] ** (d - i) * c[:, 1] ** i)[:, None] * 2**d)
    if not feats:
        return np.zeros((coords.shape[0], 0), dtype=np.float32)
    return np.hstack(feats).astype(np.float32)


_CHUNK = 4096  # spots per block when a per-spot quantity is computed for all spots
# the neighbours' means, detection rates and estimates of every spot are kept in memory (fast minibatches) when
# these CSR matrices take at most this much; above it (large sections, e.g. Visium HD) each minibatch computes its
# own rows from the sparse counts, about twice the training time for a memory footprint that stays that of the counts
NEIGHBOUR_CACHE_BYTES = 1 << 30
# cached neighbour matrices this dense (stored entries per entry) are kept as dense arrays: at most 25% more memory
# than CSR (12 bytes per stored entry with 64-bit indices, 8 with 32-bit ones), and much faster minibatch rows
DENSE_CACHE_DENSITY = 0.4


@dataclass
class Prepared:
    """Everything the network reads, for one count matrix and its spots (all CPU, sparse where large)."""

    L_obs: sparse.csr_matrix  # log1p of every observed count (prediction input)
    L_fit: sparse.csr_matrix  # observed minus validation entries (training input)
    L_val: sparse.csr_matrix  # validation entries only
    library: np.ndarray  # (n_obs, 1) standardised log library size
    size_factor: np.ndarray  # (n_obs,) total / median total, for the count likelihoods
    # neighbours' features are computed per minibatch from these (see `neighbour_rows`): stored whole, the
    # neighbours' means of 18 spots would be nearly dense, several times the size of the count matrix
    neigh_source: sparse.csr_matrix | None = None  # log1p counts whose neighbour mean the encoder reads
    neigh_binary: sparse.csr_matrix | None = None  # 1 where a count is observed (for the detection rate)
    neigh_gene_mean: np.ndarray | None = None  # gene means the neighbour estimate shrinks to (neighbour_skip)
    neigh_pseudo: float = 0.0  # pseudo-neighbours at the gene mean, on the graph's weight scale
    neigh_proj: np.ndarray | None = None  # neighbours' mean projected on the count encoder's principal axes
    # all spots' neighbour mean, detection rate and estimate (None without neighbour_skip), when small enough
    # (the rates and estimates as dense arrays when nearly as small; see DENSE_CACHE_DENSITY)
    neigh_cache: (
        tuple[sparse.csr_matrix, sparse.csr_matrix | np.ndarray, sparse.csr_matrix | np.ndarray | None] | None
    ) = None
    graph: sparse.csr_matrix | None = None  # row-normalised spatial kNN graph
    position: np.ndarray | None = None
    image: np.ndarray | None = None
    val_spots: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # spots holding them
    # spots with at least one count: the only ones trained on. A spot without any count in the training
    # layer (hidden whole by st.pp.holdout(strategy="spots"), or outside the tissue) is unobserved, not a
    # spot of zeros: training on it would teach the detection head and the count likelihoods that it is empty
    train_spots: np.ndarray | None = None
    library_neighbours: np.ndarray | None = None  # (n_obs, 1) mean standardised log library of 6 nearest spots
    # graph encoder: the kNN graph of the spots with counts, the depth-normalised log1p counts it propagates, and
    # (after `attach_projection`) the (n_obs, hops * n_pcs) hop features of every spot
    hop_graph: sparse.csr_matrix | None = None
    hop_source: sparse.csr_matrix | None = None
    graph_hops: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_obs(self) -> int:
        return self.L_obs.shape[0]

    @property
    def has_neighbours(self) -> bool:
        return self.neigh_source is not None

    def neighbour_rows(self, idx: np.ndarray, *, mean: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """Dense neighbours' mean values (unless ``mean=False``) and detection rates of the spots ``idx``."""
        if self.neigh_cache is not None:
            cached_mean, rate, _ = self.neigh_cache
            return (_dense_rows(cached_mean, idx) if mean else None), _dense_rows(rate, idx)
        g = self.graph[idx]
        values = (g @ self.neigh_source).toarray().astype(np.float32, copy=False) if mean else None
        return values, (g @ self.neigh_binary).toarray().astype(np.float32, copy=False)

    def neighbour_estimate_rows(self, idx: np.ndarray, mean: np.ndarray, rate: np.ndarray) -> np.ndarray:
        """The neighbours' mean non-zero value shrunk to the gene mean, minus it (0 where no neighbour has it)."""
        if self.neigh_cache is not None and self.neigh_cache[2] is not None:
            return _dense_rows(self.neigh_cache[2], idx)
        return neighbour_estimate_dense(mean, rate, self.neigh_gene_mean, self.neigh_pseudo)


def _csr_bytes(M: sparse.csr_matrix) -> int:
    """Memory held by a CSR matrix's three arrays."""
    return M.data.nbytes + M.indices.nbytes + M.indptr.nbytes


def _keep_dense(mean: sparse.csr_matrix, rate: sparse.csr_matrix, estimate: sparse.csr_matrix | None) -> bool:
    """Whether the cached detection rates (and estimates) are kept as dense arrays.

    When they hold at least ``DENSE_CACHE_DENSITY`` stored entries per entry, and the cache (CSR means, dense rates
    and estimates) then still fits ``NEIGHBOUR_CACHE_BYTES``: the budget check before building the cache bounds
    CSR sizes only, and dense arrays of a sparse section's matrices can take more.
    """
    n_entries = rate.shape[0] * rate.shape[1]
    dense_bytes = (1 if estimate is None else 2) * 4 * n_entries
    return rate.nnz >= DENSE_CACHE_DENSITY * n_entries and _csr_bytes(mean) + dense_bytes <= NEIGHBOUR_CACHE_BYTES


def _dense_rows(M: sparse.csr_matrix | np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of ``M`` as a dense array."""
    return M[idx] if isinstance(M, np.ndarray) else M[idx].toarray()


def library_stats(L_counts_total: np.ndarray) -> tuple[float, float, float]:
    """Mean and std of the log library size, and the median total, over spots with counts."""
    ok = L_counts_total > 0
    if not ok.any():
        return 0.0, 1.0, 1.0
    logs = np.log1p(L_counts_total[ok])
    std = float(logs.std())
    return float(logs.mean()), std if std > 0 else 1.0, float(np.median(L_counts_total[ok]))


def prepare(
    X: sparse.spmatrix | np.ndarray,
    *,
    config: dict,
    norm: dict,
    coords: np.ndarray | None,
    image: np.ndarray | None,
    val_fraction: float = 0.0,
    rng: np.random.Generator | None = None,
    max_val_spots: int = 2048,
    library_guess: bool = False,
    groups: np.ndarray | None = None,
) -> Prepared:
    """Build the network inputs for count matrix ``X`` with the (stored or fresh) normalisation ``norm``.

    ``groups`` gives each spot's section when the object holds several: spatial neighbours are then searched
    within a section and positions are normalised per section.

    The neighbours' library size (``Prepared.library_neighbours``) is computed when some spot has no
    counts, or when ``library_guess`` (training with whole-spot masking); otherwise it is never read.
    """
    L = log1p_csr(X)
    totals = np.asarray(sparse.csr_matrix(X, dtype=np.float64).sum(axis=1)).ravel()
    n_obs = L.shape[0]
    if val_fraction > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        # validation entries come from at most `max_val_spots` spots, so that validating each epoch stays cheap
        # (only spots with counts: a spot without any, e.g. hidden whole by the holdout, is unobserved)
        pool = np.flatnonzero(totals > 0)
        val_spots = (
            np.sort(rng.choice(pool, size=min(max_val_spots, pool.size), replace=False))
            if pool.size > max_val_spots
            else None
        )
        L_fit, L_val = split_observed(L, val_fraction, rng, rows=val_spots)
        # validation spots: those with counts only (a spot without counts has no entries to validate on, and its
        # zeros are unobserved, not true zeros; all spots when every spot has counts)
        val_spots = pool if val_spots is None else val_spots
    else:
        L_fit, L_val = L, sparse.csr_matrix(L.shape, dtype=np.float32)
        val_spots = np.zeros(0, dtype=np.int64)
    # The library input is the spot's whole observed total, in training too, where it also holds the masked
    # targets and validation entries: the depth the targets were sequenced at, as at prediction. Building it
    # from the visible counts instead (scaled by 1 / (1 - mask_fraction)) removes that hint but did not help
    # the fused model's holdout scores on DLPFC.
    logs = np.where(totals > 0, np.log1p(totals), norm["library_mean"])
    library = ((logs - norm["library_mean"]) / norm["library_std"]).astype(np.float32)[:, None]
    # the depth a spot would have, from its nearest spots with counts (sequencing depth follows the tissue):
    # the library input of a spot without counts, and of a spot whose counts are hidden in training
    library_neighbours = None
    if coords is not None and (library_guess or (totals == 0).any()) and (totals > 0).sum() > 1:
        g6 = spatial_graph(coords, 6, sources=totals > 0, groups=groups)
        library_neighbours = np.asarray(g6 @ library, dtype=np.float32).reshape(-1, 1)
        library = np.where(totals[:, None] > 0, library, library_neighbours).astype(np.float32)
    size_factor = np.where(totals > 0, totals, norm["library_median"]) / norm["library_median"]
    prep = Prepared(
        L_obs=L,
        L_fit=L_fit,
        L_val=L_val,
        library=library,
        size_factor=size_factor.astype(np.float32),
        val_spots=val_spots,
        train_spots=np.flatnonzero(totals > 0),
        library_neighbours=library_neighbours,
    )
    modalities = config["modalities"]
    # the spatial regulariser is a training loss: predicting without coordinates needs no graph for it
    if config.get("neighbours") or (config.get("spatial_reg", 0) > 0 and coords is not None):
        # only spots with counts pass values on to their neighbours (see `train_spots`)
        prep.graph = spatial_graph(coords, config["n_neighbors"], sources=totals > 0, groups=groups)
        if config.get("neighbours"):
            # neighbours' values at a common depth when the count encoder reads depth-normalised counts
            L_in = depth_normalised_log1p(X, norm["library_median"]) if config.get("normalize_counts") else L
            prep.neigh_source = sparse.csr_matrix(L_in, dtype=np.float32)
            B = L.copy()
            B.data = np.ones_like(B.data)
            prep.neigh_binary = B
            if config.get("neighbour_skip"):
                prep.neigh_gene_mean = np.asarray(
                    norm["gene_mean_normalised" if config.get("normalize_counts") else "gene_mean"], dtype=np.float32
                )
                prep.neigh_pseudo = config["shrinkage"] / max(1, int(np.diff(prep.graph.indptr).max(initial=1)))
            n_graph = int(np.diff(prep.graph.indptr).max(initial=0))
            upper = min(n_obs * L.shape[1], L.nnz * max(n_graph, 1))  # stored entries of each neighbour matrix
            n_matrices = 3 if prep.neigh_gene_mean is not None else 2
            if n_matrices * upper * 8 <= NEIGHBOUR_CACHE_BYTES:
                mean, rate, estimate = _neighbour_cache(prep)
                # every minibatch reads rows of the detection rates and estimates: kept dense when nearly as small as
                # CSR (4 bytes per entry against 8 per stored one), so that a row is a slice, not a CSR lookup. The
                # means stay CSR: with principal axes they are read once, through the projection
                if _keep_dense(mean, rate, estimate):
                    rate = rate.toarray()
                    estimate = None if estimate is None else estimate.toarray()
                prep.neigh_cache = (mean, rate, estimate)
    if config.get("graph_hops", 0) > 0:
        prep.hop_graph = spatial_graph(coords, config["graph_neighbors"], sources=totals > 0, groups=groups)
        if prep.neigh_source is not None and config.get("normalize_counts"):
            prep.hop_source = prep.neigh_source  # the same matrix: not held twice
        else:
            prep.hop_source = depth_normalised_log1p(X, norm["library_median"])
    if "position" in modalities:
        prep.position = position_features(
            coords, n_frequencies=config["n_frequencies"], degree=config["poly_degree"], groups=groups
        )
    if "image" in modalities:
        img = np.asarray(image, dtype=np.float64)
        mean, std = np.asarray(norm["image_mean"]), np.asarray(norm["image_std"])
        prep.image = ((img - mean) / std).astype(np.float32)
    return prep


def depth_normalised_log1p(X: sparse.spmatrix | np.ndarray, target: float) -> sparse.csr_matrix:
    """``log1p`` of the counts of every spot scaled to total ``target`` (CSR, float32)."""
    C = as_csr(X, np.float32, copy=True)
    C.eliminate_zeros()
    totals = np.asarray(C.sum(axis=1)).ravel().astype(np.float64)
    scale = np.divide(target, totals, out=np.ones_like(totals), where=totals > 0)
    C.data = np.log1p(C.data * np.repeat(scale, np.diff(C.indptr)).astype(np.float32))
    return C


def _neighbour_cache(prep: Prepared) -> tuple[sparse.csr_matrix, sparse.csr_matrix, sparse.csr_matrix | None]:
    """Every spot's neighbour mean, detection rate and (with ``neigh_gene_mean``) estimate, as CSR."""
    mean = (prep.graph @ prep.neigh_source).tocsr().astype(np.float32)
    rate = (prep.graph @ prep.neigh_binary).tocsr().astype(np.float32)
    mean.sort_indices()
    rate.sort_indices()
    estimate = None
    if prep.neigh_gene_mean is not None:
        # both products share one sparsity pattern (the counts and their indicator have the same entries)
        if not (np.array_equal(mean.indptr, rate.indptr) and np.array_equal(mean.indices, rate.indices)):
            mean = sparse.csr_matrix((np.asarray(mean[rate.nonzero()]).ravel(), rate.indices, rate.indptr), rate.shape)
        m = prep.neigh_gene_mean[rate.indices]
        data = (mean.data + prep.neigh_pseudo * m) / (rate.data + prep.neigh_pseudo) - m
        estimate = sparse.csr_matrix((data.astype(np.float32), rate.indices.copy(), rate.indptr.copy()), rate.shape)
    return mean, rate, estimate


def neighbour_estimate_dense(S: np.ndarray, C: np.ndarray, gene_mean: np.ndarray, pseudo: float) -> np.ndarray:
    """``(S + pseudo * m) / (C + pseudo) - m`` where ``C > 0``, else 0 (dense rows, float32).

    ``S`` and ``C`` are the neighbours' mean ``log1p`` value and detection rate, ``m`` the gene means:
    the neighbours' mean non-zero value shrunk to the gene mean, as a deviation from it.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (S + pseudo * gene_mean) / (C + pseudo) - gene_mean
    out[C <= 0] = 0.0
    return out


def fresh_norm(X: sparse.spmatrix | np.ndarray, image: np.ndarray | None) -> dict:
    """Normalisation constants learnt from the training data (stored with a saved model)."""
    totals = np.asarray(sparse.csr_matrix(X, dtype=np.float64).sum(axis=1)).ravel()
    mean, std, median = library_stats(totals)
    norm = {"library_mean": mean, "library_std": std, "library_median": median}
    # largest observed count of each gene: predictions are capped there (a network can extrapolate wildly)
    C = as_csr(X, np.float32)  # read only
    gene_max = np.zeros(C.shape[1], dtype=np.float64)
    if C.nnz:
        np.maximum.at(gene_max, C.indices, C.data)
    norm["gene_max"] = gene_max.tolist()
    norm["gene_mean"] = gene_log_mean_nonzero(log1p_csr(X)).astype(np.float64).tolist()
    norm["gene_mean_normalised"] = gene_log_mean_nonzero(depth_normalised_log1p(X, median)).astype(np.float64).tolist()
    if image is not None:
        img = np.asarray(image, dtype=np.float64)
        s = img.std(axis=0)
        norm["image_mean"] = img.mean(axis=0).tolist()
        norm["image_std"] = np.where(s > 0, s, 1.0).tolist()
    return norm


def gene_offset(X: sparse.spmatrix | np.ndarray, loss: str, norm: dict) -> np.ndarray:
    """Initial per-gene output: mean log1p non-zero value (mse) or log mean count per unit size factor."""
    if loss == "mse":
        return gene_log_mean_nonzero(log1p_csr(X)).astype(np.float32)
    C = sparse.csr_matrix(X, dtype=np.float64)
    totals = np.asarray(C.sum(axis=1)).ravel()
    ok = totals > 0
    scaled = sparse.diags(np.where(ok, norm["library_median"] / np.maximum(totals, 1e-12), 0.0)) @ C
    mean = np.asarray(scaled.sum(axis=0)).ravel() / max(1, int(ok.sum()))
    return np.log(np.maximum(mean, 1e-4)).astype(np.float32)


def batch(prep: Prepared, idx: np.ndarray, device: torch.device, *, source: str = "fit") -> dict[str, torch.Tensor]:
    """Dense tensors for the spots ``idx`` (only these rows are densified)."""
    L = prep.L_fit if source == "fit" else prep.L_obs
    out = {
        "counts": torch.from_numpy(L[idx].toarray()).to(device),
        "library": torch.from_numpy(prep.library[idx]).to(device),
    }
    if prep.has_neighbours:
        # the mean itself is read by the encoder without principal axes, or for an estimate not cached
        cached_estimate = prep.neigh_cache is not None and prep.neigh_cache[2] is not None
        needs_mean = prep.neigh_proj is None or (prep.neigh_gene_mean is not None and not cached_estimate)
        mean, rate = prep.neighbour_rows(idx, mean=needs_mean)
        if prep.neigh_proj is not None:
            out["neigh_proj"] = torch.from_numpy(prep.neigh_proj[idx]).to(device)
        else:
            out["neigh"] = torch.from_numpy(mean).to(device)
        out["neigh_detect"] = torch.from_numpy(rate).to(device)
        if prep.neigh_gene_mean is not None:
            out["neigh_estimate"] = torch.from_numpy(prep.neighbour_estimate_rows(idx, mean, rate)).to(device)
    if prep.position is not None:
        out["position"] = torch.from_numpy(prep.position[idx]).to(device)
    if prep.image is not None:
        out["image"] = torch.from_numpy(prep.image[idx]).to(device)
    if prep.graph_hops is not None:
        out["graph"] = torch.from_numpy(prep.graph_hops[idx]).to(device)
    return out


def attach_projection(prep: Prepared, net) -> None:
    """Precompute the inputs read through the count encoder's fixed axes (they never change): the neighbours'
    mean counts projected on them, and the graph encoder's hop features.
    """
    enc = net.encoders["counts"] if "counts" in net.encoders else None
    if prep.hop_graph is not None and enc is not None:
        prep.graph_hops = hop_features(
            prep.hop_graph, prep.hop_source, enc.projection.detach().cpu().numpy(), int(net.encoders["graph"].n_hops)
        )
    if not prep.has_neighbours or enc is None or enc.n_pcs == 0 or enc.neigh is None:
        return
    V = enc.projection.detach().cpu().numpy().astype(np.float32)
    if prep.neigh_cache is not None:
        prep.neigh_proj = np.asarray(prep.neigh_cache[0] @ V, dtype=np.float32)
        return
    # in row chunks: the neighbours' mean of all spots at once would be nearly dense
    proj = np.empty((prep.n_obs, V.shape[1]), dtype=np.float32)
    for start in range(0, prep.n_obs, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, prep.n_obs))
        mean = prep.graph[rows] @ prep.neigh_source
        mean.sort_indices()  # the same summation order as with the cache
        proj[rows] = np.asarray(mean @ V, dtype=np.float32)
    prep.neigh_proj = proj


def hop_features(graph: sparse.csr_matrix, source: sparse.csr_matrix, axes: np.ndarray, n_hops: int) -> np.ndarray:
    """``[A P, A^2 P, ..., A^K P]`` with ``P = source @ axes``: ``(n_obs, n_hops * n_pcs)`` float32.

    Sparse products only (``graph`` is the row-normalised kNN graph, ``source`` the CSR counts), in row chunks
    for the projection, so nothing of size spots x spots or spots x genes is dense.
    """
    V = np.asarray(axes, dtype=np.float32)
    P = np.empty((source.shape[0], V.shape[1]), dtype=np.float32)
    for start in range(0, source.shape[0], _CHUNK):
        P[start : start + _CHUNK] = np.asarray(source[start : start + _CHUNK] @ V, dtype=np.float32)
    hops = []
    for _ in range(n_hops):
        P = np.asarray(graph @ P, dtype=np.float32)
        hops.append(P)
    return np.hstack(hops) if hops else np.zeros((source.shape[0], 0), dtype=np.float32)
