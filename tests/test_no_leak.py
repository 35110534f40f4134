"""No output of ``st.tl.impute`` depends on the values ``st.pp.holdout`` hid (issue 19, item 3).

For every method and readout, a second copy of the section whose hidden values are multiplied by 7 (in ``X``
and in ``layers['holdout_test']``, the only places that hold them) is imputed from ``holdout_train`` with the
same seed: the imputed layer and, for the learned methods, the latent ``obsm['X_<key>']`` must be the same to
the bit. The no-leak claim then rests on a test, not on reading the code.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

import stimpute as st
from stimpute._constants import NETWORK_METHODS

FAST = {"max_epochs": 2, "batch_size": 64}  # a few epochs: the point is which inputs are read, not accuracy
# every (method, readout) pair st.tl.impute accepts; "expected" needs the detection head for the networks
CASES = [
    *(
        (method, output, {"detection": True} if output == "expected" else {})
        for method in NETWORK_METHODS
        for output in ("conditional", "normalized", "expected")
    ),
    ("knn", "conditional", {}),
    ("knn", "normalized", {}),
    ("knn", "expected", {}),
]


@pytest.fixture(scope="module")
def section():
    """A small section with a holdout and image features (computed from the H&E image, not the counts)."""
    adata = st.datasets.synthetic_visium(n_spots=150, n_genes=30, random_state=0)
    st.pp.holdout(adata, fraction=0.3, random_state=0)
    st.pp.image_features(adata)
    return adata


def _with_hidden_scaled(adata, factor: float = 7.0):
    """A copy whose hidden values (in ``X`` and in the test layer) are multiplied by ``factor``."""
    out = adata.copy()
    test = sparse.csr_matrix(out.layers["holdout_test"])
    out.X = sparse.csr_matrix(out.X) + (factor - 1) * test.astype(out.X.dtype)
    out.layers["holdout_test"] = test * factor
    return out


def _impute(adata, method: str, output: str, extra: dict) -> None:
    kwargs = {} if method == "knn" else FAST
    st.tl.impute(adata, method, layer="holdout_train", output=output, key_added="imp", **kwargs, **extra)


def _assert_same_outputs(a, b) -> None:
    np.testing.assert_array_equal(a.layers["imp"], b.layers["imp"], strict=True)
    assert ("X_imp" in a.obsm) == ("X_imp" in b.obsm)
    if "X_imp" in a.obsm:
        np.testing.assert_array_equal(a.obsm["X_imp"], b.obsm["X_imp"], strict=True)


@pytest.mark.parametrize(("method", "output", "extra"), CASES, ids=[f"{m}-{o}" for m, o, _ in CASES])
def test_hidden_values_change_no_output_bit(section, method, output, extra):
    honest = section.copy()
    scaled = _with_hidden_scaled(section)
    # the hidden values did change, and the training layer did not
    assert not np.array_equal(sparse.csr_matrix(honest.X).toarray(), sparse.csr_matrix(scaled.X).toarray())
    np.testing.assert_array_equal(
        honest.layers["holdout_train"].toarray(), scaled.layers["holdout_train"].toarray(), strict=True
    )
    _impute(honest, method, output, extra)
    _impute(scaled, method, output, extra)
    _assert_same_outputs(honest, scaled)
    assert ("X_imp" in honest.obsm) == (method != "knn")


@pytest.mark.parametrize("strategy", ["thinning", "spots", "gene_folds"])
@pytest.mark.parametrize("method", ["multimodal", "knn"])
def test_hidden_values_change_no_output_bit_for_every_strategy(method, strategy):
    """The other holdout strategies, on the fused model and the baseline (the readout that strategy scores)."""
    adata = st.datasets.synthetic_visium(n_spots=150, n_genes=30, random_state=1)
    st.pp.holdout(adata, fraction=0.3, strategy=strategy, random_state=0)
    adata.obsm["X_image"] = st.get.spot_crops(adata).mean(axis=(1, 2))  # mean colour: from the image only
    scaled = _with_hidden_scaled(adata)
    if strategy == "spots":  # whole spots hidden: scored on every gene with the expected count
        output, extra = "expected", ({"detection": True} if method != "knn" else {})
    elif strategy == "thinning":
        output, extra = "expected", ({"detection": True, "keep_observed": False} if method != "knn" else {})
    else:
        output, extra = "conditional", {}
    _impute(adata, method, output, extra)
    _impute(scaled, method, output, extra)
    _assert_same_outputs(adata, scaled)


@pytest.mark.parametrize("method", ["autoencoder", "knn"])
def test_the_check_sees_a_leak(section, method):
    """The control: imputed from ``X``, which holds the hidden values, the outputs do change."""
    honest, scaled = section.copy(), _with_hidden_scaled(section)
    kwargs = {} if method == "knn" else FAST
    for adata in (honest, scaled):
        st.tl.impute(adata, method, output="conditional", key_added="imp", **kwargs)
    assert not np.array_equal(honest.layers["imp"], scaled.layers["imp"])
