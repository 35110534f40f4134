"""st.tl.evaluate: scores on hidden entries, checked against numpy by hand."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats

import stimpute as st
from stimpute import InputWarning
from stimpute.tl._evaluate import BASELINE_GENE_MEAN, BASELINE_TRAIN, METRICS


@pytest.fixture
def tiny() -> ad.AnnData:
    """40 spots x 6 genes of Poisson counts with a held-out half of the non-zero entries."""
    rng = np.random.default_rng(11)
    X = rng.poisson(rng.uniform(0.5, 6, size=(1, 6)), size=(40, 6)).astype(np.int32)
    adata = ad.AnnData(sparse.csr_matrix(X))
    adata.obs_names = [f"s{i}" for i in range(40)]
    adata.var_names = [f"g{j}" for j in range(6)]
    return adata


def _r(a, b) -> float:
    # constant means all values equal (np.std of equal values can be a rounding residue such as 1e-17)
    return np.corrcoef(a, b)[0, 1] if np.ptp(a) > 0 and np.ptp(b) > 0 else np.nan


def _by_hand(truth, pred, cols, total, min_gene_entries):
    lt, lp = np.log1p(truth), np.log1p(pred)
    ct, cp = np.log2(1 + truth * 1e6 / total), np.log2(1 + pred * 1e6 / total)
    gene_r = [
        _r(lt[cols == j], lp[cols == j])
        for j in np.unique(cols)
        if (cols == j).sum() >= min_gene_entries and np.ptp(lt[cols == j]) > 0 and np.ptp(lp[cols == j]) > 0
    ]
    return {
        "rmse_raw": np.sqrt(np.mean((pred - truth) ** 2)),
        "mae_raw": np.mean(np.abs(pred - truth)),
        "rmse_log1p": np.sqrt(np.mean((lp - lt) ** 2)),
        "mae_log1p": np.mean(np.abs(lp - lt)),
        "pearson_log1p": _r(lt, lp),
        "spearman": stats.spearmanr(truth, pred).statistic if np.ptp(pred) > 0 else np.nan,
        "median_gene_pearson": np.median(gene_r) if gene_r else np.nan,
        "rmse_log2cpm": np.sqrt(np.mean((cp - ct) ** 2)),
        "pearson_log2cpm": _r(ct, cp),
        "n_hidden": truth.size,
    }


def _assert_row(row: pd.Series, expected: dict) -> None:
    for metric in METRICS:
        assert row[metric] == pytest.approx(expected[metric], rel=1e-9, abs=1e-12, nan_ok=True), metric


# perfect imputations and baselines -------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["entries", "gene_folds", "spots"])
def test_perfect_imputation(synthetic, strategy):
    st.pp.holdout(synthetic, 0.5, strategy=strategy, min_spot_fraction=0.2)
    synthetic.layers["perfect"] = synthetic.X.copy()
    synthetic.layers["perfect_dense"] = synthetic.X.toarray().astype(np.float32)
    table = st.tl.evaluate(synthetic, ["perfect", "perfect_dense"])
    assert list(table.index) == ["perfect", "perfect_dense", BASELINE_TRAIN, BASELINE_GENE_MEAN]
    assert list(table.columns) == list(METRICS)
    for name in ("perfect", "perfect_dense"):
        row = table.loc[name]
        for metric in ("rmse_raw", "mae_raw", "rmse_log1p", "mae_log1p", "rmse_log2cpm"):
            assert row[metric] == 0
        for metric in ("pearson_log1p", "spearman", "median_gene_pearson", "pearson_log2cpm"):
            assert row[metric] == pytest.approx(1.0)
    # the baselines are real, worse predictions
    for baseline in (BASELINE_TRAIN, BASELINE_GENE_MEAN):
        assert table.loc[baseline, "rmse_raw"] > 0.5
    assert (table["n_hidden"] == table["n_hidden"].iloc[0]).all()
    assert table["n_hidden"].dtype == np.int64


def test_perfect_imputation_real_data(dlpfc):
    adata = dlpfc[:, :500].copy()
    st.pp.holdout(adata, 0.2, strategy="entries", random_state=0)
    adata.layers["perfect"] = adata.X
    table = st.tl.evaluate(adata, "perfect")
    assert table.loc["perfect", "rmse_raw"] == 0 and table.loc["perfect", "pearson_log1p"] == pytest.approx(1)
    assert table.loc["perfect", "n_hidden"] == adata.layers["holdout_test"].nnz
    # on real counts the gene mean beats predicting the zeros of the training layer
    assert table.loc[BASELINE_GENE_MEAN, "rmse_raw"] < table.loc[BASELINE_TRAIN, "rmse_raw"]
    assert np.isnan(table.loc[BASELINE_TRAIN, "pearson_log1p"])  # constant zero prediction


def test_baselines_optional(synthetic):
    st.pp.holdout(synthetic, 0.5)
    synthetic.layers["a"] = synthetic.X.copy()
    table = st.tl.evaluate(synthetic, "a", baselines=False)
    assert list(table.index) == ["a"]


# metrics by hand -------------------------------------------------------------------------------------------
def test_metrics_match_numpy_by_hand(tiny):
    st.pp.holdout(tiny, 0.5, strategy="entries", random_state=0)
    rng = np.random.default_rng(1)
    X = tiny.X.toarray().astype(np.float64)
    imputed = np.clip(X + rng.normal(0, 1.5, size=X.shape), 0, None)
    tiny.layers["imputed"] = imputed
    table = st.tl.evaluate(tiny, "imputed", min_gene_entries=3)

    test = tiny.layers["holdout_test"].toarray()
    train = tiny.layers["holdout_train"].toarray()
    rows, cols = np.nonzero(test)
    truth, total = test[rows, cols], X.sum(axis=1)[rows]
    _assert_row(table.loc["imputed"], _by_hand(truth, imputed[rows, cols], cols, total, 3))
    _assert_row(table.loc[BASELINE_TRAIN], _by_hand(truth, train[rows, cols], cols, total, 3))
    gene_mean = np.array([train[:, j][train[:, j] > 0].mean() for j in range(X.shape[1])])
    _assert_row(table.loc[BASELINE_GENE_MEAN], _by_hand(truth, gene_mean[cols], cols, total, 3))


def test_negative_predictions_clipped(tiny):
    st.pp.holdout(tiny, 0.5)
    tiny.layers["neg"] = -np.ones(tiny.shape)
    tiny.layers["zero"] = np.zeros(tiny.shape)
    table = st.tl.evaluate(tiny, ["neg", "zero"], baselines=False)
    pd.testing.assert_series_equal(table.loc["neg"], table.loc["zero"], check_names=False)


def test_min_gene_entries(tiny):
    st.pp.holdout(tiny, 0.5)
    tiny.layers["a"] = tiny.X.toarray() + 1.0
    assert np.isnan(st.tl.evaluate(tiny, "a", min_gene_entries=1000).loc["a", "median_gene_pearson"])
    assert np.isfinite(st.tl.evaluate(tiny, "a", min_gene_entries=3).loc["a", "median_gene_pearson"])


# thinning and spots --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_thinning_rescaling(tiny, fraction):
    st.pp.holdout(tiny, fraction, strategy="thinning", random_state=0)
    test = tiny.layers["holdout_test"].toarray().astype(np.float64)
    train = tiny.layers["holdout_train"].toarray().astype(np.float64)
    scale = fraction / (1 - fraction)
    # a layer at the training depth that is exactly the test counts once rescaled
    tiny.layers["oracle"] = test / scale
    tiny.layers["counts"] = tiny.X.toarray().astype(np.float64)
    table = st.tl.evaluate(tiny, ["oracle", "counts"], min_gene_entries=3)
    assert table.loc["oracle", "rmse_raw"] == pytest.approx(0, abs=1e-9)
    assert table.loc["oracle", "pearson_log1p"] == pytest.approx(1)
    # every entry is scored, zeros included; predictions are multiplied by fraction / (1 - fraction)
    assert table.loc["oracle", "n_hidden"] == tiny.n_obs * tiny.n_vars
    rows, cols = np.divmod(np.arange(tiny.n_obs * tiny.n_vars), tiny.n_vars)
    truth, total = test[rows, cols], (train + test).sum(axis=1)[rows]
    counts = tiny.layers["counts"]
    _assert_row(table.loc["counts"], _by_hand(truth, counts[rows, cols] * scale, cols, total, 3))
    _assert_row(table.loc[BASELINE_TRAIN], _by_hand(truth, train[rows, cols] * scale, cols, total, 3))


def test_spots_scores_zeros_of_hidden_spots(synthetic):
    st.pp.holdout(synthetic, 0.25, strategy="spots", random_state=0)
    hidden = synthetic.obs["holdout_hidden_spot"].to_numpy()
    X = synthetic.X.toarray().astype(np.float64)
    synthetic.layers["perfect"] = X.copy()
    # one wrong value on a zero of a hidden spot, one on a spot that is not hidden
    i = np.flatnonzero(hidden)[0]
    j = np.flatnonzero(X[i] == 0)[0]
    k = np.flatnonzero(~hidden)[0]
    wrong = X.copy()
    wrong[i, j] = 5.0
    wrong[k, 0] += 100.0
    synthetic.layers["wrong"] = wrong
    table = st.tl.evaluate(synthetic, ["perfect", "wrong"])
    n = int(hidden.sum()) * synthetic.n_vars
    assert table.loc["perfect", "n_hidden"] == n
    assert table.loc["perfect", "rmse_raw"] == 0
    assert table.loc["wrong", "rmse_raw"] == pytest.approx(np.sqrt(25 / n))
    assert table.loc["wrong", "mae_raw"] == pytest.approx(5 / n)
    # the training-layer baseline of a hidden spot is all zeros
    truth = X[hidden]
    assert table.loc[BASELINE_TRAIN, "rmse_raw"] == pytest.approx(np.sqrt(np.mean(truth**2)))


# storage -------------------------------------------------------------------------------------------------
def test_scores_stored_merged_and_roundtrip(synthetic, tmp_path):
    st.pp.holdout(synthetic, 0.5, random_state=0)
    X_before = synthetic.X.copy()
    synthetic.layers["a"] = synthetic.X.toarray() + 1.0
    synthetic.layers["b"] = synthetic.X.toarray() * 0.5
    first = st.tl.evaluate(synthetic, "a")
    second = st.tl.evaluate(synthetic, "b")
    assert list(second.index) == ["b", BASELINE_TRAIN, BASELINE_GENE_MEAN]  # returns this call's rows only
    stored = synthetic.uns["holdout"]["scores"]
    assert isinstance(stored, pd.DataFrame)
    assert sorted(stored.index) == sorted(["a", "b", BASELINE_TRAIN, BASELINE_GENE_MEAN])
    assert stored.index.is_unique
    pd.testing.assert_series_equal(stored.loc["a"], first.loc["a"])
    pd.testing.assert_series_equal(stored.loc["b"], second.loc["b"])
    # a repeated layer replaces its row
    synthetic.layers["a"] = synthetic.X.copy()
    st.tl.evaluate(synthetic, "a")
    stored = synthetic.uns["holdout"]["scores"]
    assert stored.index.is_unique and len(stored) == 4
    assert stored.loc["a", "rmse_raw"] == 0
    assert (synthetic.X != X_before).nnz == 0  # X is never changed

    path = tmp_path / "scores.h5ad"
    synthetic.write_h5ad(path)
    back = ad.read_h5ad(path)
    pd.testing.assert_frame_equal(back.uns["holdout"]["scores"], stored)
    # evaluating the read-back object keeps merging into the stored table
    back.layers["c"] = back.X.toarray() * 2.0
    st.tl.evaluate(back, "c")
    assert sorted(back.uns["holdout"]["scores"].index) == sorted(["a", "b", "c", BASELINE_TRAIN, BASELINE_GENE_MEAN])


def test_custom_holdout_key(synthetic):
    st.pp.holdout(synthetic, 0.3, key_added="ho")
    synthetic.layers["p"] = synthetic.X.copy()
    table = st.tl.evaluate(synthetic, "p", holdout_key="ho")
    assert table.loc["p", "rmse_raw"] == 0
    assert "scores" in synthetic.uns["ho"]
    with pytest.raises(KeyError, match=r"uns\['holdout'\].*st\.pp\.holdout"):
        st.tl.evaluate(synthetic, "p")


@pytest.mark.parametrize("strategy", ["entries", "thinning", "spots"])
def test_gene_mean_baseline_matches_its_definition(synthetic, strategy):
    """Non-zero mean for entry holdouts; mean over all observed spots where zeros are scored too."""
    st.pp.holdout(synthetic, 0.5, strategy=strategy, random_state=1)
    train = synthetic.layers["holdout_train"].toarray().astype(float)
    if strategy == "entries":
        expected = np.nanmean(np.where(train > 0, train, np.nan), axis=0)
    elif strategy == "thinning":
        expected = train.mean(axis=0)  # then rescaled by fraction / (1 - fraction) = 1
    else:
        seen = ~synthetic.obs["holdout_hidden_spot"].to_numpy()
        expected = train[seen].mean(axis=0)
    synthetic.layers["gene_mean"] = np.tile(expected, (synthetic.n_obs, 1)).astype(np.float32)
    table = st.tl.evaluate(synthetic, "gene_mean")
    np.testing.assert_allclose(
        table.loc["gene_mean", ["rmse_raw", "rmse_log1p"]].to_numpy(float),
        table.loc[BASELINE_GENE_MEAN, ["rmse_raw", "rmse_log1p"]].to_numpy(float),
        rtol=1e-5,
    )


def test_refuses_holdout_layers_normalised_in_place():
    adata = st.datasets.synthetic_visium(n_spots=80, n_genes=30)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    assert adata.uns["holdout"]["integer_counts"] is True or adata.uns["holdout"]["integer_counts"] == 1
    adata.layers["pred"] = adata.layers["holdout_train"].toarray() + 1.0
    st.tl.evaluate(adata, "pred")  # fine as split
    scores = adata.uns["holdout"]["scores"].copy()
    train = adata.layers["holdout_train"]
    train.data = np.log1p(train.data)  # normalised in place afterwards
    with pytest.raises(ValueError, match=r"holdout_train.*no longer holds the whole counts"):
        st.tl.evaluate(adata, "pred")
    pd.testing.assert_frame_equal(adata.uns["holdout"]["scores"], scores)  # nothing written


def test_non_integer_source_counts_are_not_checked_for_integrality():
    adata = st.datasets.synthetic_visium(n_spots=80, n_genes=30)
    adata.X = adata.X.astype(np.float32) * 0.5  # e.g. ambient-corrected, non-integer counts
    with pytest.warns(st.InputWarning, match="holds non-integer values"):
        st.pp.holdout(adata, fraction=0.5, random_state=0)
    assert not adata.uns["holdout"]["integer_counts"]
    adata.layers["pred"] = adata.layers["holdout_train"].toarray() + 0.5
    assert "pred" in st.tl.evaluate(adata, "pred").index


def test_gene_pearson_leaves_out_genes_constant_at_their_hidden_entries():
    """A gene whose hidden values (or predictions) are all equal has no correlation: left out of the median.

    Computed from sums, such a gene's centred values are rounding residues (~1e-17), whose "correlation"
    with anything is noise anywhere in [-1, 1]; it used to enter the median.
    """
    rng = np.random.default_rng(3)
    n_spots, n_genes = 60, 5
    train = sparse.csr_matrix(rng.poisson(3, size=(n_spots, n_genes)).astype(np.float32))
    test_dense = rng.poisson(4, size=(n_spots, n_genes)).astype(np.float32) + 1
    test_dense[:, 0] = 3.0  # gene 0: every hidden value is 3
    adata = ad.AnnData(sparse.csr_matrix(train + sparse.csr_matrix(test_dense)))
    adata.layers["holdout_train"] = train
    adata.layers["holdout_test"] = sparse.csr_matrix(test_dense)
    adata.uns["holdout"] = {"params": {"strategy": "entries", "fraction": 0.5}}
    pred = test_dense + rng.normal(0, 1.5, size=test_dense.shape).clip(-0.9, None)
    adata.layers["pred"] = pred.astype(np.float32)
    table = st.tl.evaluate(adata, "pred")
    lt, lp = np.log1p(test_dense.astype(np.float64)), np.log1p(adata.layers["pred"].astype(np.float64))
    expected = np.median([np.corrcoef(lt[:, j], lp[:, j])[0, 1] for j in range(1, n_genes)])
    assert table.loc["pred", "median_gene_pearson"] == pytest.approx(expected, rel=1e-9)
    # the gene-mean baseline predicts one value per gene: no gene has a correlation
    assert np.isnan(table.loc[BASELINE_GENE_MEAN, "median_gene_pearson"])


def test_no_hidden_entries_scores_nan_not_perfect(synthetic):
    """A test layer emptied after the split leaves nothing to score: NaN, never a perfect 0 error."""
    st.pp.holdout(synthetic, fraction=0.5)
    synthetic.layers["p"] = synthetic.layers["holdout_train"].toarray()
    synthetic.layers["holdout_test"] = sparse.csr_matrix(synthetic.shape, dtype=np.float32)
    row = st.tl.evaluate(synthetic, "p", baselines=False).loc["p"]
    assert row["n_hidden"] == 0
    assert all(np.isnan(row[m]) for m in METRICS if m != "n_hidden")


@pytest.mark.filterwarnings("ignore::anndata.ImplicitModificationWarning")  # the view becomes an AnnData
def test_evaluate_on_a_view_leaves_the_parent_alone():
    adata = st.datasets.synthetic_visium(n_spots=150, n_genes=30, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    adata.layers["train_dense"] = adata.layers["holdout_train"].toarray().astype(np.float32)
    parent = st.tl.evaluate(adata, ["train_dense"]).copy()
    view = adata[: adata.n_obs // 2]
    sub = st.tl.evaluate(view, ["train_dense"])
    assert sub.loc["train_dense", "n_hidden"] < parent.loc["train_dense", "n_hidden"]
    pd.testing.assert_frame_equal(adata.uns["holdout"]["scores"], parent)
    with pytest.raises(ValueError, match="nothing to score"):
        st.tl.evaluate(adata, [], baselines=False)


def test_evaluate_refuses_leaked_and_stale_layers(tmp_path):
    """Honest scores only: a layer computed from the matrix that still holds the hidden entries, or on an
    earlier split, is refused; chains of derived layers (smoothing an imputation) carry their split."""
    adata = st.datasets.synthetic_visium(n_spots=150, n_genes=30, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    st.tl.impute(adata, "knn", layer="holdout_train", key_added="honest")
    st.pp.spatial_smooth(adata, "honest", key_added="honest_smoothed")
    st.tl.impute(adata, "knn", key_added="from_X")  # layer=None: X still holds the hidden entries
    st.pp.spatial_smooth(adata, None, key_added="X_smoothed")
    st.tl.evaluate(adata, ["honest", "honest_smoothed"])
    for leaked in ("from_X", "X_smoothed"):
        with pytest.raises(ValueError, match="still holds the entries `st.pp.holdout` hid"):
            st.tl.evaluate(adata, [leaked])
    # the same split again (same seed) is the same split; another seed makes the layers stale
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    st.tl.evaluate(adata, ["honest", "honest_smoothed"])
    st.pp.holdout(adata, fraction=0.5, random_state=1)
    for stale in ("honest", "honest_smoothed"):
        with pytest.raises(ValueError, match="computed on an earlier split"):
            st.tl.evaluate(adata, [stale])
    st.tl.impute(adata, "knn", layer="holdout_train", key_added="honest")
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert st.tl.evaluate(back, ["honest"]).loc["honest", "n_hidden"] > 0


def test_evaluate_refuses_chains_that_start_from_the_hidden_entries():
    """Item 2 of issue 19: a leak is caught through any chain of stimpute calls, not only the direct parent."""
    adata = st.datasets.synthetic_visium(n_spots=150, n_genes=30, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    st.pp.spatial_smooth(adata, None)  # X_smoothed <- X
    with pytest.warns(InputWarning):  # smoothed values are not counts
        st.tl.impute(adata, "knn", layer="X_smoothed")
    with pytest.raises(ValueError, match=r"through a chain.*\(chain: imputed_knn <- X_smoothed <- X\)"):
        st.tl.evaluate(adata, "imputed_knn")
    st.pp.spatial_smooth(adata, "imputed_knn", key_added="twice")  # one step longer
    with pytest.raises(ValueError, match=r"chain: twice <- imputed_knn <- X_smoothed <- X\)"):
        st.tl.evaluate(adata, "twice")
    # through the holdout's test layer, and through a latent read as image features
    st.pp.spatial_smooth(adata, "holdout_test", key_added="test_smoothed")
    st.pp.spatial_smooth(adata, "test_smoothed", key_added="test_smoothed2")
    with pytest.raises(ValueError, match=r"chain: test_smoothed2 <- test_smoothed <- holdout_test\)"):
        st.tl.evaluate(adata, "test_smoothed2")
    st.tl.impute(adata, "autoencoder", key_added="ae_X", max_epochs=1, progress=False)
    st.tl.impute(
        adata, "image", layer="holdout_train", image_key="X_ae_X", key_added="img", max_epochs=1, progress=False
    )
    with pytest.raises(ValueError, match=r"chain: img <- obsm\['X_ae_X'\] <- X\)"):
        st.tl.evaluate(adata, "img")
    # honest chains of any length pass
    st.pp.spatial_smooth(adata, "holdout_train", key_added="train_smoothed")
    with pytest.warns(InputWarning):
        st.tl.impute(adata, "knn", layer="train_smoothed", key_added="honest")
    st.pp.spatial_smooth(adata, "honest", key_added="honest2")
    assert st.tl.evaluate(adata, ["honest", "honest2"]).loc["honest2", "n_hidden"] > 0


def test_evaluate_refuses_predictions_of_a_model_trained_on_the_hidden_entries(tmp_path):
    """A model fitted on ``X`` has seen the hidden entries: its predictions from an honest layer are refused too,
    also after the model is saved and loaded, and after the object is written to h5ad."""
    adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    fit = {"max_epochs": 1, "progress": False, "return_model": True}
    leaky = st.tl.impute(adata, "autoencoder", key_added="fit_X", **fit)
    honest = st.tl.impute(adata, "autoencoder", layer="holdout_train", key_added="fit_train", **fit)
    leaky.save(tmp_path / "m", overwrite=True)
    st.tl.load_model(tmp_path / "m").predict(adata, layer="holdout_train", key_added="pred_X")
    honest.predict(adata, layer="holdout_train", key_added="pred_train")
    assert adata.uns["pred_X"]["params"]["model_layer"] == "X"
    back = ad.read_h5ad(adata.write_h5ad(tmp_path / "a.h5ad") or tmp_path / "a.h5ad")
    for obj in (adata, back):
        with pytest.raises(ValueError, match=r"chain: pred_X <- ImputationModel trained on X <- X\).*Train the model"):
            st.tl.evaluate(obj, "pred_X")
        assert st.tl.evaluate(obj, ["fit_train", "pred_train"]).loc["pred_train", "n_hidden"] > 0


def test_evaluate_lineage_stops_at_cycles_and_unrecorded_layers():
    adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    adata.layers["a"] = adata.layers["holdout_train"].toarray()
    adata.layers["b"] = adata.layers["a"].copy()
    adata.uns["a"] = {"params": {"layer": "b"}}  # records that point at each other
    adata.uns["b"] = {"params": {"layer": "a"}}
    adata.layers["c"] = adata.layers["a"].copy()
    adata.uns["c"] = {"params": {"method": "knn"}}  # a record that does not say what it read
    assert st.tl.evaluate(adata, ["a", "b", "c"], baselines=False).shape[0] == 3
    adata.uns["b"] = {"params": {"layer": "X"}}  # now the cycle has an exit into X
    with pytest.raises(ValueError, match=r"chain: a <- b <- X\)"):
        st.tl.evaluate(adata, "a")


def test_evaluate_names_the_holdout_a_layer_comes_from():
    """A layer imputed from another holdout's training layer is refused with that holdout's key as the fix."""
    adata = st.datasets.synthetic_visium(n_spots=150, n_genes=30, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0, key_added="h2")
    st.tl.impute(adata, "knn", layer="h2_train")
    st.pp.holdout(adata, fraction=0.5, random_state=1)
    with pytest.raises(
        ValueError, match=r"training layer of another holdout \(`adata.uns\['h2'\]`\).*holdout_key='h2'"
    ):
        st.tl.evaluate(adata, ["imputed_knn"])
    assert st.tl.evaluate(adata, ["imputed_knn"], holdout_key="h2").loc["imputed_knn", "n_hidden"] > 0
    st.pp.holdout(adata, fraction=0.5, random_state=2, key_added="h2")  # that holdout re-run: stale for both
    with pytest.raises(ValueError, match=r"another holdout \(`adata.uns\['h2'\]`\).*was run again since"):
        st.tl.evaluate(adata, ["imputed_knn"])


def test_evaluate_warns_about_the_answers_and_depth_free_readouts():
    adata = st.datasets.synthetic_visium(n_spots=150, n_genes=30, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    st.tl.impute(adata, "knn", layer="holdout_train")
    st.tl.impute(adata, "knn", layer="holdout_train", output="normalized", key_added="readout")
    st.tl.evaluate(adata, ["imputed_knn"])  # filterwarnings=error: no warning
    with pytest.warns(st.ReadoutWarning) as record:
        scores = st.tl.evaluate(adata, ["X", "holdout_test", "readout"])
    assert scores.loc["X", "rmse_log1p"] == 0  # scored all the same
    messages = [str(w.message) for w in record]
    assert sum("perfect by construction" in m for m in messages) == 2
    assert any("`adata.layers['readout']` is a readout at the median depth" in m for m in messages)
