"""Objects holding several sections (``library_key``): neighbours stay within a section."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import stimpute as st
from stimpute._graph import spatial_graph
from stimpute._nn._data import position_features

from .conftest import require_data


def _section(seed: int, library: str, n_spots: int = 150) -> ad.AnnData:
    a = st.datasets.synthetic_visium(n_spots=n_spots, n_genes=30, random_state=seed)
    a.uns["spatial"] = {library: a.uns["spatial"]["synthetic"]}
    return a


def _two_sections() -> ad.AnnData:
    """Two synthetic sections on the same grid (their coordinates overlap exactly), as anndata.concat joins them."""
    parts = {"A": _section(0, "A"), "B": _section(1, "B", n_spots=120)}
    return ad.concat(parts, label="library_id", uns_merge="unique", index_unique="-")


def _alone(both: ad.AnnData, library: str) -> ad.AnnData:
    sub = both[both.obs["library_id"] == library].copy()
    sub.uns["spatial"] = {library: both.uns["spatial"][library]}
    return sub


def test_grouped_graph_is_the_per_section_graphs():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, size=(90, 2))
    groups = np.repeat([2, 0, 1], 30)
    rng.shuffle(groups)
    sources = rng.random(90) > 0.2
    g = spatial_graph(coords, 5, include_self=True, sources=sources, groups=groups)
    coo = g.tocoo()
    assert (groups[coo.row] == groups[coo.col]).all()  # no edge between sections
    for k in np.unique(groups):
        members = np.flatnonzero(groups == k)
        alone = spatial_graph(coords[members], 5, include_self=True, sources=sources[members])
        assert abs(g[members][:, members] - alone).max() == 0
    assert g.has_sorted_indices and np.allclose(np.asarray(g.sum(axis=1)).ravel(), 1.0)


def test_grouped_graph_handles_a_one_spot_section():
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    g = spatial_graph(coords, 2, groups=np.array([0, 0, 0, 1]))
    assert g[3].nnz == 0  # alone in its section: no neighbour, not the spot at the same position elsewhere
    assert set(g[0].indices) == {1, 2}


def test_positions_normalised_per_section():
    coords = np.array([[0.0, 0.0], [10.0, 5.0], [3.0, 4.0], [1000.0, 1000.0], [1020.0, 1010.0], [1006.0, 1008.0]])
    groups = np.array([0, 0, 0, 1, 1, 1])
    joint = position_features(coords, n_frequencies=3, degree=2, groups=groups)
    for k in (0, 1):
        alone = position_features(coords[groups == k], n_frequencies=3, degree=2)
        np.testing.assert_allclose(joint[groups == k], alone, rtol=0, atol=1e-6)


def test_smoothing_with_library_key_equals_each_section_alone(tmp_path):
    both = _two_sections()
    st.pp.spatial_smooth(both, library_key="library_id")
    assert both.uns["X_smoothed"]["params"]["library_key"] == "library_id"
    for lib in ("A", "B"):
        alone = _alone(both, lib)
        del alone.layers["X_smoothed"], alone.uns["X_smoothed"]
        st.pp.spatial_smooth(alone)
        joint = both[both.obs["library_id"] == lib].layers["X_smoothed"]
        assert abs(alone.layers["X_smoothed"] - joint).max() == 0
    both.write_h5ad(tmp_path / "both.h5ad")
    back = ad.read_h5ad(tmp_path / "both.h5ad")
    assert back.uns["X_smoothed"]["params"]["library_key"] == "library_id"


def test_several_libraries_without_library_key_are_refused():
    both = _two_sections()
    layers, uns = set(both.layers), set(both.uns)
    with pytest.raises(ValueError, match="library_key='library_id'"):
        st.pp.spatial_smooth(both)
    with pytest.raises(ValueError, match="several libraries"):
        st.tl.impute(both, "knn")
    assert set(both.layers) == layers and set(both.uns) == uns
    # methods that read no positions need no library_key
    st.tl.impute(both, "autoencoder", max_epochs=1)
    assert "imputed_autoencoder" in both.layers


@pytest.mark.parametrize(
    ("library_key", "error", "match"),
    [
        (3, TypeError, "library_key"),
        ("section", KeyError, "not a column of `adata.obs`"),
        ("with_nan", ValueError, "missing for 1 spot"),
    ],
)
def test_bad_library_key_leaves_adata_untouched(library_key, error, match):
    both = _two_sections()
    both.obs["with_nan"] = both.obs["library_id"].astype(object)
    both.obs.iloc[0, both.obs.columns.get_loc("with_nan")] = np.nan
    layers, uns = set(both.layers), set(both.uns)
    for call in (
        lambda: st.pp.spatial_smooth(both, library_key=library_key),
        lambda: st.tl.impute(both, "knn", library_key=library_key),
        lambda: st.tl.impute(both, "autoencoder", max_epochs=1, library_key=library_key),
    ):
        with pytest.raises(error, match=match):
            call()
    assert set(both.layers) == layers and set(both.uns) == uns


def test_knn_with_library_key_reads_only_the_own_section():
    both = _two_sections()
    st.tl.impute(both, "knn", library_key="library_id", shrinkage=0.0)
    assert both.uns["imputed_knn"]["params"]["library_key"] == "library_id"
    alone = _alone(both, "A")
    del alone.layers["imputed_knn"], alone.uns["imputed_knn"]
    st.tl.impute(alone, "knn", shrinkage=0.0)
    joint = both[both.obs["library_id"] == "A"].layers["imputed_knn"]
    np.testing.assert_allclose(joint, alone.layers["imputed_knn"], rtol=1e-6)


def test_network_with_library_key_trains_and_predicts(tmp_path):
    both = _two_sections()
    model = st.tl.impute(
        both, "multimodal", library_key="library_id", max_epochs=2, modalities=("counts", "position"), return_model=True
    )
    out = both.layers["imputed_multimodal"]
    assert out.shape == both.shape and np.isfinite(out).all()
    assert both.uns["imputed_multimodal"]["params"]["library_key"] == "library_id"
    with pytest.raises(ValueError, match="library_key="):
        model.predict(both, key_added="again")
    assert "again" not in both.layers
    model.predict(both, key_added="again", library_key="library_id")
    np.testing.assert_allclose(both.layers["again"], out, rtol=1e-5, atol=1e-5)
    # a section of its own, predicted alone, gets what it gets inside the joint object (same neighbours,
    # same per-section positions)
    alone = _alone(both, "B")
    model.predict(alone, key_added="alone")
    joint = both[both.obs["library_id"] == "B"].layers["again"]
    np.testing.assert_allclose(alone.layers["alone"], joint, rtol=1e-5, atol=1e-5)
    both.write_h5ad(tmp_path / "both.h5ad")


def test_real_sections_concatenated_smooth_as_alone():
    """151673 and 151674 joined as squidpy users join them: smoothing per section is exact, and without
    ``library_key`` most nearest-neighbour edges would join the two sections (their pixel frames overlap)."""
    parts = {s: ad.read_h5ad(require_data(f"dlpfc_{s}", "adata.h5ad")) for s in ("151673", "151674")}
    both = ad.concat(parts, label="library_id", uns_merge="unique", index_unique="-", join="inner")
    assert set(both.uns["spatial"]) == {"151673", "151674"}
    with pytest.raises(ValueError, match="library_key='library_id'"):
        st.pp.spatial_smooth(both)
    st.pp.spatial_smooth(both, library_key="library_id")
    for lib in parts:
        alone = _alone(both, lib)
        del alone.layers["X_smoothed"], alone.uns["X_smoothed"]
        st.pp.spatial_smooth(alone)
        assert sparse.issparse(alone.layers["X_smoothed"])
        assert abs(alone.layers["X_smoothed"] - both[both.obs["library_id"] == lib].layers["X_smoothed"]).max() == 0
    g = spatial_graph(st.get.spatial_coords(both), 6).tocoo()
    lib = both.obs["library_id"].to_numpy()
    assert (lib[g.row] != lib[g.col]).mean() > 0.5


def test_image_features_cut_each_spot_from_its_own_library(tmp_path):
    both = _two_sections()
    st.pp.image_features(both, library_key="library_id", n_comps=8)
    record = both.uns["X_image"]
    assert record["params"]["library_key"] == "library_id"
    assert set(record["libraries"]) == {"A", "B"}
    assert record["params"]["library_id"] == "A, B"
    # each section alone, on the joint axes, gets exactly its rows of the joint features
    for lib in ("A", "B"):
        alone = _alone(both, lib)
        del alone.obsm["X_image"], alone.uns["X_image"]
        st.pp.image_features(alone, n_comps=8, reference=both)
        rows = both.obsm["X_image"][(both.obs["library_id"] == lib).to_numpy()]
        np.testing.assert_allclose(alone.obsm["X_image"], rows, rtol=1e-5, atol=1e-5)
    # the two sections' images differ (different seeds), so cutting every spot from A's image is not the same
    with pytest.warns(st.SectionWarning, match="every spot is cut from library 'A'"):
        st.pp.image_features(both, library_id="A", n_comps=8, key_added="from_A")
    b_rows = (both.obs["library_id"] == "B").to_numpy()
    assert not np.allclose(both.obsm["from_A"][b_rows], both.obsm["X_image"][b_rows], atol=1e-3)
    both.write_h5ad(tmp_path / "both.h5ad")
    back = ad.read_h5ad(tmp_path / "both.h5ad")
    assert back.uns["X_image"]["libraries"]["B"]["image"] == "hires"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"library_id": "A"}, ValueError, "not both"),
        ({"source_image": np.zeros((10, 10, 3), np.uint8)}, ValueError, "one per library"),
        ({"library_key": "other"}, KeyError, r"names libraries \['C'\]"),
    ],
)
def test_image_features_bad_library_input_leaves_adata_untouched(kwargs, error, match):
    both = _two_sections()
    both.obs["other"] = both.obs["library_id"].astype(str).replace({"B": "C"})
    kwargs = {"library_key": "library_id", **kwargs}
    obsm, uns = set(both.obsm), set(both.uns)
    with pytest.raises(error, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore", st.SectionWarning)  # library_key="other" names a library that is not in uns
        st.pp.image_features(both, **kwargs)
    assert set(both.obsm) == obsm and set(both.uns) == uns


def test_default_multimodal_on_two_sections_computes_image_features_per_library():
    both = _two_sections()
    st.tl.impute(both, "multimodal", library_key="library_id", max_epochs=2)
    assert both.uns["X_image"]["params"]["library_key"] == "library_id"
    assert both.uns["imputed_multimodal"]["params"]["library_key"] == "library_id"
    assert np.isfinite(both.layers["imputed_multimodal"]).all()


def test_one_section_cut_from_a_joined_object_draws_and_tiles_without_warning():
    both = _two_sections()
    gene = [both.var_names[0]]
    with pytest.warns(st.SectionWarning, match="every spot is drawn with the scale and image of library 'A'"):
        st.pl.genes(both, gene, ["X"], library_id="A", show=False)
    a = both[both.obs["library_id"] == "A"]  # uns still holds both libraries; obs says every spot is A's
    st.pl.genes(a, gene, ["X"], library_id="A", show=False)  # filterwarnings=error: no warning
    st.pp.image_features(a.copy(), library_id="A", n_comps=4)
    with pytest.warns(st.SectionWarning, match="every spot is cut from library 'A'"):
        st.pp.image_features(both, library_id="A", n_comps=4)


def test_image_method_on_joined_object_asks_for_library_key():
    both = _two_sections()
    with pytest.raises(ValueError, match="library_key='library_id'"):
        st.tl.impute(both, "image", max_epochs=1)
    assert "X_image" not in both.obsm
    st.tl.impute(both, "image", max_epochs=1, library_key="library_id")
    assert both.uns["X_image"]["params"]["library_key"] == "library_id"


def test_suggested_column_is_library_id_not_a_numeric_one():
    parts = {"0": _section(0, "0"), "1": _section(1, "1", n_spots=120)}
    for a in parts.values():
        a.obs.insert(0, "in_tissue", 1)  # as read_visium gives: its values are all "1", a library name
    both = ad.concat(parts, label="library_id", uns_merge="unique", index_unique="-")
    with pytest.raises(ValueError, match="library_key='library_id'"):
        st.pp.spatial_smooth(both)
    from stimpute.get._sections import library_column, other_sections_possible

    assert library_column(both) == "library_id"
    assert other_sections_possible(both, "1")


def test_obs_library_id_alone_also_refuses_mixing():
    """anndata.concat without uns_merge drops uns['spatial']; obs['library_id'] still tells the sections apart."""
    parts = {"A": _section(0, "A"), "B": _section(1, "B", n_spots=120)}
    both = ad.concat(parts, label="library_id", index_unique="-")
    assert "spatial" not in both.uns
    with pytest.raises(
        ValueError, match=r"`adata.obs\['library_id'\]` names several sections.*library_key='library_id'"
    ):
        st.pp.spatial_smooth(both)
    both.obs["one"] = "all"  # an explicit single section (e.g. an aligned frame)
    st.pp.spatial_smooth(both, library_key="one")


def test_messages_suggest_image_features_with_library_key():
    both = _two_sections()
    model = st.tl.impute(both, "multimodal", library_key="library_id", max_epochs=1, return_model=True)
    other = _two_sections()
    with pytest.raises(KeyError, match=r"image_features\(adata, library_key='library_id', reference=model\)"):
        model.predict(other, library_key="library_id")
    st.pp.image_features(other, library_key="library_id", reference=model)
    model.predict(other, library_key="library_id")
    # one library without an image: named, and the suggested call has the key
    third = _two_sections()
    del third.uns["spatial"]["B"]["images"]
    with pytest.raises(KeyError, match=r"libraries \['B'\] have no H&E image.*library_key='library_id'\)"):
        st.tl.impute(third, "multimodal", library_key="library_id", max_epochs=1)
    with pytest.raises(KeyError, match=r"metadata'\]\['source_image_path'\]"):
        st.pp.image_features(third, library_key="library_id")
    assert "X_image" not in third.obsm and "imputed_multimodal" not in third.layers


def test_one_source_spot_is_every_other_spot_s_neighbour():
    g = spatial_graph(np.array([[0.0, 0], [1, 0], [2, 0]]), 6, sources=np.array([True, False, False]))
    np.testing.assert_array_equal(g.toarray(), [[0, 0, 0], [1, 0, 0], [1, 0, 0]])
    # a source with fewer other sources than n_neighbors averages over those it has
    g = spatial_graph(np.array([[0.0, 0], [1, 0], [2, 0], [3, 0]]), 6, sources=np.array([True, True, False, False]))
    np.testing.assert_allclose(g.toarray()[0], [0, 1, 0, 0])
    np.testing.assert_allclose(g.toarray()[3], [0.5, 0.5, 0, 0])


def test_small_section_warns():
    parts = {"A": _section(0, "A"), "B": _section(1, "B")[:5].copy()}
    both = ad.concat(parts, label="library_id", uns_merge="unique", index_unique="-")
    with pytest.warns(st.SectionWarning, match=r"1 section\(s\) have at most 8 spots \(the smallest: 5\)"):
        st.pp.spatial_smooth(both, library_key="library_id", n_neighbors=8)


def test_compare_clusters_scores_each_section(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    both = _two_sections()
    st.tl.compare_clusters(both, ["X"], method="kmeans", n_clusters=4, labels_key="domain", library_key="library_id")
    by_lib = both.uns["clusters"]["scores_by_library"]
    assert by_lib[["library", "layer"]].values.tolist() == [["A", "X"], ["B", "X"]]
    assert by_lib["n_spots"].tolist() == [150, 120]
    for lib in ("A", "B"):
        sub = both.obs[both.obs["library_id"] == lib]
        want = adjusted_rand_score(sub["domain"].astype(str), sub["clusters_X"].astype(str))
        got = by_lib.set_index("library").loc[lib, "ari_labels"]
        assert got == pytest.approx(want)
    assert both.uns["clusters"]["params"]["library_key"] == "library_id"
    both.write_h5ad(tmp_path / "both.h5ad")
    back = ad.read_h5ad(tmp_path / "both.h5ad")
    assert back.uns["clusters"]["scores_by_library"]["library"].tolist() == ["A", "B"]
    # a bad key is refused before anything is written
    with pytest.raises(KeyError, match="not a column"):
        st.tl.compare_clusters(both, ["X"], method="kmeans", n_clusters=4, library_key="nope", key_added="other")
    assert "other" not in both.uns and "other_X" not in both.obs


def test_plot_of_one_section_titles_that_section_s_scores():
    from sklearn.metrics import adjusted_rand_score

    both = _two_sections()
    st.tl.compare_clusters(
        both, ["X"], method="kmeans", n_clusters=4, labels_key="domain", library_key="library_id", n_repeats=2
    )
    a = both[both.obs["library_id"] == "A"]
    fig = st.pl.compare_clusters(a, library_id="A", return_fig=True)
    want = both.uns["clusters"]["scores_by_library"].set_index("library").loc["A", "ari_labels"]
    assert f"ARI {want:.2f}" in fig.axes[0].get_title() and "section A" in fig.axes[0].get_title()
    # without library_key: the drawn spots' own clusters are scored
    st.tl.compare_clusters(both, ["X"], method="kmeans", n_clusters=4, labels_key="domain", key_added="plain")
    a = both[both.obs["library_id"] == "A"]
    fig = st.pl.compare_clusters(a, key="plain", library_id="A", return_fig=True)
    sub = a.obs
    want = adjusted_rand_score(sub["domain"].astype(str), sub["plain_X"].astype(str))
    assert f"ARI {want:.2f}" in fig.axes[0].get_title() and "150 spots drawn" in fig.axes[0].get_title()
    pooled = both.uns["plain"]["scores"].loc["X", "ari_labels"]
    assert f"{pooled:.2f}" != f"{want:.2f}"  # the pooled score would have been another number


def test_a_section_cut_out_of_a_joined_object_needs_no_key():
    both = _two_sections()
    cut = both[both.obs["library_id"] == "A"].copy()  # uns still holds both libraries
    assert set(cut.uns["spatial"]) == {"A", "B"}
    st.pp.spatial_smooth(cut)
    assert cut.uns["X_smoothed"]["params"]["library_key"] == "none"
    alone = _alone(both, "A")
    st.pp.spatial_smooth(alone)
    assert abs(cut.layers["X_smoothed"] - alone.layers["X_smoothed"]).max() == 0
    st.tl.impute(cut, "knn")


def test_plot_of_part_of_a_section_scores_the_spots_drawn():
    from sklearn.metrics import adjusted_rand_score

    both = _two_sections()
    st.tl.compare_clusters(both, ["X"], method="kmeans", n_clusters=4, labels_key="domain", library_key="library_id")
    part = both[(both.obs["library_id"] == "A") & (both.obs["domain"].astype(str) != "D0")]
    fig = st.pl.compare_clusters(part, library_id="A", return_fig=True)
    title = fig.axes[0].get_title()
    want = adjusted_rand_score(part.obs["domain"].astype(str), part.obs["clusters_X"].astype(str))
    assert f"ARI {want:.2f} ({part.n_obs:,} spots drawn)" in title and "section" not in title


def test_library_key_not_naming_the_libraries_warns():
    both = _two_sections()
    with pytest.warns(st.SectionWarning) as record:  # the domains are also small "sections"
        st.pp.spatial_smooth(both, library_key="domain")
    assert any("not libraries of `adata.uns['spatial']`" in str(w.message) for w in record)


def test_libraries_at_different_resolutions_warn():
    both = _two_sections()
    del both.uns["spatial"]["B"]["images"]["hires"]  # B is tiled from its lowres image, A from hires
    with pytest.warns(st.ImageFeatureWarning) as record:
        st.pp.image_features(both, library_key="library_id", n_comps=4)
    text = "\n".join(str(w.message) for w in record)
    assert "very different resolutions" in text
    assert "of library 'B'" in text  # the small-tile warning names the library ...
    assert "source_image_path" in text  # ... and suggests what library_key allows


def test_records_always_hold_library_key():
    a = _section(0, "A")
    st.pp.holdout(a)
    st.pp.spatial_smooth(a, "holdout_train")
    st.pp.image_features(a, n_comps=4)
    st.tl.impute(a, "knn", layer="holdout_train")
    st.tl.compare_clusters(a, ["X"], method="kmeans", n_clusters=3)
    for key in ("holdout_train_smoothed", "X_image", "imputed_knn", "clusters"):
        assert a.uns[key]["params"]["library_key"] == "none", key


@pytest.mark.parametrize("strategy", ["entries", "spots", "thinning"])
def test_evaluate_groupby_scores_each_section_as_alone(strategy, tmp_path):
    both = _two_sections()
    st.pp.holdout(both, fraction=0.3, strategy=strategy, random_state=0)
    st.tl.impute(both, "knn", layer="holdout_train", library_key="library_id")
    pooled = st.tl.evaluate(both, ["imputed_knn"])
    grouped = st.tl.evaluate(both, ["imputed_knn"], groupby="library_id")
    assert grouped.index.names == ["library_id", "layer"]
    assert list(grouped.index.get_level_values(0).unique()) == ["A", "B"]
    assert grouped["n_hidden"].xs("imputed_knn", level="layer").sum() == pooled.loc["imputed_knn", "n_hidden"]
    for lib in ("A", "B"):
        sub = both[both.obs["library_id"] == lib].copy()
        alone = st.tl.evaluate(sub, ["imputed_knn"])
        for row in ("imputed_knn", "baseline: train as is"):
            np.testing.assert_allclose(
                grouped.loc[(lib, row)].to_numpy(dtype=float), alone.loc[row].to_numpy(dtype=float), rtol=1e-9
            )
    # the pooled table in uns is unchanged by the grouped call; the grouped one is stored next to it
    assert both.uns["holdout"]["scores"].loc["imputed_knn", "rmse_log1p"] == pooled.loc["imputed_knn", "rmse_log1p"]
    both.write_h5ad(tmp_path / "both.h5ad")
    back = ad.read_h5ad(tmp_path / "both.h5ad")
    assert set(back.uns["holdout"]["scores_by_group"]["library_id"]) == {"A", "B"}


def test_evaluate_bad_groupby_writes_nothing():
    both = _two_sections()
    st.pp.holdout(both, fraction=0.3, random_state=0)
    st.tl.impute(both, "knn", layer="holdout_train", library_key="library_id")
    both.obs["partial"] = both.obs["library_id"].astype(object)
    both.obs.iloc[0, both.obs.columns.get_loc("partial")] = np.nan
    for groupby, error in ((3, TypeError), ("nope", KeyError), ("partial", ValueError)):
        with pytest.raises(error, match="groupby|partial"):
            st.tl.evaluate(both, ["imputed_knn"], groupby=groupby)
    assert "scores" not in both.uns["holdout"]


def test_cut_out_section_computes_its_own_image_features():
    both = _two_sections()
    cut = both[both.obs["library_id"] == "B"].copy()
    assert st.get.library_id(cut) == "B"  # obs says which library; uns still holds both
    st.tl.impute(cut, "multimodal", max_epochs=1)
    assert cut.uns["X_image"]["params"]["library_id"] == "B"
    alone = _alone(both, "B")
    st.pp.image_features(alone)
    np.testing.assert_allclose(cut.obsm["X_image"], alone.obsm["X_image"], rtol=1e-5, atol=1e-6)


def test_joined_object_with_a_constant_library_column_is_still_refused():
    parts = {"A": _section(0, "A"), "B": _section(1, "B", n_spots=120)}
    both = ad.concat(parts, label="sample", uns_merge="unique", index_unique="-")
    both.obs["ref"] = "A"  # one library name in every spot, but `sample` names two
    with pytest.raises(ValueError, match="several libraries"):
        st.pp.spatial_smooth(both)


def test_predict_warns_about_small_sections():
    parts = {"A": _section(0, "A"), "B": _section(1, "B")[:5].copy()}
    both = ad.concat(parts, label="library_id", uns_merge="unique", index_unique="-")
    with pytest.warns(st.SectionWarning, match="at most 6 spots"):
        model = st.tl.impute(
            both,
            "multimodal",
            modalities=("counts", "position"),
            library_key="library_id",
            max_epochs=1,
            n_neighbors=6,
            return_model=True,
        )
    with pytest.warns(st.SectionWarning, match="at most 6 spots"):
        model.predict(both, library_key="library_id", key_added="again")


def test_evaluate_groupby_keeps_groups_without_hidden_entries_and_their_type():
    a = _section(0, "A", n_spots=200)
    st.pp.holdout(a, fraction=0.2, strategy="spots", random_state=0)
    st.tl.impute(a, "knn", layer="holdout_train")
    hidden = a.obs["holdout_hidden_spot"].to_numpy(dtype=bool)
    a.obs["block"] = np.where(np.arange(a.n_obs) % 2 == 0, 10, 2)  # numeric groups
    a.obs.loc[~hidden, "block"] = 7  # a group with no hidden spot
    table = st.tl.evaluate(a, ["imputed_knn"], groupby="block")
    groups = list(table.index.get_level_values("block").unique())
    assert all(isinstance(g, int | np.integer) for g in groups) and groups == sorted(groups)
    empty = table.xs(7, level="block")
    assert (empty["n_hidden"] == 0).all() and empty["rmse_log1p"].isna().all()
    with pytest.raises(ValueError, match="also a column of the scores table"):
        a.obs["layer"] = "x"
        st.tl.evaluate(a, ["imputed_knn"], groupby="layer")


def test_plot_of_same_number_of_other_spots_is_rescored():
    from sklearn.metrics import adjusted_rand_score

    both = _two_sections()
    st.tl.compare_clusters(both, ["X"], method="kmeans", n_clusters=4, labels_key="domain")
    import warnings

    idx = np.r_[0 : both.n_obs - 50, 0:50]  # as many spots, 50 of them twice
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names, made unique below
        other = both[idx].copy()
        other.obs_names_make_unique()
    with pytest.warns(st.SectionWarning, match="holds several libraries"):  # both sections, drawn on A's image
        fig = st.pl.compare_clusters(other, library_id="A", return_fig=True)
    want = adjusted_rand_score(other.obs["domain"].astype(str), other.obs["clusters_X"].astype(str))
    assert f"ARI {want:.2f} ({other.n_obs:,} spots drawn)" in fig.axes[0].get_title()


def test_small_tiles_of_several_libraries_warn_once():
    both = _two_sections()
    for lib in ("A", "B"):
        del both.uns["spatial"][lib]["images"]["hires"]  # lowres only: tiles of a few pixels
    with pytest.warns(st.ImageFeatureWarning, match="Tiles are only") as record:
        st.pp.image_features(both, library_key="library_id", n_comps=4)
    messages = [str(w.message) for w in record]
    assert sum("Tiles are only" in m for m in messages) == 1
    assert any("of library 'A'" in m and "of library 'B'" in m for m in messages)
