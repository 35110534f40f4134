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


def read_state(file: Path, device, *, fix: str) -> dict:
    """The saved state dict, read with ``weights_only=True``; ``fix`` ends the error messages."""
    import torch

    state = read_weights(file, device, label=repr(str(file)), fix=fix)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        what = type(state).__name__ if not isinstance(state, dict) else "dict with non-string keys or non-tensors"
        msg = f"{str(file)!r} holds a {what}, not a state dict; {fix}"
        raise ValueError(msg)
    return state


def write_state(net, file: Path) -> None:
    """Save the network's ``state_dict`` (on the CPU) to ``file``."""
    import torch

    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, file)
