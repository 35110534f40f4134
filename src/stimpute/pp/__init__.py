"""Preprocessing: ``st.pp`` holds out entries for evaluation and computes image features."""

from ._holdout import holdout
from ._image_features import image_features

__all__ = ["holdout", "image_features"]
