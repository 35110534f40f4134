"""Offline synthetic Visium-like data for tests, examples and the demo."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import ndimage, sparse

from .._validate import check_positive_int, check_random_state
from ..get._spatial import set_spatial

__all__ = ["synthetic_visium"]

# H&E-like colours (RGB in [0, 1]): eosin-pink background per domain and haematoxylin-purple nuclei
_BACKGROUNDS = np.array(
    [[0.93, 0.78, 0.86], [0.90, 0.70, 0.82], [0.95, 0.84, 0.88], [0.86, 0.66, 0.80], [0.92, 0.74, 0.78]]
)
_NUCLEUS = np.array([0.35, 0.22, 0.55])


def synthetic_visium(
    n_spots: int = 400,
    n_genes: int = 100,
    *,
    n_domains: int = 4,
    mean_depth: float = 500.0,
    dispersion: float = 4.0,
    spacing: float = 100.0,
    random_state: int | None = 0,
) -> AnnData:
    """Synthetic Visium-like section with spatial domains and an H&E-like image.

    Spots sit on a hexagonal grid. The tissue is cut into ``n_domains`` curved bands (like
    cortical layers); every domain has its own marker genes, and counts are drawn from a
    negative binomial with per-spot depth. The ``hires`` image (scale factor 0.2) and the
    ``lowres`` image (0.05) are H&E-like: a domain-specific pink background with purple nuclei
    whose density and size follow the domain, so image features carry domain information.

    Parameters
    ----------
    n_spots
        Approximate number of spots (the grid is as square as possible; exactly ``n_spots`` are kept).
    n_genes
        Number of genes; at least ``2 * n_domains``.
    n_domains
        Number of spatial domains (2 to 5).
    mean_depth
        Mean total count per spot.
    dispersion
        Negative binomial inverse dispersion (larger is less noisy).
    spacing
        Centre-to-centre spot distance in full-resolution pixels.
    random_state
        Seed; the same seed gives the same data.

    Returns
    -------
    AnnData with integer counts in ``X`` (CSR, int32), ``obs['domain']`` (categorical ground truth),
    ``obs['array_row']``/``obs['array_col']``, ``obsm['spatial']`` (full-resolution x, y),
    ``var['marker_of']`` and ``uns['spatial']['synthetic']`` with ``hires`` and ``lowres`` images and
    scale factors.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50, random_state=0)
    >>> adata
    AnnData object with n_obs × n_vars = 200 × 50
        obs: 'array_row', 'array_col', 'domain'
        var: 'marker_of'
        uns: 'spatial'
        obsm: 'spatial'
    """
    n_spots = check_positive_int(n_spots, name="n_spots", minimum=10)
    n_domains = check_positive_int(n_domains, name="n_domains", minimum=2)
    if n_domains > len(_BACKGROUNDS):
        msg = f"`n_domains` must be at most {len(_BACKGROUNDS)}, got {n_domains}."
        raise ValueError(msg)
    n_genes = check_positive_int(n_genes, name="n_genes", minimum=2 * n_domains)
    if not mean_depth > 0 or not dispersion > 0 or not spacing > 0:
        msg = "`mean_depth`, `dispersion` and `spacing` must be positive."
        raise ValueError(msg)
    rng = check_random_state(random_state)

    # hexagonal grid (Visium layout: odd rows shifted by half a spacing) -------------------------
    n_cols = int(np.ceil(np.sqrt(n_spots)))
    n_rows = int(np.ceil(n_spots / n_cols))
    rows, cols = np.divmod(np.arange(n_rows * n_cols), n_cols)
    rows, cols = rows[:n_spots], cols[:n_spots]
    margin = 1.5 * spacing
    x = margin + cols * spacing + (rows % 2) * spacing / 2
    y = margin + rows * spacing * np.sqrt(3) / 2
    width, height = x.max() + margin, y.max() + margin

    # curved bands along the diagonal ----------------------------------------------------------
    def domain_of(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        t = (px / width + py / height) / 2 + 0.06 * np.sin(2 * np.pi * py / height)
        return np.clip((t * n_domains).astype(int), 0, n_domains - 1)

    domain = domain_of(x, y)

    # expression: base means, domain markers, a smooth gradient, per-spot depth ------------------
    base = rng.lognormal(mean=-4.0, sigma=1.0, size=n_genes)
    logfc = np.zeros((n_domains, n_genes))
    marker_of = np.full(n_genes, "none", dtype=object)
    markers_per_domain = max(2, n_genes // (3 * n_domains))
    perm = rng.permutation(n_genes)
    for d in range(n_domains):
        genes = perm[d * markers_per_domain : (d + 1) * markers_per_domain]
        logfc[d, genes] = rng.uniform(1.0, 2.5, size=genes.size)
        marker_of[genes] = f"D{d}"
    gradient_genes = perm[n_domains * markers_per_domain : n_domains * markers_per_domain + max(1, n_genes // 10)]
    gradient = (x - x.mean()) / (x.std() + 1e-9)
    rate = base[None, :] * np.exp(logfc[domain])
    rate[:, gradient_genes] *= np.exp(0.6 * gradient)[:, None]
    rate /= rate.sum(axis=1, keepdims=True)
    depth = rng.lognormal(mean=np.log(mean_depth), sigma=0.35, size=n_spots)
    mu = rate * depth[:, None]
    lam = rng.gamma(shape=dispersion, scale=mu / dispersion)
    counts = rng.poisson(lam).astype(np.int32)

    obs = pd.DataFrame(
        {
            "array_row": rows.astype(np.int64),
            "array_col": cols.astype(np.int64),
            "domain": pd.Categorical([f"D{d}" for d in domain], categories=[f"D{d}" for d in range(n_domains)]),
        },
        index=[f"spot_{i:05d}" for i in range(n_spots)],
    )
    var = pd.DataFrame({"marker_of": pd.Categorical(marker_of)}, index=[f"gene_{j:04d}" for j in range(n_genes)])
    adata = AnnData(X=sparse.csr_matrix(counts), obs=obs, var=var)
    adata.obsm["spatial"] = np.column_stack([x, y]).astype(np.float64)

    # H&E-like image --------------------------------------------------------------------------
    hires_scalef, lowres_scalef = 0.2, 0.05
    spot_diameter = 0.55 * spacing
    hires = _he_image(width, height, hires_scalef, domain_of, n_domains, rng)
    lowres = _downsample(hires, lowres_scalef / hires_scalef)
    set_spatial(
        adata,
        "synthetic",
        images={"hires": hires, "lowres": lowres},
        scalefactors={
            "tissue_hires_scalef": hires_scalef,
            "tissue_lowres_scalef": lowres_scalef,
            "spot_diameter_fullres": spot_diameter,
            "fiducial_diameter_fullres": spot_diameter * 1.6,
        },
        metadata={
            "source": "stimpute.datasets.synthetic_visium",
            "random_state": int(random_state) if isinstance(random_state, int | np.integer) else -1,
        },
    )
    return adata


def _he_image(width, height, scalef, domain_of, n_domains, rng) -> np.ndarray:
    h, w = int(np.ceil(height * scalef)), int(np.ceil(width * scalef))
    yy, xx = np.mgrid[0:h, 0:w]
    dom = domain_of(xx / scalef, yy / scalef)
    img = _BACKGROUNDS[dom].astype(np.float64)  # (h, w, 3)
    # nuclei: density and size grow with the domain index
    density = 0.004 + 0.006 * dom / max(1, n_domains - 1)
    seeds = rng.random((h, w)) < density
    nuclei = np.zeros((h, w))
    for d in range(n_domains):
        sigma = 0.8 + 0.8 * d / max(1, n_domains - 1)
        nuclei += ndimage.gaussian_filter((seeds & (dom == d)).astype(float), sigma) * (2 * np.pi * sigma**2)
    nuclei = np.clip(nuclei, 0, 1)[..., None]
    img = img * (1 - nuclei) + _NUCLEUS * nuclei
    img += rng.normal(0, 0.02, size=img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _downsample(img: np.ndarray, factor: float) -> np.ndarray:
    from skimage.transform import resize

    h, w = max(1, int(round(img.shape[0] * factor))), max(1, int(round(img.shape[1] * factor)))
    return (resize(img, (h, w), anti_aliasing=True, preserve_range=True)).astype(np.uint8)
