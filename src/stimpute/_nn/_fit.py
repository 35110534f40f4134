"""Train an imputation network on one count matrix (arrays and typed options in, the network out)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy import sparse

from ._config import TrainingOptions
from ._data import attach_projection, depth_normalised_log1p, fresh_norm, gene_offset, position_features, prepare
from ._device import float32_default, isolated_rng, seed_everything
from ._module import ImputeNet, build_net
from ._train import train


@float32_default()
def fit_network(
    X: sparse.spmatrix | np.ndarray,
    *,
    coords: np.ndarray | None,
    image: np.ndarray | None,
    config: dict,
    training: TrainingOptions,
    device: torch.device,
    random_state: int,
    progress: bool,
    groups: np.ndarray | None = None,
) -> tuple[ImputeNet, dict, dict, object]:
    """Train a network described by ``config`` on counts ``X``.

    Returns
    -------
    The trained network, its configuration completed with the normalisation constants and input sizes, the
    training record (history, best epoch, ...) and the prepared inputs (for prediction). The caller's torch
    random state is the same afterwards.
    """
    with isolated_rng(device):  # seeding below must not change the caller's torch random state
        gen = seed_everything(random_state, device)
        rng = np.random.default_rng(random_state)
        config = dict(config)
        config["norm"] = fresh_norm(X, image if "image" in config["modalities"] else None)
        config["n_genes"] = int(X.shape[1])
        if "position" in config["modalities"]:
            config["n_position_features"] = int(
                position_features(
                    coords[:2], n_frequencies=config["n_frequencies"], degree=config["poly_degree"]
                ).shape[1]
            )
        if "image" in config["modalities"]:
            config["n_image_features"] = int(np.asarray(image).shape[1])
        prep = prepare(
            X,
            config=config,
            norm=config["norm"],
            coords=coords,
            image=image,
            val_fraction=training.val_fraction,
            rng=rng,
            library_guess=(training.spot_mask or 0.0) > 0,
            groups=groups,
        )
        net = build_net(config)
        with torch.no_grad():
            n_genes = config["n_genes"]
            net.out.bias[:n_genes].copy_(torch.from_numpy(gene_offset(X, config["loss"], config["norm"])))
            if net.detection:  # start from each gene's detection rate
                rate = np.bincount(prep.L_obs.indices, minlength=n_genes) / max(1, prep.n_obs)
                rate = np.clip(rate, 1e-4, 1 - 1e-4)
                net.out.bias[n_genes:].copy_(torch.from_numpy(np.log(rate / (1 - rate)).astype(np.float32)))
            if "counts" in net.encoders:
                enc = net.encoders["counts"]
                enc.target_total.fill_(float(config["norm"]["library_median"]))
                if enc.n_pcs > 0:
                    L_axes = prep.L_obs
                    if enc.normalize:  # the graph encoder's source is this matrix: not built twice
                        L_axes = prep.hop_source
                        if L_axes is None:
                            L_axes = depth_normalised_log1p(X, config["norm"]["library_median"])
                    enc.projection.copy_(torch.from_numpy(principal_axes(L_axes, config["count_pcs"], random_state)))
        attach_projection(prep, net)
        if prep.graph_hops is not None:  # standardise the hop features on the spots trained on
            rows = prep.graph_hops if prep.train_spots is None else prep.graph_hops[prep.train_spots]
            std = rows.std(axis=0)
            with torch.no_grad():
                net.encoders["graph"].hop_mean.copy_(torch.from_numpy(rows.mean(axis=0).astype(np.float32)))
                net.encoders["graph"].hop_scale.copy_(torch.from_numpy(np.where(std > 0, std, 1.0).astype(np.float32)))
        spot_mask = _spot_mask(training.spot_mask, prep)
        record = train(
            net,
            prep,
            replace(training, spot_mask=spot_mask),
            device=device,
            gen=gen,
            loss=config["loss"],
            spatial_reg=config.get("spatial_reg", 0.0),
            seed=random_state,
            progress=progress,
        )
        record["spot_mask"] = spot_mask
        return net, config, record, prep


def _spot_mask(value: float | None, prep) -> float:
    """``spot_mask``, or by default the share of spots without any count in the training matrix."""
    if value is not None:
        return float(value)
    n_train = prep.n_obs if prep.train_spots is None else int(prep.train_spots.size)
    return float(min(0.9, 1.0 - n_train / max(1, prep.n_obs)))


def principal_axes(L: sparse.csr_matrix, n_components: int, random_state: int) -> np.ndarray:
    """Top right singular vectors of the ``log1p`` matrix (genes x components, float32), sign-fixed."""
    from sklearn.utils.extmath import randomized_svd

    k = int(min(n_components, min(L.shape) - 1))
    _, _, vt = randomized_svd(L.astype(np.float64), k, random_state=random_state)
    signs = np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])
    vt = vt * signs[:, None]
    axes = np.zeros((L.shape[1], n_components), dtype=np.float32)
    axes[:, :k] = vt.T
    return axes
