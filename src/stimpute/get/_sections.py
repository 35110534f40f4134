"""Which section (library) each spot belongs to, for objects that hold several (``obs[library_key]``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import LIBRARY_COLUMN, SPATIAL_KEY
from .._validate import check_obs_column
from .._warnings import SectionWarning, warn


def library_groups(adata: AnnData, library_key: str | None) -> np.ndarray | None:
    """Each spot's section as an integer code from ``adata.obs[library_key]``, for the spatial graphs.

    Code ``i`` is the ``i``-th of the sorted library names (:func:`library_names`).

    ``None`` when the object holds one section (``library_key=None``). With ``library_key=None`` this raises
    when ``adata.uns['spatial']`` holds several libraries (unless an obs column says every spot is of one of
    them: one section cut out of a joined object) or ``obs['library_id']`` names several: coordinates of
    different sections share one pixel frame, so a nearest-neighbour search over all spots would mix
    sections silently. A key whose values are not the libraries of ``uns['spatial']`` gives a warning.
    """
    if library_key is None:
        spatial = adata.uns.get(SPATIAL_KEY)
        several_uns = isinstance(spatial, Mapping) and len(spatial) > 1
        several_obs = LIBRARY_COLUMN in adata.obs.columns and adata.obs[LIBRARY_COLUMN].nunique() > 1
        if several_uns and not several_obs and single_library(adata) is not None:
            return None  # one section cut out of a joined object (uns keeps every library)
        if several_uns or several_obs:
            column = suggested_library_key(adata)
            hint = (
                f"`library_key={column!r}`" if column else "`library_key=` (the obs column naming each spot's library)"
            )
            what = (
                f"`adata.uns['spatial']` holds several libraries {sorted(map(str, spatial))}"
                if several_uns
                else f"`adata.obs[{LIBRARY_COLUMN!r}]` names several sections"
            )
            msg = (
                f"{what}, and spots of different sections must not be neighbours: pass {hint}, so that neighbours "
                "are searched within each section. (To treat every spot as one section, e.g. in an aligned frame, "
                "pass a column with one value.)"
            )
            raise ValueError(msg)
        return None
    values = check_obs_column(adata, library_key, name="library_key", why="every spot needs its library (section).")
    codes, names = pd.factorize(values.astype(str), sort=True)
    spatial = adata.uns.get(SPATIAL_KEY)
    # (a key with one value is the documented way to treat every spot as one section)
    if (
        isinstance(spatial, Mapping)
        and len(spatial) > 1
        and len(names) > 1
        and not set(names) <= set(map(str, spatial))
    ):
        warn(
            f"`adata.obs[{library_key!r}]` holds values that are not libraries of `adata.uns['spatial']` "
            f"{sorted(map(str, spatial))}, e.g. {[n for n in names if n not in set(map(str, spatial))][:3]}; is "
            "`library_key` the column naming each spot's section?",
            SectionWarning,
        )
    return codes.astype(np.int64)


def uns_libraries(adata: AnnData, library_key: str | None) -> tuple[np.ndarray | None, list[str]]:
    """Each spot's library code and the library names (in code order), every one a library of
    ``adata.uns['spatial']`` (a :class:`KeyError` names those missing); ``(None, [])`` without a key, after
    :func:`library_groups`' check that the object holds one section.
    """
    groups = library_groups(adata, library_key)
    if library_key is None:
        return None, []
    libraries = library_names(adata, library_key)
    spatial = adata.uns.get(SPATIAL_KEY)
    known = set(map(str, spatial)) if isinstance(spatial, Mapping) else set()
    missing = [lib for lib in libraries if lib not in known]
    if missing:
        msg = (
            f"`adata.obs[{library_key!r}]` names libraries {missing} that are not in `adata.uns['spatial']` "
            f"(it holds {sorted(known)}); each spot's library must have its image and scale factors there."
        )
        raise KeyError(msg)
    return groups, libraries


def _library_columns(adata: AnnData) -> list[tuple[str, set[str]]]:
    """The text or categorical obs columns whose values (no missing one) are all libraries of
    ``adata.uns['spatial']``, each with the libraries it holds; ``"library_id"`` first.
    """
    spatial = adata.uns.get(SPATIAL_KEY)
    if not isinstance(spatial, Mapping) or not spatial:
        return []
    libs = set(map(str, spatial))
    columns = [LIBRARY_COLUMN] if LIBRARY_COLUMN in adata.obs.columns else []
    columns += [c for c in adata.obs.columns if c != LIBRARY_COLUMN]
    found = []
    for c in columns:
        values = adata.obs[c]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):  # e.g. in_tissue = 1
            continue
        if values.isna().any():
            continue
        present = set(map(str, values.unique()))
        if present and present <= libs:
            found.append((str(c), present))
    return found


def library_column(adata: AnnData) -> str | None:
    """The ``adata.obs`` column whose values are all libraries of ``adata.uns['spatial']`` (``"library_id"``, as
    :func:`anndata.concat` with ``label="library_id"`` and squidpy name it, when it qualifies; else the first
    text or categorical column that does); ``None`` when there is none.
    """
    columns = _library_columns(adata)
    return columns[0][0] if columns else None


def single_library(adata: AnnData) -> str | None:
    """The one library of ``adata.uns['spatial']`` every spot belongs to, when obs says so unambiguously: every
    text or categorical obs column whose values are all libraries holds that same single library (a section cut
    out of a joined object). ``None`` when no such column exists or one of them names several libraries.
    """
    found = set().union(*(present for _, present in _library_columns(adata)))
    return next(iter(found)) if len(found) == 1 else None


def suggested_library_key(adata: AnnData) -> str | None:
    """The ``library_key`` to suggest for an object holding several sections: the column :func:`library_column`
    finds (also for one section cut out of a joined object, whose column holds one library), else
    ``"library_id"`` when that column names several sections; else ``None``.
    """
    column = library_column(adata)
    if column is not None:
        return column
    if LIBRARY_COLUMN in adata.obs.columns and adata.obs[LIBRARY_COLUMN].nunique() > 1:
        return LIBRARY_COLUMN
    return None


def other_sections_possible(adata: AnnData, library_id: str) -> bool:
    """Whether spots of ``adata`` may come from another section than ``library_id``: ``adata.uns['spatial']``
    holds several libraries, and the obs columns do not say that every spot is ``library_id``'s
    (see :func:`single_library`).
    """
    spatial = adata.uns.get(SPATIAL_KEY)
    if not isinstance(spatial, Mapping) or len(spatial) < 2:
        return False
    return single_library(adata) != str(library_id)


def library_names(adata: AnnData, library_key: str) -> list[str]:
    """The libraries of ``adata.obs[library_key]`` in the order of :func:`library_groups`' codes."""
    _, names = pd.factorize(adata.obs[library_key].astype(str), sort=True)
    return [str(n) for n in names]
