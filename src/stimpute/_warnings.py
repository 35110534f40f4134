"""stimpute's warning categories and the one helper that raises them.

Every user-facing warning is a :class:`StimputeWarning` (a :class:`UserWarning`), so it can be filtered as a
whole or by topic, e.g. ``warnings.filterwarnings("ignore", category=st.InputWarning)``. The helper points the
warning at the first frame outside stimpute (the user's call), as scanpy does with ``skip_file_prefixes``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

__all__ = ["ImageFeatureWarning", "InputWarning", "ReadoutWarning", "SectionWarning", "StimputeWarning", "warn"]

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class StimputeWarning(UserWarning):
    """Base class of every warning stimpute raises."""


class InputWarning(StimputeWarning):
    """The data look unlike what a function expects (e.g. normalised values where raw counts belong)."""


class ImageFeatureWarning(StimputeWarning):
    """The H&E image, its scale or the image features may not be what they should (orientation, tiles, axes)."""


class SectionWarning(StimputeWarning):
    """A section is too small for the neighbourhoods asked for, or several sections are mixed."""


class ReadoutWarning(StimputeWarning):
    """A score or comparison reads a layer that cannot answer it (the answers themselves, a depth-free readout)."""


def warn(message: str, category: type[StimputeWarning] = StimputeWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first caller outside stimpute."""
    frame = sys._getframe(1)
    level = 2  # 1 is this function; 2 its caller
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level - 1 if frame is None else level)
