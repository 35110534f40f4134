"""The graph encoder of the fused model, its latent representation and clustering it (issue 18)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import stimpute as st
from stimpute._graph import spatial_graph

from .conftest import require_data

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def held(synthetic) -> ad.AnnData:
    st.pp.holdout(synthetic, fraction=0.5, random_state=0)
    crops = st.get.spot_crops(synthetic, spot_scale=2.0).astype(np.float64)
    synthetic.obsm["X_image"] = np.hstack([crops.mean(axis=(1, 2)), crops.std(axis=(1, 2))])
    return synthetic


def test_hop_features_are_powers_of_the_sparse_graph():
    from stimpute._nn._data import hop_features

    rng = np.random.default_rng(0)
    coords = rng.uniform(size=(60, 2))
    graph = spatial_graph(coords, 6)
    source = sparse.random(60, 30, density=0.3, random_state=0, format="csr", dtype=np.float32)
    axes = rng.normal(size=(30, 4)).astype(np.float32)
    got = hop_features(graph, source, axes, 3)
    A, P = graph.toarray(), source.toarray() @ axes
    want = np.hstack([A @ P, A @ A @ P, A @ A @ A @ P])
    assert got.shape == (60, 12) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_spots_without_counts_pass_nothing_to_their_neighbours():
    from stimpute._nn._data import hop_features

    coords = np.c_[np.arange(10.0), np.zeros(10)]
    has_counts = np.ones(10, dtype=bool)
    has_counts[4] = False
    graph = spatial_graph(coords, 2, sources=has_counts)
    source = sparse.csr_matrix(np.eye(10, dtype=np.float32))
    hops = hop_features(graph, source, np.eye(10, dtype=np.float32), 2)
    assert np.all(hops[:, 4] == 0) and np.all(hops[:, 14] == 0)  # spot 4's column, at both hops
    assert hops[4].sum() > 0  # while spot 4 itself reads its neighbours


def test_fused_model_writes_its_latent(held, tmp_path):
    model = st.tl.impute(held, "multimodal", layer="holdout_train", max_epochs=3, return_model=True)
    z = held.obsm["X_imputed_multimodal"]
    assert z.shape == (held.n_obs, 64) and z.dtype == np.float32 and np.isfinite(z).all()
    assert set(held.uns["imputed_multimodal"]["fusion_weights"]) == {"counts", "position", "image", "graph"}
    assert held.uns["imputed_multimodal"]["params"]["graph_hops"] == 4
    path = tmp_path / "a.h5ad"
    held.write_h5ad(path)
    np.testing.assert_array_equal(ad.read_h5ad(path).obsm["X_imputed_multimodal"], z)
    # predict writes the latent of its own key, equal for the same inputs
    model.predict(held, layer="holdout_train", key_added="again")
    np.testing.assert_array_equal(held.obsm["X_again"], z)
    # a saved and loaded model reads the hop features on the same scale
    model.save(tmp_path / "m")
    st.tl.load_model(tmp_path / "m").predict(held, layer="holdout_train", key_added="loaded")
    np.testing.assert_allclose(held.obsm["X_loaded"], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(held.layers["loaded"], held.layers["imputed_multimodal"], rtol=1e-5, atol=1e-5)


def test_graph_encoder_is_deterministic_and_changes_the_model(held):
    for key, hops in (("a", 4), ("b", 4), ("none", 0)):
        st.tl.impute(held, "multimodal", layer="holdout_train", key_added=key, max_epochs=2, graph_hops=hops)
    np.testing.assert_array_equal(held.layers["a"], held.layers["b"])
    np.testing.assert_array_equal(held.obsm["X_a"], held.obsm["X_b"])
    assert not np.array_equal(held.layers["a"], held.layers["none"])
    assert "graph" not in held.uns["none"]["fusion_weights"]


def test_single_modality_networks_have_no_graph_and_knn_no_latent(held):
    st.tl.impute(held, "positional", layer="holdout_train", max_epochs=1)
    assert set(held.uns["imputed_positional"]["fusion_weights"]) == {"position"}
    assert held.obsm["X_imputed_positional"].shape == (held.n_obs, 64)
    st.tl.impute(held, "knn", layer="holdout_train")
    assert "X_imputed_knn" not in held.obsm


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"graph_hops": -1}, ValueError, "graph_hops"),
        ({"graph_hops": 1.5}, TypeError, "graph_hops"),
        ({"graph_neighbors": 0}, ValueError, "graph_neighbors"),
        ({"graph_hidden": (0,)}, ValueError, "graph_hidden"),
    ],
)
def test_bad_graph_options(held, options, error, match):
    layers = set(held.layers)
    with pytest.raises(error, match=match):
        st.tl.impute(held, "multimodal", layer="holdout_train", max_epochs=1, **options)
    assert set(held.layers) == layers and "X_imputed_multimodal" not in held.obsm


def test_compare_clusters_takes_a_latent(held):
    st.tl.impute(held, "multimodal", layer="holdout_train", max_epochs=2)
    st.tl.compare_clusters(held, ["holdout_train", "X_imputed_multimodal"], method="kmeans", n_clusters=3)
    assert "clusters_X_imputed_multimodal" in held.obs
    assert held.obs["clusters_X_imputed_multimodal"].nunique() == 3
    held.obsm["bad"] = np.full((held.n_obs, 3), np.nan)
    with pytest.raises(ValueError, match=r"obsm\['bad'\].*NaN"):
        st.tl.compare_clusters(held, ["holdout_train", "bad"], method="kmeans", n_clusters=3, key_added="c2")
    with pytest.raises(KeyError):
        st.tl.compare_clusters(held, ["holdout_train", "nowhere"], method="kmeans", n_clusters=3, key_added="c3")


def test_section_without_image_runs_on_counts_and_positions():
    path = require_data("her2st_B1", "adata.h5ad")
    adata = ad.read_h5ad(path)[:, :400].copy()
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    with pytest.warns(st.ImageFeatureWarning, match="counts and position only"):
        st.tl.impute(adata, "multimodal", layer="holdout_train", max_epochs=2)
    assert set(adata.uns["imputed_multimodal"]["fusion_weights"]) == {"counts", "position", "graph"}
    assert np.isfinite(adata.layers["imputed_multimodal"]).all()
