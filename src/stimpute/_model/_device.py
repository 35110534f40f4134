"""Resolve the torch device and seed generators."""

from __future__ import annotations

import torch

from .._settings import check_device_name, settings


def resolve_device(device: str | None = None) -> torch.device:
    """``None`` means ``st.settings.device``; ``"auto"`` is CUDA when available, else CPU (MPS only when named)."""
    name = settings.device if device is None else check_device_name(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            msg = f"`device={name!r}` was requested but CUDA is not available; use `device='cpu'` or 'auto'."
            raise ValueError(msg)
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            msg = f"`device={name!r}`: only {torch.cuda.device_count()} CUDA device(s) are visible."
            raise ValueError(msg)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        msg = "`device='mps'` was requested but MPS is not available; use `device='cpu'`."
        raise ValueError(msg)
    return torch.device(name)


def isolated_rng(device: torch.device | None = None):
    """Context manager: torch's global generators (CPU, and ``device`` when CUDA) are restored on exit.

    Seeding for a reproducible run must not change the caller's random state.
    """
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    return torch.random.fork_rng(devices=devices)


def seed_everything(random_state: int | None) -> torch.Generator:
    """Seed torch's global generator (for weight initialisation) and return a dedicated CPU generator.

    Call it inside :func:`isolated_rng` so that the caller's generator state is left alone.
    """
    seed = 0 if random_state is None else int(random_state)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen
