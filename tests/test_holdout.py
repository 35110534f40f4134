"""st.pp.holdout: every strategy on synthetic data and on the real DLPFC section."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import stimpute as st

STRATEGIES = ["entries", "gene_folds", "thinning", "spots"]


@pytest.fixture(params=["synthetic", "dlpfc"])
def counts(request) -> ad.AnnData:
    """Synthetic (int32) or DLPFC 151673 (float32 counts, all 3,639 spots x the first 1,000 genes)."""
    if request.param == "synthetic":
        return request.getfixturevalue("synthetic")
    return request.getfixturevalue("dlpfc")[:, :1000].copy()


def _csr(M) -> sparse.csr_matrix:
    return sparse.csr_matrix(M)


def _same(a, b) -> bool:
    return a.shape == b.shape and (_csr(a) != _csr(b)).nnz == 0


def _snapshot(adata: ad.AnnData) -> dict:
    return {
        "X": _csr(adata.X).copy(),
        "layers": {k: _csr(v).copy() for k, v in adata.layers.items()},
        "obs": list(adata.obs.columns),
        "uns": list(adata.uns.keys()),
    }


def _assert_unchanged(adata: ad.AnnData, snap: dict) -> None:
    assert _same(adata.X, snap["X"])
    assert adata.X.dtype == snap["X"].dtype
    assert list(adata.layers) == list(snap["layers"])
    for k, v in snap["layers"].items():
        assert _same(adata.layers[k], v)
    assert list(adata.obs.columns) == snap["obs"]
    assert list(adata.uns.keys()) == snap["uns"]


def _eligible(X, fraction: float, min_spot_fraction: float) -> np.ndarray:
    n_folds = max(2, round(1 / fraction))
    nnz = np.asarray((_csr(X) != 0).sum(axis=0)).ravel()
    return nnz >= max(n_folds, np.ceil(min_spot_fraction * X.shape[0]))


# shared properties -------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_split_is_exact_and_leaves_input_alone(counts, strategy):
    X_before = _csr(counts.X).copy()
    dtype = counts.X.dtype
    st.pp.holdout(counts, 0.3, strategy=strategy, random_state=1)
    train, test = counts.layers["holdout_train"], counts.layers["holdout_test"]
    # exact decomposition, CSR, same dtype, X untouched
    assert sparse.isspmatrix_csr(train) and sparse.isspmatrix_csr(test)
    assert train.dtype == dtype and test.dtype == dtype
    assert (train + test != counts.X).nnz == 0
    assert _same(counts.X, X_before) and counts.X.dtype == dtype
    # non-negative, subsets of the observed support; test holds only hidden values (no explicit zeros)
    assert train.data.min() >= 0 and test.data.min() > 0
    assert train.nnz == np.count_nonzero(train.data) and test.nnz == np.count_nonzero(test.data)
    support = _csr(counts.X) != 0
    assert ((test != 0) > support).nnz == 0 and ((train != 0) > support).nnz == 0
    if strategy != "thinning":  # hidden entries are hidden entirely
        assert (test.multiply(train)).nnz == 0
    info = counts.uns["holdout"]
    assert info["params"]["strategy"] == strategy and info["params"]["fraction"] == 0.3
    assert info["params"]["random_state"] == 1 and info["params"]["layer"] == "X"
    assert info["n_nonzero"] == support.nnz
    if strategy == "thinning":
        assert info["n_hidden"] == int(round(test.sum()))
    else:
        assert info["n_hidden"] == test.nnz


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deterministic_per_seed(counts, strategy):
    a = st.pp.holdout(counts, 0.5, strategy=strategy, random_state=3, copy=True)
    b = st.pp.holdout(counts, 0.5, strategy=strategy, random_state=3, copy=True)
    c = st.pp.holdout(counts, 0.5, strategy=strategy, random_state=4, copy=True)
    g = st.pp.holdout(counts, 0.5, strategy=strategy, random_state=np.random.default_rng(3), copy=True)
    for other in (b, g):
        for key in ("holdout_train", "holdout_test"):
            assert _same(a.layers[key], other.layers[key])
            np.testing.assert_array_equal(a.layers[key].data, other.layers[key].data)
    assert (a.layers["holdout_test"] != c.layers["holdout_test"]).nnz > 0
    assert g.uns["holdout"]["params"]["random_state"] == -1  # a Generator is recorded as -1
    n = st.pp.holdout(counts, 0.5, strategy=strategy, random_state=np.int64(3), copy=True)
    assert n.uns["holdout"]["params"]["random_state"] == 3  # a numpy integer seed is recorded as such
    assert _same(n.layers["holdout_test"], a.layers["holdout_test"])
    if strategy == "spots":
        np.testing.assert_array_equal(a.obs["holdout_hidden_spot"], b.obs["holdout_hidden_spot"])
        assert (a.obs["holdout_hidden_spot"] != c.obs["holdout_hidden_spot"]).any()


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_entries_fraction(counts, fraction):
    st.pp.holdout(counts, fraction, strategy="entries")
    nnz = (_csr(counts.X) != 0).nnz
    assert abs(counts.layers["holdout_test"].nnz / nnz - fraction) < 0.01
    assert counts.uns["holdout"]["hidden_fraction"] == pytest.approx(fraction, abs=0.01)
    # hidden entries are spread over spots and genes, not a block
    test = counts.layers["holdout_test"]
    per_gene = np.asarray((test != 0).sum(axis=0)).ravel() / np.maximum(
        np.asarray((counts.X != 0).sum(axis=0)).ravel(), 1
    )
    common = np.asarray((counts.X != 0).sum(axis=0)).ravel() >= 100
    assert np.abs(per_gene[common] - fraction).max() < 0.2


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_thinning_fraction_of_total_counts(counts, fraction):
    st.pp.holdout(counts, fraction, strategy="thinning", random_state=0)
    test, train = counts.layers["holdout_test"], counts.layers["holdout_train"]
    total = counts.X.sum()
    assert abs(test.sum() / total - fraction) < 0.01
    assert counts.uns["holdout"]["hidden_fraction"] == pytest.approx(fraction, abs=0.01)
    # whole-number counts on both sides, every entry split (not just some entries hidden)
    for layer in (train, test):
        assert np.array_equal(layer.data, np.round(layer.data))
    X = _csr(counts.X)
    big = X.data >= 20
    kept = _csr(train)[X.nonzero()].A1[big] / X.data[big]
    assert ((kept > 0) & (kept < 1)).mean() > 0.5  # most large counts are split between train and test
    assert kept.mean() == pytest.approx(1 - fraction, abs=0.02)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_spots_fraction_and_whole_spots(counts, fraction):
    st.pp.holdout(counts, fraction, strategy="spots", random_state=2)
    hidden = counts.obs["holdout_hidden_spot"].to_numpy()
    assert hidden.dtype == bool
    assert abs(hidden.mean() - fraction) < 0.01
    assert counts.uns["holdout"]["n_spots_hidden"] == int(hidden.sum())
    X, train, test = _csr(counts.X), counts.layers["holdout_train"], counts.layers["holdout_test"]
    assert _same(test[hidden], X[hidden]) and train[hidden].nnz == 0
    assert _same(train[~hidden], X[~hidden]) and test[~hidden].nnz == 0


@pytest.mark.parametrize(("fraction", "min_spot_fraction"), [(0.5, 0.5), (0.25, 0.3), (0.2, 0.8)])
def test_gene_folds_partition(counts, fraction, min_spot_fraction):
    n_folds = round(1 / fraction)
    eligible = _eligible(counts.X, fraction, min_spot_fraction)
    assert 0 < eligible.sum() < counts.n_vars
    X = _csr(counts.X)
    union = sparse.csr_matrix(X.shape, dtype=np.float64)
    cover = sparse.csr_matrix(X.shape, dtype=np.int64)
    for fold in range(n_folds):
        st.pp.holdout(
            counts, fraction, strategy="gene_folds", fold=fold, min_spot_fraction=min_spot_fraction, random_state=5
        )
        test = counts.layers["holdout_test"]
        hidden_genes = np.asarray((test != 0).sum(axis=0)).ravel() > 0
        assert not (hidden_genes & ~eligible).any(), "a non-eligible gene was held out"
        assert (hidden_genes == eligible).all()
        # each fold takes 1 / n_folds of every eligible gene's non-zero spots (sizes differ by at most 1)
        per_gene = np.asarray((test != 0).sum(axis=0)).ravel()[eligible]
        nnz_gene = np.asarray((X != 0).sum(axis=0)).ravel()[eligible]
        assert (np.abs(per_gene - nnz_gene / n_folds) <= 1).all()
        assert test.nnz / X[:, eligible].nnz == pytest.approx(1 / n_folds, abs=0.01)
        info = counts.uns["holdout"]
        assert info["n_genes_held_out"] == int(eligible.sum())
        assert info["n_folds"] == n_folds and info["fold"] == fold
        union = union + test.astype(np.float64)
        cover = cover + (test != 0).astype(np.int64)
    # folds are disjoint and together cover exactly the eligible genes' non-zeros
    assert cover.max() == 1
    expected = X.astype(np.float64).multiply(eligible[None, :].astype(np.float64)).tocsr()
    expected.eliminate_zeros()
    assert (union != expected).nnz == 0


def test_gene_folds_fold_out_of_range(synthetic):
    with pytest.raises(ValueError, match=r"`fold` must be below the number of folds .* = 2, got 2"):
        st.pp.holdout(synthetic, 0.5, strategy="gene_folds", fold=2)
    assert "holdout" not in synthetic.uns


# options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_copy_returns_new_object(counts, strategy):
    snap = _snapshot(counts)
    out = st.pp.holdout(counts, 0.3, strategy=strategy, copy=True)
    assert isinstance(out, ad.AnnData) and out is not counts
    _assert_unchanged(counts, snap)
    assert "holdout_train" in out.layers and "holdout" in out.uns
    assert _same(out.X, counts.X)
    assert st.pp.holdout(counts, 0.3, strategy=strategy) is None
    assert "holdout_train" in counts.layers


def test_source_layer_and_key_added(synthetic):
    counts = synthetic.X.toarray().astype(np.int64)  # a dense int64 layer
    synthetic.layers["counts"] = counts.copy()
    synthetic.X = sparse.csr_matrix(np.log1p(counts).astype(np.float32))  # X is not counts: thinning would refuse it
    X_before = synthetic.X.copy()
    st.pp.holdout(synthetic, 0.4, strategy="thinning", layer="counts", key_added="split")
    assert isinstance(synthetic.layers["counts"], np.ndarray)
    np.testing.assert_array_equal(synthetic.layers["counts"], counts)
    assert _same(synthetic.X, X_before)
    train, test = synthetic.layers["split_train"], synthetic.layers["split_test"]
    assert train.dtype == np.int64 and test.dtype == np.int64 and sparse.isspmatrix_csr(train)
    np.testing.assert_array_equal((train + test).toarray(), counts)
    assert synthetic.uns["split"]["params"]["layer"] == "counts"
    assert "holdout" not in synthetic.uns and "holdout_train" not in synthetic.layers


def test_rerun_with_other_strategy_drops_stale_spot_column(synthetic):
    st.pp.holdout(synthetic, 0.3, strategy="spots")
    assert "holdout_hidden_spot" in synthetic.obs
    st.pp.holdout(synthetic, 0.3, strategy="entries")
    assert "holdout_hidden_spot" not in synthetic.obs
    assert synthetic.uns["holdout"]["params"]["strategy"] == "entries"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_h5ad_roundtrip(counts, strategy, tmp_path):
    st.pp.holdout(counts, 0.3, strategy=strategy, random_state=7)
    path = tmp_path / "holdout.h5ad"
    counts.write_h5ad(path)
    back = ad.read_h5ad(path)
    for key in ("holdout_train", "holdout_test"):
        assert _same(back.layers[key], counts.layers[key])
        assert back.layers[key].dtype == counts.layers[key].dtype
    assert back.uns["holdout"]["params"] == counts.uns["holdout"]["params"]
    for key, value in counts.uns["holdout"].items():
        if key != "params":
            assert back.uns["holdout"][key] == value
    if strategy == "spots":
        np.testing.assert_array_equal(back.obs["holdout_hidden_spot"], counts.obs["holdout_hidden_spot"])
    # the stored split can be scored after reading it back
    back.layers["perfect"] = back.X
    if strategy != "thinning":
        assert st.tl.evaluate(back, "perfect").loc["perfect", "rmse_raw"] == 0


def test_duplicate_stored_entries_are_merged_before_splitting():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 40, 300), rng.integers(0, 30, 300)
    vals = rng.integers(1, 5, 300).astype(np.float32)
    coo = sparse.coo_matrix((np.r_[vals, vals], (np.r_[rows, rows], np.r_[cols, cols])), shape=(40, 30))
    X = coo.tocsr()  # the counts, duplicates summed
    # the same counts with every entry stored twice (a CSR built by hand from COO data can hold that)
    order = np.argsort(coo.row, kind="stable")
    indptr = np.r_[0, np.cumsum(np.bincount(coo.row, minlength=40))]
    dup = sparse.csr_matrix((coo.data[order], coo.col[order], indptr), shape=(40, 30))
    assert not dup.has_canonical_format and dup.nnz > X.nnz
    adata = ad.AnnData(dup)
    st.pp.holdout(adata, fraction=0.5, strategy="entries", random_state=0)
    train, test = adata.layers["holdout_train"], adata.layers["holdout_test"]
    assert train.multiply(test).nnz == 0  # no entry on both sides
    np.testing.assert_array_equal((train + test).toarray(), X.toarray())
    assert adata.uns["holdout"]["n_nonzero"] == X.nnz


def test_gene_folds_refuse_fewer_than_two_folds():
    adata = st.datasets.synthetic_visium(n_spots=60, n_genes=20)
    with pytest.raises(ValueError, match=r"`fraction=0.7` with `strategy='gene_folds'`.*at most 0.5"):
        st.pp.holdout(adata, fraction=0.7, strategy="gene_folds")
    assert "holdout" not in adata.uns and "holdout_train" not in adata.layers
    st.pp.holdout(adata, fraction=0.5, strategy="gene_folds", fold=1, min_spot_fraction=0.1)
    assert adata.uns["holdout"]["params"]["n_folds"] == 2


def test_holdout_warns_about_values_that_are_not_counts():
    adata = st.datasets.synthetic_visium(n_spots=100, n_genes=30, random_state=0)
    st.pp.holdout(adata, fraction=0.5)  # filterwarnings=error: no warning
    adata.layers["log"] = np.log1p(adata.X)
    with pytest.warns(st.InputWarning, match=r"`adata.layers\['log'\]` holds non-integer values"):
        st.pp.holdout(adata, fraction=0.5, layer="log")
