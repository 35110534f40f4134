"""Typed options of the torch layer and the one source of the network's default sizes (no torch import here).

``st.tl.impute`` builds its per-method defaults (``METHOD_DEFAULTS``) from :data:`NETWORK_DEFAULTS` and
:class:`TrainingOptions`; :class:`~stimpute._nn._module.ImputeNet` takes its keyword defaults from
:data:`NETWORK_DEFAULTS` too, so a default is changed in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

#: Architecture defaults: the fused ("multimodal") network's, which the single-modality methods override in part.
NETWORK_DEFAULTS: MappingProxyType[str, Any] = MappingProxyType(
    {
        "latent_dim": 64,
        "count_hidden": (256,),
        "position_hidden": (64, 128),
        "image_hidden": (64,),
        "decoder_hidden": (128,),
        "dropout": 0.0,
        "library_size": True,
        "neighbours": False,
        "neighbour_skip": False,
        "count_pcs": 0,
        "normalize_counts": False,
        "detection": False,
        "n_neighbors": 6,
        "shrinkage": 2.0,
        "n_frequencies": 6,
        "poly_degree": 3,
        "spatial_reg": 0.0,
        # graph encoder: hops of the spatial kNN graph (0: none) and neighbours per hop
        "graph_hops": 0,
        "graph_neighbors": 6,
        "graph_hidden": (256,),
    }
)


@dataclass(frozen=True)
class TrainingOptions:
    """Options of :func:`stimpute._nn._train.train` (see :func:`stimpute.tl.impute` for their meaning)."""

    max_epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    patience: int = 4
    lr_decay: float = 0.3
    val_fraction: float = 0.1
    mask_fraction: float = 0.3
    #: share of each minibatch's spots whose counts are hidden whole; ``None``: the share without counts
    spot_mask: float | None = None
    observed_weight: float = 0.0
    detection_weight: float = 1.0
    modality_dropout: float = 0.0
    #: relative improvement that counts; ``None``: 1e-3 for ``"mse"``, 1e-4 for the count likelihoods
    min_delta: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The options of :class:`TrainingOptions` that ``st.tl.impute`` takes through ``**method_kwargs``.
METHOD_TRAINING_OPTIONS = (
    "weight_decay",
    "patience",
    "lr_decay",
    "val_fraction",
    "mask_fraction",
    "spot_mask",
    "observed_weight",
    "detection_weight",
)


def reference_library(norm: dict) -> float:
    """Standardised log library size of the reference (median) depth."""
    return float((np.log1p(norm["library_median"]) - norm["library_mean"]) / norm["library_std"])
