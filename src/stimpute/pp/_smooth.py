"""Average each spot with its nearest spots in space: ``st.pp.spatial_smooth``."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse

from .. import _logging as logg
from .._constants import SPATIAL_KEY
from .._graph import spatial_graph, warn_small_sections
from .._lineage import holdout_id_of
from .._validate import (
    as_csr,
    check_adata,
    check_key_string,
    check_layer,
    check_own_keys,
    check_positive_int,
    check_real_matrix,
    get_matrix,
)
from ..get._sections import library_groups
from ..get._spatial import spatial_coords

__all__ = ["spatial_smooth"]


def spatial_smooth(
    adata: AnnData,
    layer: str | None = None,
    *,
    n_neighbors: int = 6,
    spatial_key: str = SPATIAL_KEY,
    library_key: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Replace each spot's values by the mean over itself and its ``n_neighbors`` nearest spots.

    The plain spatial smoothing used as a baseline in the benchmarks, and the last step of the
    clustering recipe (``model.predict(..., output="normalized")``, then this, then clustering):
    spatial domains such as cortical layers are contiguous, and averaging over the 6 touching spots
    of a Visium hexagon removes spot-level noise that is not domain structure.

    The neighbourhood is a sparse k-nearest-neighbour graph on ``adata.obsm[spatial_key]``
    (``n_obs * (n_neighbors + 1)`` stored weights; no spots x spots matrix is ever built). Spots
    without any non-zero value (for example spots hidden by
    ``st.pp.holdout(strategy="spots")``) are unobserved rather than empty: they are never used as
    neighbours, and they get the mean of their ``n_neighbors`` nearest spots that have values.

    Parameters
    ----------
    adata
        Annotated data with spot coordinates in ``adata.obsm[spatial_key]``.
    layer
        Layer to smooth; ``None`` or ``"X"`` smooths ``adata.X``. It is never changed.
    n_neighbors
        Number of nearest other spots averaged with each spot (6: the touching spots of a Visium
        hexagon).
    spatial_key
        Key of the ``(n_obs, 2)`` spot coordinates in ``adata.obsm``.
    library_key
        Column of ``adata.obs`` naming each spot's section, for an object that holds several sections
        (e.g. ``"library_id"`` after :func:`anndata.concat`): each section is smoothed on its own, exactly
        as if it were alone. Required when ``adata.uns['spatial']`` holds several libraries (unless every
        spot is of one of them: a section cut out of a joined object) or ``obs['library_id']`` names
        several sections.
    key_added
        Layer (and ``uns`` key) to write; default ``"{layer}_smoothed"``.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``. Sets:

    ``adata.layers[key_added]``
        float32 smoothed values; sparse (CSR) when the input is sparse, dense otherwise.
    ``adata.uns[key_added]['params']``
        ``layer``, ``n_neighbors``, ``spatial_key``, ``library_key`` (``"none"`` when absent).

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=100, n_genes=20)
    >>> st.pp.spatial_smooth(adata, n_neighbors=6)
    >>> adata.layers["X_smoothed"].shape
    (100, 20)
    >>> adata.uns["X_smoothed"]["params"]["n_neighbors"]
    6
    """
    # ---- validate everything before touching adata -------------------------------------------
    check_adata(adata)
    check_layer(adata, layer)
    name = "X" if layer is None else layer
    n_neighbors = check_positive_int(n_neighbors, name="n_neighbors")
    if n_neighbors >= adata.n_obs:
        msg = f"`n_neighbors={n_neighbors}` must be smaller than the number of spots ({adata.n_obs})."
        raise ValueError(msg)
    key_added = (
        f"{name}_smoothed" if key_added is None else check_key_string(key_added, name="key_added", writes_uns=True)
    )
    if key_added == name or (key_added == "X" and layer is None):
        msg = f"`key_added={key_added!r}` would overwrite the input; pass another name."
        raise ValueError(msg)
    check_own_keys(
        adata, key_added, fields=("n_neighbors", "spatial_key"), writer="st.pp.spatial_smooth", layers=[key_added]
    )
    coords = spatial_coords(adata, key=spatial_key)
    groups = library_groups(adata, library_key)
    warn_small_sections(groups, n_neighbors)
    M = get_matrix(adata, layer)
    where = "adata.X" if name == "X" else f"adata.layers[{name!r}]"
    check_real_matrix(M, where, purpose="fill or remove them before smoothing")

    start = logg.info(f"smoothing {where} over each spot and its {n_neighbors} nearest spots")
    if sparse.issparse(M):
        M = as_csr(M, np.float32)  # duplicate entries summed on a copy, never in the input
        has_values = np.asarray((M != 0).sum(axis=1)).ravel() > 0
    else:
        M = np.asarray(M, dtype=np.float32)
        has_values = (M != 0).any(axis=1)
    if has_values.sum() < 2:
        msg = f"`{where}` has fewer than two spots with values; nothing to smooth."
        raise ValueError(msg)
    graph = spatial_graph(coords, n_neighbors, include_self=True, sources=has_values, groups=groups)
    # a spot without values adds only zeros through its self weight: average over its neighbours alone
    scale = np.ones(adata.n_obs, dtype=np.float32)
    row_nnz = np.diff(graph.indptr)
    empty = ~has_values & (row_nnz > 1)
    scale[empty] = row_nnz[empty] / (row_nnz[empty] - 1)
    graph = sparse.diags(scale) @ graph
    smoothed = graph @ M
    if sparse.issparse(M):
        smoothed = as_csr(smoothed, np.float32)  # canonical: a product of sparse matrices has unsorted indices
    else:
        smoothed = np.asarray(smoothed, np.float32)

    if copy:
        adata = adata.copy()
    adata.layers[key_added] = smoothed
    adata.uns[key_added] = {
        "params": {
            "layer": name,
            "n_neighbors": int(n_neighbors),
            "spatial_key": spatial_key,
            "holdout_id": holdout_id_of(adata, layer),
            "library_key": "none" if library_key is None else library_key,
        }
    }
    logg.info(f"    finished: added `adata.layers[{key_added!r}]` and `adata.uns[{key_added!r}]`", time_start=start)
    return adata if copy else None
