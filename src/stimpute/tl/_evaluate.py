"""Score imputations on held-out entries: ``st.tl.evaluate``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse, stats

from .. import _logging as logg
from .._constants import HIDDEN_SPOT_SUFFIX, TEST_SUFFIX, TRAIN_SUFFIX
from .._validate import check_adata, check_layer, check_positive_int, get_matrix, is_whole

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
    holdout_key: str = "holdout",
    baselines: bool = True,
    min_gene_entries: int = 10,
) -> pd.DataFrame:
    """Score imputed layers on the entries hidden by :func:`stimpute.pp.holdout`.

    Scores use only the hidden entries: the hidden non-zero entries for ``"entries"`` and
    ``"gene_folds"``, every gene of the hidden spots for ``"spots"``, and every entry for
    ``"thinning"`` (predictions are then rescaled to the test depth by ``fraction / (1 - fraction)``).
    Two trivial baselines give every table its own floor: the training layer as it is, and each
    gene's mean over its observed (training) non-zero values (for ``"thinning"`` and ``"spots"``, which
    score zeros too, each gene's mean over all observed spots).

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
        Median over genes of Pearson's r on ``log1p`` counts.
    ``rmse_log2cpm``, ``pearson_log2cpm``
        On ``log2(1 + counts per million)`` with each spot's total counts (training plus test layer,
        i.e. the source layer's total; MIST's scale). The same factor scales truth and prediction. With
        ``"spots"`` the hidden spots' depths are unknown to the methods and predictions are not rescaled
        to them, so these two scores, like the raw and ``log1p`` ones, also reward guessing the depth.
    ``n_hidden``
        Number of scored entries.

    The table is also stored (rows merged with earlier calls) in ``adata.uns[holdout_key]['scores']``.

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
    train_key, test_key = holdout_key + TRAIN_SUFFIX, holdout_key + TEST_SUFFIX
    for key in [train_key, test_key]:
        check_layer(adata, key, name="holdout_key")
    for layer in layers:
        check_layer(adata, layer, name="layers")
        if get_matrix(adata, layer).shape != adata.shape:
            msg = f"`adata.layers[{layer!r}]` has shape {get_matrix(adata, layer).shape}, expected {adata.shape}."
            raise ValueError(msg)

    params = adata.uns[holdout_key]["params"]
    strategy, fraction = str(params["strategy"]), float(params["fraction"])
    train = sparse.csr_matrix(adata.layers[train_key])
    test = sparse.csr_matrix(adata.layers[test_key])
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

    hidden = _Truth(truth, cols, total[rows], min_gene_entries)
    del truth
    # each prediction is gathered, scored and dropped in turn (one entries-sized array at a time); nothing
    # is written to `adata` before every layer has been checked
    scores: dict[str, dict[str, float]] = {}
    for layer in layers:
        pred = _gather(get_matrix(adata, layer), rows, cols)
        if not np.isfinite(pred).all():
            msg = f"`adata.layers[{layer!r}]` has NaN or infinite values at hidden entries; check the imputation."
            raise ValueError(msg)
        pred *= scale
        scores[layer] = _scores(hidden, pred)
        del pred
    if baselines:
        scores[BASELINE_TRAIN] = _scores(hidden, _gather(train, rows, cols) * scale)
        sums = np.bincount(train.indices, weights=train.data.astype(np.float64), minlength=adata.n_vars)
        if strategy in ("entries", "gene_folds"):  # hidden entries are non-zero: mean of observed non-zeros
            denominator = np.bincount(train.indices, minlength=adata.n_vars)
        else:  # thinning / spots score zeros too: mean over all observed spots
            n_seen = adata.n_obs - (np.unique(rows).size if strategy == "spots" else 0)
            denominator = np.full(adata.n_vars, n_seen)
        gene_mean = np.divide(sums, denominator, out=np.zeros(adata.n_vars), where=denominator > 0)
        scores[BASELINE_GENE_MEAN] = _scores(hidden, gene_mean[cols] * scale)

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
    adata.uns[holdout_key]["scores"] = merged.copy()
    logg.info(
        f"scored {len(layers)} layer(s) on {hidden.values.size:,} hidden entries: added `adata.uns[{holdout_key!r}]['scores']`"
    )
    return table


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
    M = sparse.csr_matrix(M)
    uniq, inverse = np.unique(rows, return_inverse=True)
    for start in range(0, uniq.size, _CHUNK):
        block_rows = uniq[start : start + _CHUNK]
        dense = M[block_rows].toarray()
        sel = (inverse >= start) & (inverse < start + block_rows.size)
        out[sel] = dense[inverse[sel] - start, cols[sel]]
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


class _Truth:
    """Everything about the hidden values that does not depend on the prediction, computed once."""

    def __init__(self, truth: np.ndarray, cols: np.ndarray, total: np.ndarray, min_gene_entries: int) -> None:
        self.values, self.cols = truth, cols
        self.log = np.log1p(truth)
        self.cpm = 1e6 / np.maximum(total, 1)
        self.log_cpm = np.log2(1 + truth * self.cpm)
        self.n = np.bincount(cols)
        self.keep = self.n >= min_gene_entries
        self.centred = self.log - (np.bincount(cols, self.log, self.n.size) / np.maximum(self.n, 1))[cols]
        self.ss = np.bincount(cols, self.centred**2, self.n.size)
        # Spearman on at most _SPEARMAN_MAX entries (a fixed random subset), ranking is the costly part
        if truth.size > _SPEARMAN_MAX:
            self.sample = np.sort(np.random.default_rng(0).choice(truth.size, _SPEARMAN_MAX, replace=False))
        else:
            self.sample = slice(None)
        self.rank = stats.rankdata(truth[self.sample])


def _scores(t: _Truth, pred: np.ndarray) -> dict[str, float]:
    pred = np.clip(pred, 0, None)
    lp = np.log1p(pred)
    cp = np.log2(1 + pred * t.cpm)
    # per-gene Pearson on log1p, vectorised over genes
    gene_r = np.full(t.n.size, np.nan)
    if t.keep.any():
        dp = lp - (np.bincount(t.cols, lp, t.n.size) / np.maximum(t.n, 1))[t.cols]
        cov = np.bincount(t.cols, t.centred * dp, t.n.size)
        var = t.ss * np.bincount(t.cols, dp * dp, t.n.size)
        ok = t.keep & (var > 0)
        gene_r[ok] = cov[ok] / np.sqrt(var[ok])
    median_gene = float(np.nanmedian(gene_r)) if np.isfinite(gene_r).any() else float("nan")
    return {
        "rmse_raw": float(np.sqrt(np.mean((pred - t.values) ** 2))),
        "mae_raw": float(np.mean(np.abs(pred - t.values))),
        "rmse_log1p": float(np.sqrt(np.mean((lp - t.log) ** 2))),
        "mae_log1p": float(np.mean(np.abs(lp - t.log))),
        "pearson_log1p": _pearson(t.log, lp),
        "spearman": _pearson(t.rank, stats.rankdata(pred[t.sample])),
        "median_gene_pearson": median_gene,
        "rmse_log2cpm": float(np.sqrt(np.mean((cp - t.log_cpm) ** 2))),
        "pearson_log2cpm": _pearson(t.log_cpm, cp),
        "n_hidden": float(t.values.size),
    }
