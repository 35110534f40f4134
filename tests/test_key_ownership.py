"""Writers never replace entries another function (or the user) wrote, and failures and plots keep what exists."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pytest

import stimpute as st

matplotlib.use("Agg")


@pytest.fixture
def section():
    adata = st.datasets.synthetic_visium(n_spots=120, n_genes=24, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    return adata


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a: st.pp.image_features(a, key_added="holdout"), r"`adata\.uns\['holdout'\]`, which st\.pp\.image_f"),
        (
            lambda a: st.pp.spatial_smooth(a, "holdout_train", key_added="holdout"),
            r"`adata\.uns\['holdout'\]`, which st\.pp\.spatial_smooth did not write",
        ),
        (
            lambda a: st.pp.spatial_smooth(a, key_added="holdout_test"),
            r"`adata\.layers\['holdout_test'\]`, which st\.pp\.spatial_smooth did not write",
        ),
        (lambda a: st.pp.holdout(a, key_added="imputed_knn"), r"`adata\.uns\['imputed_knn'\]`, which st\.pp\.holdout"),
        (lambda a: st.pp.holdout(a, key_added="mine"), r"`adata\.layers\['mine_train'\]`, which st\.pp\.holdout"),
    ],
)
def test_writers_refuse_foreign_keys(section, call, match):
    """These overwrote the holdout record, the test layer or an imputation's record without a word."""
    st.tl.impute(section, "knn", layer="holdout_train")
    section.layers["mine_train"] = section.layers["holdout_train"].copy()
    before = {k: (dict(v) if isinstance(v, dict) else v) for k, v in section.uns.items()}
    layers = {k: section.layers[k].copy() for k in section.layers}
    with pytest.raises(ValueError, match=match):
        call(section)
    assert set(section.uns) == set(before) and set(section.layers) == set(layers)
    assert section.uns["holdout"]["params"] == before["holdout"]["params"]
    for k, v in layers.items():
        assert (abs(section.layers[k] - v)).max() == 0


def test_writers_rerun_under_their_own_key(section):
    st.pp.holdout(section, fraction=0.3, random_state=1)  # its own record: replaced
    assert section.uns["holdout"]["params"]["fraction"] == 0.3
    st.pp.spatial_smooth(section, "holdout_train")
    st.pp.spatial_smooth(section, "holdout_train", n_neighbors=4)
    assert section.uns["holdout_train_smoothed"]["params"]["n_neighbors"] == 4
    st.pp.image_features(section, n_comps=5, progress=False)
    st.pp.image_features(section, n_comps=4, progress=False)
    assert section.obsm["X_image"].shape[1] == 4


def test_failed_impute_puts_back_the_image_record(section):
    """A run that computed image features on the way and then failed dropped an earlier `uns[image_key]`."""
    st.pp.image_features(section, n_comps=5, progress=False)
    record = section.uns["X_image"]
    del section.obsm["X_image"]  # the features are recomputed by impute
    with warnings.catch_warnings(), pytest.raises(FloatingPointError):
        warnings.simplefilter("ignore")
        st.tl.impute(section, "image", layer="holdout_train", max_epochs=3, learning_rate=1e30, loss="nb")
    assert "X_image" not in section.obsm
    assert section.uns["X_image"] is record


def test_impute_params_not_shared_with_the_model(section):
    model = st.tl.impute(section, "autoencoder", layer="holdout_train", max_epochs=2, return_model=True)
    section.uns["imputed_autoencoder"]["params"]["layer"] = "edited"
    assert model.config["params"]["layer"] == "holdout_train"


def test_plot_keeps_earlier_clusters(section):
    """A plot that had to cluster another layer deleted the clusters of the layers clustered before."""
    st.tl.impute(section, "knn", layer="holdout_train")
    st.tl.compare_clusters(section, ["X", "holdout_train"], method="kmeans", n_clusters=3, labels_key="domain")
    before = section.obs["clusters_holdout_train"].copy()
    scores = section.uns["clusters"]["scores"].copy()
    st.pl.compare_clusters(section, ["X", "imputed_knn"], return_fig=True)
    assert list(section.uns["clusters"]["scores"].index) == ["X", "holdout_train", "imputed_knn"]
    assert (section.obs["clusters_holdout_train"] == before).all()
    np.testing.assert_allclose(
        section.uns["clusters"]["scores"].loc[["X", "holdout_train"], "ari_labels"], scores["ari_labels"]
    )
