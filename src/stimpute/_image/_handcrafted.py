"""Handcrafted H&E tile features, vectorised over a batch of tiles (no weights, CPU only).

For every tile (RGB ``uint8``, ``side x side``) the features are, in this order:

1. **Colour and stain statistics in two regions**, the whole tile (context) and the spot disc (the pixels
   within one spot radius of the centre, i.e. ``side * spot_fraction / 2``, ``spot_fraction`` being the spot
   diameter over the tile side in the image the tile was cut from): mean, standard deviation and
   10th/50th/90th percentiles of R, G, B (in [0, 1]) and of the haematoxylin (H) and eosin (E) optical
   densities from colour deconvolution (:func:`skimage.color.rgb2hed`): 2 regions x 5 channels x 5 = 50.
2. **Grey-level co-occurrence texture** of the whole tile (grey = :func:`skimage.color.rgb2gray` weights,
   quantised to 32 levels): contrast, dissimilarity, homogeneity, ASM, correlation and entropy at pixel
   distances 1, 2 and 4, each averaged over the angles 0, 45, 90 and 135 degrees: 18. The matrices are
   symmetric and normalised and equal :func:`skimage.feature.graycomatrix` /
   :func:`skimage.feature.graycoprops`; they are counted for the whole batch with one ``bincount``.
3. **Local binary patterns**: the normalised histogram of rotation-invariant uniform LBP codes (10 bins) of
   the grey tile with the 8 pixels of the 3x3 ring as neighbours (integer offsets, as in Ojala's original
   operator, rather than skimage's interpolated circle), at full and at half resolution: 20.

Total: 88 features per tile.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GLCM_DISTANCES", "GLCM_LEVELS", "glcm_batch", "handcrafted_feature_names", "handcrafted_features"]

GLCM_LEVELS = 32
GLCM_DISTANCES = (1, 2, 4)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "ASM", "correlation", "entropy")
_CHANNELS = ("R", "G", "B", "H", "E")
_STATS = ("mean", "std", "p10", "p50", "p90")
_GREY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray
# 8 neighbours of the 3x3 ring in circular order (row offset, column offset)
_RING = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))
_LBP_BINS = len(_RING) + 2


def handcrafted_feature_names() -> list[str]:
    """Names of the 88 handcrafted features, in the order of :func:`handcrafted_features`."""
    names = [f"{region}_{ch}_{stat}" for region in ("tile", "spot") for ch in _CHANNELS for stat in _STATS]
    names += [f"glcm_{prop}_d{d}" for d in GLCM_DISTANCES for prop in GLCM_PROPS]
    names += [f"lbp{scale}_{code}" for scale in ("", "_half") for code in range(_LBP_BINS)]
    return names


def handcrafted_features(tiles: np.ndarray, *, spot_fraction: float = 1.0) -> np.ndarray:
    """Features of a batch of RGB ``uint8`` tiles ``(n, side, side, 3)`` -> ``(n, 88)`` float64.

    ``spot_fraction`` is the spot diameter as a fraction of the tile side (``TileSpec.spot_fraction``: slightly
    less than ``1 / tile_scale``, since tiles are cut with an odd side rounded up).
    """
    from skimage.color import rgb2hed

    n, side = tiles.shape[0], tiles.shape[1]
    rgb = tiles.astype(np.float32) / 255.0
    hed = rgb2hed(rgb)[..., :2].astype(np.float32)  # H and E optical densities; the DAB residual is dropped
    # (n, channels, pixels), contiguous along pixels: the reductions below run on the last axis
    channels = np.ascontiguousarray(np.concatenate([rgb, hed], axis=-1).reshape(n, side * side, -1).transpose(0, 2, 1))

    yy, xx = np.mgrid[0:side, 0:side]
    centre = (side - 1) / 2
    # at least the centre pixel(s): a very large tile_scale would otherwise leave the disc empty
    spot_radius = max(min(side / 2, side * spot_fraction / 2), 0.75)
    disc = ((yy - centre) ** 2 + (xx - centre) ** 2 <= spot_radius**2).ravel()
    parts = [_region_stats(channels), _region_stats(channels[:, :, disc])]

    grey = tiles.astype(np.float32) @ _GREY.astype(np.float32)  # (n, side, side), in [0, 255]
    levels = np.minimum((grey * (GLCM_LEVELS / 256.0)).astype(np.int64), GLCM_LEVELS - 1)
    parts.append(glcm_batch(levels, GLCM_LEVELS, GLCM_DISTANCES))
    parts.append(_lbp_hist(grey))
    half = side // 2
    grey_half = grey[:, : 2 * half, : 2 * half].reshape(n, half, 2, half, 2).mean(axis=(2, 4))
    parts.append(_lbp_hist(grey_half))
    return np.concatenate(parts, axis=1)


def _region_stats(x: np.ndarray) -> np.ndarray:
    """``(n, channels, pixels)`` -> ``(n, channels * 5)``: mean, std, p10, p50, p90 per channel.

    Percentiles take the nearest rank of one sort (no interpolation between ranks).
    """
    m = x.shape[-1]
    ranks = [int(round(q * (m - 1))) for q in (0.1, 0.5, 0.9)]
    q = np.sort(x, axis=-1)[..., ranks]  # (n, channels, 3)
    stats = np.concatenate([x.mean(axis=-1)[..., None], x.std(axis=-1)[..., None], q], axis=-1)
    return stats.reshape(len(x), -1).astype(np.float64)


def _glcm_counts(levels: np.ndarray, n_levels: int, dr: int, dc: int) -> np.ndarray:
    """Co-occurrence counts ``(n, L, L)`` of pixel pairs ``(r, c)`` -> ``(r + dr, c + dc)`` (not symmetric)."""
    n, h, w = levels.shape
    r0, r1 = max(0, -dr), min(h, h - dr)
    c0, c1 = max(0, -dc), min(w, w - dc)
    a = levels[:, r0:r1, c0:c1]
    b = levels[:, r0 + dr : r1 + dr, c0 + dc : c1 + dc]
    idx = (np.arange(n)[:, None, None] * n_levels + a) * n_levels + b
    return np.bincount(idx.ravel(), minlength=n * n_levels * n_levels).reshape(n, n_levels, n_levels)


def glcm_batch(levels: np.ndarray, n_levels: int, distances: tuple[int, ...]) -> np.ndarray:
    """GLCM properties for a batch of quantised grey tiles ``(n, h, w)`` -> ``(n, len(distances) * 6)``.

    Symmetric, normalised matrices with skimage's offsets (``round(sin(angle) * d)`` rows,
    ``round(cos(angle) * d)`` columns); each property is averaged over the four angles. The linear
    properties are one matrix product with weight tables; for a symmetric matrix both marginals are equal,
    so correlation is ``(E[ij] - mu^2) / var``.
    """
    n = levels.shape[0]
    i = np.arange(n_levels, dtype=np.float64)
    row, col = np.meshgrid(i, i, indexing="ij")
    diff = row - col
    weights = np.stack([diff**2, np.abs(diff), 1.0 / (1.0 + diff**2), row, row**2, row * col], axis=-1)
    weights = weights.reshape(n_levels * n_levels, -1)
    out = np.empty((n, len(distances), len(GLCM_PROPS)))
    for d_idx, d in enumerate(distances):
        acc = np.zeros((n, len(GLCM_PROPS)))
        for angle in GLCM_ANGLES:
            dr, dc = int(np.round(np.sin(angle) * d)), int(np.round(np.cos(angle) * d))
            P = _glcm_counts(levels, n_levels, dr, dc).astype(np.float64)
            P += P.transpose(0, 2, 1)
            P = P.reshape(n, -1)
            total = P.sum(axis=1, keepdims=True)
            P /= np.where(total == 0, 1, total)
            contrast, dissimilarity, homogeneity, mu, ei2, eij = (P @ weights).T
            var = np.maximum(ei2 - mu**2, 0.0)
            flat = np.sqrt(var) < 1e-15
            corr = np.where(flat, 1.0, (eij - mu**2) / np.where(flat, 1.0, var))
            logp = np.log(P, where=P > 0, out=np.zeros_like(P))
            acc += np.stack(
                [contrast, dissimilarity, homogeneity, (P**2).sum(axis=1), corr, -(P * logp).sum(axis=1)], axis=1
            )
        out[:, d_idx] = acc / len(GLCM_ANGLES)
    return out.reshape(n, -1)


def _lbp_hist(grey: np.ndarray) -> np.ndarray:
    """Normalised histogram of rotation-invariant uniform LBP codes (3x3 ring) of grey tiles ``(n, h, w)``."""
    n, h, w = grey.shape
    if h < 3 or w < 3:
        return np.zeros((n, _LBP_BINS))
    centre = grey[:, 1:-1, 1:-1]
    bits = np.stack([grey[:, 1 + dr : h - 1 + dr, 1 + dc : w - 1 + dc] >= centre for dr, dc in _RING], axis=0)
    ones = bits.sum(axis=0)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(axis=0)
    codes = np.where(transitions <= 2, ones, len(_RING) + 1)
    idx = np.arange(n)[:, None, None] * _LBP_BINS + codes
    hist = np.bincount(idx.ravel(), minlength=n * _LBP_BINS).reshape(n, _LBP_BINS).astype(np.float64)
    return hist / hist.sum(axis=1, keepdims=True)
