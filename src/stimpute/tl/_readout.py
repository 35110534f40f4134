"""Readouts and results of ``st.tl.impute``: the no-training ``"knn"`` prediction, observed values put back,
and the layer and ``uns`` record written for every method (``st.tl.impute`` and ``ImputationModel.predict``).
"""

from __future__ import annotations

import copy as copy_module
from typing import Any

import numpy as np
from anndata import AnnData
from scipy import sparse

from .._constants import LATENT_PREFIX, OUTPUTS
from .._validate import as_csr, check_choice

EMPTY_HISTORY = {"epoch": [], "train_loss": [], "val_loss": []}


def knn_predict(X, coords: np.ndarray, opts: dict[str, Any], output: str, groups: np.ndarray | None) -> np.ndarray:
    from .._graph import spatial_graph
    from .._knn import knn_impute_log1p, log1p_csr

    # spots without any count (e.g. hidden whole) are unobserved: they are predicted, not averaged in
    has_counts = np.asarray(X.sum(axis=1), dtype=np.float64).ravel() > 0
    graph = spatial_graph(coords, opts["n_neighbors"], sources=has_counts, groups=groups)
    if output in ("expected", "normalized"):  # plain mean of the neighbours' counts, zeros included
        out = np.empty(X.shape, dtype=np.float32)
        C = as_csr(X, np.float32)  # read only (float16 layers too)
        if output == "normalized":  # every spot scaled to the median depth first
            C = sparse.diags(depth_scale(C, median_total(C))) @ C
        for start in range(0, X.shape[0], 512):
            out[start : start + 512] = (graph[start : start + 512] @ C).toarray()
        return out
    L = log1p_csr(X)
    out = knn_impute_log1p(L, graph, shrinkage=opts["shrinkage"])
    np.expm1(out, out=out)
    return out


def check_output(output: str, config: dict) -> None:
    check_choice(output, OUTPUTS, name="output")
    if output == "expected" and config.get("loss", "mse") == "mse" and not config.get("detection", False):
        msg = (
            "`output='expected'` needs the probability that a gene is detected: train with `detection=True` "
            "(adds a detection head) or `loss='nb'`; or use `output='conditional'` or `'normalized'`."
        )
        raise ValueError(msg)


def median_total(X) -> float:
    totals = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()  # float64: a float16 layer's totals overflow
    return float(np.median(totals[totals > 0])) if (totals > 0).any() else 1.0


def depth_scale(C: sparse.csr_matrix, to_depth: float) -> np.ndarray:
    totals = np.asarray(C.sum(axis=1)).ravel().astype(np.float64)
    return np.divide(to_depth, totals, out=np.ones_like(totals), where=totals > 0).astype(np.float32)


def restore_observed(out: np.ndarray, X, to_depth: float | None = None) -> None:
    """Put the observed non-zero values of ``X`` back into ``out`` (scaled to depth ``to_depth`` if given)."""
    C = as_csr(X, np.float32, copy=True)  # eliminate_zeros works in place
    C.eliminate_zeros()
    rows = np.repeat(np.arange(C.shape[0]), np.diff(C.indptr))
    values = C.data
    if to_depth is not None:
        values = values * depth_scale(C, to_depth)[rows]
    out[rows, C.indices] = values.astype(np.float32)


def write_result(
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
    latent: np.ndarray | None = None,
) -> None:
    adata.layers[key_added] = np.ascontiguousarray(out, dtype=np.float32)
    if latent is not None:  # the fused latent, like scVI's X_scVI: for sc.pp.neighbors(use_rep=...)
        adata.obsm[LATENT_PREFIX + key_added] = np.ascontiguousarray(latent, dtype=np.float32)
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
