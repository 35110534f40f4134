"""Hold out part of the observed counts for honest evaluation: ``st.pp.holdout``."""

from __future__ import annotations

from numbers import Real
from typing import Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from .. import _logging as logg
from .._constants import HIDDEN_SPOT_SUFFIX, HOLDOUT_KEY, TEST_SUFFIX, TRAIN_SUFFIX
from .._lineage import split_id
from .._validate import (
    check_adata,
    check_choice,
    check_counts,
    check_fraction,
    check_key_string,
    check_own_keys,
    check_positive_int,
    check_random_state,
    get_matrix,
    is_whole,
)
from .._warnings import InputWarning, warn

__all__ = ["holdout"]

Strategy = Literal["entries", "gene_folds", "thinning", "spots"]
STRATEGIES = ("entries", "gene_folds", "thinning", "spots")


def holdout(
    adata: AnnData,
    fraction: float = 0.5,
    *,
    strategy: Strategy = "entries",
    layer: str | None = None,
    key_added: str = HOLDOUT_KEY,
    fold: int = 0,
    min_spot_fraction: float = 0.5,
    random_state: int | None = 0,
    copy: bool = False,
) -> AnnData | None:
    """Hide part of the observed counts so that an imputation can be scored on them.

    The training layer is what models may see; the test layer holds only the hidden values.
    ``train + test`` equals the source matrix exactly, and ``X``/``layer`` are never changed.

    Parameters
    ----------
    adata
        Annotated data with raw counts (spots x genes).
    fraction
        Fraction to hide, strictly between 0 and 1.
    strategy
        How to hide:

        ``"entries"``
            A random ``fraction`` of the non-zero entries (the reference project's protocol).
        ``"gene_folds"``
            MIST's protocol: for every gene that is non-zero in at least ``min_spot_fraction``
            of the spots, its non-zero spots are shuffled into ``round(1 / fraction)`` folds and
            fold ``fold`` is hidden (so the hidden share is ``1 / round(1 / fraction)``; ``fraction``
            must be at most 0.5). Other genes are left whole.
        ``"thinning"``
            Binomial thinning of every count: the training layer gets ``Binomial(n, 1 - fraction)``
            and the test layer the rest (integer counts required). Scored on all entries.
        ``"spots"``
            Whole spots are hidden, for predicting unseen spots from position and image. Scored on
            all genes of the hidden spots, zeros included.
    layer
        Layer with the raw counts; ``None`` uses ``adata.X``.
    key_added
        Prefix of the written keys.
    fold
        Which fold to hide with ``strategy="gene_folds"`` (0 to ``round(1 / fraction) - 1``).
    min_spot_fraction
        With ``strategy="gene_folds"``, only genes non-zero in at least this fraction of spots are held out.
    random_state
        Seed; the same seed gives the same split.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``. Sets:

    ``adata.layers['{key_added}_train']``
        Counts that models may see (CSR, same dtype as the source; float32 for a float16 source, which
        scipy.sparse cannot store).
    ``adata.layers['{key_added}_test']``
        The hidden counts only (CSR, same dtype as the source).
    ``adata.obs['{key_added}_hidden_spot']``
        With ``strategy="spots"``: whether the spot is hidden.
    ``adata.uns['{key_added}']``
        ``params``, counts of what was hidden (``n_nonzero``, ``n_hidden``, ``hidden_fraction``) and
        ``integer_counts`` (whether the source held whole counts; :func:`stimpute.tl.evaluate` then
        refuses holdout layers that were normalised in place afterwards).

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50)
    >>> st.pp.holdout(adata, fraction=0.5, strategy="entries", random_state=0)
    >>> round(adata.uns["holdout"]["hidden_fraction"], 2)
    0.5
    >>> (adata.layers["holdout_train"] + adata.layers["holdout_test"] != adata.X).nnz
    0
    """
    check_adata(adata)
    fraction = check_fraction(fraction)
    check_choice(strategy, STRATEGIES, name="strategy")
    check_key_string(key_added, name="key_added", writes_uns=True)
    source = get_matrix(adata, layer)
    if (layer or "X") in (key_added + TRAIN_SUFFIX, key_added + TEST_SUFFIX):
        msg = (
            f"`key_added={key_added!r}` would overwrite the input `layer={layer!r}`; pass another `key_added` "
            f"(e.g. `key_added='{key_added}2'` for a split of the training layer)."
        )
        raise ValueError(msg)
    check_own_keys(
        adata,
        key_added,
        fields=("strategy", "fraction"),
        writer="st.pp.holdout",
        layers=[key_added + TRAIN_SUFFIX, key_added + TEST_SUFFIX],
    )
    source_name = "adata.X" if layer in (None, "X") else f"adata.layers[{layer!r}]"
    check_counts(source, name=source_name, integer=strategy == "thinning")
    n_folds = max(2, int(round(1 / fraction)))
    if strategy == "gene_folds":
        if fraction > 0.5:
            msg = (
                f"`fraction={fraction}` with `strategy='gene_folds'` would mean fewer than 2 folds; it hides one of "
                "round(1 / fraction) folds, so use at most 0.5 (e.g. 0.2 for MIST's 5 folds)."
            )
            raise ValueError(msg)
        fold = check_positive_int(fold, name="fold", minimum=0)
        if fold >= n_folds:
            msg = f"`fold` must be below the number of folds round(1 / fraction) = {n_folds}, got {fold}."
            raise ValueError(msg)
        if isinstance(min_spot_fraction, bool) or not isinstance(min_spot_fraction, Real):
            msg = f"`min_spot_fraction` must be a number between 0 and 1, got {min_spot_fraction!r}."
            raise TypeError(msg)
        if not 0 <= min_spot_fraction <= 1:
            msg = f"`min_spot_fraction` must be between 0 and 1, got {min_spot_fraction!r}."
            raise ValueError(msg)
    rng = check_random_state(random_state)

    if not sparse.issparse(source) and source.dtype == np.float16:  # scipy.sparse has no float16 (exact in float32)
        source = source.astype(np.float32)
    X = sparse.csr_matrix(source, copy=True) if not sparse.issparse(source) else source.tocsr(copy=True)
    X.sum_duplicates()  # duplicate stored entries would otherwise be split between train and test
    X.eliminate_zeros()
    X.sort_indices()
    nnz = X.nnz
    if nnz < 2:
        msg = f"{source_name} has {nnz} non-zero entries; at least 2 are needed to hold any out."
        raise ValueError(msg)

    if not is_whole(X.data):  # (thinning refused them above)
        warn(
            f"`{source_name}` holds non-integer values; the split is made of them as they are, but stimpute's models "
            "and scores expect raw counts (a normalised or log-transformed matrix is imputed and scored as if it "
            "were counts). Pass `layer=` naming raw counts if you have them.",
            InputWarning,
        )
    start = logg.info(f"holding out {fraction:.0%} ({strategy}) of {source_name}")
    extra: dict[str, int | float] = {}
    hidden_spots = None
    if strategy == "entries":
        n_hide = int(round(fraction * nnz))
        if n_hide < 1 or n_hide >= nnz:
            msg = f"{source_name} has {nnz} non-zero entries, too few to hide a fraction of {fraction}."
            raise ValueError(msg)
        hide = np.zeros(nnz, dtype=bool)
        hide[rng.choice(nnz, size=n_hide, replace=False)] = True
        train, test = _split_by_mask(X, hide)
    elif strategy == "gene_folds":
        hide, n_genes = _gene_fold_mask(X, n_folds, fold, min_spot_fraction, rng)
        if n_genes == 0:
            msg = (
                f"No gene of {source_name} is non-zero in at least {min_spot_fraction:.0%} of the spots, so "
                "`strategy='gene_folds'` has nothing to hide; lower `min_spot_fraction`."
            )
            raise ValueError(msg)
        train, test = _split_by_mask(X, hide)
        extra = {"n_genes_held_out": n_genes, "n_folds": n_folds, "fold": fold}
    elif strategy == "thinning":
        counts = X.data.astype(np.int64)
        kept = rng.binomial(counts, 1 - fraction)
        train = _with_data(X, kept.astype(X.dtype))
        test = _with_data(X, (counts - kept).astype(X.dtype))
    else:  # spots
        n_hide = int(round(fraction * adata.n_obs))
        if n_hide < 1 or n_hide >= adata.n_obs:
            msg = f"`adata` has {adata.n_obs} spots, too few to hide a fraction of {fraction} of them."
            raise ValueError(msg)
        hidden_spots = np.zeros(adata.n_obs, dtype=bool)
        hidden_spots[rng.choice(adata.n_obs, size=n_hide, replace=False)] = True
        row_of_entry = np.repeat(np.arange(adata.n_obs), np.diff(X.indptr))
        train, test = _split_by_mask(X, hidden_spots[row_of_entry])
        extra = {"n_spots_hidden": n_hide}

    n_hidden = int(test.nnz) if strategy != "thinning" else int(test.sum())
    total = nnz if strategy != "thinning" else int(X.sum())
    if copy:
        adata = adata.copy()
    adata.layers[key_added + TRAIN_SUFFIX] = train
    adata.layers[key_added + TEST_SUFFIX] = test
    spot_col = key_added + HIDDEN_SPOT_SUFFIX
    if hidden_spots is not None:
        adata.obs[spot_col] = hidden_spots
    elif spot_col in adata.obs:
        del adata.obs[spot_col]
    adata.uns[key_added] = {
        "params": {
            "fraction": fraction,
            "strategy": strategy,
            "layer": "X" if layer is None else layer,
            "random_state": int(random_state) if isinstance(random_state, int | np.integer) else -1,
            "fold": int(fold),
            "n_folds": n_folds,
            "min_spot_fraction": float(min_spot_fraction),
        },
        "n_nonzero": int(nnz),
        # whole counts in, whole counts out: st.tl.evaluate refuses holdout layers normalised in place afterwards
        "integer_counts": is_whole(X.data),
        "n_hidden": n_hidden,
        "hidden_fraction": round(n_hidden / total, 6),
        "holdout_id": split_id(test),  # layers imputed from this split carry it; st.tl.evaluate compares
        **extra,
    }
    unit = "counts" if strategy == "thinning" else "entries"
    logg.info(
        f"    hid {n_hidden:,} of {total:,} {unit}: added layers {key_added + TRAIN_SUFFIX!r}, "
        f"{key_added + TEST_SUFFIX!r} and uns[{key_added!r}]",
        time_start=start,
    )
    return adata if copy else None


def _with_data(X: sparse.csr_matrix, data: np.ndarray) -> sparse.csr_matrix:
    out = sparse.csr_matrix((data, X.indices.copy(), X.indptr.copy()), shape=X.shape)
    out.eliminate_zeros()
    return out


def _split_by_mask(X: sparse.csr_matrix, hide: np.ndarray) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Split the stored entries of ``X`` into (kept, hidden) by a boolean mask over ``X.data``."""
    zeros = np.zeros((), dtype=X.dtype)
    train = _with_data(X, np.where(hide, zeros, X.data))
    test = _with_data(X, np.where(hide, X.data, zeros))
    return train, test


def _gene_fold_mask(
    X: sparse.csr_matrix, n_folds: int, fold: int, min_spot_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Mask over ``X.data`` (CSR order) hiding fold ``fold`` of each eligible gene's non-zero spots."""
    n_obs, n_vars = X.shape
    cols = X.indices
    nnz_per_gene = np.bincount(cols, minlength=n_vars)
    eligible = nnz_per_gene >= max(n_folds, int(np.ceil(min_spot_fraction * n_obs)))
    # rank of each entry within its gene under a random order, then folds of (almost) equal size
    order = np.lexsort((rng.random(cols.size), cols))
    starts = np.concatenate([[0], np.cumsum(nnz_per_gene)[:-1]])
    rank = np.empty(cols.size, dtype=np.int64)
    rank[order] = np.arange(cols.size) - starts[cols[order]]
    fold_of = rank * n_folds // np.maximum(nnz_per_gene[cols], 1)
    return (fold_of == fold) & eligible[cols], int(eligible.sum())
