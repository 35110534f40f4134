"""Resolve the torch device and seed generators."""

from __future__ import annotations

from contextlib import contextmanager

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


@contextmanager
def float32_default():
    """Context manager and decorator: torch's default dtype is float32 inside, whatever the caller set.

    The networks are built, trained and read out in float32; under ``torch.set_default_dtype(torch.float64)`` their
    parameters would otherwise be float64 and meet float32 inputs.
    """
    previous = torch.get_default_dtype()
    if previous == torch.float32:  # the usual case: no write to the process-wide setting (threads)
        yield
        return
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextmanager
def isolated_rng(device: torch.device | None = None):
    """Context manager: torch's CPU generator, and ``device``'s when a GPU, are restored on exit.

    Seeding for a reproducible run must not change the caller's random state. Only these generators are seeded
    (:func:`seed_everything`): other GPUs' generators are never touched.
    """
    cpu_state = torch.random.get_rng_state()
    kind, index = _accelerator(device)
    device_state = None
    if kind == "cuda":
        device_state = torch.cuda.get_rng_state(index)
    elif kind == "mps":
        device_state = torch.mps.get_rng_state()
    try:
        yield
    finally:
        torch.random.set_rng_state(cpu_state)
        if kind == "cuda":
            torch.cuda.set_rng_state(device_state, index)
        elif kind == "mps":
            torch.mps.set_rng_state(device_state)


def seed_everything(random_state: int | None, device: torch.device | None = None) -> torch.Generator:
    """Seed torch's CPU generator (weight initialisation) and ``device``'s (dropout there); return a CPU generator.

    Unlike ``torch.manual_seed``, which reseeds every GPU, only the generators a run uses are seeded. Call it inside
    :func:`isolated_rng` (same ``device``) so that the caller's generator states are left alone.
    """
    seed = 0 if random_state is None else int(random_state)
    torch.random.default_generator.manual_seed(seed)
    kind, index = _accelerator(device)
    if kind == "cuda":
        with torch.cuda.device(index):
            torch.cuda.manual_seed(seed)
    elif kind == "mps":
        torch.mps.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def _accelerator(device: torch.device | None) -> tuple[str, int]:
    """``("cuda", index)``, ``("mps", 0)`` or ``("cpu", 0)`` for ``device``."""
    if device is None or device.type not in ("cuda", "mps"):
        return "cpu", 0
    if device.type == "cuda":
        return "cuda", device.index if device.index is not None else torch.cuda.current_device()
    return "mps", 0
