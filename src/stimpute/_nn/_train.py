"""Training loop: masked (denoising) minibatches, validation on held-back observed entries, early stopping."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ._config import TrainingOptions
from ._data import Prepared, batch, zero_holdout
from ._losses import elementwise_loss
from ._module import ImputeNet


def _zero_holdout(idx: np.ndarray, n_genes: int, val_fraction: float, seed: int, device: torch.device) -> torch.Tensor:
    """Fixed part of every spot's entries set aside to validate the zero targets."""
    return torch.from_numpy(zero_holdout(idx, n_genes, val_fraction, seed)).to(device)


def _masked_batch_loss(
    net: ImputeNet,
    prep: Prepared,
    idx: np.ndarray,
    device: torch.device,
    gen: torch.Generator,
    *,
    loss: str,
    mask_fraction: float,
    observed_weight: float,
    detection_weight: float,
    modality_dropout: float,
    val_fraction: float,
    seed: int,
    cache: torch.Tensor | None,
    graph,
    spatial_reg: float,
    spot_mask: float = 0.0,
) -> torch.Tensor:
    b = batch(prep, idx, device, source="fit")
    x = b["counts"]
    n_genes = x.shape[1]
    observed = x > 0
    needs_zeros = loss != "mse" or net.detection
    if needs_zeros:
        # one draw over all entries: the masked non-zero entries are hidden from the input, and the
        # masked entries (zeros included) are the targets of the count likelihoods and the detection head; the
        # boolean mask goes to the device, not the floats it is drawn from
        masked_all = (torch.rand(x.shape, generator=gen, device="cpu") < mask_fraction).to(device)
        masked = observed & masked_all
    else:  # only the observed entries need a draw
        masked = torch.zeros_like(observed)
        masked[observed] = (torch.rand(int(observed.sum()), generator=gen, device="cpu") < mask_fraction).to(device)
    whole = None
    if spot_mask > 0:
        # whole spots hidden from the input, as a spot without counts is at prediction (see `predict`)
        whole = (torch.rand(idx.size, generator=gen, device="cpu") < spot_mask).to(device)
        if whole.any():
            masked = masked | (observed & whole[:, None])
            # the library input becomes what it is for a spot without counts (see prepare); the neighbours'
            # inputs stay
            if prep.library_neighbours is not None:
                guess = torch.from_numpy(prep.library_neighbours[idx]).to(device)
                b["library"] = torch.where(whole[:, None], guess, b["library"])
            else:
                b["library"] = b["library"].masked_fill(whole[:, None], 0.0)
    b["counts"] = x.masked_fill(masked, 0.0)
    keep = None
    n_mod = len(net.modalities)
    if modality_dropout > 0 and n_mod > 1:
        # drop each modality of each spot with this probability, always keeping at least one
        keep = (torch.rand((idx.size, n_mod), generator=gen, device="cpu") >= modality_dropout).float()
        none = keep.sum(dim=1) == 0
        if none.any():
            pick = torch.randint(0, n_mod, (int(none.sum()),), generator=gen, device="cpu")
            keep[none.nonzero().ravel(), pick] = 1.0
        keep = keep.to(device)
    if whole is not None and whole.any():
        keep = without_counts(net, whole, keep)
    out = net(b, keep)
    value = out[:, :n_genes]
    sf = torch.from_numpy(prep.size_factor[idx]).to(device)
    per_entry = elementwise_loss(net, value, x, sf, loss)
    weight = masked.float()
    if observed_weight > 0:  # (skipped at 0, the default: adding zeros changes no value)
        weight = weight + observed_weight * (observed & ~masked).float()
    zero_targets = None
    if needs_zeros:
        # zeros are targets too, except validation entries and a fixed part of the validation spots' zeros
        is_val = torch.from_numpy(prep.L_val[idx].toarray() > 0).to(device)
        held = _zero_holdout(idx, n_genes, val_fraction, seed, device)
        held &= torch.from_numpy(np.isin(idx, prep.val_spots)).to(device)[:, None]
        zero_targets = (~observed) & masked_all & (~is_val) & (~held)
    if loss != "mse":
        weight = weight + zero_targets.float()
    total = (per_entry * weight).sum() / weight.sum().clamp(min=1.0)
    if net.detection:
        logits = out[:, n_genes:]
        w = masked.float() + zero_targets.float() + observed_weight * (observed & ~masked).float()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, observed.float(), reduction="none")
        total = total + detection_weight * (bce * w).sum() / w.sum().clamp(min=1.0)
    if spatial_reg > 0 and cache is not None:
        idx_t = torch.from_numpy(idx).to(device)
        # neighbours' mean cached prediction: a sparse (batch x spots) row block of the graph times the
        # cache, rather than gathering a (batch x k x genes) block
        rows = graph[idx].tocoo()
        block = torch.sparse_coo_tensor(
            torch.from_numpy(np.vstack([rows.row, rows.col]).astype(np.int64)),
            torch.from_numpy(rows.data.astype(np.float32)),
            size=rows.shape,
            device=device,
            check_invariants=False,  # built from a valid scipy matrix
        )
        target = torch.sparse.mm(block, cache)
        total = total + spatial_reg * ((out - target) ** 2).mean()
        cache[idx_t] = out.detach()
    return total


def without_counts(net: ImputeNet, no_counts: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor | None:
    """Modality mask that switches the count encoder off for the spots ``no_counts`` (when other modalities exist).

    A spot without counts has nothing for the count encoder to read: its latent comes from position and
    image only (the fusion weights renormalised over them); the per-gene neighbour path still applies.
    """
    if "counts" not in net.modalities or len(net.modalities) < 2:
        return keep
    if keep is None:
        keep = torch.ones((no_counts.shape[0], len(net.modalities)), device=no_counts.device)
    keep = keep.clone()
    keep[no_counts, net.modalities.index("counts")] = 0.0
    # a spot left with no modality (modality dropout) keeps all but the counts
    empty = keep.sum(dim=1) == 0
    if empty.any():
        keep[empty] = 1.0
        keep[empty, net.modalities.index("counts")] = 0.0
    return keep


@dataclass
class ValidationEntries:
    """One chunk of validation spots with every input that does not change between epochs, read once.

    For the squared error on the validation entries only (``loss="mse"`` without a detection head): the inputs
    of the spots (their own counts already read by the count encoder's fixed normalisation and axes, the
    neighbours' projected means, positions, image), and at each validation entry its spot (row in the chunk),
    gene, target and per-gene neighbour features. Scoring then computes the output at those entries only.
    """

    idx: np.ndarray
    inputs: dict[str, torch.Tensor]
    rows: torch.Tensor
    genes: torch.Tensor
    target: torch.Tensor
    skip: dict[str, torch.Tensor] | None
    dense_counts: bool  # the count encoder reads all genes (no principal axes): ``inputs`` rebuilt each epoch


@torch.inference_mode()
def validation_entries(net: ImputeNet, prep: Prepared, device: torch.device, chunk: int) -> list[ValidationEntries]:
    """The validation set of :func:`validation_loss` for ``loss="mse"`` without a detection head (see ``ValidationEntries``)."""
    enc = net.encoders["counts"] if "counts" in net.encoders else None
    sets = []
    for start in range(0, prep.val_spots.size, chunk):
        idx = prep.val_spots[start : start + chunk]
        b = batch(prep, idx, device, source="fit")
        entries = prep.L_val[idx].tocoo()
        rows = torch.from_numpy(entries.row.astype(np.int64)).to(device)
        genes = torch.from_numpy(entries.col.astype(np.int64)).to(device)
        features = {k: b.pop(k) for k in ("neigh_estimate", "neigh_detect") if k in b}
        skip = {k: v[rows, genes] for k, v in features.items()} if net.neighbour_skip else None
        counts = b.pop("counts")
        dense_counts = enc is not None and enc.n_pcs == 0
        if dense_counts:  # nothing kept but the entries: the spots' dense rows are rebuilt each epoch, as in training
            b = {}
        elif enc is not None:
            b["counts_read"] = enc.read(counts)
        target = torch.from_numpy(entries.data.astype(np.float32)).to(device)
        sets.append(ValidationEntries(idx, b, rows, genes, target, skip, dense_counts))
    return sets


@torch.inference_mode()
def _entries_loss(net: ImputeNet, prep: Prepared, sets: list[ValidationEntries], device: torch.device) -> float:
    """Mean squared error over the validation entries of ``sets``, computing the output at those entries only."""
    net.eval()
    value_sum, n = 0.0, 0
    for part in sets:
        inputs = batch(prep, part.idx, device, source="fit") if part.dense_counts else part.inputs
        value = net.values_at(net.hidden(inputs), part.rows, part.genes, part.skip)
        value_sum += float(((value - part.target) ** 2).sum())
        n += int(part.target.numel())
    return value_sum / n if n else float("nan")


@torch.inference_mode()
def validation_loss(
    net: ImputeNet,
    prep: Prepared,
    device: torch.device,
    *,
    loss: str,
    detection_weight: float,
    val_fraction: float,
    seed: int,
    chunk: int,
    entries: list[ValidationEntries] | None = None,
) -> float:
    """Loss on the validation entries, computed from their spots' other observed entries (nothing masked).

    The value loss covers the validation (observed non-zero) entries; count likelihoods and the
    detection head also score the fixed part of the zeros that training leaves out. With ``entries``
    (from :func:`validation_entries`; squared error without a detection head), the output is computed at the
    validation entries only, from inputs read once: the same loss up to float rounding, much cheaper.
    """
    if entries is not None:
        return _entries_loss(net, prep, entries, device)
    net.eval()
    value_sum, value_w, det_sum, det_w = 0.0, 0.0, 0.0, 0.0
    for start in range(0, prep.val_spots.size, chunk):
        idx = prep.val_spots[start : start + chunk]
        b = batch(prep, idx, device, source="fit")
        x = b["counts"]
        n_genes = x.shape[1]
        v = torch.from_numpy(prep.L_val[idx].toarray()).to(device)
        out = net(b)
        sf = torch.from_numpy(prep.size_factor[idx]).to(device)
        per_entry = elementwise_loss(net, out[:, :n_genes], v, sf, loss)
        w = (v > 0).float()
        zeros = None
        if loss != "mse" or net.detection:
            zeros = (x == 0) & (v == 0) & _zero_holdout(idx, n_genes, val_fraction, seed, device)
        if loss != "mse":
            w = w + zeros.float()
        value_sum += float((per_entry * w).sum())
        value_w += float(w.sum())
        if net.detection:
            wd = (v > 0).float() + zeros.float()
            bce = torch.nn.functional.binary_cross_entropy_with_logits(
                out[:, n_genes:], (v > 0).float(), reduction="none"
            )
            det_sum += float((bce * wd).sum())
            det_w += float(wd.sum())
    if value_w == 0:
        return float("nan")
    total = value_sum / value_w
    if net.detection and det_w > 0:
        total += detection_weight * det_sum / det_w
    return total


def train(
    net: ImputeNet,
    prep: Prepared,
    options: TrainingOptions,
    *,
    device: torch.device,
    gen: torch.Generator,
    loss: str,
    spatial_reg: float,
    seed: int,
    progress: bool,
) -> dict:
    """Train ``net`` in place and restore the weights of the epoch with the lowest validation loss.

    An epoch counts as an improvement when the validation loss drops by more than ``min_delta``
    (relative) below the best so far, and training stops after ``patience`` epochs without one. The
    learning rate is multiplied by ``lr_decay`` after ``patience // 3`` epochs without a drop of
    ``5 * min_delta``, so it decays as soon as progress slows down. ``None``: 1e-3 for ``"mse"`` and
    1e-4 for the count likelihoods, whose loss holds a large constant part (the entropy of the counts).

    Returns
    -------
    ``{"history": {"epoch", "train_loss", "val_loss"}, "best_epoch", "stopped_early", "train_time"}``.
    """
    start = time.perf_counter()
    max_epochs, batch_size, learning_rate = options.max_epochs, options.batch_size, options.learning_rate
    weight_decay, patience, lr_decay, min_delta = (
        options.weight_decay,
        options.patience,
        options.lr_decay,
        options.min_delta,
    )
    mask_fraction, observed_weight, val_fraction = options.mask_fraction, options.observed_weight, options.val_fraction
    detection_weight, modality_dropout = options.detection_weight, options.modality_dropout
    spot_mask = 0.0 if options.spot_mask is None else options.spot_mask
    if min_delta is None:
        min_delta = 1e-3 if loss == "mse" else 1e-4
    net.to(device)
    # foreach: one update over all parameters at once (bit-identical to the per-tensor loop, less overhead on CPU)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay, foreach=True)
    # multiply the learning rate by lr_decay after a third of `patience` epochs without improvement
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=lr_decay, patience=max(1, patience // 3), threshold=5 * min_delta, threshold_mode="rel"
        )
        if lr_decay < 1
        else None
    )
    n_obs = prep.n_obs
    # spots without counts are not trained on (see Prepared.train_spots); all spots when every one has counts
    train_spots = prep.train_spots if prep.train_spots is not None and prep.train_spots.size < n_obs else None
    n_train = n_obs if train_spots is None else int(train_spots.size)
    if n_train < 2:
        msg = f"Only {n_train} spot(s) of the training layer have counts; at least 2 are needed to train."
        raise ValueError(msg)
    has_val = prep.L_val.nnz > 0
    cache = None
    if spatial_reg > 0:
        # last prediction of every spot (n_obs x outputs, float32): the spatial regulariser pulls each spot
        # towards its neighbours' mean of these
        cache = net.out.bias.detach().clone()[None, :].repeat(n_obs, 1).to(device)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "val_loss": []}
    best_loss, best_epoch, best_state, bad = math.inf, 0, None, 0
    chunk = max(batch_size, 512)
    # the default loss scores the validation entries only: read their spots' fixed inputs once
    entries = validation_entries(net, prep, device, chunk) if has_val and loss == "mse" and not net.detection else None
    bar = tqdm(range(1, max_epochs + 1), disable=not progress, desc="training", unit="epoch", leave=False)
    stopped_early = False
    for epoch in bar:
        net.train()
        order = torch.randperm(n_train, generator=gen, device="cpu").numpy()
        if train_spots is not None:
            order = train_spots[order]
        running, n_batches = 0.0, 0
        for s in range(0, n_train, batch_size):
            idx = np.sort(order[s : s + batch_size])
            if idx.size < 2 and n_batches > 0:
                continue
            opt.zero_grad(set_to_none=True)
            value = _masked_batch_loss(
                net,
                prep,
                idx,
                device,
                gen,
                loss=loss,
                mask_fraction=mask_fraction,
                observed_weight=observed_weight,
                detection_weight=detection_weight,
                modality_dropout=modality_dropout,
                val_fraction=val_fraction,
                seed=seed,
                cache=cache,
                graph=prep.graph,
                spot_mask=spot_mask,
                spatial_reg=spatial_reg,
            )
            value.backward()
            opt.step()
            running += float(value.detach())
            n_batches += 1
        train_loss = running / max(1, n_batches)
        val = (
            validation_loss(
                net,
                prep,
                device,
                loss=loss,
                detection_weight=detection_weight,
                val_fraction=val_fraction,
                seed=seed,
                chunk=chunk,
                entries=entries,
            )
            if has_val
            else float("nan")
        )
        history["epoch"].append(epoch)
        history["train_loss"].append(float(train_loss))
        history["val_loss"].append(float(val))
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val:.4f}")
        if not np.isfinite(train_loss):
            msg = (
                f"Training diverged at epoch {epoch} (loss {train_loss}); lower `learning_rate` "
                f"(now {learning_rate}) or use `loss='mse'`."
            )
            raise FloatingPointError(msg)
        monitored = val if has_val else train_loss
        if scheduler is not None:
            scheduler.step(monitored)
        improved = not math.isfinite(best_loss) or monitored < best_loss - min_delta * abs(best_loss)
        if best_state is None or monitored < best_loss:  # keep the weights of the lowest loss
            best_loss, best_epoch = monitored, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        bad = 0 if improved else bad + 1  # patience counts epochs without a real improvement
        if has_val and bad >= patience:
            stopped_early = True
            break
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return {
        "history": history,
        "best_epoch": int(best_epoch),
        "stopped_early": stopped_early,
        "train_time": time.perf_counter() - start,
    }
