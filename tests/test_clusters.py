"""Tests of ``st.tl.compare_clusters``."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import NearestNeighbors

import stimpute as st
from stimpute.tl._clustering import _align, _by_size


def _snapshot(adata: ad.AnnData) -> dict:
    """Everything a failed call must leave untouched."""
    return {
        "X": adata.X.copy(),
        "layers": {k: v.copy() for k, v in adata.layers.items()},
        "obs": adata.obs.copy(),
        "uns_keys": sorted(adata.uns.keys()),
    }


def _assert_unchanged(adata: ad.AnnData, snap: dict) -> None:
    assert (adata.X != snap["X"]).nnz == 0
    assert sorted(adata.layers.keys()) == sorted(snap["layers"])
    for k, v in snap["layers"].items():
        now = adata.layers[k]
        if sparse.issparse(v):
            assert sparse.issparse(now) and (now != v).nnz == 0
        else:
            np.testing.assert_array_equal(now, v)
    pd.testing.assert_frame_equal(adata.obs, snap["obs"])
    assert sorted(adata.uns.keys()) == snap["uns_keys"]


def _smoothed(adata: ad.AnnData, layer: str, k: int = 7) -> np.ndarray:
    """Each spot = mean of itself and its k - 1 nearest spots (sparse weights, dense float32 result)."""
    xy = st.get.spatial_coords(adata)
    idx = NearestNeighbors(n_neighbors=k).fit(xy).kneighbors(xy, return_distance=False)
    n = adata.n_obs
    W = sparse.csr_matrix((np.full(idx.size, 1.0 / k), idx.ravel(), np.arange(0, idx.size + 1, k)), shape=(n, n))
    return np.asarray((W @ adata.layers[layer]).toarray(), dtype=np.float32)


@pytest.fixture
def syn() -> ad.AnnData:
    adata = st.datasets.synthetic_visium(n_spots=300, n_genes=60, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    adata.layers["smoothed"] = _smoothed(adata, "holdout_train")
    return adata


# ---- label alignment ---------------------------------------------------------------------------


def test_by_size_orders_largest_first():
    labels = np.array([5, 5, 9, 9, 9, 1])
    np.testing.assert_array_equal(_by_size(labels), [1, 1, 0, 0, 0, 2])


def test_align_recovers_permuted_labels_and_numbers_extra_clusters_after():
    ref = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    permuted = np.array([7, 7, 7, 3, 3, 5, 5, 5, 5])
    np.testing.assert_array_equal(_align(permuted, ref), ref)
    # a layer with one more cluster: the matched ones take the reference ids, the extra one gets 3
    split = np.array([7, 7, 7, 3, 3, 5, 5, 8, 8])
    aligned = _align(split, _by_size(ref))
    ref_sorted = _by_size(ref)
    assert set(aligned) == {0, 1, 2, 3}
    assert aligned[0] == ref_sorted[0] and aligned[3] == ref_sorted[3]
    assert (aligned == 3).sum() == 2


# ---- the pipeline on synthetic data ------------------------------------------------------------


def test_compare_clusters_leiden_n_clusters(syn):
    snap = _snapshot(syn)
    out = st.tl.compare_clusters(syn, ["X", "holdout_train", "smoothed"], n_clusters=4, labels_key="domain")
    assert out is None
    # X and the layers are untouched; sparse stays sparse
    assert (syn.X != snap["X"]).nnz == 0
    assert sparse.issparse(syn.layers["holdout_train"])
    np.testing.assert_array_equal(syn.layers["smoothed"], snap["layers"]["smoothed"])

    scores = syn.uns["clusters"]["scores"]
    assert list(scores.index) == ["X", "holdout_train", "smoothed"]
    assert list(scores.columns) == [
        "ari_reference",
        "nmi_reference",
        "ari_labels",
        "nmi_labels",
        "n_clusters",
        "resolution",
        "ari_reference_sd",
        "nmi_reference_sd",
        "ari_labels_sd",
        "nmi_labels_sd",
    ]
    assert scores["ari_labels_sd"].isna().all()  # one repeat: no spread
    assert (scores["n_clusters"] == 4).all()
    assert scores.loc["X", "ari_reference"] == pytest.approx(1.0)
    for layer in scores.index:
        col = syn.obs[f"clusters_{layer}"]
        assert isinstance(col.dtype, pd.CategoricalDtype)
        assert list(col.cat.categories) == ["0", "1", "2", "3"]
        # the stored scores are the real scores of the stored clusters
        assert scores.loc[layer, "ari_labels"] == pytest.approx(adjusted_rand_score(syn.obs["domain"], col))
        assert scores.loc[layer, "nmi_labels"] == pytest.approx(normalized_mutual_info_score(syn.obs["domain"], col))
        assert scores.loc[layer, "ari_reference"] == pytest.approx(adjusted_rand_score(syn.obs["clusters_X"], col))
        assert scores.loc[layer, "resolution"] > 0
    # the full data finds the domains; smoothing the thinned data recovers most of what holdout lost
    assert scores.loc["X", "ari_labels"] > 0.5
    assert scores.loc["smoothed", "ari_labels"] > scores.loc["holdout_train", "ari_labels"]
    # aligned ids: every layer's cluster "c" overlaps the reference's "c" more than any other reference cluster
    ref = syn.obs["clusters_X"].astype(int).to_numpy()
    sm = syn.obs["clusters_smoothed"].astype(int).to_numpy()
    table = pd.crosstab(sm, ref).to_numpy()
    assert np.trace(table) == max(np.trace(table[:, p]) for p in _permutations(4))
    params = syn.uns["clusters"]["params"]
    assert params["reference"] == "X" and params["labels_key"] == "domain" and params["n_clusters"] == 4


def _permutations(n):
    from itertools import permutations

    return [list(p) for p in permutations(range(n))]


def test_compare_clusters_kmeans_copy_and_reference(syn):
    snap = _snapshot(syn)
    out = st.tl.compare_clusters(
        syn, ["holdout_train", "smoothed"], method="kmeans", n_clusters=3, reference="smoothed", copy=True
    )
    _assert_unchanged(syn, snap)
    assert isinstance(out, ad.AnnData)
    scores = out.uns["clusters"]["scores"]
    assert scores.loc["smoothed", "ari_reference"] == pytest.approx(1.0)
    assert np.isnan(scores["resolution"]).all()
    assert np.isnan(scores["ari_labels"]).all() and np.isnan(scores["nmi_labels"]).all()
    assert out.uns["clusters"]["params"]["labels_key"] == "none"
    # k-means with a seed is reproducible
    again = st.tl.compare_clusters(
        syn, ["holdout_train", "smoothed"], method="kmeans", n_clusters=3, reference="smoothed", copy=True
    )
    pd.testing.assert_series_equal(out.obs["clusters_smoothed"], again.obs["clusters_smoothed"])


def test_compare_clusters_fixed_resolution_none_layer_and_h5ad(syn, tmp_path):
    st.tl.compare_clusters(syn, [None, "smoothed"], resolution=0.5, key_added="cl", labels_key="domain")
    scores = syn.uns["cl"]["scores"]
    assert list(scores.index) == ["X", "smoothed"]
    assert (scores["resolution"] == 0.5).all()
    assert "cl_X" in syn.obs
    syn.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(back.uns["cl"]["scores"], scores, check_dtype=False)
    assert list(back.uns["cl"]["params"]["layers"]) == ["X", "smoothed"]
    assert list(back.obs["cl_smoothed"].cat.categories) == list(syn.obs["cl_smoothed"].cat.categories)


def test_compare_clusters_missing_labels_are_left_out(syn):
    labels = syn.obs["domain"].astype(object)
    labels.iloc[:40] = np.nan
    syn.obs["partial"] = pd.Categorical(labels)
    st.tl.compare_clusters(syn, ["X"], method="kmeans", n_clusters=4, labels_key="partial")
    keep = syn.obs["partial"].notna().to_numpy()
    expected = adjusted_rand_score(syn.obs["partial"][keep].astype(str), syn.obs["clusters_X"][keep])
    assert syn.uns["clusters"]["scores"].loc["X", "ari_labels"] == pytest.approx(expected)


def test_compare_clusters_dense_float_and_zero_spots(syn):
    dense = syn.layers["smoothed"].copy()
    dense[:5] = 0  # spots with no counts and all-zero genes must not break the pipeline
    dense[:, :3] = 0
    syn.layers["dense"] = dense
    st.tl.compare_clusters(syn, ["dense"], method="kmeans", n_clusters=4, labels_key="domain")
    assert syn.obs["clusters_dense"].notna().all()
    np.testing.assert_array_equal(syn.layers["dense"], dense)


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": ["X", "imputed_nope"]}, KeyError, "imputed_nope"),
        ({"layers": ["X"], "labels_key": "layer_guess"}, KeyError, "layer_guess"),
        ({"layers": ["X"], "n_clusters": 10_000}, ValueError, "n_clusters=10000"),
        ({"layers": ["X"], "method": "kmeans"}, ValueError, "n_clusters"),
        ({"layers": ["X"], "method": "louvain"}, ValueError, "method"),
        ({"layers": ["X", "smoothed"], "reference": "holdout_train"}, ValueError, "reference"),
        ({"layers": ["X", "X"]}, ValueError, "duplicates"),
        ({"layers": []}, TypeError, "layers"),
        ({"layers": ["X"], "resolution": -1}, ValueError, "resolution"),
    ],
)
def test_compare_clusters_bad_input(syn, kwargs, error, match):
    snap = _snapshot(syn)
    with pytest.raises(error, match=match):
        st.tl.compare_clusters(syn, **kwargs)
    _assert_unchanged(syn, snap)


@pytest.mark.parametrize(("value", "match"), [(np.nan, "NaN"), (-1.0, "negative")])
def test_compare_clusters_bad_values(syn, value, match):
    bad = syn.layers["smoothed"].copy()
    bad[0, 0] = value
    syn.layers["bad"] = bad
    snap = _snapshot(syn)
    with pytest.raises(ValueError, match=match):
        st.tl.compare_clusters(syn, ["X", "bad"], n_clusters=3)
    _assert_unchanged(syn, snap)


# ---- real data --------------------------------------------------------------------------------


def test_compare_clusters_dlpfc(dlpfc):
    totals = np.asarray(dlpfc.X.sum(axis=0)).ravel()
    adata = dlpfc[:, np.sort(np.argsort(-totals)[:1500])].copy()
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    adata.layers["smoothed"] = _smoothed(adata, "holdout_train")
    snap = _snapshot(adata)
    st.tl.compare_clusters(adata, ("X", "holdout_train", "smoothed"), labels_key="label", n_clusters=7)
    scores = adata.uns["clusters"]["scores"]
    assert (scores["n_clusters"] == 7).all()
    # measured 0.39 / 0.09 / 0.35 (scanpy 1.11, 1,500 genes): the manual layers are found in X, holdout
    # entries destroy most of the structure, neighbour smoothing brings it back
    assert scores.loc["X", "ari_labels"] > 0.25
    assert scores.loc["holdout_train", "ari_labels"] < scores.loc["X", "ari_labels"]
    assert scores.loc["smoothed", "ari_labels"] > scores.loc["holdout_train", "ari_labels"] + 0.1
    assert adata.obs["clusters_X"].notna().all()
    assert (adata.X != snap["X"]).nnz == 0
    np.testing.assert_array_equal(adata.layers["smoothed"], snap["layers"]["smoothed"])


@pytest.mark.parametrize("method", ["leiden", "kmeans"])
def test_compare_clusters_repeats_average_over_seeds(synthetic, method):
    """`n_repeats` averages the scores of the single-seed runs; obs keeps the first seed's clusters."""
    st.pp.holdout(synthetic, fraction=0.5, random_state=0)
    layers = ["X", "holdout_train"]
    kw = {"method": method, "n_clusters": 4, "labels_key": "domain"}
    singles = []
    for seed in (3, 4, 5):
        st.tl.compare_clusters(synthetic, layers, random_state=seed, key_added=f"single{seed}", **kw)
        singles.append(synthetic.uns[f"single{seed}"]["scores"])
    st.tl.compare_clusters(synthetic, layers, random_state=3, n_repeats=3, key_added="rep", **kw)
    rep = synthetic.uns["rep"]["scores"]
    for col in ("ari_labels", "nmi_labels", "ari_reference", "nmi_reference"):
        values = pd.concat([t[col] for t in singles], axis=1)
        np.testing.assert_allclose(rep[col], values.mean(axis=1))
        np.testing.assert_allclose(rep[f"{col}_sd"], values.std(axis=1, ddof=1))
    assert rep.loc["X", "ari_reference"] == 1.0 and rep.loc["X", "ari_reference_sd"] == 0.0
    for layer in layers:
        assert (synthetic.obs[f"rep_{layer}"] == synthetic.obs[f"single3_{layer}"]).all()
    assert synthetic.uns["rep"]["params"]["n_repeats"] == 3


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_compare_clusters_bad_repeats(synthetic, value, error):
    before = set(synthetic.obs.columns), set(synthetic.uns)
    with pytest.raises(error, match="n_repeats"):
        st.tl.compare_clusters(synthetic, ["X"], n_clusters=3, n_repeats=value)
    assert (set(synthetic.obs.columns), set(synthetic.uns)) == before


def test_random_state_none_is_reproducible_with_kmeans():
    adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50)
    runs = []
    for _ in range(2):
        st.tl.compare_clusters(adata, ["X"], method="kmeans", n_clusters=4, labels_key="domain", random_state=None)
        runs.append(adata.obs["clusters_X"].to_numpy().copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    st.tl.compare_clusters(adata, ["X"], method="kmeans", n_clusters=4, labels_key="domain", random_state=0)
    np.testing.assert_array_equal(adata.obs["clusters_X"].to_numpy(), runs[0])  # None counts as 0


def test_leiden_search_finds_a_narrow_window_that_bisection_steps_over(monkeypatch):
    from stimpute.tl import _clustering as _clusters

    def fake_leiden(graph, resolution, random_state):
        # the number of clusters is not monotonic in the resolution: 6, then 8, a narrow window of 7, then 9
        k = 6 if resolution < 0.2 else 8 if resolution < 0.6 else 7 if resolution < 0.62 else 9
        return np.arange(60) % k

    monkeypatch.setattr(_clusters, "_leiden_once", fake_leiden)
    labels, res = _clusters._leiden(None, 7, 1.0, 0, "layer")
    assert np.unique(labels).size == 7 and 0.6 <= res < 0.62
    # as measured on a DLPFC readout: a window of 7 (0.105 to 0.1085) between two runs of 6, narrower than the
    # first scan's step (1/64), found by the finer scans of the span where the counts came close
    steps = [(0.06, 4), (0.088, 5), (0.105, 6), (0.1085, 7), (0.1105, 6), (0.124, 8), (np.inf, 9)]

    def measured(graph, resolution, random_state):
        return np.arange(60) % next(k for bound, k in steps if resolution < bound)

    monkeypatch.setattr(_clusters, "_leiden_once", measured)
    labels, res = _clusters._leiden(None, 7, 1.0, 0, "layer")
    assert np.unique(labels).size == 7 and 0.105 <= res < 0.1085
    # no window at all: the closest count, with a warning
    monkeypatch.setattr(_clusters, "_leiden_once", lambda g, r, s: np.arange(60) % (6 if r < 0.5 else 8))
    with pytest.warns(st.StimputeWarning, match="no Leiden resolution gives 7 clusters"):
        labels, res = _clusters._leiden(None, 7, 1.0, 0, "layer")
    assert np.unique(labels).size in (6, 8)


def test_repeats_table_holds_every_clustering(tmp_path):
    import anndata as ad

    adata = st.datasets.synthetic_visium(n_spots=120, n_genes=30, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    st.tl.compare_clusters(
        adata, ["X", "holdout_train"], method="kmeans", n_clusters=4, labels_key="domain", n_repeats=3, random_state=5
    )
    out = adata.uns["clusters"]
    repeats = out["repeats"]
    assert list(repeats["seed"]) == [5, 5, 6, 6, 7, 7] and list(repeats["layer"]) == ["X", "holdout_train"] * 3
    by_layer = repeats.groupby("layer", sort=False)["ari_labels"]
    np.testing.assert_allclose(by_layer.mean().loc[["X", "holdout_train"]], out["scores"]["ari_labels"])
    np.testing.assert_allclose(by_layer.std().loc[["X", "holdout_train"]], out["scores"]["ari_labels_sd"])
    # the first repeat is what obs holds
    first = repeats[repeats["seed"] == 5].set_index("layer")
    np.testing.assert_allclose(first.loc["X", "n_clusters"], out["scores"].loc["X", "n_clusters"])
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["clusters"]["repeats"]
    pd.testing.assert_frame_equal(back, repeats)


def _two_layers():
    adata = st.datasets.synthetic_visium(n_spots=120, n_genes=30, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    return adata


def test_key_added_never_replaces_other_records_or_columns():
    adata = _two_layers()
    with pytest.raises(ValueError, match=r"would overwrite `adata.uns\['holdout'\]`, which no compare_clusters wrote"):
        st.tl.compare_clusters(adata, ["X"], method="kmeans", n_clusters=3, key_added="holdout")
    adata.obs["clusters_X"] = adata.obs["domain"]
    with pytest.raises(ValueError, match=r"adata.obs\['clusters_X'\]`, the labels"):
        st.tl.compare_clusters(adata, ["X"], method="kmeans", n_clusters=3, labels_key="clusters_X")
    with pytest.raises(ValueError, match="a column no earlier clustering wrote"):
        st.tl.compare_clusters(adata, ["X"], method="kmeans", n_clusters=3)
    assert "clusters" not in adata.uns


def test_rerun_with_fewer_layers_drops_stale_columns():
    adata = _two_layers()
    st.tl.compare_clusters(adata, ["X", "holdout_train"], method="kmeans", n_clusters=3)
    st.tl.compare_clusters(adata, ["X", "holdout_train"], method="kmeans", n_clusters=4)  # same key: fine
    st.tl.compare_clusters(adata, ["X"], method="kmeans", n_clusters=3)
    assert "clusters_X" in adata.obs and "clusters_holdout_train" not in adata.obs


def test_bad_layers_and_seeds_are_named():
    adata = _two_layers()
    adata.layers["zero"] = sparse.csr_matrix(adata.shape, dtype=np.float32)
    adata.layers["flat"] = np.ones(adata.shape, dtype=np.float32)
    with pytest.raises(ValueError, match=r"`adata.layers\['zero'\]` has 0 gene\(s\) with any non-zero value"):
        st.tl.compare_clusters(adata, ["X", "zero"], method="kmeans", n_clusters=3)
    with pytest.raises(ValueError, match=r"`adata.layers\['flat'\]` has the same .*profile in every spot"):
        st.tl.compare_clusters(adata, ["flat", "X"], n_clusters=3, n_top_genes=10)
    with pytest.raises(ValueError, match=r"`random_state \+ n_repeats - 1` must be at most 2\*\*32 - 1"):
        st.tl.compare_clusters(adata, ["X"], method="kmeans", n_clusters=3, random_state=2**32 - 1, n_repeats=2)
    assert "clusters" not in adata.uns


def test_clusters_do_not_depend_on_the_thread_count(dlpfc):
    """On DLPFC 151673 the kNN layer's Leiden clusters moved with the BLAS thread count (ARI 0.256 / 0.334 with
    one / two threads); the pipeline now runs on one thread whatever the caller's pools allow."""
    from threadpoolctl import threadpool_limits

    st.pp.holdout(dlpfc, fraction=0.5, random_state=0)
    st.tl.impute(dlpfc, "knn", layer="holdout_train")
    ari = {}
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            st.tl.compare_clusters(dlpfc, ["imputed_knn"], labels_key="label", n_clusters=7, key_added=f"t{threads}")
        ari[threads] = dlpfc.uns[f"t{threads}"]["scores"].loc["imputed_knn", "ari_labels"]
    assert ari[1] == ari[2]
    assert (dlpfc.obs["t1_imputed_knn"].to_numpy() == dlpfc.obs["t2_imputed_knn"].to_numpy()).all()


def test_compare_clusters_warns_about_a_log_normalised_x():
    import scanpy as sc

    adata = st.datasets.synthetic_visium(n_spots=120, n_genes=40, random_state=0)
    adata.layers["counts"] = adata.X.copy()
    st.tl.compare_clusters(adata, ["X"], method="kmeans", n_clusters=3)
    adata.uns["log1p"] = {"base": None}  # e.g. sc.pp.log1p(adata, layer="other"): X still holds counts
    st.tl.compare_clusters(adata, ["X"], method="kmeans", n_clusters=3)  # filterwarnings=error: no warning
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    with pytest.warns(st.InputWarning, match="`adata.X` looks log-normalised"):
        st.tl.compare_clusters(adata, ["X", "counts"], method="kmeans", n_clusters=3)
