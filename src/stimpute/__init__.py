"""stimpute: multimodal imputation of spatial gene expression.

Use it as ``import stimpute as st``: ``st.pp`` (holdout, image features), ``st.tl`` (impute,
evaluate, compare clusters), ``st.pl`` (plots), ``st.get`` (spatial accessors), ``st.datasets``,
``st.read_visium`` and ``st.settings``. Importing stimpute does not import torch.
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, get, pl, pp, tl
from ._io import read_visium
from ._settings import settings

try:
    __version__ = version("stimpute")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["datasets", "get", "pl", "pp", "read_visium", "settings", "tl", "__version__"]
