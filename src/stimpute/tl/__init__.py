"""Tools: ``st.tl`` imputes, evaluates imputations and compares clusterings."""

from ._clusters import compare_clusters
from ._evaluate import evaluate
from ._impute import impute, load_model

__all__ = ["ImputationModel", "compare_clusters", "evaluate", "impute", "load_model"]


def __getattr__(name: str):
    # the model class drives torch (stimpute._nn); import it only when asked for
    if name == "ImputationModel":
        from ._model import ImputationModel

        return ImputationModel
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
