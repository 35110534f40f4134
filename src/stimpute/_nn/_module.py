"""The imputation network: per-modality encoders, a weighted-sum fusion and a gene decoder.

One class covers the four methods of :func:`stimpute.tl.impute`; a method is a choice of modalities:

``"autoencoder"``  counts only (the spot's own masked ``log1p`` counts)
``"positional"``   position only (Fourier and polynomial features of the normalised (x, y))
``"image"``        image features only (``obsm[image_key]``, standardised)
``"multimodal"``   all three; the count encoder also reads the mean ``log1p`` counts of the spot's
                   spatial neighbours, and a graph encoder (``graph_hops > 0``) reads the spot's
                   neighbourhood over several hops of the sparse spatial kNN graph

Each encoder maps its input to a latent vector of size ``latent_dim``; the latents are summed with
weights ``softmax(fusion_logits)`` (the lambda_1..3 of the reference design) and decoded, together with
the spot's standardised log library size, to one value per gene (``log1p`` counts for ``loss="mse"``,
the log of the rate for ``loss="nb"``/``"poisson"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .._constants import GRAPH_MODALITY, MODALITIES
from ._config import NETWORK_DEFAULTS

_D = NETWORK_DEFAULTS


def _mlp(sizes: Sequence[int], *, dropout: float = 0.0, last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class CountEncoder(nn.Module):
    """``[own masked log1p counts, neighbours' mean log1p counts] -> hidden -> latent``.

    With ``n_pcs > 0`` both inputs are first projected on fixed principal axes of the training
    ``log1p`` matrix (a buffer, saved with the weights): far fewer weights to fit, so the encoder
    does not memorise spots, and a much cheaper first layer.
    """

    def __init__(
        self,
        n_genes: int,
        hidden: Sequence[int],
        latent_dim: int,
        *,
        neighbours: bool,
        dropout: float,
        n_pcs: int,
        normalize: bool = False,
    ):
        super().__init__()
        h0 = hidden[0]
        self.n_pcs = int(n_pcs)
        self.normalize = bool(normalize)
        # total that every spot's (masked) counts are scaled to before log1p when `normalize`
        self.register_buffer("target_total", torch.ones(()))
        n_in = self.n_pcs if self.n_pcs > 0 else n_genes
        if self.n_pcs > 0:
            self.register_buffer("projection", torch.zeros(n_genes, self.n_pcs))
        self.own = nn.Linear(n_in, h0)
        self.neigh = nn.Linear(n_in, h0, bias=False) if neighbours else None
        self.rest = _mlp([h0, *hidden[1:], latent_dim], dropout=dropout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def read(self, counts: torch.Tensor) -> torch.Tensor:
        """The spot's own counts as the first layer reads them: scaled to a common total and projected, if so set."""
        if self.normalize:  # composition, not depth: scale the visible counts to a common total
            # exp/log rather than expm1/log1p: the inputs are log1p of whole counts (0 or >= log 2), where
            # both are exact enough, and torch's CPU expm1/log1p are not vectorised (~8x slower here)
            raw = torch.exp(counts) - 1.0
            total = raw.sum(dim=1, keepdim=True).clamp(min=1.0)
            counts = torch.log(1.0 + raw * (self.target_total / total))
        if self.n_pcs > 0:
            counts = counts @ self.projection
        return counts

    def forward(
        self,
        counts: torch.Tensor | None,
        neigh: torch.Tensor | None,
        neigh_proj: torch.Tensor | None = None,
        *,
        counts_read: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Latent vector of each spot; ``counts_read`` is ``read(counts)`` when computed beforehand (then ``counts`` is unused)."""
        counts = self.read(counts) if counts_read is None else counts_read
        if self.n_pcs > 0:
            neigh = neigh_proj if neigh_proj is not None else (None if neigh is None else neigh @ self.projection)
        h = self.own(counts)
        if self.neigh is not None:
            h = h + self.neigh(neigh)
        return self.rest(self.dropout(torch.relu(h)))


class GraphEncoder(nn.Module):
    """Multi-hop neighbourhood encoder over the sparse spatial kNN graph (SIGN-style graph network).

    Its input is ``[A P, A^2 P, ..., A^K P]``: the spots' depth-normalised ``log1p`` counts ``P`` projected on
    the count encoder's fixed principal axes, propagated ``K`` times over the row-normalised kNN graph ``A``
    of the spots with counts (no self loops: a spot's own counts reach it only through its neighbours).
    The propagation has no weights, so it is computed once, sparse, before training (nothing spot x spot is
    dense and minibatches are rows of an ``(n_obs, K * n_pcs)`` array); the network learns how to weigh and
    mix the hops. Hop features are standardised with constants fitted on the training section (buffers,
    saved with the weights), so another section is read on the same scale.
    """

    def __init__(self, n_pcs: int, n_hops: int, hidden: Sequence[int], latent_dim: int, *, dropout: float):
        super().__init__()
        n_in = int(n_pcs) * int(n_hops)
        self.n_hops = int(n_hops)
        self.register_buffer("hop_mean", torch.zeros(n_in))
        self.register_buffer("hop_scale", torch.ones(n_in))
        self.net = _mlp([n_in, *hidden, latent_dim], dropout=dropout)

    def forward(self, hops: torch.Tensor) -> torch.Tensor:
        """Latent vector of each spot from its hop features (rows of ``Prepared.graph_hops``)."""
        return self.net((hops - self.hop_mean) / self.hop_scale)


class ImputeNet(nn.Module):
    """Encoders for the chosen modalities, weighted-sum fusion, decoder to genes.

    Parameters
    ----------
    n_genes
        Number of genes (input and output size of the count path).
    modalities
        Subset of ``("counts", "position", "image")``.
    n_position_features, n_image_features
        Input sizes of the position and image encoders (0 when the modality is off).
    count_hidden, position_hidden, image_hidden, decoder_hidden
        Hidden layer widths.
    latent_dim
        Size of every modality's latent vector.
    neighbours
        Whether the count encoder also reads the neighbours' mean counts.
    library_size
        Whether the decoder also reads the spot's standardised log library size.
    neighbour_skip
        Add a per-gene linear term in the neighbours' values of the same gene to the output (needs
        ``neighbours``): the latent vector is shared by all genes, this path carries gene-specific
        spatial information past it.
    count_pcs
        Project the count inputs on this many fixed principal axes first (0: use all genes).
    normalize_counts
        Scale each spot's visible counts to a common total before ``log1p`` in the count encoder (the
        neighbour inputs are built the same way), so that it reads composition and depth enters only
        through the library size.
    detection
        Also output a detection logit per gene (``P(count > 0)``): the output then has ``2 * n_genes``
        columns, the value (``log1p`` given detection) first.
    dropout
        Dropout after hidden layers.
    graph_hops, graph_hidden
        Hops of the spatial graph read by the graph encoder (0: none; needs ``count_pcs > 0``) and its hidden
        widths. The graph encoder is fused as a modality of its own (``"graph"``), so a spot without counts
        keeps its neighbourhood.
    gene_offset
        Initial per-gene output bias (e.g. each gene's mean ``log1p`` non-zero value).
    """

    def __init__(
        self,
        n_genes: int,
        modalities: Sequence[str],
        *,
        n_position_features: int = 0,
        n_image_features: int = 0,
        count_hidden: Sequence[int] = _D["count_hidden"],
        position_hidden: Sequence[int] = _D["position_hidden"],
        image_hidden: Sequence[int] = _D["image_hidden"],
        decoder_hidden: Sequence[int] = _D["decoder_hidden"],
        latent_dim: int = _D["latent_dim"],
        neighbours: bool = _D["neighbours"],
        library_size: bool = _D["library_size"],
        neighbour_skip: bool = _D["neighbour_skip"],
        count_pcs: int = _D["count_pcs"],
        normalize_counts: bool = _D["normalize_counts"],
        detection: bool = _D["detection"],
        dropout: float = _D["dropout"],
        graph_hops: int = _D["graph_hops"],
        graph_hidden: Sequence[int] = _D["graph_hidden"],
        gene_offset: torch.Tensor | None = None,
    ):
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        if graph_hops > 0:
            if "counts" not in self.modalities or count_pcs <= 0:
                msg = "the graph encoder reads projected counts: it needs the 'counts' modality and `count_pcs > 0`."
                raise ValueError(msg)
            self.modalities = (*self.modalities, GRAPH_MODALITY)
        self.library_size = bool(library_size)
        self.encoders = nn.ModuleDict()
        if "counts" in self.modalities:
            self.encoders["counts"] = CountEncoder(
                n_genes,
                list(count_hidden),
                latent_dim,
                neighbours=neighbours,
                dropout=dropout,
                n_pcs=count_pcs,
                normalize=normalize_counts,
            )
        if "position" in self.modalities:
            self.encoders["position"] = _mlp([n_position_features, *position_hidden, latent_dim], dropout=dropout)
        if "image" in self.modalities:
            self.encoders["image"] = _mlp([n_image_features, *image_hidden, latent_dim], dropout=dropout)
        if GRAPH_MODALITY in self.modalities:
            self.encoders[GRAPH_MODALITY] = GraphEncoder(
                count_pcs, graph_hops, list(graph_hidden), latent_dim, dropout=dropout
            )
        self.latent_dim = int(latent_dim)
        # lambda_1..3 of the reference design: softmax of free logits, all equal at the start
        self.fusion_logits = nn.Parameter(torch.zeros(len(self.modalities)))
        dec_in = latent_dim + (1 if self.library_size else 0)
        self.decoder = _mlp([dec_in, *decoder_hidden], dropout=dropout) if decoder_hidden else nn.Identity()
        self.n_genes = int(n_genes)
        self.detection = bool(detection)
        n_out = n_genes * (2 if self.detection else 1)
        self.out = nn.Linear(decoder_hidden[-1] if decoder_hidden else dec_in, n_out)
        if gene_offset is not None:
            with torch.no_grad():
                self.out.bias[:n_genes].copy_(gene_offset)
        # log inverse dispersion per gene, used only by loss="nb"
        self.log_theta = nn.Parameter(torch.zeros(n_genes))
        self.neighbour_skip = bool(neighbour_skip and neighbours and "counts" in self.modalities)
        if self.neighbour_skip:
            # per gene: weights of the neighbours' shrunk mean non-zero value (as a deviation from the
            # gene mean) and of their detection rate; value head first, then the detection head
            self.skip_weight = nn.Parameter(torch.zeros(4 if self.detection else 2, n_genes))

    def skip(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The per-gene neighbour term added to the output."""
        f1, f2 = batch["neigh_estimate"], batch["neigh_detect"]
        value = self.skip_weight[0] * f1 + self.skip_weight[1] * f2
        if not self.detection:
            return value
        return torch.cat([value, self.skip_weight[2] * f1 + self.skip_weight[3] * f2], dim=1)

    def fusion_weights(self) -> torch.Tensor:
        """The weights lambda of the modalities, in the order of ``self.modalities``."""
        return torch.softmax(self.fusion_logits, dim=0)

    def forward(self, batch: Mapping[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        """Predict one value per gene for each spot of ``batch``.

        ``keep`` (training only) is a ``(n_spots, n_modalities)`` 0/1 mask of the modalities each spot
        may use (modality dropout); the weights of the kept modalities are renormalised to sum to 1.
        """
        return self.decode(self.latent(batch, keep), batch)

    def decode(self, z: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The output of :meth:`forward` from the fused latent ``z`` of the spots of ``batch`` (see :meth:`latent`)."""
        out = self.out(self._decoder_hidden(z, batch))
        if self.neighbour_skip:
            out = out + self.skip(batch)
        return out

    def values_at(
        self, h: torch.Tensor, rows: torch.Tensor, genes: torch.Tensor, skip: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The value output (first ``n_genes`` columns of :meth:`forward`) at the entries ``(rows, genes)`` only.

        ``h`` is :meth:`hidden` of the spots; ``skip`` holds ``neigh_estimate`` and ``neigh_detect`` at those
        entries (needed with ``neighbour_skip``). Equal to gathering from the full output up to float rounding,
        without computing the other entries.
        """
        out = (h[rows] * self.out.weight[genes]).sum(dim=1) + self.out.bias[genes]
        if self.neighbour_skip:
            out = (
                out
                + self.skip_weight[0, genes] * skip["neigh_estimate"]
                + self.skip_weight[1, genes] * skip["neigh_detect"]
            )
        return out

    def hidden(self, batch: Mapping[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's last hidden layer (the input of the output layer) for each spot of ``batch``.

        ``batch["counts_read"]``, when present, replaces ``batch["counts"]`` as the count encoder's input already
        read by :meth:`CountEncoder.read` (inputs that do not change between epochs, read once).
        """
        return self._decoder_hidden(self.latent(batch, keep), batch)

    def _decoder_hidden(self, z: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.library_size:
            z = torch.cat([z, batch["library"]], dim=1)
        return self.decoder(z)

    def latent(self, batch: Mapping[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        """The fused latent vector of each spot of ``batch`` (the weighted sum of the modalities' latents)."""
        weights = self.fusion_weights()[None, :]
        if keep is not None:
            weights = weights * keep
            weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-8)
        z = None
        for i, m in enumerate(self.modalities):
            if m == "counts":
                zm = self.encoders["counts"](
                    batch.get("counts"),
                    batch.get("neigh"),
                    batch.get("neigh_proj"),
                    counts_read=batch.get("counts_read"),
                )
            else:
                zm = self.encoders[m](batch[m])
            zm = weights[:, i : i + 1] * zm
            z = zm if z is None else z + zm
        return z


def build_net(config: dict) -> ImputeNet:
    """The (untrained) network described by ``config`` (a saved model's configuration)."""
    return ImputeNet(
        config["n_genes"],
        config["modalities"],
        n_position_features=config.get("n_position_features", 0),
        n_image_features=config.get("n_image_features", 0),
        count_hidden=config["count_hidden"],
        position_hidden=config["position_hidden"],
        image_hidden=config["image_hidden"],
        decoder_hidden=config["decoder_hidden"],
        latent_dim=config["latent_dim"],
        neighbours=config["neighbours"],
        library_size=config["library_size"],
        neighbour_skip=config.get("neighbour_skip", False),
        count_pcs=config.get("count_pcs", 0),
        normalize_counts=config.get("normalize_counts", False),
        detection=config.get("detection", False),
        dropout=config["dropout"],
        graph_hops=config.get("graph_hops", 0),
        graph_hidden=config.get("graph_hidden", _D["graph_hidden"]),
    )
