"""Peer imputation methods for the stimpute benchmark, run in the same process on the same hidden entries.

Every wrapper takes the AnnData that :func:`stimpute.pp.holdout` was run on plus the name of the
training layer, sees **only** that layer (and positions), and returns a matrix (dense or sparse,
spots x genes) in the count scale of the training layer, ready for :func:`stimpute.tl.evaluate`.

Wrappers
--------
``spatial_smoothing``
    Mean of each spot and its 6 nearest spots (Euclidean, ``obsm['spatial']``) on the training counts;
    a sparse row-stochastic kNN matrix times the sparse counts, never densified.
``magic_impute``
    MAGIC (van Dijk et al. 2018) through ``scanpy.external.pp.magic`` the way the MAGIC tutorial does it:
    library-size normalise every spot to the median training library size, square-root transform, MAGIC
    (``knn=5, decay=1, t=3, n_pca=100, solver="exact"``), then square (inverting the sqrt) and multiply by
    ``library_size / median`` to return to the training count scale.
``scvi_impute``
    scVI (Lopez et al. 2018; scvi-tools) trained on the training counts; ``get_normalized_expression
    (library_size=1)`` gives per-spot expression frequencies, multiplied by each spot's training
    library size.
``stlearn_sme_unavailable``
    Why stLearn's SME normalisation is not run here (see its docstring).
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse


def _train_counts(adata: AnnData, layer: str) -> sparse.csr_matrix:
    X = adata.layers[layer]
    X = sparse.csr_matrix(X, dtype=np.float64) if not sparse.issparse(X) else X.tocsr().astype(np.float64)
    X.eliminate_zeros()
    return X


def spatial_smoothing(adata: AnnData, layer: str, *, n_neighbors: int = 6) -> sparse.csr_matrix:
    """Mean of each spot and its ``n_neighbors`` nearest spots (sparse kNN averaging)."""
    from sklearn.neighbors import NearestNeighbors

    X = _train_counts(adata, layer)
    coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    k = min(n_neighbors + 1, adata.n_obs)
    # the spot itself is its own nearest neighbour at distance 0 (ties are broken by index, deterministic)
    _, idx = NearestNeighbors(n_neighbors=k).fit(coords).kneighbors(coords)
    idx[:, 0] = np.arange(adata.n_obs)  # make sure the spot itself is included even with duplicated positions
    rows = np.repeat(np.arange(adata.n_obs), k)
    W = sparse.csr_matrix((np.full(rows.size, 1.0 / k), (rows, idx.ravel())), shape=(adata.n_obs, adata.n_obs))
    return (W @ X).tocsr()


def magic_impute(
    adata: AnnData,
    layer: str,
    *,
    knn: int = 5,
    t: int = 3,
    n_pca: int = 100,
    random_state: int = 0,
    n_jobs: int = 1,
) -> np.ndarray:
    """MAGIC on library-size normalised, square-root transformed counts, mapped back to counts."""
    import scanpy.external as sce

    X = _train_counts(adata, layer)
    lib = np.asarray(X.sum(axis=1)).ravel()
    target = float(np.median(lib[lib > 0]))
    # library-size normalisation to the median library size (scprep.normalize.library_size_normalize,
    # rescale="median"), written out so that a spot with no training counts stays 0 instead of NaN
    scale = np.divide(target, lib, out=np.zeros_like(lib), where=lib > 0)
    norm = sparse.diags(scale) @ X
    norm.data = np.sqrt(norm.data)  # scprep.transform.sqrt
    tmp = AnnData(X=norm.tocsr().astype(np.float32))
    n_pca_eff = int(min(n_pca, tmp.n_obs - 1, tmp.n_vars - 1))
    sce.pp.magic(
        tmp,
        name_list="all_genes",
        knn=min(knn, tmp.n_obs - 1),
        decay=1,
        t=t,
        n_pca=n_pca_eff,
        solver="exact",
        random_state=random_state,
        n_jobs=n_jobs,
        verbose=False,
    )
    smoothed = np.asarray(tmp.X, dtype=np.float64)
    np.clip(smoothed, 0, None, out=smoothed)
    smoothed **= 2  # invert the sqrt: normalised counts at the median library size
    smoothed *= (lib / target)[:, None]  # back to each spot's training library size
    return smoothed


def scvi_impute(
    adata: AnnData,
    layer: str,
    *,
    max_epochs: int = 50,
    n_latent: int = 10,
    accelerator: str = "cpu",
    random_state: int = 0,
) -> np.ndarray:
    """scVI normalised expression times each spot's training library size."""
    import scvi

    scvi.settings.seed = random_state
    scvi.settings.progress_bar_style = "tqdm"
    X = _train_counts(adata, layer)
    lib = np.asarray(X.sum(axis=1)).ravel()
    keep = lib > 0  # scVI cannot take a spot without counts; such a spot is predicted as 0
    tmp = AnnData(X=X[keep].astype(np.float32))
    scvi.model.SCVI.setup_anndata(tmp)
    model = scvi.model.SCVI(tmp, n_latent=n_latent)
    model.train(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=1,
        train_size=1.0,
        batch_size=128,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    freq = np.asarray(model.get_normalized_expression(library_size=1.0, return_numpy=True), dtype=np.float64)
    out = np.zeros((adata.n_obs, adata.n_vars))
    out[keep] = freq * lib[keep, None]
    return out


STLEARN_REASON = (
    "not run: stLearn SME needs morphology features from stlearn.pp.extract_feature, which builds a Keras "
    "ResNet50 with weights='imagenet' downloaded at run time (no internet here); `pip install stlearn` also "
    "downgrades numpy to 1.26 and pulls tensorflow 2.21, so it cannot share this process"
)


def stlearn_sme_unavailable() -> str:
    """Why stLearn's SME normalisation is not part of the benchmark.

    ``stlearn.spatial.SME.SME_normalize`` weights neighbouring spots by the similarity of their
    morphology features (``obsm['X_morphology']``), which only ``stlearn.pp.extract_feature`` makes,
    with a Keras ImageNet CNN whose weights are downloaded when first used. This machine reaches
    PyPI only, so the real method cannot run; a randomly initialised CNN would not be SME.
    """
    return STLEARN_REASON
