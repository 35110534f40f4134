"""Tools: ``st.tl`` imputes, evaluates imputations and compares clusterings."""

from ._clusters import compare_clusters
from ._evaluate import evaluate
from ._impute import impute, load_model

__all__ = ["ImputationModel", "compare_clusters", "evaluate", "impute", "load_model"]


def __getattr__(name: str):
    # the model class lives with torch in stimpute._model; import it only when asked for
    if name == "ImputationModel":
        from .._model._io import ImputationModel

        return ImputationModel
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
