"""Spatial maps of the clusters of several layers side by side: ``st.pl.compare_clusters``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._constants import CLUSTERS_KEY, DEFAULT_COMPARED_LAYERS
from .._validate import check_adata, check_key_string, missing_obs_column
from ._utils import (
    NA_COLOR,
    category_colors,
    check_ax,
    check_ncols,
    check_save,
    draw_spots,
    finish,
    layer_label,
    make_axes,
    name_list,
    spatial_canvas,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["compare_clusters"]

_RECOMPUTE_PARAMS = (
    "method",
    "n_clusters",
    "resolution",
    "n_top_genes",
    "n_pcs",
    "n_neighbors",
    "random_state",
    "n_repeats",
    "library_key",
)


def compare_clusters(
    adata: AnnData,
    layers: Sequence[str | None] | None = None,
    *,
    key: str = CLUSTERS_KEY,
    labels_key: str | None = None,
    img_key: str | None = None,
    library_id: str | None = None,
    ncols: int = 4,
    spot_size: float | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | list[Axes] | None:
    """Spatial maps of the clusters of each layer over the tissue image, side by side.

    One panel per layer, titled with a short label of the layer (``"original counts"`` for ``X``,
    ``"training matrix"`` for ``holdout_train``, ``"multimodal, normalized"`` for
    ``imputed_multimodal_normalized``, ``"multimodal latent"`` for ``obsm['X_imputed_multimodal']``; other
    keys as they are) and its adjusted Rand index (ARI) (against the known
    labels when :func:`stimpute.tl.compare_clusters` was given ``labels_key``, otherwise against the
    reference layer), plus a panel of the known labels. Cluster ids are aligned across layers, so the
    same id has the same colour in every panel; each label is drawn in the colour of the reference
    cluster it overlaps most.

    The stored clusters ``adata.obs['{key}_{layer}']`` and scores ``adata.uns[key]`` are used as they
    are. When they are missing for a requested layer, :func:`stimpute.tl.compare_clusters` is run
    first (with the parameters stored in ``adata.uns[key]['params']`` if any, else its defaults), which
    writes its usual keys into ``adata``; the layers clustered before under ``key`` are clustered again
    with them (same settings, same results), so their stored clusters and scores are kept.

    Drawing part of the spots that were clustered (one section cut out of an object holding several,
    ``adata[adata.obs["library_id"] == lib]``), the titles give the scores of the spots drawn: that
    section's scores when :func:`stimpute.tl.compare_clusters` had ``library_key``, else those of the drawn
    spots' stored clusters (first seed).

    Parameters
    ----------
    adata
        Annotated data with ``adata.obsm['spatial']``.
    layers
        Layers to show; ``None`` takes the layers stored in ``adata.uns[key]['params']`` (or the
        defaults of :func:`stimpute.tl.compare_clusters` when nothing is stored).
    key
        The ``key_added`` of :func:`stimpute.tl.compare_clusters`.
    labels_key
        Column of ``adata.obs`` with known labels for an extra panel; ``None`` takes the one stored in
        ``adata.uns[key]['params']``, if any.
    img_key
        Image to draw under the spots (``"hires"``, ``"lowres"``...); ``None`` picks the highest
        resolution present. Without any image the spots are drawn alone.
    library_id
        Library of ``adata.uns['spatial']``; ``None`` picks the only one.
    ncols
        Number of panels per row.
    spot_size
        Spot diameter in full-resolution pixels; ``None`` uses ``spot_diameter_fullres``.
    ax
        An Axes (one panel) or a list of Axes (one per panel) to draw into.
    show
        Show the figure; ``None`` shows it when it was created here, ``return_fig`` is False and ``save`` is None.
    return_fig
        Return the :class:`~matplotlib.figure.Figure`.
    save
        Write the figure to this path (``fig.savefig(save, bbox_inches="tight")``); the suffix picks the format,
        any of matplotlib's: ``.png``, ``.pdf``, ``.svg``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``, ``.eps``,
        ``.ps``, ``.webp``, ``.pgf``, ``.svgz``, ``.raw``/``.rgba``. The figure is then not shown unless
        ``show=True``.

    Returns
    -------
    The figure with ``return_fig=True``; the Axes (a list for several panels) when not shown (``show=False``, or ``save`` without ``show=True``);
    else ``None``.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50)
    >>> st.pp.holdout(adata, fraction=0.5)
    >>> st.tl.compare_clusters(adata, ["X", "holdout_train"], n_clusters=4, labels_key="domain")
    >>> fig = st.pl.compare_clusters(adata, return_fig=True)
    >>> len(fig.axes)
    3
    >>> [ax.get_title().splitlines()[0] for ax in fig.axes]
    ['original counts', 'training matrix', 'domain']
    """
    from .. import tl

    check_adata(adata)
    check_save(save)
    key = check_key_string(key, name="key")
    ncols = check_ncols(ncols)
    canvas = spatial_canvas(adata, img_key=img_key, library_id=library_id, spot_size=spot_size)
    stored = adata.uns.get(key)
    params = dict(stored["params"]) if isinstance(stored, Mapping) and "params" in stored else {}
    if layers is None:
        layers = list(params["layers"]) if "layers" in params else list(DEFAULT_COMPARED_LAYERS)
    layers = name_list(layers, name="layers", what="layer", allow_none=True)
    layers = ["X" if layer is None else layer for layer in layers]
    stored_labels = str(params.get("labels_key", "none"))
    if labels_key is not None and labels_key not in adata.obs:
        raise missing_obs_column(adata, labels_key, name="labels_key")
    # the labels panel: `labels_key`, else the labels the clusters were scored against (as after a recompute)
    shows_labels = labels_key is not None or (stored_labels != "none" and stored_labels in adata.obs)
    check_ax(ax, len(layers) + shows_labels)  # before anything is (re)computed

    scores = stored.get("scores") if isinstance(stored, Mapping) else None
    missing = [
        layer
        for layer in layers
        if f"{key}_{layer}" not in adata.obs or not isinstance(scores, pd.DataFrame) or layer not in scores.index
    ]
    if missing:
        kwargs = {name: params[name] for name in _RECOMPUTE_PARAMS if name in params}
        if kwargs.get("n_clusters", -1) == -1:
            kwargs["n_clusters"] = None
        if kwargs.get("random_state", 0) == -1:
            kwargs["random_state"] = None
        if kwargs.get("library_key") == "none" or kwargs.get("library_key", "none") not in adata.obs:
            kwargs.pop("library_key", None)
        # the layers clustered before are clustered again with them (same settings, same results): a plot
        # must not drop earlier results
        earlier = [
            layer
            for layer in (params.get("layers", []) if isinstance(scores, pd.DataFrame) else [])
            if layer == "X" or layer in adata.layers
        ]
        union = list(dict.fromkeys([*earlier, *layers]))
        if params.get("reference") in union:
            kwargs["reference"] = params["reference"]
        lk = labels_key if labels_key is not None else (None if stored_labels == "none" else stored_labels)
        if lk is not None and lk in adata.obs:
            kwargs["labels_key"] = lk
        logg.info(f"clusters of {missing} not found under key {key!r}: running `st.tl.compare_clusters` first")
        tl.compare_clusters(adata, union, key_added=key, **kwargs)
        params = dict(adata.uns[key]["params"])
        scores = adata.uns[key]["scores"]
        stored_labels = str(params["labels_key"])

    reference = str(params.get("reference", layers[0]))
    if labels_key is None and stored_labels != "none" and stored_labels in adata.obs:
        labels_key = stored_labels
    scored_labels = stored_labels != "none" and stored_labels == labels_key
    note = ""
    from ..tl._clusters import obs_names_digest

    other_spots = ("n_obs" in params and int(params["n_obs"]) != adata.n_obs) or (
        "obs_names_sha1" in params and str(params["obs_names_sha1"]) != obs_names_digest(adata)
    )
    if other_spots:  # e.g. one section of the spots that were clustered
        scores, note = _drawn_scores(adata, stored, params, key=key, layers=layers, reference=reference)

    # colours: the same cluster id has the same colour in every panel ("0" -> colour 0, ...);
    # each label takes the colour of the reference cluster it matches
    clusters = {layer: adata.obs[f"{key}_{layer}"].astype(str) for layer in layers}
    names = sorted({c for col in clusters.values() for c in col.unique()}, key=_id_order)
    colour_of = {name: i for i, name in enumerate(names)}
    label_ids: dict[str, int] = {}
    if labels_key is not None:
        ref_col = f"{key}_{reference}"
        ref = adata.obs[ref_col].astype(str) if ref_col in adata.obs else clusters[layers[0]]
        codes = ref.map(colour_of).fillna(-1).astype(int).to_numpy()  # a stored reference outside `layers`
        label_ids = _match_labels(adata.obs[labels_key], codes, n_ref=len(names))
    palette = category_colors(max([len(names), *(i + 1 for i in label_ids.values())]))

    n_panels = len(layers) + (labels_key is not None)
    fig, axes, created = make_axes(n_panels, ncols=ncols, ax=ax)
    explained = False  # "ARI" is spelled out once, in the first panel that gives one
    for a, layer in zip(axes, layers, strict=False):
        col = clusters[layer]
        draw_spots(a, canvas, colors=[palette[colour_of[c]] for c in col.to_numpy()])
        title = _title(layer, scores, reference, labels_key if scored_labels else None, note)
        if not explained and "ARI " in title:
            title += "\n(ARI: adjusted Rand index)"
            explained = True
        a.set_title(title)
        _legend(a, [(c, palette[colour_of[c]]) for c in names if (col == c).any()])
    if labels_key is not None:
        a = axes[-1]
        lab = adata.obs[labels_key]
        cats = [
            str(c)
            for c in (lab.cat.categories if isinstance(lab.dtype, pd.CategoricalDtype) else pd.unique(lab.dropna()))
        ]
        lookup = {c: palette[label_ids[c]] for c in cats}
        colors = [NA_COLOR if pd.isna(v) else lookup[str(v)] for v in lab.to_numpy()]
        draw_spots(a, canvas, colors=colors)
        a.set_title(f"{labels_key}\n(known labels)")
        entries = [(c, lookup[c]) for c in cats if (lab.astype(str) == c).any()]
        if lab.isna().any():
            entries.append(("NA", NA_COLOR))
        _legend(a, entries)
    return finish(fig, axes, show=show, return_fig=return_fig, created=created, save=save)


def _drawn_scores(
    adata: AnnData, stored: Mapping, params: Mapping, *, key: str, layers: list[str], reference: str
) -> tuple[pd.DataFrame, str]:
    """Scores of the spots drawn, when they are part of the spots clustered (one section cut out of several).

    The section's own scores of ``tl.compare_clusters(..., library_key=)`` when every drawn spot is of one
    section; else the scores of the drawn spots' stored clusters (the first seed), computed here.
    """
    from ..tl._clustering import agreement

    library_key = str(params.get("library_key", "none"))
    by_library = stored.get("scores_by_library")
    if library_key in adata.obs and isinstance(by_library, pd.DataFrame):
        libs = adata.obs[library_key].astype(str).unique()
        if len(libs) == 1:
            rows = by_library[by_library["library"].astype(str) == libs[0]].set_index("layer")
            # the whole section only: a part of it (e.g. one domain) is scored below
            if set(layers) <= set(rows.index) and (rows["n_spots"] == adata.n_obs).all():
                return rows, f"section {libs[0]}"
    labels_key = str(params.get("labels_key", "none"))
    labels = known = None
    if labels_key in adata.obs:
        known = adata.obs[labels_key].notna().to_numpy()
        labels = adata.obs[labels_key].astype(str).to_numpy().astype(object)
    ref_col = f"{key}_{reference}"
    ref = adata.obs[ref_col].astype(str).to_numpy() if ref_col in adata.obs else None
    rows = {}
    for layer in layers:
        pred = adata.obs[f"{key}_{layer}"].astype(str).to_numpy()
        rows[layer] = agreement(pred if ref is None else ref, pred, labels, known)
    return pd.DataFrame.from_dict(rows, orient="index"), f"{adata.n_obs:,} spots drawn"


def _title(layer: str, scores: pd.DataFrame, reference: str, labels_key: str | None, note: str = "") -> str:
    row = scores.loc[layer]

    def ari(col: str) -> str:
        # with n_repeats > 1 the score is a mean over clustering seeds (the map shows the first seed)
        sd = row.get(f"{col}_sd", np.nan)
        if np.isfinite(sd):
            return f"ARI {row[col]:.2f} ± {sd:.2f} (mean" + (f", {note})" if note else ")")
        return f"ARI {row[col]:.2f}" + (f" ({note})" if note else "")

    label = layer_label(layer)
    if labels_key is not None and np.isfinite(row["ari_labels"]):
        return f"{label}\n{ari('ari_labels')} vs {labels_key}"
    if layer == reference:
        return f"{label}\n(reference)"
    return f"{label}\n{ari('ari_reference')} vs {layer_label(reference)}"


def _id_order(name: str) -> tuple[int, int, str]:
    """Cluster names in numeric order when they are integers ("2" before "10"), others after."""
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def _match_labels(labels: pd.Series, ref: np.ndarray, *, n_ref: int) -> dict[str, int]:
    """Colour id of every label: the reference cluster it matches (Hungarian), or a new id from ``n_ref``."""
    from scipy.optimize import linear_sum_assignment

    if isinstance(labels.dtype, pd.CategoricalDtype):
        names = [str(c) for c in labels.cat.categories]
    else:  # every label shown gets an id, also those only on spots without a reference cluster
        names = sorted(set(labels.dropna().astype(str)))
    keep = labels.notna().to_numpy() & (ref >= 0)
    lab = labels.astype(str).to_numpy()[keep]
    cl = ref[keep]
    if not names:
        return {}
    index = {n: i for i, n in enumerate(names)}
    table = np.zeros((len(names), max(n_ref, 1)), dtype=np.int64)
    np.add.at(table, (np.array([index[v] for v in lab], dtype=np.int64), cl), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    ids = {names[r]: int(c) for r, c in zip(rows, cols, strict=True) if table[r, c] > 0}
    free = n_ref
    for name in names:
        if name not in ids:
            ids[name] = free
            free += 1
    return ids


def _legend(ax: Axes, entries: list[tuple[str, str]]) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=color, label=name, markersize=7) for name, color in entries
    ]
    ax.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
        handletextpad=0.2,
        borderaxespad=0.2,
        ncols=1 if len(handles) <= 14 else 2,
    )
