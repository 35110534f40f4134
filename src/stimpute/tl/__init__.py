"""Tools: ``st.tl`` imputes, evaluates imputations and compares clusterings."""

from ._evaluate import evaluate

__all__ = ["evaluate"]
