"""Score imputations on held-out entries: ``st.tl.evaluate``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse, stats

from .. import _logging as logg
from .._constants import HIDDEN_SPOT_SUFFIX, HOLDOUT_KEY, TEST_SUFFIX, TRAIN_SUFFIX
from .._lineage import check_not_leaked
from .._validate import (
    as_csr,
    check_adata,
    check_layer,
    check_obs_column,
    check_positive_int,
    get_matrix,
    is_whole,
    record_params,
)
from .._warnings import ReadoutWarning, warn

__all__ = ["evaluate"]

BASELINE_TRAIN = "baseline: train as is"
BASELINE_GENE_MEAN = "baseline: gene mean"
METRICS = (
    "rmse_raw",
    "mae_raw",
    "rmse_log1p",
    "mae_log1p",
    "pearson_log1p",
    "spearman",
    "median_gene_pearson",
    "rmse_log2cpm",
    "pearson_log2cpm",
    "n_hidden",
)
_CHUNK = 1024  # rows gathered at once when densifying
_SPEARMAN_MAX = 2_000_000  # Spearman's rho is computed on a fixed random subset above this many entries


def evaluate(
    adata: AnnData,
    layers: str | Sequence[str],
    *,
    holdout_key: str = HOLDOUT_KEY,
    baselines: bool = True,
    min_gene_entries: int = 10,
    groupby: str | None = None,
) -> pd.DataFrame:
    """Score imputed layers on the entries hidden by :func:`stimpute.pp.holdout`.

    Scores use only the hidden entries: the hidden non-zero entries for ``"entries"`` and
    ``"gene_folds"``, every gene of the hidden spots for ``"spots"``, and every entry for
    ``"thinning"`` (predictions are then rescaled to the test depth by ``fraction / (1 - fraction)``).
    Two trivial baselines give every table its own floor: the training layer as it is, and each
    gene's mean over its observed (training) non-zero values (for ``"thinning"`` and ``"spots"``, which
    score zeros too, each gene's mean over all observed spots).

    Layers whose record says how they were made (:func:`stimpute.tl.impute`, ``ImputationModel.predict``,
    :func:`stimpute.pp.spatial_smooth`) are checked first: one computed from the matrix that still holds the
    hidden entries (e.g. imputed from ``X``) or on an earlier split (the holdout was run again with another
    seed) is refused with a ValueError, since its scores would not be honest. The records are followed through
    every step (the layer each one read, the ``obsm`` image features it read, a learned method's latent): a
    layer derived from ``X``, the holdout's source layer or its test layer through any chain of stimpute calls
    is refused with the chain in the message, e.g. ``imputed_knn <- X_smoothed <- X`` for
    ``st.pp.spatial_smooth(adata, None)`` then ``st.tl.impute(adata, "knn", layer="X_smoothed")``. The chain
    stops at the holdout's training layer and at layers no stimpute record describes. A model's weights count as
    a step: the prediction of a model trained on ``X`` (``model.predict(adata, layer="holdout_train")``) is
    refused as well.

    Parameters
    ----------
    adata
        Annotated data on which :func:`stimpute.pp.holdout` was run.
    layers
        Imputed layer(s) to score, in the count scale of the training layer (as :func:`stimpute.tl.impute`
        writes them): the source layer's scale, except for ``"thinning"``, whose training counts are
        thinned; those predictions are rescaled to the test depth. Negative values are clipped to 0
        before scoring (counts cannot be negative).
    holdout_key
        The ``key_added`` of :func:`stimpute.pp.holdout`.
    baselines
        Also score the two baselines.
    min_gene_entries
        Genes with fewer hidden entries are left out of ``median_gene_pearson``.
    groupby
        Column of ``adata.obs`` (e.g. ``"library_id"`` for an object holding several sections, or a domain
        annotation): also score each group's hidden entries on their own, and return that table.

    Returns
    -------
    A :class:`~pandas.DataFrame` with one row per layer (and baseline) and the columns

    ``rmse_raw``, ``mae_raw``
        Root mean squared and mean absolute error on raw counts (the reference project's number).
    ``rmse_log1p``, ``mae_log1p``, ``pearson_log1p``
        The same on ``log1p`` counts, and Pearson's r.
    ``spearman``
        Spearman's rank correlation (on a fixed random subset of 2,000,000 entries when there are more,
        as with ``"thinning"`` on a whole section).
    ``median_gene_pearson``
        Median over genes of Pearson's r on ``log1p`` counts, over the genes with at least
        ``min_gene_entries`` hidden entries whose true and predicted values both vary (a gene predicted
        by one value, as by the gene-mean baseline, has no correlation; NaN when no gene is left).
    ``rmse_log2cpm``, ``pearson_log2cpm``
        On ``log2(1 + counts per million)`` with each spot's total counts (training plus test layer,
        i.e. the source layer's total; MIST's scale). The same factor scales truth and prediction. With
        ``"spots"`` the hidden spots' depths are unknown to the methods and predictions are not rescaled
        to them, so these two scores, like the raw and ``log1p`` ones, also reward guessing the depth.
    ``n_hidden``
        Number of scored entries.

    The table is also stored (rows merged with earlier calls) in ``adata.uns[holdout_key]['scores']``.
    With ``groupby``, the returned table holds the scores of each group's hidden entries instead, indexed
    by (group, layer), and is stored (replacing an earlier one) in
    ``adata.uns[holdout_key]['scores_by_group']`` with the group in a column named ``groupby``; the
    baselines are the same as in the pooled table (the training layer, and gene means over all spots).

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50)
    >>> st.pp.holdout(adata, fraction=0.5)
    >>> adata.layers["smoothed"] = adata.layers["holdout_train"].toarray() + 1.0
    >>> scores = st.tl.evaluate(adata, "smoothed")
    >>> list(scores.index)
    ['smoothed', 'baseline: train as is', 'baseline: gene mean']
    """
    min_gene_entries = check_positive_int(min_gene_entries, name="min_gene_entries", minimum=1)
    if not isinstance(baselines, bool | np.bool_):
        msg = f"`baselines` must be True or False, got {baselines!r}."
        raise TypeError(msg)
    check_adata(adata)
    if holdout_key not in adata.uns or "params" not in adata.uns[holdout_key]:
        msg = f"`adata.uns[{holdout_key!r}]` not found; run `st.pp.holdout(adata, key_added={holdout_key!r})` first."
        raise KeyError(msg)
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Sequence) or not all(isinstance(layer, str) for layer in layers):
        msg = f"`layers` must be a layer name or a list of layer names, got {layers!r}."
        raise TypeError(msg)
    if len(layers) == 0 and not baselines:
        msg = "nothing to score: `layers` is empty and `baselines=False`; pass layer names or `baselines=True`."
        raise ValueError(msg)
    train_key, test_key = holdout_key + TRAIN_SUFFIX, holdout_key + TEST_SUFFIX
    for key in [train_key, test_key]:
        check_layer(adata, key, name="holdout_key")
    for layer in layers:
        check_layer(adata, layer, name="layers")
        if get_matrix(adata, layer).shape != adata.shape:
            msg = f"`adata.layers[{layer!r}]` has shape {get_matrix(adata, layer).shape}, expected {adata.shape}."
            raise ValueError(msg)

    group_codes, group_names = None, []
    if groupby is not None:
        check_obs_column(adata, groupby, name="groupby", why="fill it (or subset the spots) to group by it.")
        if groupby in ("layer", *METRICS):
            msg = f"`groupby={groupby!r}` is also a column of the scores table; rename that obs column first."
            raise ValueError(msg)
        values = adata.obs[groupby]
        if isinstance(values.dtype, pd.CategoricalDtype):  # the categories' order, those present only
            values = values.cat.remove_unused_categories()
            group_codes, group_names = values.cat.codes.to_numpy(), list(values.cat.categories)
        else:  # the values as they are (numbers stay numbers), sorted
            group_codes, names = pd.factorize(values, sort=True)
            group_names = list(names)
    for layer in layers:  # derived from the hidden entries, or from an earlier split: refused
        check_not_leaked(adata, layer, holdout_key)
    for layer in layers:  # scored, but not comparable with the others
        _warn_if_not_comparable(adata, layer, holdout_key)
    params = adata.uns[holdout_key]["params"]
    strategy, fraction = str(params["strategy"]), float(params["fraction"])
    train = as_csr(adata.layers[train_key])
    test = as_csr(adata.layers[test_key])
    if bool(adata.uns[holdout_key].get("integer_counts", False)):
        # the split was of whole counts: non-integer or negative values mean the layers were changed afterwards
        for key, M in ((train_key, train), (test_key, test)):
            if M.nnz and (not is_whole(M.data) or M.data.min() < 0):
                msg = (
                    f"`adata.layers[{key!r}]` no longer holds the whole counts `st.pp.holdout` split (it has "
                    "non-integer or negative values): it was changed afterwards, e.g. normalised in place. Rerun "
                    f"`st.pp.holdout(adata, key_added={holdout_key!r})` and the imputation, and normalise copies instead."
                )
                raise ValueError(msg)
    rows, cols = _scored_entries(adata, holdout_key, strategy, test)
    truth = _gather(test, rows, cols)
    total = np.asarray((train + test).sum(axis=1)).ravel().astype(np.float64)
    scale = fraction / (1 - fraction) if strategy == "thinning" else 1.0

    hidden = _Truth(truth, rows, cols, total, min_gene_entries)
    groups: dict = {}  # each group's hidden entries (indices) and their truth
    if group_codes is not None:
        of_entry = group_codes[rows]
        order = np.argsort(of_entry, kind="stable")
        bounds = np.searchsorted(of_entry[order], np.arange(len(group_names) + 1))
        for code, name in enumerate(group_names):  # a group without hidden entries gets NaN scores, as alone
            idx = order[bounds[code] : bounds[code + 1]]
            groups[name] = (idx, _Truth(truth[idx], rows[idx], cols[idx], total, min_gene_entries))
    del truth
    # each prediction is gathered, scored and dropped in turn (one entries-sized array at a time); nothing
    # is written to `adata` before every layer has been checked
    scores: dict[str, dict[str, float]] = {}
    by_group: dict[tuple[str, str], dict[str, float]] = {}

    def score(name: str, pred: np.ndarray) -> None:
        scores[name] = _scores(hidden, pred)  # clips `pred` at 0 in place
        for group, (idx, truth_g) in groups.items():
            by_group[(group, name)] = _scores(truth_g, pred[idx])

    for layer in layers:
        pred = _gather(get_matrix(adata, layer), rows, cols)
        if not np.isfinite(pred).all():
            msg = f"`adata.layers[{layer!r}]` has NaN or infinite values at hidden entries; check the imputation."
            raise ValueError(msg)
        pred *= scale
        score(layer, pred)
        del pred
    if baselines:
        score(BASELINE_TRAIN, _gather(train, rows, cols) * scale)
        sums = np.bincount(train.indices, weights=train.data.astype(np.float64), minlength=adata.n_vars)
        if strategy in ("entries", "gene_folds"):  # hidden entries are non-zero: mean of observed non-zeros
            denominator = np.bincount(train.indices, minlength=adata.n_vars)
        else:  # thinning / spots score zeros too: mean over all observed spots
            n_seen = adata.n_obs - (np.unique(rows).size if strategy == "spots" else 0)
            denominator = np.full(adata.n_vars, n_seen)
        gene_mean = np.divide(sums, denominator, out=np.zeros(adata.n_vars), where=denominator > 0)
        score(BASELINE_GENE_MEAN, gene_mean[cols] * scale)

    table = pd.DataFrame(scores).T[list(METRICS)]
    table["n_hidden"] = table["n_hidden"].astype(np.int64)
    table.index.name = "layer"

    stored = adata.uns[holdout_key].get("scores")
    if isinstance(stored, pd.DataFrame) and len(stored):
        stored = stored.drop(index=[i for i in table.index if i in stored.index])
        merged = pd.concat([stored[list(METRICS)], table])
    else:
        merged = table
    merged["n_hidden"] = merged["n_hidden"].astype(np.int64)
    # a new top-level entry: on a view, assigning into the shared dict would change the parent's scores
    record = {**adata.uns[holdout_key], "scores": merged.copy()}
    grouped = None
    if groupby is not None:
        keys = [(group, name) for group in groups for name in scores]  # group by group, layers in order
        grouped = pd.DataFrame([by_group[k] for k in keys], columns=list(METRICS))
        grouped.index = pd.MultiIndex.from_tuples(keys, names=[groupby, "layer"])
        grouped["n_hidden"] = grouped["n_hidden"].astype(np.int64)
        record["scores_by_group"] = grouped.reset_index()
    adata.uns[holdout_key] = record
    logg.info(
        f"scored {len(layers)} layer(s) on {hidden.size:,} hidden entries"
        + (f" (and per {groupby!r}: {len(groups)} groups)" if groupby is not None else "")
        + f": added `adata.uns[{holdout_key!r}]['scores']`"
        + (" and `['scores_by_group']`" if groupby is not None else "")
    )
    return table if grouped is None else grouped


def _scored_entries(
    adata: AnnData, holdout_key: str, strategy: str, test: sparse.csr_matrix
) -> tuple[np.ndarray, np.ndarray]:
    if strategy in ("entries", "gene_folds"):
        coo = test.tocoo()
        order = np.lexsort((coo.col, coo.row))
        return coo.row[order].astype(np.int64), coo.col[order].astype(np.int64)
    if strategy == "spots":
        col = holdout_key + HIDDEN_SPOT_SUFFIX
        if col not in adata.obs:
            msg = f"`adata.obs[{col!r}]` is missing; rerun `st.pp.holdout(adata, strategy='spots', key_added={holdout_key!r})`."
            raise KeyError(msg)
        spots = np.flatnonzero(adata.obs[col].to_numpy(dtype=bool))
    else:  # thinning: every entry
        spots = np.arange(adata.n_obs)
    rows = np.repeat(spots, adata.n_vars)
    cols = np.tile(np.arange(adata.n_vars), spots.size)
    return rows, cols


def _gather(M: np.ndarray | sparse.spmatrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Values of ``M`` at (rows, cols), reading at most ``_CHUNK`` dense rows at a time."""
    out = np.empty(rows.size, dtype=np.float64)
    if not sparse.issparse(M):
        M = np.asarray(M)
        for start in range(0, rows.size, 1 << 22):
            sl = slice(start, start + (1 << 22))
            out[sl] = M[rows[sl], cols[sl]]
        return out
    M = as_csr(M)
    uniq, inverse = np.unique(rows, return_inverse=True)
    for start in range(0, uniq.size, _CHUNK):
        block_rows = uniq[start : start + _CHUNK]
        dense = M[block_rows].toarray()
        sel = (inverse >= start) & (inverse < start + block_rows.size)
        out[sel] = dense[inverse[sel] - start, cols[sel]]
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r; NaN when either side is constant (all values equal: np.std can leave a rounding residue)."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


_STEP = 1 << 21  # hidden entries per block when scoring (a few 16 MB arrays at a time)


def _blocks(n: int):
    for start in range(0, n, _STEP):
        yield slice(start, min(start + _STEP, n))


def _correlation(sxy: float, sxx: float, syy: float, constant: bool, n: int) -> float:
    """Pearson's r from centred sums; NaN when either side is constant or there are fewer than 2 entries."""
    if n < 2 or constant or sxx <= 0 or syy <= 0:
        return float("nan")
    return float(sxy / np.sqrt(sxx * syy))


class _Range:
    """Running minimum and maximum per group over blocks of values (is a group, or everything, constant?)."""

    def __init__(self, n_groups: int) -> None:
        self.lo, self.hi = np.full(n_groups, np.inf), np.full(n_groups, -np.inf)

    def update(self, groups: np.ndarray | None, values: np.ndarray) -> None:
        """Add ``values`` (a non-empty block) of the ``groups`` (``None``: all in the one group)."""
        if groups is None:
            self.lo[0], self.hi[0] = min(self.lo[0], values.min()), max(self.hi[0], values.max())
        else:
            np.minimum.at(self.lo, groups, values)
            np.maximum.at(self.hi, groups, values)

    def varies(self) -> np.ndarray:
        return self.lo < self.hi

    def varies_overall(self) -> bool:
        return bool(self.lo.size) and float(self.lo.min()) < float(self.hi.max())


class _Truth:
    """Everything about the hidden values that does not depend on the prediction, computed once.

    Per hidden entry only the true count, its gene and its spot's counts-per-million factor are kept
    (``log1p`` and log2-CPM values are recomputed block by block), so scoring holds a few
    entries-sized arrays, not a dozen.
    """

    def __init__(self, truth: np.ndarray, rows: np.ndarray, cols: np.ndarray, total: np.ndarray, min_gene_entries: int):
        self.values, self.rows, self.cols = truth, rows, cols
        self.cpm_of_spot = 1e6 / np.maximum(total, 1)  # per spot
        self.size = int(truth.size)
        n_genes = int(cols.max()) + 1 if cols.size else 0
        self.n = np.bincount(cols, minlength=n_genes)
        self.keep = self.n >= min_gene_entries
        # first pass: sums for the means (overall and per gene) and the extrema (constant truth: r is NaN)
        sum_log = sum_cpm = 0.0
        gene_sum = np.zeros(n_genes)
        gene_range, cpm_range = _Range(n_genes), _Range(1)
        for b in _blocks(self.size):
            lt, ct = self.log_cpm_block(b)
            sum_log += float(lt.sum())
            sum_cpm += float(ct.sum())
            gene_sum += np.bincount(cols[b], lt, n_genes)
            gene_range.update(cols[b], lt)
            cpm_range.update(None, ct)
        self.mean_log = sum_log / max(self.size, 1)
        self.mean_cpm = sum_cpm / max(self.size, 1)
        self.gene_mean = gene_sum / np.maximum(self.n, 1)
        self.gene_varies = gene_range.varies()  # a gene whose hidden values are all equal has no correlation
        self.constant_log, self.constant_cpm = not gene_range.varies_overall(), not cpm_range.varies_overall()
        # second pass: centred sums of squares
        self.ss_log = self.ss_cpm = 0.0
        self.gene_ss = np.zeros(n_genes)
        for b in _blocks(self.size):
            lt, ct = self.log_cpm_block(b)
            d = lt - self.gene_mean[cols[b]]
            self.gene_ss += np.bincount(cols[b], d * d, n_genes)
            self.ss_log += float(np.sum((lt - self.mean_log) ** 2))
            self.ss_cpm += float(np.sum((ct - self.mean_cpm) ** 2))
        # Spearman on at most _SPEARMAN_MAX entries (a fixed random subset), ranking is the costly part
        if truth.size > _SPEARMAN_MAX:
            self.sample = np.sort(np.random.default_rng(0).choice(truth.size, _SPEARMAN_MAX, replace=False))
        else:
            self.sample = slice(None)
        self.rank = stats.rankdata(truth[self.sample])

    def log_cpm_block(self, b: slice) -> tuple[np.ndarray, np.ndarray]:
        """``log1p`` and log2-CPM of the true values of the entries ``b``."""
        t = self.values[b]
        return np.log1p(t), np.log2(1 + t * self.cpm_of_spot[self.rows[b]])


def _scores(t: _Truth, pred: np.ndarray) -> dict[str, float]:
    """All metrics of one prediction (clipped at 0 in place), in two passes over blocks of entries."""
    if t.size == 0:  # nothing hidden (a test layer emptied after the split): no score, not a perfect one
        return {k: (0.0 if k == "n_hidden" else float("nan")) for k in METRICS}
    np.clip(pred, 0, None, out=pred)
    n_genes = t.n.size
    # first pass: errors, and the sums for the prediction's means
    se = ae = se_log = ae_log = se_cpm = sum_log = sum_cpm = 0.0
    gene_sum = np.zeros(n_genes)
    gene_range, cpm_range = _Range(n_genes), _Range(1)
    for b in _blocks(t.size):
        p, v = pred[b], t.values[b]
        lt, ct = t.log_cpm_block(b)
        lp, cp = np.log1p(p), np.log2(1 + p * t.cpm_of_spot[t.rows[b]])
        d = p - v
        se += float(np.dot(d, d))
        ae += float(np.abs(d).sum())
        d = lp - lt
        se_log += float(np.dot(d, d))
        ae_log += float(np.abs(d).sum())
        d = cp - ct
        se_cpm += float(np.dot(d, d))
        sum_log += float(lp.sum())
        sum_cpm += float(cp.sum())
        gene_sum += np.bincount(t.cols[b], lp, n_genes)
        gene_range.update(t.cols[b], lp)
        cpm_range.update(None, cp)
    n = t.size
    mean_log, mean_cpm = sum_log / n, sum_cpm / n
    gene_mean = gene_sum / np.maximum(t.n, 1)
    # second pass: centred cross products and the prediction's sums of squares
    sxy_log = syy_log = sxy_cpm = syy_cpm = 0.0
    gene_cov, gene_var = np.zeros(n_genes), np.zeros(n_genes)
    for b in _blocks(t.size):
        p = pred[b]
        lt, ct = t.log_cpm_block(b)
        lp, cp = np.log1p(p), np.log2(1 + p * t.cpm_of_spot[t.rows[b]])
        c = t.cols[b]
        dp = lp - gene_mean[c]
        gene_cov += np.bincount(c, (lt - t.gene_mean[c]) * dp, n_genes)
        gene_var += np.bincount(c, dp * dp, n_genes)
        dp = lp - mean_log
        sxy_log += float(np.dot(lt - t.mean_log, dp))
        syy_log += float(np.dot(dp, dp))
        dp = cp - mean_cpm
        sxy_cpm += float(np.dot(ct - t.mean_cpm, dp))
        syy_cpm += float(np.dot(dp, dp))
    gene_r = np.full(n_genes, np.nan)
    var = t.gene_ss * gene_var
    # a gene whose prediction (or truth) is the same at all its hidden entries has no correlation: NaN, left out
    ok = t.keep & (var > 0) & gene_range.varies() & t.gene_varies
    gene_r[ok] = gene_cov[ok] / np.sqrt(var[ok])
    median_gene = float(np.nanmedian(gene_r)) if np.isfinite(gene_r).any() else float("nan")
    constant_log, constant_cpm = not gene_range.varies_overall(), not cpm_range.varies_overall()
    return {
        "rmse_raw": float(np.sqrt(se / n)),
        "mae_raw": float(ae / n),
        "rmse_log1p": float(np.sqrt(se_log / n)),
        "mae_log1p": float(ae_log / n),
        "pearson_log1p": _correlation(sxy_log, t.ss_log, syy_log, t.constant_log or constant_log, t.size),
        "spearman": _pearson(t.rank, stats.rankdata(pred[t.sample])),
        "median_gene_pearson": median_gene,
        "rmse_log2cpm": float(np.sqrt(se_cpm / n)),
        "pearson_log2cpm": _correlation(sxy_cpm, t.ss_cpm, syy_cpm, t.constant_cpm or constant_cpm, t.size),
        "n_hidden": float(t.size),
    }


def _warn_if_not_comparable(adata: AnnData, layer: str, holdout_key: str) -> None:
    """Warn about a layer that holds the answers, or a readout that is not at the spots' own depth."""
    source = str(adata.uns[holdout_key]["params"].get("layer", "X"))
    if layer in (source, holdout_key + TEST_SUFFIX):
        warn(
            f"`{layer}` holds the hidden values themselves (`st.pp.holdout` split it): its scores are perfect by "
            "construction, a check of the scoring rather than an imputation.",
            ReadoutWarning,
        )
        return
    params = record_params(adata, layer)
    if params is not None and str(params.get("output", "")) == "normalized":
        warn(
            f"`adata.layers[{layer!r}]` is a readout at the median depth (`output='normalized'`), while the hidden "
            "counts are at each spot's own depth: its scores are not comparable with the other layers'. Score the "
            "layer written with the default `output='conditional'` (or `'expected'`) instead.",
            ReadoutWarning,
        )
