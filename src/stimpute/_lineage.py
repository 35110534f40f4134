"""Which holdout a derived layer comes from: the one place that records and reads it.

``st.pp.holdout`` stores a fingerprint of its split (``uns[key]['holdout_id']``, a hash of the hidden entries).
Functions that derive a layer from another (``st.tl.impute``, ``ImputationModel.predict``,
``st.pp.spatial_smooth``) record in their ``params`` the layer they read and, when it descends from a holdout's
training layer, that holdout's id. ``st.tl.evaluate`` refuses a layer derived from the matrix that still holds
the hidden entries (a leak) or from another split (stale after re-running the holdout).

A leak is looked for along the whole chain of records, not only the direct parent: each record names the layer
it read (``params['layer']``) and, for the methods that read image features, the ``obsm`` entry
(``params['image_key']``); a learned method's latent ``obsm['X_<key>']`` is described by ``uns[<key>]``, and a
holdout's training and test layers by the holdout's record (its source layer). The walk stops at the training
layer of the holdout being scored (the honest root), at entries no record describes (written by other tools:
nothing to follow), and at entries it has seen before (a cycle of records).
"""

from __future__ import annotations

import hashlib

import numpy as np
from anndata import AnnData
from scipy import sparse

from ._constants import LATENT_PREFIX, TEST_SUFFIX, TRAIN_SUFFIX
from ._validate import as_csr, get_matrix, record_params

NONE = "none"


def split_id(test: sparse.csr_matrix) -> str:
    """A deterministic fingerprint of a split: a hash of the hidden entries (positions and values)."""
    h = hashlib.blake2b(digest_size=8)
    for part in (np.asarray(test.shape, dtype=np.int64), test.indptr.astype(np.int64), test.indices, test.data):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def data_id_of(adata: AnnData, layer: str | None) -> str:
    """A fingerprint of the values of ``layer`` (``None`` or ``"X"``: ``adata.X``), whatever their storage.

    Recorded by ``st.tl.impute`` for the layer a network was trained on, so that ``st.tl.evaluate`` can tell a
    model trained on the matrix that still holds the hidden entries (its weights have seen them) when that
    model's ``predict`` reads an honest layer.
    """
    M = get_matrix(adata, None if layer == "X" else layer)
    C = as_csr(M, np.float64, copy=True)
    C.eliminate_zeros()
    return split_id(C)


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
    """Refuse to score ``layer`` when its records say it was derived from the hidden entries or another split.

    The whole chain of records is followed (:func:`leak_chain`); a leak through a direct parent is reported
    first, then a layer made on another split, then a leak further up the chain.
    """
    holdout = adata.uns[holdout_key]
    chain = leak_chain(adata, layer, holdout_key)
    if chain is not None and len(chain) == 2:
        _raise_leak(layer, chain, holdout_key)
    params = record_params(adata, layer)
    if params is not None and "layer" in params:
        _check_same_split(adata, layer, params, holdout, holdout_key)
    if chain is not None:
        _raise_leak(layer, chain, holdout_key)


def leaked_sources(adata: AnnData, holdout_key: str) -> set[str]:
    """The layers that still hold the entries ``holdout_key`` hid: ``X``, the holdout's source and its test layer."""
    full = str(adata.uns[holdout_key]["params"].get("layer", "X"))
    return {"X", full, holdout_key + TEST_SUFFIX}


def leak_chain(adata: AnnData, layer: str, holdout_key: str) -> list[str] | None:
    """The chain of records from ``layer`` up to a matrix that holds the hidden entries, or None when there is none.

    Entries are named as in the chain of the error message: a layer by its name (``"X"`` for ``adata.X``), an
    ``obsm`` entry as ``"obsm['key']"``. The training layer of ``holdout_key`` is the honest root: the walk does
    not go above it.
    """
    leaked = leaked_sources(adata, holdout_key)
    root = holdout_key + TRAIN_SUFFIX
    seen: set[tuple[str, str]] = set()
    ids: dict[str, str] = {}  # data fingerprints of the leaked sources, computed when first needed

    def trained_on_leak(params: dict | None) -> str | None:
        """The leaked source whose values a model's training layer held (``ImputationModel.predict`` records)."""
        if params is None or "model_data_id" not in params:
            return None
        for source in sorted(leaked):
            if source != "X" and source not in adata.layers:
                continue
            if source not in ids:
                ids[source] = data_id_of(adata, source)
            if ids[source] == str(params["model_data_id"]):
                return source
        return None

    def walk(node: tuple[str, str]) -> list[str] | None:
        kind, name = node
        label = name if kind == "layer" else f"obsm[{name!r}]"
        if kind == "layer" and name in leaked:
            return [label]
        if node in seen or (kind == "layer" and name == root):
            return None
        seen.add(node)
        source = trained_on_leak(_record_of(adata, kind, name))
        if source is not None:  # the weights were fitted on the hidden entries
            return [label, f"ImputationModel trained on {source}", source]
        for parent in _parents(adata, kind, name):
            found = walk(parent)
            if found is not None:
                return [label, *found]
        return None

    chain = walk(("layer", layer))
    return chain if chain is not None and len(chain) > 1 else None


def _record_of(adata: AnnData, kind: str, name: str) -> dict | None:
    """The ``params`` of the stimpute record that describes a layer or an ``obsm`` entry (None when none does)."""
    if kind == "layer":
        return record_params(adata, name)
    params = record_params(adata, name)  # an obsm entry: its own record (st.pp.image_features), ...
    if params is None and name.startswith(LATENT_PREFIX):  # ... else a learned method's latent X_<key>
        params = record_params(adata, name[len(LATENT_PREFIX) :])
        if params is not None and "method" not in params:
            params = None
    return params


def _parents(adata: AnnData, kind: str, name: str) -> list[tuple[str, str]]:
    """The entries the record of a layer or ``obsm`` entry says it was computed from (empty when none says)."""
    if kind == "layer":
        for suffix in (TRAIN_SUFFIX, TEST_SUFFIX):  # a holdout's split layers come from its source layer
            if name.endswith(suffix):
                record = adata.uns.get(name[: -len(suffix)])
                params = record_params(adata, name[: -len(suffix)])
                if isinstance(record, dict) and "holdout_id" in record and params is not None:
                    return [("layer", str(params.get("layer", "X")))]
    params = _record_of(adata, kind, name)
    if params is None:
        return []
    parents = []
    if "layer" in params:
        parents.append(("layer", str(params["layer"])))
    image_key = params.get("image_key")
    if isinstance(image_key, str) and image_key != NONE:
        parents.append(("obsm", image_key))
    return parents


def _raise_leak(layer: str, chain: list[str], holdout_key: str) -> None:
    direct = len(chain) == 2
    how = "computed" if direct else "derived, through a chain of stimpute calls,"
    fix = "Compute it" if direct else "Start the chain"
    if any(step.startswith("ImputationModel") for step in chain):
        fix = "Train the model (and start the chain)"
    msg = (
        f"`adata.layers[{layer!r}]` was {how} from `{chain[-1]}`, which still holds the entries `st.pp.holdout` "
        f"hid: its scores would be leaked (chain: {' <- '.join(chain)}). {fix} from "
        f"`layer={holdout_key + TRAIN_SUFFIX!r}`."
    )
    raise ValueError(msg)


def _check_same_split(adata: AnnData, layer: str, params: dict, holdout: dict, holdout_key: str) -> None:
    """Refuse a layer whose record says it was made on another split than the current ``holdout_key``."""
    source = str(params["layer"])
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
