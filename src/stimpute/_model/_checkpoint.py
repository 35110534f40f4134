"""The one place that reads torch checkpoints: always ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any


def read_weights(path: Path, map_location: Any, *, label: str, fix: str) -> Any:
    """``torch.load(path, map_location=map_location, weights_only=True)``, or a ValueError naming ``label``.

    ``weights_only=True`` never unpickles arbitrary Python objects; a file that holds them (a whole
    pickled model), or that is damaged or not a checkpoint, fails with a message ending in ``fix``.
    """
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as err:
        if isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err):
            raise  # the device ran out of memory (CUDA, MPS): not a fault of the file
        first = str(err).splitlines()[0] if str(err) else ""
        msg = (
            f"{label} could not be read with `torch.load(..., weights_only=True)` ({type(err).__name__}: {first}): "
            f"it is damaged, or holds Python objects (for example a whole pickled model) that stimpute does not "
            f"unpickle for safety; {fix}"
        )
        raise ValueError(msg) from err
