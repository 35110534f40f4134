"""Which holdout a derived layer comes from: the one place that records and reads it.

``st.pp.holdout`` stores a fingerprint of its split (``uns[key]['holdout_id']``, a hash of the hidden entries).
Functions that derive a layer from another (``st.tl.impute``, ``ImputationModel.predict``,
``st.pp.spatial_smooth``) record in their ``params`` the layer they read and, when it descends from a holdout's
training layer, that holdout's id. ``st.tl.evaluate`` refuses a layer derived from the matrix that still holds
the hidden entries (a leak) or from another split (stale after re-running the holdout).
"""

from __future__ import annotations

import hashlib

import numpy as np
from anndata import AnnData
from scipy import sparse

from ._constants import TEST_SUFFIX, TRAIN_SUFFIX
from ._validate import record_params

NONE = "none"


def split_id(test: sparse.csr_matrix) -> str:
    """A deterministic fingerprint of a split: a hash of the hidden entries (positions and values)."""
    h = hashlib.blake2b(digest_size=8)
    for part in (np.asarray(test.shape, dtype=np.int64), test.indptr.astype(np.int64), test.indices, test.data):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def holdout_id_of(adata: AnnData, layer: str | None) -> str:
    """The holdout ``layer`` descends from: its training layer itself, or a layer whose record names one."""
    if layer is None or layer == "X":
        return NONE
    if layer.endswith(TRAIN_SUFFIX):
        record = adata.uns.get(layer[: -len(TRAIN_SUFFIX)])
        if isinstance(record, dict) and "holdout_id" in record:
            return str(record["holdout_id"])
    params = record_params(adata, layer)
    return str(params["holdout_id"]) if params is not None and "holdout_id" in params else NONE


def check_not_leaked(adata: AnnData, layer: str, holdout_key: str) -> None:
    """Refuse to score ``layer`` when its record says it was derived from the hidden entries or another split."""
    holdout = adata.uns[holdout_key]
    params = record_params(adata, layer)
    if params is None or "layer" not in params:
        return  # a layer written by other tools: nothing recorded to check
    source = str(params["layer"])
    full = str(holdout["params"].get("layer", "X"))
    if source in (full, holdout_key + TEST_SUFFIX):
        msg = (
            f"`adata.layers[{layer!r}]` was computed from `{source}`, which still holds the entries "
            f"`st.pp.holdout` hid: its scores would be leaked. Compute it from `layer={holdout_key + TRAIN_SUFFIX!r}`."
        )
        raise ValueError(msg)
    made_on, current = str(params.get("holdout_id", NONE)), str(holdout.get("holdout_id", NONE))
    if NONE not in (made_on, current) and made_on != current:
        other = source[: -len(TRAIN_SUFFIX)] if source.endswith(TRAIN_SUFFIX) else None
        if other is not None and other != holdout_key:
            if holdout_id_of(adata, source) == made_on:
                fix = f"score it with `holdout_key={other!r}`"
            else:
                fix = f"that holdout was run again since, so impute it again from `{source}` (or from `{holdout_key}{TRAIN_SUFFIX}`)"
            msg = (
                f"`adata.layers[{layer!r}]` was computed from `{source}`, the training layer of another holdout "
                f"(`adata.uns[{other!r}]`), not of `adata.uns[{holdout_key!r}]`: {fix}."
            )
            raise ValueError(msg)
        msg = (
            f"`adata.layers[{layer!r}]` was computed on an earlier split than the current `adata.uns[{holdout_key!r}]` "
            "(`st.pp.holdout` was run again since): impute it again before scoring."
        )
        raise ValueError(msg)
