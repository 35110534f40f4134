"""Tests of ``st.tl.impute`` (all methods), the kNN helpers and the validation split."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import stimpute as st
from stimpute import _knn
from stimpute._graph import spatial_graph

torch = pytest.importorskip("torch")

LEARNED = ("autoencoder", "positional", "image", "multimodal")
UNS_KEYS = {"params", "history", "best_epoch", "device", "wall_time", "fusion_weights"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_image(adata: ad.AnnData) -> ad.AnnData:
    crops = st.get.spot_crops(adata, spot_scale=2.0).astype(np.float64)
    adata.obsm["X_image"] = np.hstack([crops.mean(axis=(1, 2)), crops.std(axis=(1, 2))])
    return adata


@pytest.fixture
def held(synthetic) -> ad.AnnData:
    st.pp.holdout(synthetic, fraction=0.5, random_state=0)
    return _with_image(synthetic)


@pytest.fixture(scope="module")
def scored() -> tuple[ad.AnnData, object]:
    """400 spots x 100 genes, every method trained to convergence once, scored on the holdout."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    st.settings.device, st.settings.progress_bar, st.settings.verbosity = "cpu", False, 1
    adata = st.datasets.synthetic_visium(n_spots=400, n_genes=100, random_state=1)
    st.pp.holdout(adata, fraction=0.5, random_state=1)
    _with_image(adata)
    for method in ("knn", *LEARNED):
        st.tl.impute(adata, method, layer="holdout_train", random_state=0)
    scores = st.tl.evaluate(adata, [f"imputed_{m}" for m in ("knn", *LEARNED)])
    torch.set_num_threads(threads)
    return adata, scores


# --- outputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["knn", *LEARNED])
def test_every_method_writes_float32_layer_and_uns(held, method):
    kwargs = {} if method == "knn" else {"max_epochs": 3}
    st.tl.impute(held, method, layer="holdout_train", **kwargs)
    key = f"imputed_{method}"
    out = held.layers[key]
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == held.shape
    assert np.isfinite(out).all() and (out >= 0).all()
    uns = held.uns[key]
    assert UNS_KEYS <= set(uns)
    assert set(uns["history"]) == {"epoch", "train_loss", "val_loss"}
    assert uns["params"]["method"] == method
    assert uns["device"] == "cpu"
    assert uns["wall_time"] > 0
    if method == "knn":
        assert uns["best_epoch"] == -1
        assert len(uns["history"]["epoch"]) == 0
    else:
        n = len(uns["history"]["epoch"])
        assert n == 3
        assert 1 <= uns["best_epoch"] <= n
        assert uns["history"]["val_loss"][uns["best_epoch"] - 1] == pytest.approx(min(uns["history"]["val_loss"]))
        assert len(uns["history"]["train_loss"]) == n


def test_keep_observed_restores_observed_values(held):
    st.tl.impute(held, "knn", layer="holdout_train", keep_observed=True, key_added="kept")
    st.tl.impute(held, "knn", layer="holdout_train", keep_observed=False, key_added="raw")
    train = held.layers["holdout_train"].tocoo()
    np.testing.assert_array_equal(held.layers["kept"][train.row, train.col], train.data.astype(np.float32))
    assert not np.array_equal(held.layers["raw"][train.row, train.col], train.data.astype(np.float32))
    zero = held.layers["holdout_train"].toarray() == 0
    np.testing.assert_array_equal(held.layers["kept"][zero], held.layers["raw"][zero])


def test_learned_methods_beat_gene_mean(scored):
    _, scores = scored
    floor = scores.loc["baseline: gene mean"]
    for method in LEARNED:
        row = scores.loc[f"imputed_{method}"]
        assert row["rmse_log1p"] < floor["rmse_log1p"], method
        assert row["pearson_log1p"] > floor["pearson_log1p"], method
    # the fused model beats the baseline by a clear margin and is the best learned method here
    mm = scores.loc["imputed_multimodal"]
    assert mm["rmse_log1p"] < 0.95 * floor["rmse_log1p"]


def test_training_record_is_consistent(scored):
    adata, _ = scored
    for method in LEARNED:
        uns = adata.uns[f"imputed_{method}"]
        hist = uns["history"]
        assert uns["best_epoch"] == int(hist["epoch"][int(np.argmin(hist["val_loss"]))])
        assert hist["train_loss"][-1] < hist["train_loss"][0]
        assert uns["n_parameters"] > 0
    fw = adata.uns["imputed_multimodal"]["fusion_weights"]
    assert set(fw) == {"counts", "position", "image", "graph"}  # the graph encoder is fused as a modality
    assert sum(fw.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("method", LEARNED)
def test_deterministic_on_cpu(held, method):
    for key in ("a", "b"):
        st.tl.impute(held, method, layer="holdout_train", key_added=key, max_epochs=3, random_state=7)
    np.testing.assert_array_equal(held.layers["a"], held.layers["b"])
    np.testing.assert_array_equal(held.uns["a"]["history"]["train_loss"], held.uns["b"]["history"]["train_loss"])
    np.testing.assert_array_equal(held.uns["a"]["history"]["val_loss"], held.uns["b"]["history"]["val_loss"])
    assert held.uns["a"]["fusion_weights"] == held.uns["b"]["fusion_weights"]
    st.tl.impute(held, method, layer="holdout_train", key_added="c", max_epochs=3, random_state=8)
    assert not np.array_equal(held.layers["a"], held.layers["c"])


def test_modality_dropout_and_options_are_recorded(held):
    kw = {"layer": "holdout_train", "max_epochs": 3, "modality_dropout": 0.5, "count_pcs": 8, "n_neighbors": 4}
    st.tl.impute(held, "multimodal", key_added="a", **kw)
    st.tl.impute(held, "multimodal", key_added="b", **kw)
    np.testing.assert_array_equal(held.layers["a"], held.layers["b"])
    params = held.uns["a"]["params"]
    assert params["modality_dropout"] == 0.5 and params["count_pcs"] == 8 and params["n_neighbors"] == 4
    assert params["output"] == "conditional" and params["loss"] == "mse"


def test_x_and_input_layer_unchanged(held):
    X = held.X.copy()
    train = held.layers["holdout_train"].copy()
    st.tl.impute(held, "multimodal", layer="holdout_train", max_epochs=2)
    st.tl.impute(held, "knn", layer="holdout_train")
    assert (held.X != X).nnz == 0 and held.X.dtype == X.dtype
    assert (held.layers["holdout_train"] != train).nnz == 0


def test_copy_returns_new_object(held):
    before = set(held.layers)
    out = st.tl.impute(held, "autoencoder", layer="holdout_train", max_epochs=2, copy=True)
    assert isinstance(out, ad.AnnData) and out is not held
    assert "imputed_autoencoder" in out.layers
    assert set(held.layers) == before and "imputed_autoencoder" not in held.uns
    assert st.tl.impute(held, "knn", layer="holdout_train") is None


def test_return_model_and_copy(held):
    out, model = st.tl.impute(held, "positional", layer="holdout_train", max_epochs=2, copy=True, return_model=True)
    assert "imputed_positional" in out.layers
    assert model.method == "positional"
    assert "ImputationModel" in repr(model)


@pytest.mark.parametrize("method", ["knn", *LEARNED])
def test_h5ad_round_trip(held, tmp_path, method):
    kwargs = {} if method == "knn" else {"max_epochs": 2}
    st.tl.impute(held, method, layer="holdout_train", **kwargs)
    key = f"imputed_{method}"
    path = tmp_path / "imputed.h5ad"
    held.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.layers[key].dtype == np.float32
    np.testing.assert_array_equal(back.layers[key], held.layers[key])
    ours, theirs = held.uns[key], back.uns[key]
    assert set(theirs) == set(ours)
    assert theirs["best_epoch"] == ours["best_epoch"]
    assert theirs["device"] == ours["device"]
    assert theirs["n_parameters"] == ours["n_parameters"]
    assert theirs["fusion_weights"] == pytest.approx(ours["fusion_weights"])
    for name in ("epoch", "train_loss", "val_loss"):
        np.testing.assert_array_equal(theirs["history"][name], ours["history"][name])
    assert set(theirs["params"]) == set(ours["params"])
    for name, value in ours["params"].items():
        if isinstance(value, list):  # lists come back as arrays
            assert list(theirs["params"][name]) == value, name
        else:
            assert theirs["params"][name] == value, name
    assert theirs["params"]["method"] == method
    if method == "multimodal":
        assert theirs["params"]["modalities"].tolist() == ["counts", "position", "image"]
    if method != "knn":
        assert len(theirs["history"]["epoch"]) > 0


def test_count_likelihood_expected_is_below_conditional(held):
    for loss in ("nb", "poisson"):
        model = st.tl.impute(held, "autoencoder", layer="holdout_train", loss=loss, max_epochs=3, return_model=True)
        model.predict(held, layer="holdout_train", key_added="cond", output="conditional")
        model.predict(held, layer="holdout_train", key_added="exp", output="expected")
        zero = held.layers["holdout_train"].toarray() == 0
        # E[count] includes dropouts: at most E[count | detected] at every imputed entry, clearly below on average
        assert (held.layers["exp"][zero] <= held.layers["cond"][zero] + 1e-5).all()
        low = held.layers["cond"][zero] < 2
        assert np.median(held.layers["exp"][zero][low] / held.layers["cond"][zero][low]) < 0.8
        assert np.isfinite(held.uns["imputed_autoencoder"]["history"]["val_loss"]).all()


def test_outputs_and_detection_head(held):
    with pytest.raises(ValueError, match=r"`output='expected'` needs .*detection=True"):
        st.tl.impute(held, "multimodal", layer="holdout_train", output="expected")
    model = st.tl.impute(
        held, "multimodal", layer="holdout_train", detection=True, max_epochs=3, return_model=True, output="expected"
    )
    assert held.uns["imputed_multimodal"]["params"]["output"] == "expected"
    model.predict(held, layer="holdout_train", key_added="cond", output="conditional")
    zero = held.layers["holdout_train"].toarray() == 0
    assert (held.layers["imputed_multimodal"][zero] <= held.layers["cond"][zero] + 1e-6).all()
    with pytest.raises(ValueError, match="`output` must be one of"):
        model.predict(held, output="median")


@pytest.mark.parametrize("method", ["multimodal", "knn"])
def test_denoised_readouts_replace_observed_values_by_default(held, method):
    """``"expected"`` and ``"normalized"`` are denoised readouts: observed counts are replaced unless asked to keep them
    (under a thinning holdout, which scores every entry, a kept count keeps its sampling noise)."""
    kw = {"layer": "holdout_train"} | ({"detection": True, "max_epochs": 3} if method == "multimodal" else {})
    model = st.tl.impute(held, method, output="expected", key_added="exp", return_model=method != "knn", **kw)
    st.tl.impute(held, method, output="conditional", key_added="cond", **kw)
    observed = held.layers["holdout_train"].toarray()
    seen = observed > 0
    assert not held.uns["exp"]["params"]["keep_observed"]
    assert held.uns["cond"]["params"]["keep_observed"]
    np.testing.assert_array_equal(held.layers["cond"][seen], observed[seen])
    assert not np.array_equal(held.layers["exp"][seen], observed[seen])
    if model is not None:
        model.predict(held, layer="holdout_train", key_added="exp_again")  # the training output, its default
        np.testing.assert_array_equal(held.layers["exp_again"], held.layers["exp"])
        model.predict(held, layer="holdout_train", key_added="kept", keep_observed=True)
        np.testing.assert_array_equal(held.layers["kept"][seen], observed[seen])
        # a model trained with keep_observed=True keeps them for its own output, not for another one
        kept = st.tl.impute(held, method, output="expected", keep_observed=True, key_added="k", return_model=True, **kw)
        kept.predict(held, layer="holdout_train", key_added="k_again")
        np.testing.assert_array_equal(held.layers["k_again"], held.layers["k"])
        np.testing.assert_array_equal(held.layers["k_again"][seen], observed[seen])
        kept.predict(held, layer="holdout_train", key_added="k_norm", output="normalized")
        assert not held.uns["k_norm"]["params"]["keep_observed"]


def test_normalized_output_removes_depth(held):
    st.tl.impute(held, "positional", layer="holdout_train", max_epochs=20, key_added="cond")
    st.tl.impute(held, "positional", layer="holdout_train", max_epochs=20, key_added="norm", output="normalized")
    depth = np.log1p(np.asarray(held.layers["holdout_train"].sum(axis=1)).ravel())
    zero = held.layers["holdout_train"].toarray() == 0

    def depth_corr(key):
        M = np.where(zero, held.layers[key], np.nan)
        return np.corrcoef(np.nanmean(np.log1p(M), axis=1), depth)[0, 1]

    assert held.uns["norm"]["params"]["keep_observed"] is False or not held.uns["norm"]["params"]["keep_observed"]
    assert abs(depth_corr("norm")) < abs(depth_corr("cond"))
    st.tl.impute(held, "knn", layer="holdout_train", output="normalized", key_added="knn_norm")
    assert held.layers["knn_norm"].dtype == np.float32


def test_spatial_regulariser_smooths_autoencoder(held):
    common = {"layer": "holdout_train", "max_epochs": 5, "keep_observed": False}
    st.tl.impute(held, "autoencoder", key_added="plain", **common)
    st.tl.impute(held, "autoencoder", key_added="smooth", spatial_reg=10.0, **common)
    graph = spatial_graph(held.obsm["spatial"], 6)

    def roughness(M):
        L = np.log1p(M)
        return float(np.mean((L - graph @ L) ** 2))

    assert roughness(held.layers["smooth"]) < roughness(held.layers["plain"])


# --- helpers ------------------------------------------------------------------------------------


def test_split_observed_uses_only_stored_entries():
    from stimpute._nn._data import split_observed

    rng = np.random.default_rng(0)
    dense = rng.poisson(0.5, size=(60, 40)).astype(np.float32)
    L = sparse.csr_matrix(dense)
    fit, val = split_observed(L, 0.2, np.random.default_rng(1))
    assert (fit + val != L).nnz == 0
    assert fit.multiply(val).nnz == 0
    assert val.nnz == int(round(0.2 * L.nnz))
    vrows, vcols = val.nonzero()
    assert (dense[vrows, vcols] > 0).all()  # never an entry that is zero in the input (e.g. hidden by holdout)
    again, _ = split_observed(L, 0.2, np.random.default_rng(1))
    assert (again != fit).nnz == 0
    rows = np.arange(0, 60, 3)
    _, val_rows = split_observed(L, 0.5, np.random.default_rng(2), rows=rows)
    assert set(np.unique(val_rows.nonzero()[0])) <= set(rows)
    assert val_rows.nnz == int(round(0.5 * L[rows].nnz))


def test_spatial_graph_excludes_self_and_is_row_normalised(synthetic):
    coords = synthetic.obsm["spatial"]
    g = spatial_graph(coords, 6)
    assert g.shape == (synthetic.n_obs, synthetic.n_obs)
    assert np.all(np.diff(g.indptr) == 6)
    assert g.diagonal().sum() == 0
    np.testing.assert_allclose(np.asarray(g.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    g_self = spatial_graph(coords, 6, include_self=True)
    assert np.all(g_self.diagonal() == pytest.approx(1 / 7))
    # the 6 nearest spots on a hex grid are the ring at one spacing
    d = np.linalg.norm(coords[g[0].indices] - coords[0], axis=1)
    assert d.max() <= np.sort(np.linalg.norm(coords - coords[0], axis=1))[6] + 1e-9


def test_spatial_graph_sources(synthetic):
    coords = synthetic.obsm["spatial"]
    n = synthetic.n_obs
    everyone = spatial_graph(coords, 6, sources=np.ones(n, dtype=bool))
    assert (everyone != spatial_graph(coords, 6)).nnz == 0  # all sources: the plain graph
    sources = np.random.default_rng(0).random(n) > 0.3
    g = spatial_graph(coords, 6, sources=sources)
    assert np.all(np.diff(g.indptr) == 6)
    assert sources[g.indices].all()  # only sources are neighbours, of every spot
    assert g.diagonal().sum() == 0
    np.testing.assert_allclose(np.asarray(g.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    # a non-source spot gets its 6 nearest sources
    i = int(np.flatnonzero(~sources)[0])
    d = np.linalg.norm(coords[sources] - coords[i], axis=1)
    assert np.linalg.norm(coords[g[i].indices] - coords[i], axis=1).max() <= np.sort(d)[5] + 1e-9


@pytest.mark.parametrize("kwargs", [{"detection": True, "output": "expected"}, {"loss": "nb", "output": "expected"}])
def test_spots_hidden_whole_are_not_trained_as_empty(synthetic, kwargs):
    """Spots with no count in the training layer are unobserved: not learnt as spots of zeros."""
    st.pp.holdout(synthetic, fraction=0.2, strategy="spots", random_state=0)
    hidden = synthetic.obs["holdout_hidden_spot"].to_numpy(dtype=bool)
    st.tl.impute(synthetic, "positional", layer="holdout_train", max_epochs=15, progress=False, **kwargs)
    pred = synthetic.layers["imputed_positional"]
    # the expected count of a hidden spot is of the same order as a seen one's (it was ~0 when
    # hidden spots were trained on as all-zero rows)
    assert pred[hidden].mean() > 0.5 * pred[~hidden].mean()
    st.tl.impute(synthetic, "knn", layer="holdout_train", output="expected")
    assert synthetic.layers["imputed_knn"][hidden].mean() > 0.5 * synthetic.layers["imputed_knn"][~hidden].mean()


def test_multimodal_predicts_unseen_spots(synthetic):
    """Whole hidden spots: the fused model trains with whole-spot masking and beats the gene-mean floor."""
    st.pp.holdout(synthetic, fraction=0.2, strategy="spots", random_state=0)
    _with_image(synthetic)
    st.tl.impute(
        synthetic, "multimodal", layer="holdout_train", max_epochs=20, progress=False, detection=True, output="expected"
    )
    params = synthetic.uns["imputed_multimodal"]["params"]
    assert params["spot_mask"] == pytest.approx(0.2, abs=0.01)  # automatic: the share of spots without counts
    table = st.tl.evaluate(synthetic, "imputed_multimodal")
    assert table.loc["imputed_multimodal", "rmse_log1p"] < table.loc["baseline: gene mean", "rmse_log1p"]
    # every spot with counts: no whole-spot masking by default
    st.pp.holdout(synthetic, fraction=0.5, random_state=0)
    st.tl.impute(synthetic, "multimodal", layer="holdout_train", max_epochs=1, progress=False)
    assert synthetic.uns["imputed_multimodal"]["params"]["spot_mask"] == 0.0


def test_too_few_spots_with_counts(synthetic):
    synthetic.layers["almost_empty"] = sparse.csr_matrix(
        (np.array([3.0], dtype=np.float32), (np.array([0]), np.array([0]))), shape=synthetic.shape
    )
    with pytest.raises(ValueError, match="Only 1 spot"):
        st.tl.impute(synthetic, "positional", layer="almost_empty", max_epochs=1, progress=False)


def test_knn_prediction_matches_definition():
    L = sparse.csr_matrix(np.array([[0, 1.0, 0], [2.0, 0, 0], [4.0, 3.0, 0], [0, 0, 0]], dtype=np.float32))
    coords = np.array([[0.0, 0], [1, 0], [2, 0], [3, 0]])
    g = spatial_graph(coords, 2)
    pred = _knn.knn_impute_log1p(L, g, shrinkage=0.0)
    # spot 0: neighbours 1 and 2 -> gene 0 mean(2, 4) = 3, gene 1 only spot 2 -> 3
    np.testing.assert_allclose(pred[0, :2], [3.0, 3.0])
    # gene 2 is never observed: gene mean 0
    assert pred[0, 2] == 0
    # spot 3: neighbours 2 and 1 -> gene 0 mean(4, 2) = 3
    assert pred[3, 0] == pytest.approx(3.0)
    shrunk = _knn.knn_impute_log1p(L, g, shrinkage=2.0)
    gene0_mean = (2 + 4) / 2
    assert shrunk[0, 0] == pytest.approx((3.0 + 1.0 * gene0_mean) / 2)  # two real + two pseudo-neighbours


def test_importing_stimpute_does_not_import_torch():
    code = "import sys, stimpute as st; st.tl.impute; st.tl.load_model; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- bad input ----------------------------------------------------------------------------------


def _unchanged(adata, layers, uns):
    assert set(adata.layers) == layers and set(adata.uns) == uns


def test_unknown_method(held):
    layers, uns = set(held.layers), set(held.uns)
    with pytest.raises(ValueError, match="`method` must be one of"):
        st.tl.impute(held, "magic", layer="holdout_train")
    _unchanged(held, layers, uns)


def test_unknown_option_names_the_accepted_ones(held):
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['hidden'\].*count_hidden"):
        st.tl.impute(held, "autoencoder", layer="holdout_train", hidden=(32,))
    with pytest.raises(ValueError, match="`modalities` must be a non-empty subset"):
        st.tl.impute(held, "multimodal", layer="holdout_train", modalities=("counts", "sound"))
    with pytest.raises(ValueError, match="trains no model"):
        st.tl.impute(held, "knn", layer="holdout_train", return_model=True)


def test_image_method_without_features_or_image(held):
    del held.obsm["X_image"]
    held.uns.pop("spatial")
    layers, uns = set(held.layers), set(held.uns)
    with pytest.raises(KeyError, match=r"obsm\['X_image'\].*st\.pp\.image_features"):
        st.tl.impute(held, "image", layer="holdout_train")
    with pytest.raises(KeyError, match=r"modalities=\('counts', 'position'\)"):  # the image asked for by name
        st.tl.impute(held, "multimodal", layer="holdout_train", modalities=("counts", "position", "image"))
    _unchanged(held, layers, uns)
    assert "X_image" not in held.obsm
    # on its default modalities the fused model runs without the image, saying so once
    with pytest.warns(st.ImageFeatureWarning, match=r"runs on counts and position only") as record:
        st.tl.impute(held, "multimodal", layer="holdout_train", max_epochs=1)
    assert len([w for w in record if issubclass(w.category, st.ImageFeatureWarning)]) == 1
    assert held.uns["imputed_multimodal"]["params"]["image_key"] == "none"
    assert list(held.uns["imputed_multimodal"]["params"]["modalities"]) == ["counts", "position"]
    assert "X_image" not in held.obsm
    # naming the modalities says so: no warning
    st.tl.impute(held, "multimodal", layer="holdout_train", modalities=("counts", "position"), max_epochs=1)
    assert held.uns["imputed_multimodal"]["params"]["image_key"] == "none"


def test_image_features_computed_when_missing(held):
    if not hasattr(st.pp, "image_features"):
        pytest.skip("st.pp.image_features is not available")
    del held.obsm["X_image"]
    st.tl.impute(held, "image", layer="holdout_train", max_epochs=1, image_key="X_img")
    assert "X_img" in held.obsm and "imputed_image" in held.layers


def test_positional_without_coordinates(held):
    del held.obsm["spatial"]
    layers, uns = set(held.layers), set(held.uns)
    for method in ("positional", "multimodal", "knn"):
        with pytest.raises(KeyError, match=r"needs spot coordinates in `adata.obsm\['spatial'\]`"):
            st.tl.impute(held, method, layer="holdout_train")
    _unchanged(held, layers, uns)
    st.tl.impute(held, "autoencoder", layer="holdout_train", max_epochs=1)  # counts only: fine


def test_layer_with_nan(held):
    bad = held.layers["holdout_train"].astype(np.float32).tolil()
    bad[0, 0] = np.nan
    held.layers["bad"] = bad.tocsr()
    layers, uns = set(held.layers), set(held.uns)
    with pytest.raises(ValueError, match="NaN or infinite"):
        st.tl.impute(held, "multimodal", layer="bad")
    _unchanged(held, layers, uns)


def test_missing_layer_and_negative_counts(held):
    with pytest.raises(KeyError, match=r"holdout_trian.*not found"):
        st.tl.impute(held, "knn", layer="holdout_trian")
    held.layers["neg"] = -held.layers["holdout_train"]
    with pytest.raises(ValueError, match="negative values"):
        st.tl.impute(held, "knn", layer="neg")


def test_too_large_for_memory(held):
    layers, uns = set(held.layers), set(held.uns)
    with pytest.raises(ValueError, match=r"above `max_dense_gb=1e-06`.*highly_variable"):
        st.tl.impute(held, "multimodal", layer="holdout_train", max_dense_gb=1e-6)
    with pytest.raises(ValueError, match="max_dense_gb"):
        st.tl.impute(held, "knn", layer="holdout_train", max_dense_gb=1e-6)
    _unchanged(held, layers, uns)


def test_memory_check_counts_the_spatial_reg_cache(held):
    from stimpute.tl._impute_options import estimate_parameters as _estimate_parameters
    from stimpute.tl._impute_options import method_options as _method_options

    dense_gb = held.n_obs * held.n_vars * 4 / 1e9
    model_gb = (
        _estimate_parameters("autoencoder", _method_options("autoencoder", {}), held.n_vars, ("counts",)) * 16 / 1e9
    )
    limit = model_gb + 1.5 * dense_gb  # room for the output, not for the output and the cache of predictions
    st.tl.impute(held, "autoencoder", layer="holdout_train", max_epochs=1, max_dense_gb=limit, key_added="fits")
    layers, uns = set(held.layers), set(held.uns)
    with pytest.raises(ValueError, match=r"spatial_reg cache.*above `max_dense_gb"):
        st.tl.impute(held, "autoencoder", layer="holdout_train", max_epochs=1, max_dense_gb=limit, spatial_reg=1.0)
    _unchanged(held, layers, uns)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_epochs": 0}, ValueError, "`max_epochs` must be >= 1"),
        ({"batch_size": 1}, ValueError, "`batch_size` must be >= 2"),
        ({"learning_rate": -1.0}, ValueError, "`learning_rate` must be a positive number"),
        ({"loss": "zinb"}, ValueError, "`loss` must be one of"),
        ({"device": "tpu"}, ValueError, "`device` must be"),
        ({"random_state": -3}, TypeError, "`random_state` must be a non-negative integer"),
        ({"mask_fraction": 0.0}, ValueError, "`mask_fraction` must be in"),
        ({"spot_mask": 1.5}, ValueError, "`spot_mask` must be None"),
        ({"spot_mask": True}, ValueError, "`spot_mask` must be None"),
        ({"val_fraction": 0.9}, ValueError, "`val_fraction` must be in"),
        ({"count_hidden": ()}, ValueError, "`count_hidden` needs at least one"),
        ({"key_added": ""}, TypeError, "`key_added` must be a non-empty string"),
    ],
)
def test_bad_parameters(held, kwargs, exc, match):
    layers, uns = set(held.layers), set(held.uns)
    with pytest.raises(exc, match=match):
        st.tl.impute(held, "multimodal", layer="holdout_train", **kwargs)
    _unchanged(held, layers, uns)


def test_recorded_options_read_back_from_h5ad_can_be_passed_again(synthetic, tmp_path, one_torch_thread):
    """h5ad turns the recorded lists (layer widths, modalities) into arrays: impute takes them as they come back."""
    st.pp.holdout(synthetic, fraction=0.5, random_state=0)
    kw = {"layer": "holdout_train", "max_epochs": 2, "progress": False}
    st.tl.impute(synthetic, "multimodal", modalities=["position", "counts"], position_hidden=(16, 32), **kw)
    synthetic.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    params = back.uns["imputed_multimodal"]["params"]
    assert isinstance(params["modalities"], np.ndarray)
    assert isinstance(params["position_hidden"], np.ndarray)
    names = ("modalities", "position_hidden", "count_hidden", "decoder_hidden")
    st.tl.impute(back, "multimodal", key_added="again", **{n: params[n] for n in names}, **kw)
    assert back.uns["again"]["params"]["modalities"] == ["counts", "position"]
    assert back.uns["again"]["params"]["position_hidden"] == [16, 32]
    np.testing.assert_array_equal(back.layers["again"], synthetic.layers["imputed_multimodal"])


# --- real data ------------------------------------------------------------------------------------


def test_dlpfc_smoke(dlpfc):
    adata = dlpfc[:, :300].copy()
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    _with_image(adata)
    st.tl.impute(adata, "multimodal", layer="holdout_train", max_epochs=5)
    st.tl.impute(adata, "knn", layer="holdout_train")
    scores = st.tl.evaluate(adata, ["imputed_multimodal", "imputed_knn"])
    floor = scores.loc["baseline: gene mean", "rmse_log1p"]
    assert scores.loc["imputed_multimodal", "rmse_log1p"] < floor
    assert scores.loc["imputed_knn", "rmse_log1p"] < floor
    assert adata.layers["imputed_multimodal"].shape == (adata.n_obs, 300)


def test_neighbour_features_without_cache_match(synthetic, monkeypatch, one_torch_thread):
    """Large sections compute the neighbours' features per minibatch instead of caching them: same result."""
    from stimpute._nn import _data

    st.pp.holdout(synthetic, fraction=0.5, random_state=0)
    kw = {"method": "multimodal", "layer": "holdout_train", "max_epochs": 3, "random_state": 0}
    cached = st.tl.impute(synthetic, key_added="cached", return_model=True, **kw)
    monkeypatch.setattr(_data, "NEIGHBOUR_CACHE_BYTES", 0)
    lazy = st.tl.impute(synthetic, key_added="lazy", return_model=True, **kw)
    np.testing.assert_array_equal(synthetic.layers["cached"], synthetic.layers["lazy"])
    np.testing.assert_array_equal(
        synthetic.uns["cached"]["history"]["val_loss"], synthetic.uns["lazy"]["history"]["val_loss"]
    )
    # and a model trained with the cache predicts the same without it (and the other way round)
    cached.predict(synthetic, layer="holdout_train", key_added="cached_then_lazy", output="normalized")
    monkeypatch.setattr(_data, "NEIGHBOUR_CACHE_BYTES", 1 << 30)
    lazy.predict(synthetic, layer="holdout_train", key_added="lazy_then_cached", output="normalized")
    np.testing.assert_array_equal(synthetic.layers["cached_then_lazy"], synthetic.layers["lazy_then_cached"])


def test_failed_run_drops_the_image_features_it_computed():
    adata = st.datasets.synthetic_visium(n_spots=100, n_genes=30)
    almost_empty = sparse.lil_matrix(adata.shape, dtype=np.float32)
    almost_empty[0, 0] = 3
    adata.layers["almost_empty"] = almost_empty.tocsr()
    assert "X_image" not in adata.obsm
    before = (set(adata.obsm), set(adata.uns), set(adata.layers))
    with pytest.raises(ValueError, match="at least 2 are needed"):
        st.tl.impute(adata, "multimodal", layer="almost_empty", max_epochs=1, progress=False)
    assert (set(adata.obsm), set(adata.uns), set(adata.layers)) == before
    # features that were there before the run stay
    st.pp.image_features(adata)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        st.tl.impute(adata, "multimodal", layer="almost_empty", max_epochs=1, progress=False)
    assert "X_image" in adata.obsm and "X_image" in adata.uns


@pytest.mark.parametrize("method", ["autoencoder", "multimodal"])
def test_training_leaves_the_global_torch_rng_alone(held, method):
    import torch

    torch.manual_seed(123)
    state = torch.get_rng_state()
    st.tl.impute(held, method, layer="holdout_train", max_epochs=2, dropout=0.1, key_added="rng", progress=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_training_on_cpu_never_reseeds_the_gpus(held, monkeypatch):
    """``torch.manual_seed`` would reseed every CUDA/MPS generator: a CPU run seeds only the CPU's."""
    import torch

    calls = []
    for module, name in ((torch.cuda, "manual_seed_all"), (torch.cuda, "manual_seed"), (torch.mps, "manual_seed")):
        monkeypatch.setattr(module, name, lambda seed, _n=name: calls.append(_n))
    st.tl.impute(held, "multimodal", layer="holdout_train", max_epochs=1, device="cpu", progress=False)
    assert calls == []


def test_training_leaves_the_default_dtype_setting_alone(held, monkeypatch):
    """With torch's default dtype already float32, training never writes that process-wide setting (threads)."""
    import torch

    def refuse(dtype):
        raise AssertionError("set_default_dtype called")

    monkeypatch.setattr(torch, "set_default_dtype", refuse)
    st.tl.impute(held, "multimodal", layer="holdout_train", max_epochs=1, progress=False)


@pytest.mark.parametrize("method", ["autoencoder", "multimodal"])
def test_float64_default_dtype_gives_the_float32_result(held, tmp_path, method, one_torch_thread):
    """A caller's ``torch.set_default_dtype(torch.float64)`` neither breaks training nor changes the result."""
    import torch

    kw = {"layer": "holdout_train", "max_epochs": 2, "progress": False, "return_model": True}
    model = st.tl.impute(held, method, key_added="f32", **kw)
    model.save(tmp_path / "m")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        st.tl.impute(held, method, key_added="f64", **kw)
        st.tl.load_model(tmp_path / "m").predict(held, layer="holdout_train", key_added="loaded")
        assert torch.get_default_dtype() == torch.float64  # the caller's setting is restored
    finally:
        torch.set_default_dtype(previous)
    np.testing.assert_array_equal(held.layers["f64"], held.layers["f32"])
    np.testing.assert_array_equal(held.layers["loaded"], held.layers["f32"])


def test_validation_uses_only_spots_with_counts():
    from stimpute._nn._data import fresh_norm, prepare

    adata = st.datasets.synthetic_visium(n_spots=120, n_genes=40)
    empty = np.arange(0, 120, 4)  # a quarter of the spots without counts, as after strategy="spots"
    keep = np.ones(120, dtype=np.float32)
    keep[empty] = 0
    X = sparse.csr_matrix(sparse.diags(keep) @ sparse.csr_matrix(adata.X, dtype=np.float32))
    X.eliminate_zeros()
    config = {"modalities": ("counts",), "neighbours": False}
    prep = prepare(
        X, config=config, norm=fresh_norm(X, None), coords=None, image=None, val_fraction=0.1,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    assert prep.val_spots.size == 120 - empty.size
    assert not np.isin(prep.val_spots, empty).any()
    assert prep.L_val.nnz > 0 and prep.L_val[empty].nnz == 0


def test_knn_on_a_dense_float16_layer(held):
    held.layers["f32"] = held.layers["holdout_train"].toarray().astype(np.float32)
    held.layers["f16"] = held.layers["f32"].astype(np.float16)
    for layer in ("f32", "f16"):
        st.tl.impute(held, "knn", layer=layer, key_added=f"knn_{layer}")
    np.testing.assert_allclose(held.layers["knn_f16"], held.layers["knn_f32"], rtol=1e-6)


def test_device_is_checked_before_image_features_are_computed(held, monkeypatch):
    """A bad device must fail before anything is written (image features, or a view turned into an AnnData)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    del held.obsm["X_image"]
    view = held[: held.n_obs - 1]
    with pytest.raises(ValueError, match="CUDA is not available"):
        st.tl.impute(view, "image", layer="holdout_train", device="cuda", max_epochs=1)
    assert view.is_view and "X_image" not in held.obsm


def test_spatial_reg_model_predicts_without_coordinates(held):
    """The spatial regulariser is a training loss: the trained autoencoder needs no coordinates to predict."""
    model = st.tl.impute(held, "autoencoder", layer="holdout_train", spatial_reg=1.0, max_epochs=2, return_model=True)
    bare = held.copy()
    del bare.obsm["spatial"]
    model.predict(bare, layer="holdout_train", key_added="no_coords")
    np.testing.assert_array_equal(bare.layers["no_coords"], held.layers["imputed_autoencoder"])
    with pytest.raises(KeyError, match="or pass `spatial_reg=0`, which needs no coordinates"):
        st.tl.impute(bare, "autoencoder", layer="holdout_train", spatial_reg=1.0, max_epochs=1)


def test_non_integer_input_is_flagged(held):
    held.layers["lognorm"] = np.log1p(held.layers["holdout_train"].toarray()).astype(np.float32)
    with pytest.warns(st.InputWarning, match="holds non-integer values; the models expect raw counts") as record:
        st.tl.impute(held, "knn", layer="lognorm", key_added="k")
    assert record[0].filename == __file__  # attributed to the caller, not to stimpute
    st.tl.impute(held, "knn", layer="holdout_train", key_added="k2")  # filterwarnings=error: no warning


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "multimodal"},
        {"method": "multimodal", "neighbour_skip": False},
        {"method": "multimodal", "count_pcs": 0},  # the count encoder reads all genes: densified each epoch
        {"method": "autoencoder"},
        {"method": "positional"},
        {"method": "image"},
    ],
)
def test_validation_on_entries_matches_the_full_output(held, monkeypatch, kwargs):
    """The default loss is validated at the validation entries only, from inputs read once: the loss of the full
    output up to float rounding, hence the same training."""
    from stimpute._nn import _train

    kw = {"layer": "holdout_train", "max_epochs": 4, "random_state": 0, **kwargs}
    st.tl.impute(held, key_added="entries", **kw)
    monkeypatch.setattr(_train, "validation_entries", lambda *args, **kwargs: None)
    st.tl.impute(held, key_added="full", **kw)
    np.testing.assert_allclose(
        held.uns["entries"]["history"]["val_loss"], held.uns["full"]["history"]["val_loss"], rtol=1e-5
    )
    assert held.uns["entries"]["best_epoch"] == held.uns["full"]["best_epoch"]
    np.testing.assert_array_equal(held.layers["entries"], held.layers["full"])


def test_dense_neighbour_cache_stays_within_the_memory_budget(monkeypatch):
    """Dense rates are kept only when the whole cache (CSR means + dense arrays) fits NEIGHBOUR_CACHE_BYTES."""
    from stimpute._nn import _data

    rng = np.random.default_rng(0)
    mean = sparse.random(200, 100, density=0.5, format="csr", dtype=np.float32, random_state=rng)
    rate = mean.copy()
    dense_two = 2 * 4 * 200 * 100  # rates and estimates as dense float32 arrays
    fits = _data._csr_bytes(mean) + dense_two
    monkeypatch.setattr(_data, "NEIGHBOUR_CACHE_BYTES", fits)
    assert _data._keep_dense(mean, rate, rate)
    monkeypatch.setattr(_data, "NEIGHBOUR_CACHE_BYTES", fits - 1)
    assert not _data._keep_dense(mean, rate, rate)
    assert _data._keep_dense(mean, rate, None)  # one dense array fits
    monkeypatch.setattr(_data, "NEIGHBOUR_CACHE_BYTES", 1 << 30)
    monkeypatch.setattr(_data, "DENSE_CACHE_DENSITY", 0.6)  # too sparse to be worth it
    assert not _data._keep_dense(mean, rate, rate)


def test_prepare_asks_the_budget_before_densifying(synthetic, monkeypatch):
    """The neighbour cache goes through `_keep_dense`: refused, the rates stay CSR (and the layer is the same)."""
    from stimpute._nn import _data, _fit

    st.pp.holdout(synthetic, fraction=0.5, random_state=0)
    kw = {"method": "multimodal", "layer": "holdout_train", "max_epochs": 2, "random_state": 0}
    st.tl.impute(synthetic, key_added="default", **kw)
    asked, built = [], []
    monkeypatch.setattr(_data, "DENSE_CACHE_DENSITY", 0.0)  # dense whenever the budget allows
    monkeypatch.setattr(_data, "_keep_dense", lambda *a: asked.append(a) or False)
    prepare = _fit.prepare
    monkeypatch.setattr(_fit, "prepare", lambda *a, **k: built.append(prepare(*a, **k)) or built[-1])
    st.tl.impute(synthetic, key_added="refused", **kw)
    assert asked and not isinstance(built[0].neigh_cache[1], np.ndarray)
    np.testing.assert_array_equal(synthetic.layers["default"], synthetic.layers["refused"])


@pytest.mark.parametrize("density", [0.0, 2.0])  # always dense, never dense
def test_dense_neighbour_cache_matches_csr(synthetic, monkeypatch, density):
    """Nearly dense neighbour features are cached as dense arrays (faster minibatch rows): same result as CSR."""
    from stimpute._nn import _data, _fit

    st.pp.holdout(synthetic, fraction=0.5, random_state=0)
    kw = {"method": "multimodal", "layer": "holdout_train", "max_epochs": 3, "random_state": 0}
    st.tl.impute(synthetic, key_added="default", **kw)
    monkeypatch.setattr(_data, "DENSE_CACHE_DENSITY", density)
    built = []
    prepare = _fit.prepare
    monkeypatch.setattr(_fit, "prepare", lambda *a, **k: built.append(prepare(*a, **k)) or built[-1])
    st.tl.impute(synthetic, key_added="switched", **kw)
    rate = built[0].neigh_cache[1]
    assert isinstance(rate, np.ndarray) == (density == 0.0)
    np.testing.assert_array_equal(synthetic.layers["default"], synthetic.layers["switched"])
    np.testing.assert_array_equal(
        synthetic.uns["default"]["history"]["val_loss"], synthetic.uns["switched"]["history"]["val_loss"]
    )


@pytest.mark.parametrize("method", ["image", "positional"])
def test_library_size_false_runs_single_modality_networks_pure(synthetic, method):
    """Issue 19, item 4: with ``library_size=False`` (and the default ``loss="mse"``) the image and positional
    networks read no count of the spot they predict: changing the spots' counts at readout (scaling some
    spots' depths, emptying others) changes no bit of any readout. With the default ``library_size=True`` the
    spot's own depth enters the conditional readout."""
    st.pp.holdout(synthetic, fraction=0.3, random_state=0)
    if method == "image":
        st.pp.image_features(synthetic)
    changed = synthetic.copy()
    train = changed.layers["holdout_train"].toarray().astype(np.float32)
    train[:10] *= 3  # deeper spots
    train[20:30] = 0  # spots without counts
    changed.layers["holdout_train"] = sparse.csr_matrix(train)
    fit = {"max_epochs": 2, "detection": True, "keep_observed": False}
    model = st.tl.impute(
        synthetic, method, layer="holdout_train", library_size=False, return_model=True, key_added="pure", **fit
    )
    assert synthetic.uns["pure"]["params"]["library_size"] is False
    assert np.isfinite(synthetic.layers["pure"]).all()
    for output in ("conditional", "expected", "normalized"):
        for adata in (synthetic, changed):
            model.predict(adata, layer="holdout_train", output=output, keep_observed=False, key_added="out")
        np.testing.assert_array_equal(synthetic.layers["out"], changed.layers["out"], strict=True)
    with_depth = st.tl.impute(synthetic, method, layer="holdout_train", return_model=True, key_added="depth", **fit)
    for adata in (synthetic, changed):
        with_depth.predict(adata, layer="holdout_train", output="conditional", keep_observed=False, key_added="out")
    assert not np.array_equal(synthetic.layers["out"], changed.layers["out"])
