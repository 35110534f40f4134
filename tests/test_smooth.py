"""st.pp.spatial_smooth: the mean over each spot and its nearest spots, on synthetic and real data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse
from sklearn.neighbors import NearestNeighbors

import stimpute as st


def _brute_force(M: np.ndarray, coords: np.ndarray, k: int) -> np.ndarray:
    """Mean of each spot and its k nearest other spots, written out directly."""
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)
    return np.stack([M[row].mean(axis=0) for row in idx])


@pytest.mark.parametrize("as_sparse", [True, False])
def test_matches_brute_force_and_keeps_format(synthetic, as_sparse):
    X = sparse.csr_matrix(synthetic.X, dtype=np.float32) if as_sparse else np.asarray(synthetic.X.toarray(), np.float32)
    synthetic.layers["counts"] = X
    before = synthetic.layers["counts"].copy()
    st.pp.spatial_smooth(synthetic, "counts", n_neighbors=4)
    out = synthetic.layers["counts_smoothed"]
    assert sparse.issparse(out) == as_sparse
    assert out.dtype == np.float32
    dense = out.toarray() if as_sparse else out
    expected = _brute_force(np.asarray(X.toarray() if as_sparse else X), synthetic.obsm["spatial"], 4)
    np.testing.assert_allclose(dense, expected, rtol=1e-5, atol=1e-6)
    # the input is untouched; parameters are recorded
    after = synthetic.layers["counts"]
    assert (sparse.csr_matrix(after) != sparse.csr_matrix(before)).nnz == 0
    assert synthetic.uns["counts_smoothed"]["params"] == {
        "layer": "counts",
        "n_neighbors": 4,
        "spatial_key": "spatial",
        "holdout_id": "none",  # not derived from a holdout's training layer
        "library_key": "none",  # one section
    }


def test_smoothing_keeps_totals_of_a_constant_and_lowers_spot_noise(synthetic):
    synthetic.layers["ones"] = np.ones(synthetic.shape, dtype=np.float32)
    st.pp.spatial_smooth(synthetic, "ones")
    np.testing.assert_allclose(synthetic.layers["ones_smoothed"], 1.0, rtol=1e-6)
    st.pp.spatial_smooth(synthetic)
    raw = np.asarray(synthetic.X.toarray(), dtype=np.float64)
    smooth = synthetic.layers["X_smoothed"].toarray()
    # averaging 7 spots shrinks the spot-to-spot variance of every well-expressed gene
    expressed = raw.mean(axis=0) > 1
    assert expressed.any()
    assert (smooth[:, expressed].var(axis=0) < raw[:, expressed].var(axis=0)).all()


def test_spots_without_values_are_not_neighbours(synthetic):
    # jitter the grid so that no two spots are equally far (ties would make "the 6 nearest" ambiguous)
    synthetic.obsm["spatial"] = synthetic.obsm["spatial"] + np.random.default_rng(0).uniform(
        -1, 1, (synthetic.n_obs, 2)
    )
    st.pp.holdout(synthetic, fraction=0.3, strategy="spots", random_state=0)
    train = synthetic.layers["holdout_train"]
    empty = np.asarray(train.sum(axis=1)).ravel() == 0
    assert empty.any()
    st.pp.spatial_smooth(synthetic, "holdout_train", n_neighbors=6)
    out = synthetic.layers["holdout_train_smoothed"].toarray()
    coords = synthetic.obsm["spatial"]
    dense = np.asarray(train.toarray(), dtype=np.float64)
    full = np.flatnonzero(~empty)
    nn = NearestNeighbors(n_neighbors=7).fit(coords[full])
    for i in np.flatnonzero(empty)[:5]:
        # an unobserved spot: mean of its 6 nearest observed spots (its own zeros do not count)
        _, j = nn.kneighbors(coords[i : i + 1], n_neighbors=6)
        np.testing.assert_allclose(out[i], dense[full[j[0]]].mean(axis=0), rtol=1e-5, atol=1e-5)
    # no observed spot takes zeros from an unobserved neighbour
    obs_spot = full[0]
    _, j = nn.kneighbors(coords[obs_spot : obs_spot + 1], n_neighbors=7)
    np.testing.assert_allclose(out[obs_spot], dense[full[j[0]]].mean(axis=0), rtol=1e-5, atol=1e-5)


def test_copy_and_h5ad_roundtrip(synthetic, tmp_path):
    out = st.pp.spatial_smooth(synthetic, key_added="sm", copy=True)
    assert "sm" not in synthetic.layers and "sm" not in synthetic.uns
    path = tmp_path / "s.h5ad"
    out.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert (sparse.csr_matrix(back.layers["sm"]) != sparse.csr_matrix(out.layers["sm"])).nnz == 0
    assert back.uns["sm"]["params"]["layer"] == "X"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": "nope"}, KeyError, "nope"),
        ({"n_neighbors": 0}, ValueError, "n_neighbors"),
        ({"n_neighbors": 2.5}, TypeError, "n_neighbors"),
        ({"n_neighbors": 10_000}, ValueError, "smaller than the number of spots"),
        ({"spatial_key": "xy"}, KeyError, "obsm\\['xy'\\]"),
        ({"key_added": ""}, TypeError, "key_added"),
        ({"layer": "counts", "key_added": "counts"}, ValueError, "overwrite"),
        ({"layer": "nan"}, ValueError, "NaN"),
    ],
)
def test_bad_input_leaves_adata_untouched(synthetic, kwargs, error, match):
    synthetic.layers["counts"] = synthetic.X.copy()
    bad = np.ones(synthetic.shape, dtype=np.float32)
    bad[0, 0] = np.nan
    synthetic.layers["nan"] = bad
    layers, uns = set(synthetic.layers), set(synthetic.uns)
    with pytest.raises(error, match=match):
        st.pp.spatial_smooth(synthetic, **kwargs)
    assert set(synthetic.layers) == layers and set(synthetic.uns) == uns


def test_real_section_smoothing_raises_layer_ari(dlpfc):
    """On DLPFC 151673 smoothing the held-out training matrix recovers the layers much better (issue 4's bar)."""
    adata = dlpfc[:, :2000].copy()
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    st.pp.spatial_smooth(adata, "holdout_train")
    assert sparse.issparse(adata.layers["holdout_train_smoothed"])
    st.tl.compare_clusters(
        adata, ["holdout_train", "holdout_train_smoothed"], method="kmeans", n_clusters=7, labels_key="label"
    )
    ari = adata.uns["clusters"]["scores"]["ari_labels"]
    assert ari["holdout_train_smoothed"] > ari["holdout_train"] + 0.1
