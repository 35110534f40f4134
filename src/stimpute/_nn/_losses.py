"""Losses of the imputation network: squared error on ``log1p`` values and the count likelihoods."""

from __future__ import annotations

import torch

from ._module import ImputeNet


def nb_nll(counts: torch.Tensor, mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """Elementwise negative log-likelihood of a negative binomial with mean ``mu`` and inverse dispersion ``theta``."""
    theta = torch.exp(log_theta).clamp(1e-4, 1e6)
    log_theta_mu = torch.log(theta + mu + 1e-8)
    return -(
        torch.lgamma(counts + theta)
        - torch.lgamma(theta)
        - torch.lgamma(counts + 1)
        + theta * (torch.log(theta + 1e-8) - log_theta_mu)
        + counts * (torch.log(mu + 1e-8) - log_theta_mu)
    )


def poisson_nll(counts: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Elementwise negative log-likelihood of a Poisson with mean ``mu``."""
    return mu - counts * torch.log(mu + 1e-8) + torch.lgamma(counts + 1)


def elementwise_loss(
    net: ImputeNet, out: torch.Tensor, target_log1p: torch.Tensor, size_factor: torch.Tensor, loss: str
) -> torch.Tensor:
    """Loss per entry: squared error on ``log1p`` (mse) or the count likelihood (nb, poisson)."""
    if loss == "mse":
        return (out - target_log1p) ** 2
    counts = torch.exp(target_log1p) - 1.0  # whole counts: exact enough, and vectorised on CPU (expm1 is not)
    mu = torch.exp(out.clamp(max=20.0)) * size_factor[:, None]
    if loss == "nb":
        return nb_nll(counts, mu, net.log_theta[None, :])
    return poisson_nll(counts, mu)
