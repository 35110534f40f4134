"""stimpute: multimodal imputation of spatial gene expression.

Use it as ``import stimpute as st``: ``st.pp`` (holdout, image features), ``st.tl`` (impute,
evaluate, compare clusters), ``st.pl`` (plots), ``st.get`` (spatial accessors), ``st.datasets``,
``st.read_visium`` and ``st.settings``. Importing stimpute does not import torch.
"""

from . import datasets, get, pl, pp, tl
from ._io import read_visium
from ._settings import settings
from ._version import __version__
from ._warnings import ImageFeatureWarning, InputWarning, ReadoutWarning, SectionWarning, StimputeWarning

__all__ = [
    "ImageFeatureWarning",
    "InputWarning",
    "ReadoutWarning",
    "SectionWarning",
    "StimputeWarning",
    "datasets",
    "get",
    "pl",
    "pp",
    "read_visium",
    "settings",
    "tl",
    "__version__",
]
