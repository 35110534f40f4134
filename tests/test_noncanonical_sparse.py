"""Sparse layers with duplicate stored entries (valid scipy matrices, summed on use).

Every function must treat them like the same counts stored canonically, and never rewrite the user's arrays
(scipy sums duplicates in place on some operations, and arrays are shared between a matrix and a dtype-cast
CSR built from it).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

import stimpute as st


def _noncanonical(X) -> sparse.csr_matrix:
    """The same counts with every value split over two stored entries (sorted rows, duplicate columns)."""
    X = sparse.csr_matrix(X, copy=True)
    X.sum_duplicates()
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    half = X.data // 2
    data = np.concatenate([half, X.data - half])
    cols = np.concatenate([X.indices, X.indices])
    r = np.concatenate([rows, rows])
    order = np.lexsort((cols, r))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=X.shape[0]))])
    D = sparse.csr_matrix((data[order], cols[order], indptr), shape=X.shape)
    assert not D.has_canonical_format
    np.testing.assert_array_equal(D.toarray(), X.toarray())
    return D


def _arrays(M):
    return M.data.copy(), M.indices.copy(), M.indptr.copy()


def _unchanged(M, before) -> None:
    for now, then in zip(_arrays(M), before, strict=True):
        np.testing.assert_array_equal(now, then)


def _dense(M) -> np.ndarray:
    return M.toarray() if sparse.issparse(M) else np.asarray(M)


@pytest.fixture
def pair():
    """A section with the same training counts stored canonically ('canon') and with duplicates ('dup')."""
    adata = st.datasets.synthetic_visium(n_spots=120, n_genes=24, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    adata.layers["canon"] = adata.layers["holdout_train"].copy()
    adata.layers["dup"] = _noncanonical(adata.layers["holdout_train"])
    return adata


def test_spatial_smooth(pair):
    before = _arrays(pair.layers["dup"])
    st.pp.spatial_smooth(pair, "canon", key_added="s_canon")
    st.pp.spatial_smooth(pair, "dup", key_added="s_dup")
    _unchanged(pair.layers["dup"], before)
    np.testing.assert_allclose(_dense(pair.layers["s_dup"]), _dense(pair.layers["s_canon"]), rtol=1e-6)


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("knn", {}),
        ("knn", {"keep_observed": False}),
        ("knn", {"output": "normalized"}),
        ("autoencoder", {"max_epochs": 2}),
        ("multimodal", {"max_epochs": 2}),
    ],
)
def test_impute(pair, method, kwargs):
    before = _arrays(pair.layers["dup"])
    st.tl.impute(pair, method, layer="canon", key_added="i_canon", **kwargs)
    st.tl.impute(pair, method, layer="dup", key_added="i_dup", **kwargs)
    _unchanged(pair.layers["dup"], before)
    np.testing.assert_allclose(_dense(pair.layers["i_dup"]), _dense(pair.layers["i_canon"]), rtol=1e-5, atol=1e-5)


def test_evaluate_and_compare_clusters(pair):
    st.tl.impute(pair, "knn", layer="canon", key_added="i_canon")
    pair.layers["i_dup"] = _noncanonical(sparse.csr_matrix(np.round(_dense(pair.layers["i_canon"]))))
    pair.layers["i_round"] = sparse.csr_matrix(np.round(_dense(pair.layers["i_canon"])))
    before = _arrays(pair.layers["i_dup"])
    before_dup = _arrays(pair.layers["dup"])
    scores = st.tl.evaluate(pair, ["i_round", "i_dup"])
    np.testing.assert_allclose(
        scores.loc["i_dup"].to_numpy(float), scores.loc["i_round"].to_numpy(float), rtol=1e-9, equal_nan=True
    )
    st.tl.compare_clusters(pair, ["canon", "dup"], method="kmeans", n_clusters=3, labels_key="domain")
    ari = pair.uns["clusters"]["scores"]["ari_labels"]
    assert ari["dup"] == pytest.approx(ari["canon"])
    _unchanged(pair.layers["i_dup"], before)
    _unchanged(pair.layers["dup"], before_dup)  # compare_clusters summed its duplicates in place


def _unsorted(X) -> sparse.csr_matrix:
    """The same counts with the column indices of every row stored in reverse order (no duplicates)."""
    X = sparse.csr_matrix(X, dtype=np.float64, copy=True)
    X.sum_duplicates()
    data, indices = X.data.copy(), X.indices.copy()
    for i in range(X.shape[0]):
        s, e = X.indptr[i], X.indptr[i + 1]
        data[s:e], indices[s:e] = data[s:e][::-1], indices[s:e][::-1]
    U = sparse.csr_matrix((data, indices, X.indptr.copy()), shape=X.shape)
    U.has_sorted_indices = False
    return U


def test_layers_sharing_index_arrays_stay_intact():
    """A float32 layer cast from a float64 matrix with unsorted indices shares its index arrays (scipy does not
    copy them). Sorting the layer in place (``layer != 0`` does) scrambled the other matrix: the peer benchmark's
    smoothing matrix lost 0.12 ARI after ``compare_clusters`` had read its float32 cast."""
    adata = st.datasets.synthetic_visium(n_spots=120, n_genes=24, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    source = _unsorted(adata.layers["holdout_train"])
    expected = source.toarray()
    adata.layers["cast"] = sparse.csr_matrix(source, dtype=np.float32)
    assert np.shares_memory(adata.layers["cast"].indices, source.indices)
    before = _arrays(adata.layers["cast"])
    st.tl.compare_clusters(adata, ["cast"], method="kmeans", n_clusters=3, labels_key="domain", key_added="c")
    st.pp.spatial_smooth(adata, "cast")
    st.tl.impute(adata, "knn", layer="cast")
    st.tl.evaluate(adata, ["imputed_knn"])
    _unchanged(adata.layers["cast"], before)
    np.testing.assert_array_equal(source.toarray(), expected)


def test_spatial_smooth_writes_canonical_layers(pair):
    """Its output is a product of sparse matrices (unsorted indices); it is stored canonical."""
    st.pp.spatial_smooth(pair, "canon", key_added="s")
    assert pair.layers["s"].has_canonical_format


def test_float16_layers():
    """scipy.sparse has no float16: holdout and the normalized kNN readout failed inside scipy."""
    adata = st.datasets.synthetic_visium(n_spots=80, n_genes=20, random_state=0)
    adata.layers["h"] = adata.X.toarray().astype(np.float16)
    st.pp.holdout(adata, layer="h", random_state=0)
    assert adata.layers["holdout_train"].dtype == np.float32
    total = (adata.layers["holdout_train"] + adata.layers["holdout_test"]).toarray()
    np.testing.assert_array_equal(total, adata.layers["h"].astype(np.float32))
    adata.layers["t16"] = adata.layers["holdout_train"].toarray().astype(np.float16)
    st.tl.impute(adata, "knn", layer="t16", output="normalized", keep_observed=True, key_added="k16")
    st.tl.impute(adata, "knn", layer="holdout_train", output="normalized", keep_observed=True, key_added="k32")
    np.testing.assert_allclose(adata.layers["k16"], adata.layers["k32"], rtol=1e-5)
