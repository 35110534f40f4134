"""Standardisation and PCA of image features, and their reuse on another section (numpy only).

A section's features are z-scored and projected on principal axes fitted to that section. The fitted
constants (``mean``, ``scale``, ``components``) are stored with the features (``uns[key]['projection']``) and
with a trained model, so that another section's features can be put on the same axes: PCA axes fitted on
two sections differ (signs, order and mixing), and a model reads its inputs by position.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._warnings import ImageFeatureWarning, warn

__all__ = [
    "PROJECTION_KEY",
    "SETTINGS",
    "apply_projection",
    "check_projection",
    "fit_projection",
    "same_projection",
    "variance_ratio",
]

PROJECTION_KEY = "projection"
#: Settings of ``st.pp.image_features`` that must match between a reference and the section projected on it.
SETTINGS = ("encoder", "weights", "tile_scale", "tile_size", "n_comps")


def fit_projection(features: np.ndarray, n_comps: int | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """z-score every feature (constant ones become 0), then PCA with the full (deterministic) SVD.

    Returns the scores, the explained variance ratios (empty without PCA) and the projection
    (``mean``, ``scale`` with 0 for constant features, ``components`` ``(k, n_features)`` with the sign
    convention applied; no ``components`` without PCA).
    """
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    scale = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 0.0)
    projection = {"mean": mean, "scale": scale}
    z = _zscore(features, projection)
    if n_comps is None:
        return z, np.zeros(0), projection
    from sklearn.decomposition import PCA

    k = max(1, min(n_comps, z.shape[1], z.shape[0] - 1))
    if not np.any(z):
        warn(
            "All image features are constant across spots (a blank image?); the components are zero.",
            ImageFeatureWarning,
        )
        projection["components"] = np.zeros((k, z.shape[1]))
        return np.zeros((z.shape[0], k)), np.zeros(k), projection
    pca = PCA(n_components=k, svd_solver="full")
    scores = pca.fit_transform(z)
    # sign convention: the largest-magnitude loading of each component is positive (stable across platforms)
    signs = np.sign(pca.components_[np.arange(k), np.abs(pca.components_).argmax(axis=1)])
    signs[signs == 0] = 1
    projection["components"] = pca.components_ * signs[:, None]
    ratio = np.nan_to_num(pca.explained_variance_ratio_, nan=0.0)
    return scores * signs, ratio, projection


def apply_projection(features: np.ndarray, projection: Mapping) -> np.ndarray:
    """Put ``features`` on the axes of a fitted ``projection`` (z-score with its constants, then its components)."""
    z = _zscore(features, projection)
    if "components" not in projection:
        return z
    return z @ np.asarray(projection["components"], dtype=np.float64).T


def variance_ratio(features: np.ndarray, projection: Mapping, scores: np.ndarray) -> np.ndarray:
    """Share of the standardised variance of ``features`` on each axis of ``projection`` (empty without PCA)."""
    if "components" not in projection:
        return np.zeros(0)
    total = float(_zscore(features, projection).var(axis=0).sum())
    return scores.var(axis=0) / total if total > 0 else np.zeros(scores.shape[1])


def same_projection(a: Mapping, b: Mapping) -> bool:
    """Whether two stored projections are the same fit (up to float rounding of a JSON round trip)."""
    if set(a) != set(b):
        return False
    for name in a:
        x, y = np.asarray(a[name], dtype=np.float64), np.asarray(b[name], dtype=np.float64)
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-9, atol=1e-12):
            return False
    return True


def check_projection(projection, n_features: int | None = None) -> str | None:
    """What is wrong with a stored projection (``None`` when it is usable)."""
    if not isinstance(projection, Mapping) or not {"mean", "scale"} <= set(projection):
        return "it is not a mapping with 'mean' and 'scale' (and 'components' after PCA)"
    try:
        mean = np.asarray(projection["mean"], dtype=np.float64)
        scale = np.asarray(projection["scale"], dtype=np.float64)
        comps = np.asarray(projection.get("components", np.zeros((1, mean.size))), dtype=np.float64)
    except (TypeError, ValueError):
        return "its values are not numeric arrays"
    f = mean.size if n_features is None else n_features
    if mean.shape != (f,) or scale.shape != (f,) or comps.ndim != 2 or comps.shape[1] != f:
        return f"its arrays do not have {f} features"
    if not (np.isfinite(mean).all() and np.isfinite(scale).all() and np.isfinite(comps).all()) or (scale < 0).any():
        return "it holds non-finite or negative scale values"
    return None


def _zscore(features: np.ndarray, projection: Mapping) -> np.ndarray:
    mean = np.asarray(projection["mean"], dtype=np.float64)
    scale = np.asarray(projection["scale"], dtype=np.float64)
    safe = np.where(scale > 0, scale, np.inf)  # constant features of the fit contribute 0
    return (features - mean) / safe
