"""Input validation shared by every public function.

Each check raises ``ValueError``/``KeyError``/``TypeError`` whose message names the offending
key or parameter and how to fix it, and never modifies its input.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ._constants import HOLDOUT_KEY, SPATIAL_KEY, TEST_SUFFIX, TRAIN_SUFFIX
from ._sparse import as_csr  # noqa: F401 (re-exported: the AnnData-facing code reads it from here)

__all__ = [
    "check_adata",
    "check_choice",
    "check_counts",
    "check_fraction",
    "check_layer",
    "check_positive_int",
    "check_random_state",
    "check_real_matrix",
    "did_you_mean",
    "get_matrix",
    "is_whole",
]


def did_you_mean(value: Any, candidates: Iterable[Any]) -> str:
    """A hint naming the existing names closest to a misspelt ``value`` (:func:`difflib.get_close_matches`).

    Returns ``" Did you mean 'a'?"`` (or ``'a' or 'b'``), or ``""`` when nothing is close.

    Examples
    --------
    >>> did_you_mean("holdout_trian", ["X", "holdout_train", "holdout_test"])
    " Did you mean 'holdout_train'?"
    >>> did_you_mean("zzz", ["X", "holdout_train"])
    ''
    """
    if not isinstance(value, str):
        return ""
    names = [str(c) for c in candidates]
    close = difflib.get_close_matches(value, names, n=3, cutoff=0.6)
    if not close:  # case or separator slips ("Holdout-Train") that the ratio alone misses
        folded = {n.lower().replace("-", "_"): n for n in names}
        close = [folded[m] for m in difflib.get_close_matches(value.lower().replace("-", "_"), list(folded), n=3)]
    if not close:
        return ""
    # the best match, and others only when about as close (a tie)
    ratio = {c: difflib.SequenceMatcher(None, value.lower(), c.lower()).ratio() for c in close}
    close = [c for c in close if ratio[c] >= max(ratio.values()) - 0.02]
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def check_adata(adata: Any, *, name: str = "adata") -> AnnData:
    """Check that ``adata`` is a non-empty :class:`~anndata.AnnData`."""
    if not isinstance(adata, AnnData):
        msg = f"`{name}` must be an AnnData object, got {type(adata).__name__}."
        raise TypeError(msg)
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = f"`{name}` is empty ({adata.n_obs} spots x {adata.n_vars} genes); pass an AnnData with spots and genes."
        raise ValueError(msg)
    return adata


def check_layer(adata: AnnData, layer: str | None, *, name: str = "layer", also: Iterable[str] = ()) -> None:
    """Check that ``layer`` is ``None`` (meaning ``X``), ``"X"`` or a key of ``adata.layers``.

    A missing layer is a KeyError listing the layers and suggesting the closest names (of the layers, ``"X"``
    and ``also``, e.g. the ``obsm`` keys where those are accepted too); only when nothing is close does a
    missing holdout layer suggest running :func:`stimpute.pp.holdout`.
    """
    if layer is None or layer == "X":
        if adata.X is None:
            msg = f"`adata.X` is empty; pass `{name}=` naming one of adata.layers {list(adata.layers)}."
            raise ValueError(msg)
        return
    if not isinstance(layer, str):
        msg = f"`{name}` must be a string naming a layer or None for `adata.X`, got {type(layer).__name__}."
        raise TypeError(msg)
    if layer not in adata.layers:
        msg = f"`adata.layers[{layer!r}]` not found (`{name}`); available layers: {list(adata.layers)}."
        # the other half of a holdout (holdout_train for a deleted holdout_test) is no spelling of it
        pair = {TRAIN_SUFFIX, TEST_SUFFIX}
        stem, suffix = layer[: -len(TRAIN_SUFFIX)], layer[-len(TRAIN_SUFFIX) :]
        if layer.endswith(TEST_SUFFIX):
            stem, suffix = layer[: -len(TEST_SUFFIX)], TEST_SUFFIX
        siblings = {stem + other for other in pair - {suffix}} if suffix in pair else set()
        hint = did_you_mean(layer, [c for c in [*adata.layers, "X", *also] if c not in siblings])
        msg += hint
        if not hint and layer.startswith(HOLDOUT_KEY):
            msg += " Run `st.pp.holdout(adata)` first to create the holdout layers."
        raise KeyError(msg)


def get_matrix(adata: AnnData, layer: str | None) -> np.ndarray | sparse.spmatrix:
    """Return ``adata.X`` (``layer`` None or ``"X"``) or ``adata.layers[layer]`` without copying."""
    check_layer(adata, layer)
    return adata.X if layer is None or layer == "X" else adata.layers[layer]


def _values(X: np.ndarray | sparse.spmatrix) -> np.ndarray:
    if sparse.issparse(X):
        return X.data
    return np.asarray(X)


def check_real_matrix(M: Any, where: str, *, purpose: str) -> np.ndarray:
    """Check that ``M`` is a numpy array or scipy sparse matrix of finite real numbers; return its stored values.

    ``where`` names the matrix (``"adata.X"``, ``"adata.layers['x']"``) and ``purpose`` ends the NaN
    message (``"clustering needs finite values"``).
    """
    if not (sparse.issparse(M) or isinstance(M, np.ndarray)):
        msg = f"`{where}` must be a numpy array or scipy sparse matrix, got {type(M).__name__}."
        raise TypeError(msg)
    vals = _values(M)
    if not np.issubdtype(vals.dtype, np.number) or np.issubdtype(vals.dtype, np.complexfloating):
        msg = f"`{where}` must hold real numbers, got dtype {vals.dtype}."
        raise TypeError(msg)
    if vals.size and np.issubdtype(vals.dtype, np.floating) and not np.isfinite(vals).all():
        n_bad = int((~np.isfinite(vals)).sum())
        msg = f"`{where}` contains {n_bad} NaN or infinite values; {purpose}."
        raise ValueError(msg)
    return vals


def is_whole(vals: np.ndarray | sparse.spmatrix) -> bool:
    """Whether every value of ``vals`` (a count matrix, dense or sparse, or its stored values) is a whole number."""
    vals = vals.data if sparse.issparse(vals) else np.asarray(vals)
    return not np.issubdtype(vals.dtype, np.floating) or bool(np.all(vals == np.round(vals)))


def check_counts(
    X: np.ndarray | sparse.spmatrix,
    *,
    name: str = "adata.X",
    integer: bool = True,
) -> None:
    """Check that ``X`` holds finite, non-negative (and, with ``integer``, whole-number) counts."""
    vals = check_real_matrix(X, name, purpose="fill or remove them before imputation")
    if vals.size == 0:
        return
    if vals.min() < 0:
        msg = (
            f"`{name}` contains negative values (min {vals.min()}); stimpute needs raw counts. "
            "Pass `layer=` naming a layer of raw counts."
        )
        raise ValueError(msg)
    if integer and not is_whole(vals):
        msg = (
            f"`{name}` contains non-integer values; raw counts are required (was the data normalised or "
            "log-transformed?). Pass `layer=` naming a layer of raw counts."
        )
        raise ValueError(msg)


def check_fraction(value: Any, *, name: str = "fraction") -> float:
    """Check ``0 < value < 1``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < float(value) < 1:
        msg = f"`{name}` must be a number strictly between 0 and 1, got {value!r}."
        raise ValueError(msg)
    return float(value)


def check_positive_int(value: Any, *, name: str, minimum: int = 1) -> int:
    """Check that ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        msg = f"`{name}` must be an integer, got {value!r}."
        raise TypeError(msg)
    if value < minimum:
        msg = f"`{name}` must be >= {minimum}, got {value}."
        raise ValueError(msg)
    return int(value)


def check_choice(value: Any, choices: Iterable[str], *, name: str) -> str:
    """Check that ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        msg = f"`{name}` must be one of {choices}, got {value!r}.{did_you_mean(value, choices)}"
        raise ValueError(msg)
    return value


def check_random_state(random_state: Any, *, name: str = "random_state") -> np.random.Generator:
    """Return a :class:`numpy.random.Generator` from ``None``, an int or a Generator."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, bool) or not isinstance(random_state, Integral) or random_state < 0:
        msg = f"`{name}` must be a non-negative integer, None or a numpy Generator, got {random_state!r}."
        raise TypeError(msg)
    return np.random.default_rng(int(random_state))


def check_seed(random_state: Any, *, name: str = "random_state") -> int | None:
    """Check that ``random_state`` is a non-negative integer or None (a seed, not a Generator)."""
    if random_state is not None and (
        isinstance(random_state, bool) or not isinstance(random_state, Integral) or random_state < 0
    ):
        msg = f"`{name}` must be a non-negative integer or None, got {random_state!r}."
        raise TypeError(msg)
    return random_state


def check_bool(value: Any, *, name: str, allow_none: bool = False) -> bool | None:
    """Check that ``value`` is True or False (or None when ``allow_none``): ``"False"`` must not count as True."""
    if value is None and allow_none:
        return None
    if not isinstance(value, bool | np.bool_):
        msg = f"`{name}` must be True or False{' or None' if allow_none else ''}, got {value!r}."
        raise TypeError(msg)
    return bool(value)


def record_params(adata: AnnData, key: str) -> dict | None:
    """``adata.uns[key]['params']`` when ``uns[key]`` is a record written by a stimpute function, else None."""
    record = adata.uns.get(key)
    params = record.get("params") if isinstance(record, dict) else None
    return params if isinstance(params, dict) else None


def plain_values(obj: Any) -> Any:
    """Mappings, lists, tuples, arrays and numpy scalars as plain Python values (JSON-serialisable, no shared memory)."""
    if isinstance(obj, Mapping):
        return {str(k): plain_values(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain_values(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def owns_record(adata: AnnData, key: str, *, methods: Iterable[str] | None = None, fields: Iterable[str] = ()) -> bool:
    """Whether ``adata.uns[key]`` is the record of a given stimpute function.

    Imputation and clustering records are recognised by ``params['method']`` (one of ``methods``); the
    functions without a method (holdout, smoothing, image features) by the ``fields`` their ``params``
    always hold.
    """
    fields = tuple(fields)
    if methods is None and not fields:
        msg = "owns_record needs `methods` or `fields` to recognise a record."
        raise ValueError(msg)
    params = record_params(adata, key)
    if params is None or not all(f in params for f in fields):
        return False
    return methods is None or str(params.get("method")) in set(methods)


def check_output_key(
    adata: AnnData,
    key_added: str,
    *,
    inputs: Iterable[str],
    methods: Iterable[str],
    writer: str = "imputation",
    writes_layer: bool = True,
) -> None:
    """Refuse a ``key_added`` that would overwrite an input, or a layer or ``uns`` entry that ``writer`` did not write.

    Re-running under the function's own key is fine: its ``uns[key_added]['params']['method']`` is one of
    ``methods``. Anything else there (a holdout, image features, smoothing, the user's own data) is kept.
    """
    if key_added in set(inputs):
        msg = f"`key_added={key_added!r}` would overwrite an input of this {writer}; pass another name."
        raise ValueError(msg)
    taken = key_added in adata.uns or (writes_layer and key_added in adata.layers)
    if taken and not owns_record(adata, key_added, methods=methods):
        where = "uns" if key_added in adata.uns else "layers"
        msg = (
            f"`key_added={key_added!r}` would overwrite `adata.{where}[{key_added!r}]`, which no {writer} wrote; "
            "pass another name (or delete that entry first)."
        )
        raise ValueError(msg)


def check_own_keys(
    adata: AnnData, key_added: str, *, fields: Iterable[str], writer: str, layers: Iterable[str] = ()
) -> None:
    """Refuse overwriting ``uns[key_added]`` or ``layers`` unless ``uns[key_added]`` is a record of ``writer``.

    For the functions without a ``params['method']`` (holdout, smoothing, image features): their record is
    recognised by the ``fields`` its ``params`` always hold. Re-running under the same key is fine.
    """
    if owns_record(adata, key_added, fields=fields):
        return
    taken = [f"uns[{key_added!r}]"] if key_added in adata.uns else []
    taken += [f"layers[{k!r}]" for k in layers if k in adata.layers]
    if taken:
        msg = (
            f"`key_added={key_added!r}` would overwrite `adata.{taken[0]}`, which {writer} did not write; pass another "
            "name (or delete that entry first)."
        )
        raise ValueError(msg)


def check_obs_column(adata: AnnData, key: Any, *, name: str, why: str) -> pd.Series:
    """``adata.obs[key]`` for the parameter ``name``: a column name (TypeError), present (KeyError), without
    missing values (ValueError, ending with ``why``).
    """
    if not isinstance(key, str):
        msg = f"`{name}` must be a column name of `adata.obs` (a string), got {type(key).__name__}."
        raise TypeError(msg)
    if key not in adata.obs.columns:
        msg = f"`{name}={key!r}` is not a column of `adata.obs`; available: {list(adata.obs.columns)}."
        raise KeyError(msg + did_you_mean(key, adata.obs.columns))
    values = adata.obs[key]
    if values.isna().any():
        msg = f"`adata.obs[{key!r}]` is missing for {int(values.isna().sum())} spot(s); {why}"
        raise ValueError(msg)
    return values


def missing_obs_column(adata: AnnData, key: str, *, name: str) -> KeyError:
    """The KeyError for a column ``key`` (parameter ``name``) missing from ``adata.obs``, with close names."""
    msg = f"`adata.obs[{key!r}]` not found (`{name}`); available columns: {list(adata.obs.columns)}."
    return KeyError(msg + did_you_mean(key, adata.obs.columns))


def check_key_string(value: Any, *, name: str, writes_uns: bool = False) -> str:
    """Check that ``value`` is a non-empty string usable as an AnnData key (used for ``key_added``).

    ``/`` is refused (h5ad stores it as a group separator: the file is written but cannot be read back), and
    with ``writes_uns`` so is ``"spatial"``: writing ``uns["spatial"]`` (or ``obsm["spatial"]``) would replace
    the images, scale factors or spot positions.
    """
    if not isinstance(value, str) or not value:
        msg = f"`{name}` must be a non-empty string, got {value!r}."
        raise TypeError(msg)
    if "/" in value:
        msg = f"`{name}={value!r}` contains '/', which h5ad files cannot read back; use another separator."
        raise ValueError(msg)
    if writes_uns and value == SPATIAL_KEY:
        msg = (
            f"`{name}={value!r}` would replace `adata.uns[{SPATIAL_KEY!r}]` (images and scale factors) or "
            f"`adata.obsm[{SPATIAL_KEY!r}]` (spot positions); pass another name."
        )
        raise ValueError(msg)
    return value
