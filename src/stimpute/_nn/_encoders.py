"""torchvision CNN tile encoders for :func:`stimpute.pp.image_features`.

The network's classification head is replaced by the identity, so the output is the globally
average-pooled feature vector of the last convolutional stage. Tiles (RGB ``uint8``) are scaled to
[0, 1] and normalised with the ImageNet mean and standard deviation, the convention of torchvision's
published weights and of most histology checkpoints built on them.

Weights
-------
``"imagenet"``
    torchvision's published ImageNet weights (downloaded once into the torch hub cache; works offline
    once cached).
path to a file
    A local checkpoint read with ``torch.load(path, map_location="cpu", weights_only=True)``. Conversions
    (documented in :func:`adapt_state_dict`): a ``"state_dict"``/``"model_state_dict"``/``"model"``
    wrapper is unwrapped, a common key prefix such as ``"module."``, ``"model."`` or ``"backbone."`` is
    stripped, and the classification head's keys (``fc.*`` / ``classifier.*``) are dropped.
``"random"``
    Random initialisation from ``random_state`` (meaningless features; for tests and timing only).

Torch is imported inside the functions: importing this module does not import torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._constants import CNN_INPUT_SIDE
from .._warnings import ImageFeatureWarning, warn

__all__ = ["CNN_ENCODERS", "CNN_INPUT_SIDE", "adapt_state_dict", "encode_tiles", "load_encoder"]

#: Supported torchvision architectures and the attribute holding their classification head.
CNN_ENCODERS: dict[str, str] = {
    "resnet18": "fc",
    "resnet34": "fc",
    "resnet50": "fc",
    "resnet101": "fc",
    "densenet121": "classifier",
    "efficientnet_b0": "classifier",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WRAPPERS = ("state_dict", "model_state_dict", "model")
_SHOW = 5


def _build(name: str):
    import torch
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    setattr(model, CNN_ENCODERS[name], torch.nn.Identity())
    return model


def load_encoder(name: str, weights: str | os.PathLike, *, random_state: int | None = 0):
    """Build the headless network ``name`` with ``weights`` (``"imagenet"``, ``"random"`` or a checkpoint path).

    Returns the model in eval mode on the CPU.
    """
    if name not in CNN_ENCODERS:
        msg = f"`encoder` must be 'handcrafted' or one of {list(CNN_ENCODERS)}, got {name!r}."
        raise ValueError(msg)
    from ._device import float32_default, isolated_rng, seed_everything

    with float32_default():  # float32 weights whatever torch's default dtype
        if isinstance(weights, str) and weights == "random":
            with isolated_rng():
                seed_everything(random_state)
                model = _build(name)
        elif isinstance(weights, str) and weights == "imagenet":
            model = _imagenet_model(name)
        else:
            model = _build(name)
            state = adapt_state_dict(_read_checkpoint(Path(weights)), model, name)
            model.load_state_dict(state, strict=False)  # completeness was checked by adapt_state_dict
    return model.eval()


def _imagenet_model(name: str):
    import torch
    import torchvision

    enum = torchvision.models.get_model_weights(name).DEFAULT
    try:
        model = torchvision.models.get_model(name, weights=enum)
    except (OSError, RuntimeError, ValueError) as err:  # urllib's URLError is an OSError
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        msg = (
            f"Could not get torchvision's ImageNet weights for {name!r} ({type(err).__name__}: {err}). They are "
            f"downloaded from {enum.url}, which needs internet access. Either download that file on a machine with "
            f"internet and put it into {str(hub)!r} (torch's cache, then it works offline), pass "
            f"`weights='/path/to/checkpoint.pt'` with a local state dict for {name!r} (for example a "
            "histology-pretrained one), or use `encoder='handcrafted'`, which needs no weights."
        )
        raise RuntimeError(msg) from err
    setattr(model, CNN_ENCODERS[name], torch.nn.Identity())
    return model


def _read_checkpoint(path: Path) -> Any:
    from ._checkpoint import read_weights

    fix = "save a plain state dict instead: `torch.save(model.state_dict(), path)`."
    return read_weights(path, "cpu", label=f"`weights={str(path)!r}`", fix=fix)


def adapt_state_dict(checkpoint: Any, model, name: str) -> dict:
    """Fit a checkpoint to the headless architecture, or raise listing missing/unexpected keys.

    Conversions, in order:

    1. a mapping with a ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` entry that is itself a mapping
       (PyTorch Lightning, common training scripts) is unwrapped, repeatedly; non-tensor entries are dropped;
    2. the key prefix (up to three dotted parts, for example ``"module."`` from ``DataParallel``,
       ``"model."``, ``"backbone."`` or ``"model.resnet."``) whose removal matches the most architecture keys is
       stripped, and keys without that prefix are ignored (with a warning) when every architecture key is found;
    3. the classification head (``fc.*`` for ResNets, ``classifier.*`` otherwise) is dropped: the head is
       replaced by the identity, so its keys may be missing or of any shape;
    4. missing ``num_batches_tracked`` buffers (old checkpoints) keep their defaults.

    Any other missing key or shape mismatch is an error.
    """
    import torch

    state = checkpoint
    while isinstance(state, Mapping):
        inner = next((state[k] for k in _WRAPPERS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping):
        msg = f"The checkpoint for {name!r} is a {type(state).__name__}, not a state dict (a mapping of tensors)."
        raise ValueError(msg)
    state = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    head = CNN_ENCODERS[name] + "."
    expected = model.state_dict()  # the head is already the identity: no head keys here
    required = {k for k in expected if not k.endswith("num_batches_tracked")}

    best_prefix, best_hits = "", len(required & set(state))
    prefixes = {".".join(k.split(".")[:depth]) + "." for k in state for depth in (1, 2, 3) if k.count(".") >= depth}
    for prefix in sorted(prefixes, key=len):
        hits = len(required & {k[len(prefix) :] for k in state if k.startswith(prefix)})
        if hits > best_hits:
            best_prefix, best_hits = prefix, hits
    stripped = {k[len(best_prefix) :]: v for k, v in state.items() if k.startswith(best_prefix)}
    stripped = {k: v for k, v in stripped.items() if not k.startswith(head)}
    outside = sorted(k for k in state if not k.startswith(best_prefix))

    missing = sorted(required - set(stripped))
    unexpected = sorted(set(stripped) - set(expected))
    wrong_shape = sorted(
        k for k in set(stripped) & set(expected) if tuple(stripped[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or wrong_shape:
        parts = [f"The checkpoint does not fit {name!r}"]
        if best_prefix:
            parts.append(f"(after stripping the key prefix {best_prefix!r})")
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys, e.g. {missing[:_SHOW]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:_SHOW]}")
        if wrong_shape:
            shapes = [f"{k}: {tuple(stripped[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong_shape[:_SHOW]]
            details.append(f"{len(wrong_shape)} keys with another shape, e.g. {shapes}")
        msg = (
            " ".join(parts)
            + ": "
            + "; ".join(details)
            + f". Check that it was trained for {name!r} (pass the matching `encoder=`); the keys must be those of "
            f"`torchvision.models.{name}().state_dict()`, optionally under one prefix such as 'module.' or 'model.'."
        )
        raise ValueError(msg)
    if outside:
        warn(
            f"Ignored {len(outside)} checkpoint keys outside {best_prefix!r}, e.g. {outside[:_SHOW]}.",
            ImageFeatureWarning,
        )
    return stripped


def encode_tiles(model, tiles: np.ndarray, device) -> np.ndarray:
    """Pooled features ``(n, dim)`` float32 of RGB ``uint8`` tiles ``(n, side, side, 3)``."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        out = model((x - mean) / std)
        return out.flatten(1).float().cpu().numpy()
