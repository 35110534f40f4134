"""Preprocessing: ``st.pp`` holds out entries for evaluation and computes image features; ``st.pp.spatial_smooth`` averages spots with their neighbours."""

from ._holdout import holdout
from ._image_features import image_features
from ._smooth import spatial_smooth

__all__ = ["holdout", "image_features", "spatial_smooth"]
