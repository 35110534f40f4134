"""Preprocessing: ``st.pp`` holds out entries for evaluation and computes image features."""

from ._holdout import holdout

__all__ = ["holdout"]
