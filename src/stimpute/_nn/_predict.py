"""Readouts of a trained network: imputed counts for every spot (conditional, expected or normalised)."""

from __future__ import annotations

import numpy as np
import torch

from ._data import Prepared, batch
from ._device import float32_default
from ._module import ImputeNet
from ._train import without_counts


@torch.inference_mode()
@float32_default()
def predict(
    net: ImputeNet,
    prep: Prepared,
    device: torch.device,
    *,
    loss: str,
    output: str,
    gene_max: np.ndarray | None,
    reference_library: float = 0.0,
    chunk: int = 512,
    latent_out: np.ndarray | None = None,
) -> np.ndarray:
    """Imputed counts for every spot from all its observed entries, float32 ``(n_obs, n_genes)``.

    ``output="conditional"`` gives the expected count given that the gene is detected,
    ``"expected"`` the expected count including dropouts, both at the spot's own depth;
    ``"normalized"`` the prediction at the reference depth (standardised log library size
    ``reference_library``, size factor 1) for every spot: the expected count when the network has
    a detection head or a count likelihood, else the conditional one. With ``gene_max``, values are capped at
    each gene's largest count seen in training. ``latent_out``, a float32 ``(n_obs, latent_dim)`` array, receives
    every spot's fused latent vector from the same pass (it does not depend on the readout).
    """
    net.eval()
    net.to(device)
    n_genes = prep.L_obs.shape[1]
    out = np.empty(prep.L_obs.shape, dtype=np.float32)
    cap = None if gene_max is None else torch.as_tensor(np.asarray(gene_max, dtype=np.float32), device=device)
    for start in range(0, prep.n_obs, chunk):
        idx = np.arange(start, min(prep.n_obs, start + chunk))
        b = batch(prep, idx, device, source="obs")
        sf = torch.from_numpy(prep.size_factor[idx]).to(device)[:, None]
        if output == "normalized":
            b["library"] = torch.full_like(b["library"], float(reference_library))
            sf = torch.ones_like(sf)
        no_counts = torch.from_numpy(np.diff(prep.L_obs.indptr)[idx] == 0).to(device)
        z = net.latent(b, without_counts(net, no_counts, None) if bool(no_counts.any()) else None)
        raw = net.decode(z, b).float()
        if latent_out is not None:
            latent_out[idx] = z.float().cpu().numpy()
        block = readout(
            net, raw, sf, n_genes=n_genes, loss=loss, output="expected" if output == "normalized" else output
        )
        if cap is not None:
            block = torch.minimum(block, cap[None, :])
        out[idx] = block.cpu().numpy()
    return out


def readout(
    net: ImputeNet, raw: torch.Tensor, sf: torch.Tensor, *, n_genes: int, loss: str, output: str
) -> torch.Tensor:
    """Network output to counts (see :func:`predict`)."""
    value = raw[:, :n_genes]
    if loss == "mse":
        cond = torch.expm1(value.clamp(min=0.0))
        if output == "conditional" or not net.detection:
            return cond
        return torch.sigmoid(raw[:, n_genes:]) * cond
    mu = torch.exp(value.clamp(max=20.0)) * sf
    if output == "expected":
        return mu
    if loss == "poisson":
        p_zero = torch.exp(-mu)
    else:
        theta = torch.exp(net.log_theta).clamp(1e-4, 1e6)[None, :]
        p_zero = torch.exp(theta * (torch.log(theta) - torch.log(theta + mu)))
    return mu / (1.0 - p_zero).clamp(min=1e-6)
