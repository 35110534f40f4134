"""Benchmark of ``st.tl.impute`` on the two labelled DLPFC sections (issue 4).

For each section: hide 50% of the non-zero entries (``st.pp.holdout(strategy="entries")``), impute the
training layer with every method (defaults), score the hidden entries with ``st.tl.evaluate`` and
cluster every matrix (``st.tl.compare_clusters``, Leiden tuned to 7 clusters and k-means with 7
clusters) against the manual layer labels (adjusted Rand index). Adds the ablations of the fused
model, the loss/readout variants that chose the defaults, and a CPU timing of the default
multimodal model next to MAGIC on the same data.

Run from the repository root (it takes about an hour on 2 busy CPU cores)::

    python benchmarks/impute_dlpfc.py                        # everything, writes benchmarks/results/impute_dlpfc.{md,csv}
    python benchmarks/impute_dlpfc.py --stage sections --sections 151673 &   # or: the sections in parallel,
    python benchmarks/impute_dlpfc.py --stage sections --sections 151674 &   # then the timing, then the report
    python benchmarks/impute_dlpfc.py --stage timing && python benchmarks/impute_dlpfc.py --stage report

The data are read from ``$STIMPUTE_DATA`` or ``../shared/data`` (``dlpfc_1516xx/adata.h5ad``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import stimpute as st

REPO = Path(__file__).resolve().parents[1]
REFERENCE_RAW_RMSE = {"autoencoder": 8.74, "positional": 4.42, "image": 4.35, "multimodal": 8.40}
N_CLUSTERS = 7
SMOOTHED_TRAIN = "smoothed train (self + 6 nearest)"
# the same smoothing of the complete matrix X (hidden entries included): a reference for the clustering columns only
SMOOTHED_X = "smoothed X (self + 6 nearest; complete data)"
SMOOTH_SUFFIX = ", smoothed (self + 6 nearest)"
EXTRA_SEEDS = (1, 2, 3, 4)  # training seeds of the fused model besides the default 0 (for the ARI spread)
CLUSTER_SEEDS = (0, 1, 2, 3, 4)  # consecutive clustering seeds averaged for the rows every cluster claim rests on


def data_dir() -> Path:
    env = os.environ.get("STIMPUTE_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------
# clustering: st.tl.compare_clusters, Leiden tuned to 7 clusters and k-means


def cluster_scores(adata: ad.AnnData, layers: list[str], key_layers: list[str]) -> pd.DataFrame:
    """ARI against the manual layers: clustering seed 0 for every layer, all of CLUSTER_SEEDS for ``key_layers``.

    The Leiden ARI of one matrix moves by up to 0.2 between clustering seeds on these sections
    (`cluster_seeds.md`), so every cluster claim compares the key layers' means over CLUSTER_SEEDS (with their
    standard deviation, minimum and maximum, from `uns[key]['repeats']`). Seed 0 of the key layers is taken from
    those repeats, not clustered twice.
    """
    others = [k for k in layers if k not in key_layers]
    out = pd.DataFrame(index=list(layers))
    for method in ("leiden", "kmeans"):
        per_seed = []
        for subset, n_repeats in ((others, 1), (key_layers, len(CLUSTER_SEEDS))):
            if not subset:
                continue
            key = f"clusters_{method}" + ("_repeats" if n_repeats > 1 else "")
            st.tl.compare_clusters(
                adata,
                subset,
                labels_key="label",
                n_clusters=N_CLUSTERS,
                method=method,
                random_state=CLUSTER_SEEDS[0],
                n_repeats=n_repeats,
                key_added=key,
            )
            per_seed.append(adata.uns[key]["repeats"])
        rep = pd.concat(per_seed, ignore_index=True)
        first = rep[rep["seed"] == CLUSTER_SEEDS[0]].set_index("layer")["ari_labels"]
        out[f"ari_{method}"] = first.reindex(out.index)
        keyed = rep[rep["layer"].isin(key_layers)].groupby("layer", sort=False)["ari_labels"]
        for stat, values in (
            ("mean", keyed.mean()),
            ("sd", keyed.std(ddof=1)),
            ("min", keyed.min()),
            ("max", keyed.max()),
        ):
            out[f"ari_{method}_{stat}"] = values.reindex(out.index)
    return out


# --------------------------------------------------------------------------------------------------


def run_section(section: str, *, quick: bool, n_genes: int | None = None, max_epochs: int | None = None):
    path = data_dir() / f"dlpfc_{section}" / "adata.h5ad"
    adata = ad.read_h5ad(path)
    if n_genes:  # smoke runs of this script only
        adata = adata[:, :n_genes].copy()
    log(f"{section}: {adata.n_obs} spots x {adata.n_vars} genes")
    st.pp.holdout(adata, fraction=0.5, strategy="entries", random_state=0)
    st.pp.image_features(adata, key_added="X_image")
    info: dict = {"section": section, "n_obs": adata.n_obs, "n_vars": adata.n_vars}

    # plain spatial smoothing of the training matrix: each spot = mean of itself and its 6 nearest spots
    st.pp.spatial_smooth(adata, "holdout_train", n_neighbors=6, key_added=SMOOTHED_TRAIN)
    # ... and of the complete matrix (it has seen the hidden entries: clustered, never scored on them)
    st.pp.spatial_smooth(adata, None, n_neighbors=6, key_added=SMOOTHED_X)

    rows: dict[str, dict] = {}  # layer -> description
    readouts: dict[str, str] = {}  # normalized readout layer of each method

    def add(key: str, **kw):
        t = time.perf_counter()
        if max_epochs and kw.get("method") != "knn":
            kw["max_epochs"] = max_epochs
        model = st.tl.impute(adata, layer="holdout_train", key_added=key, return_model=kw.pop("model", False), **kw)
        uns = adata.uns[key]
        rows[key] = {
            "wall_time_s": round(time.perf_counter() - t, 1),
            "best_epoch": int(uns["best_epoch"]),
            "epochs": len(uns["history"]["epoch"]),
            "fusion_weights": ", ".join(f"{m}={w:.2f}" for m, w in uns["fusion_weights"].items()),
        }
        log(f"  {key}: {rows[key]}")
        return model

    # the five methods with their defaults (conditional readout), plus their normalized readout
    add("knn", method="knn")
    add("knn, output=normalized", method="knn", output="normalized")
    add("knn, n_neighbors=6, shrinkage=0 (plain definition)", method="knn", n_neighbors=6, shrinkage=0.0)
    mm_model = None
    for method in ("autoencoder", "positional", "image", "multimodal"):
        model = add(method, method=method, model=True)
        key = f"{method}, output=normalized"
        model.predict(adata, layer="holdout_train", key_added=key, output="normalized")
        rows[key] = dict(rows[method])
        if method == "multimodal":
            mm_model = model
    # observed values kept or not (same model, no retraining)
    for output, keep in (("conditional", False), ("normalized", True)):
        key = f"multimodal, output={output}, keep_observed={keep}"
        mm_model.predict(adata, layer="holdout_train", key_added=key, output=output, keep_observed=keep)
        rows[key] = dict(rows["multimodal"])
    # ablations: one modality left out
    for left_out in ("counts", "position", "image"):
        mods = tuple(m for m in ("counts", "position", "image") if m != left_out)
        model = add(f"multimodal without {left_out}", method="multimodal", modalities=mods, model=True)
        key = f"multimodal without {left_out}, output=normalized"
        model.predict(adata, layer="holdout_train", key_added=key, output="normalized")
        rows[key] = dict(rows[f"multimodal without {left_out}"])
    if not quick:
        # the loss, chosen by measurement: the count likelihoods
        for loss in ("nb", "poisson"):
            model = add(f"multimodal, loss={loss}", method="multimodal", loss=loss, model=True)
            for output in ("expected", "normalized"):
                key = f"multimodal, loss={loss}, output={output}"
                model.predict(adata, layer="holdout_train", key_added=key, output=output)
                rows[key] = dict(rows[f"multimodal, loss={loss}"])
        # design choices of the fused model, one at a time (each with its normalized readout too)
        for label, kw in (
            ("modality_dropout=0.3", {"modality_dropout": 0.3}),
            ("normalize_counts=False", {"normalize_counts": False}),
            ("neighbour_skip=False", {"neighbour_skip": False}),
            ("n_neighbors=6", {"n_neighbors": 6}),
            ("learning_rate=1e-3, lr_decay=1 (no decay)", {"learning_rate": 1e-3, "lr_decay": 1.0}),
            ("spatial_reg=1", {"spatial_reg": 1.0}),
            *((f"random_state={seed}", {"random_state": seed}) for seed in EXTRA_SEEDS),
        ):
            name = f"multimodal, {label}"
            model = add(name, method="multimodal", model=True, **kw)
            model.predict(adata, layer="holdout_train", key_added=f"{name}, output=normalized", output="normalized")
            rows[f"{name}, output=normalized"] = dict(rows[name])
        # the reference design of the fused model: all genes into the count encoder, no neighbours
        add(
            "multimodal, reference-like (all genes in, no neighbours)",
            method="multimodal",
            count_pcs=0,
            neighbours=False,
            modality_dropout=0.0,
        )
        add("autoencoder, spatial_reg=1", method="autoencoder", spatial_reg=1.0)

    # the clustering recipe: each normalized readout smoothed exactly like the training-matrix baseline
    for key in [k for k in rows if k.endswith("output=normalized") and not k.startswith("knn")]:
        st.pp.spatial_smooth(adata, key, n_neighbors=6, key_added=f"{key}{SMOOTH_SUFFIX}")
        rows[f"{key}{SMOOTH_SUFFIX}"] = dict(rows[key])
    imputed = list(rows)
    scores = st.tl.evaluate(adata, imputed + [SMOOTHED_TRAIN])
    cluster_layers = ["X", "holdout_train", SMOOTHED_TRAIN, SMOOTHED_X, *imputed]
    key_layers = ["X", "holdout_train", SMOOTHED_TRAIN, SMOOTHED_X, "multimodal", *seed_rows(False), *seed_rows(True)]
    key_layers += [f"positional, output=normalized{sfx}" for sfx in ("", SMOOTH_SUFFIX)]
    key_layers = [k for k in dict.fromkeys(key_layers) if k in cluster_layers]
    log(
        f"  clustering {len(cluster_layers)} layers, {len(key_layers)} of them with {len(CLUSTER_SEEDS)} clustering "
        "seeds"
    )
    clusters = cluster_scores(adata, cluster_layers, key_layers)
    table = scores.join(clusters, how="outer")
    for key, extra in rows.items():
        for col, val in extra.items():
            table.loc[key, col] = val
    order = ["X", "holdout_train", SMOOTHED_TRAIN, SMOOTHED_X, "baseline: gene mean", "baseline: train as is"]
    order += [k for k in rows if k not in order]
    table = table.loc[[k for k in order if k in table.index]]
    table.index.name = "layer"
    table.insert(0, "section", section)
    info["readouts"] = readouts
    return table, info


def time_vs_magic(section: str, threads: int, repeats: int = 5) -> dict:
    """Wall time of the default multimodal model and of ``scanpy.external.pp.magic`` (defaults) on the same
    training matrix, alternated ``repeats`` times in one process; the fastest run of each is reported, with every
    run and the ratio of each pair of runs (the spread on a shared machine)."""
    import scanpy as sc
    import torch

    torch.set_num_threads(threads)
    adata = ad.read_h5ad(data_dir() / f"dlpfc_{section}" / "adata.h5ad")
    st.pp.holdout(adata, fraction=0.5, strategy="entries", random_state=0)
    t = time.perf_counter()
    st.pp.image_features(adata, key_added="X_image")
    t_image = time.perf_counter() - t
    try:
        import magic  # noqa: F401

        has_magic = True
    except ImportError:
        has_magic = False
    t_impute, t_magic = [], []
    for _ in range(repeats):
        if has_magic:
            bdata = ad.AnnData(adata.layers["holdout_train"].astype(np.float32))
            t = time.perf_counter()
            sc.external.pp.magic(bdata, n_jobs=threads, random_state=0)
            t_magic.append(time.perf_counter() - t)
        t = time.perf_counter()
        st.tl.impute(adata, method="multimodal", layer="holdout_train", progress=False)
        t_impute.append(time.perf_counter() - t)
    out = {
        "section": section,
        "torch_threads": threads,
        "image_features_s": round(t_image, 1),
        "impute_multimodal_s": round(min(t_impute), 1),
        "impute_runs_s": " / ".join(f"{v:.1f}" for v in t_impute),
        "epochs": len(adata.uns["imputed_multimodal"]["history"]["epoch"]),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if has_magic:
        out["magic_s"] = round(min(t_magic), 1)
        out["magic_runs_s"] = " / ".join(f"{v:.1f}" for v in t_magic)
        out["ratio_impute_to_magic"] = round(min(t_impute) / min(t_magic), 2)
        out["ratio_runs"] = " / ".join(f"{a / b:.1f}" for a, b in zip(t_impute, t_magic, strict=True))
    else:
        out["magic_s"] = "magic-impute not installed"
    return out


# --------------------------------------------------------------------------------------------------


def to_markdown(table: pd.DataFrame, timing: dict | None, total_s: float) -> str:
    cols = [
        "rmse_log1p",
        "pearson_log1p",
        "median_gene_pearson",
        "rmse_raw",
        "ari_leiden",
        "ari_kmeans",
        "ari_leiden_mean",
        "ari_kmeans_mean",
        "wall_time_s",
        "best_epoch",
        "fusion_weights",
    ]
    cols = [c for c in cols if c in table.columns]
    lines = [
        "# stimpute imputation benchmark on DLPFC (issue 4)",
        "",
        "Generated by `benchmarks/impute_dlpfc.py`. Protocol: `st.pp.holdout(fraction=0.5, strategy='entries', "
        "random_state=0)`; every method trains on `layers['holdout_train']` with its defaults; `st.tl.evaluate` scores "
        "the hidden entries; `st.tl.compare_clusters(..., labels_key='label', n_clusters=7)` clusters each matrix "
        "(normalize_total, log1p, HVG, PCA 30; Leiden tuned to 7 clusters, and k-means) and reports the adjusted Rand "
        "index against the manual layers. Image features: `st.pp.image_features` (handcrafted, lowres image). "
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs; "
        f"torch {__import__('torch').__version__}; quality runs with 1 torch thread; runtime of the quality runs "
        f"{total_s / 60:.0f} min (sum over sections).",
        "",
    ]
    lines += [
        "How to read the rows: `<method>` is the layer `st.tl.impute` writes by default "
        "(`output='conditional'`: the expected count given detection at the spot's own depth, observed values kept); "
        "`<method>, output=normalized` is the same trained model read out at the median depth without the observed "
        "values (`model.predict(adata, output='normalized')`), the readout meant for clustering. Holdout scores of a "
        "normalized readout are not comparable (it is not at the spot's depth) and are shown only for completeness. "
        "`multimodal without <m>` is the ablation `modalities=` without that modality; the other `multimodal, ...` rows "
        "change one default each. `smoothed train` is the training matrix with each spot replaced by the mean of itself "
        "and its 6 nearest spots (`st.pp.spatial_smooth(adata, 'holdout_train')`); `<readout>, smoothed (self + 6 "
        "nearest)` is a normalized readout smoothed the same way, the clustering recipe of the tutorials (the "
        "readout's holdout scores are again not comparable). `smoothed X` is the complete matrix `X`, hidden entries "
        "included, smoothed the same way: not a competitor (it has seen what the others must impute) but a reference "
        "for the cluster columns, the ARI that smoothing reaches without any holdout. `rmse_raw` is the reference thesis's number (raw counts); ARI columns compare clusters "
        "of each matrix with `obs['label']` (7 manual layers). `wall_time_s` is per model with one torch thread on a "
        "shared 2-core machine (noisy); see the MAGIC table for the timing target.",
        "",
    ]
    lines += ["## Summary (computed from the tables below)", "", *summary_lines(table), ""]
    checks = target_checks(table)
    wide = checks.pivot(index="target", columns="section", values="met").loc[checks["target"].unique()]
    lines += [
        "## Targets of the issue (True = met)",
        "",
        "On this one holdout draw (`random_state=0`). Which entries are hidden is random too, and the bar's Leiden ARI "
        "on 151673 is the highest of five draws here (0.454 against 0.362-0.402 for draws 1-4): the cluster targets "
        "over five draws are in `holdout_draws_dlpfc.md` (`benchmarks/holdout_draws_dlpfc.py`).",
        "",
        _md(wide),
        "",
    ]
    seeded = [f"ari_{m}_{stat}" for m in ("leiden", "kmeans") for stat in ("mean", "sd", "min", "max")]
    seeded = [c for c in seeded if c in table.columns]
    if seeded:
        lines += [
            f"## Clusters over {len(CLUSTER_SEEDS)} clustering seeds",
            "",
            f"ARI against the manual layers, mean, standard deviation, minimum and maximum over clustering seeds "
            f"{list(CLUSTER_SEEDS)} "
            "(`st.tl.compare_clusters(random_state=...)`: PCA, Leiden and k-means seeds). The per-section tables "
            "below use seed 0 only; one clustering seed is not enough to rank matrices here.",
            "",
        ]
        for section, sub in table.groupby("section", sort=False):
            lines += [f"### {section}", "", _md(sub.loc[sub["ari_leiden_mean"].notna(), seeded]), ""]
    for section, sub in table.groupby("section", sort=False):
        lines += [f"## Section {section}", "", _md(sub[cols]), ""]
    if timing:
        lines += [
            "## CPU time against MAGIC",
            "",
            _md(pd.DataFrame([timing]).set_index("section")),
            "",
        ]
    lines += [
        "## Reference raw-count RMSE (MSc thesis, its own data)",
        "",
        "| method | reference rmse_raw | stimpute rmse_raw (" + ", ".join(table["section"].unique()) + ") |",
        "|---|---|---|",
    ]
    for method, ref in REFERENCE_RAW_RMSE.items():
        ours = ", ".join(f"{v:.2f}" for v in table.loc[table.index == method, "rmse_raw"])
        lines.append(f"| {method} | {ref} | {ours} |")
    floor = ", ".join(f"{v:.2f}" for v in table.loc[table.index == "baseline: gene mean", "rmse_raw"])
    lines += [
        "",
        "The thesis scored another Visium section with its own gene set, so only the order of magnitude compares: "
        f"here the per-gene-mean floor alone already has rmse_raw {floor}. stimpute's networks predict `log1p` "
        "values (the loss is on `log1p`), so raw-count RMSE, dominated by a few highly expressed genes, is not what "
        "they optimise; predictions are capped at each gene's largest observed count.",
        "",
    ]
    return "\n".join(lines)


def seed_rows(smoothed: bool = False) -> list[str]:
    """The fused model's normalized readout (optionally smoothed) for every training seed."""
    suffix = SMOOTH_SUFFIX if smoothed else ""
    names = ["multimodal, output=normalized"]
    names += [f"multimodal, random_state={seed}, output=normalized" for seed in EXTRA_SEEDS]
    return [n + suffix for n in names]


def seed_mean(t: pd.DataFrame, col: str, smoothed: bool = False) -> float:
    """Mean over the training seeds of the fused model's normalized readout."""
    rows = [r for r in seed_rows(smoothed) if r in t.index]
    return float(t.loc[rows, col].mean()) if rows else float("nan")


def summary_lines(table: pd.DataFrame) -> list[str]:
    """Per section: the fused model's margin, what each modality adds, and the cluster maps."""
    out = []
    for section, t in table.groupby("section", sort=False):
        r = t["rmse_log1p"]
        singles = ["autoencoder", "positional", "image", "knn"]
        best = min(singles, key=lambda m: r[m])
        out.append(
            f"- {section}: multimodal rmse_log1p {r['multimodal']:.4f} (Pearson {t.loc['multimodal', 'pearson_log1p']:.4f}); "
            f"best single method {best} {r[best]:.4f}; gene-mean floor {r['baseline: gene mean']:.4f}. "
            "Leaving a modality out changes rmse_log1p by "
            + ", ".join(
                f"{m} {r[f'multimodal without {m}'] - r['multimodal']:+.4f}" for m in ("counts", "position", "image")
            )
            + " (positive = the modality helps)."
        )
        nc = len(CLUSTER_SEEDS)

        def pair(row, t=t):
            return f"{t.loc[row, 'ari_leiden_mean']:.3f}/{t.loc[row, 'ari_kmeans_mean']:.3f}"

        def per_seed(smoothed, t=t):
            return ", ".join(pair(r) for r in seed_rows(smoothed) if r in t.index)

        def wins(smoothed, t=t):
            rows = [r for r in seed_rows(smoothed) if r in t.index]
            count = [
                sum(t.loc[r, c] > t.loc[SMOOTHED_TRAIN, c] for r in rows)
                for c in ("ari_leiden_mean", "ari_kmeans_mean")
            ]
            return f"{count[0]}/{count[1]} of {len(rows)}"

        def both(smoothed, t=t):
            return f"{seed_mean(t, 'ari_leiden_mean', smoothed):.3f}/{seed_mean(t, 'ari_kmeans_mean', smoothed):.3f}"

        out.append(
            f"- {section}: ARI (Leiden/k-means; each matrix's mean over {nc} clustering seeds) X {pair('X')}, "
            f"training matrix {pair('holdout_train')}, smoothed training matrix {pair(SMOOTHED_TRAIN)}, the complete matrix X "
            f"smoothed alike (a reference that has seen the hidden entries) {pair(SMOOTHED_X)}, multimodal default layer {pair('multimodal')}; multimodal normalized readout {both(False)} (mean over "
            f"{1 + len(EXTRA_SEEDS)} training seeds: {per_seed(False)}); the same readouts smoothed like the training "
            f"matrix {both(True)} ({per_seed(True)}). Training seeds whose readout beats the smoothed training "
            f"matrix (Leiden/k-means): normalized {wins(False)}, smoothed {wins(True)}."
        )
    return out


def target_checks(table: pd.DataFrame) -> pd.DataFrame:
    """The issue's quality targets, checked per section (True = met)."""
    checks = []
    singles = ["autoencoder", "positional", "image", "knn"]
    for section, t in table.groupby("section", sort=False):

        def val(row, col, t=t):
            return float(t.loc[row, col]) if row in t.index and col in t.columns else float("nan")

        floor = "baseline: gene mean"
        for m in ("autoencoder", "positional", "image", "multimodal"):
            checks.append(
                (
                    section,
                    f"{m} beats the gene-mean floor (rmse_log1p, pearson_log1p)",
                    val(m, "rmse_log1p") < val(floor, "rmse_log1p")
                    and val(m, "pearson_log1p") > val(floor, "pearson_log1p"),
                )
            )
        for m in singles:
            checks.append(
                (
                    section,
                    f"multimodal beats {m} (rmse_log1p, pearson_log1p)",
                    val("multimodal", "rmse_log1p") < val(m, "rmse_log1p")
                    and val("multimodal", "pearson_log1p") > val(m, "pearson_log1p"),
                )
            )
        # cluster claims rest on means over CLUSTER_SEEDS (and over the training seeds for the readouts)
        n_seeds, nc = 1 + len(EXTRA_SEEDS), len(CLUSTER_SEEDS)
        contenders = {
            "multimodal (default layer)": lambda col, t=t: val("multimodal", col),
            f"multimodal, output=normalized (mean of {n_seeds} training seeds)": lambda col, t=t: seed_mean(t, col),
            f"multimodal, output=normalized, smoothed (mean of {n_seeds} training seeds)": lambda col, t=t: seed_mean(
                t, col, True
            ),
        }
        for name, get in contenders.items():
            for other in ("X", "holdout_train", SMOOTHED_TRAIN):
                for col in ("ari_leiden", "ari_kmeans"):
                    checks.append(
                        (
                            section,
                            f"ARI ({col[4:]}, mean of {nc} clustering seeds): {name} > {other}",
                            get(f"{col}_mean") > val(other, f"{col}_mean"),
                        )
                    )
        for smoothed in (False, True):
            name = "multimodal, output=normalized" + (SMOOTH_SUFFIX if smoothed else "")
            for col in ("ari_leiden", "ari_kmeans"):
                rows = [r for r in seed_rows(smoothed) if r in t.index]
                wins = sum(val(r, f"{col}_mean") > val(SMOOTHED_TRAIN, f"{col}_mean") for r in rows)
                checks.append(
                    (
                        section,
                        f"ARI ({col[4:]}, mean of {nc} clustering seeds): {name} > {SMOOTHED_TRAIN} for every "
                        "training seed",
                        wins == len(rows),
                    )
                )
    return pd.DataFrame(checks, columns=["section", "target", "met"])


def _md(df: pd.DataFrame) -> str:
    df = df.copy()
    header = "| " + " | ".join([df.index.name or "", *map(str, df.columns)]) + " |"
    sep = "|" + "---|" * (len(df.columns) + 1)
    body = []
    for idx, row in df.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float) and np.isnan(v):
                cells.append("")
            elif isinstance(v, float) and float(v).is_integer() and abs(v) >= 1:
                cells.append(str(int(v)))
            elif isinstance(v, float):
                cells.append(f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}")
            else:
                cells.append(str(v))
        body.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join([header, sep, *body])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["151673", "151674"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the timing against MAGIC")
    parser.add_argument("--train-threads", type=int, default=1, help="torch threads for the quality runs")
    parser.add_argument("--quick", action="store_true", help="skip the loss and design variants")
    parser.add_argument(
        "--stage",
        choices=["all", "sections", "timing", "report"],
        default="all",
        help="run only part of the benchmark (sections can run in parallel processes); 'report' merges the parts",
    )
    parser.add_argument("--timing-repeats", type=int, default=5, help="alternated runs of the timing against MAGIC")
    parser.add_argument("--parts", default="/tmp/stimpute_impute_bench", help="folder for the intermediate results")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--n-genes", type=int, default=None, help=argparse.SUPPRESS)  # smoke runs
    parser.add_argument("--max-epochs", type=int, default=None, help=argparse.SUPPRESS)  # smoke runs
    args = parser.parse_args(argv)

    import torch

    st.settings.device = "cpu"
    st.settings.progress_bar = False
    st.settings.verbosity = 1
    parts = Path(args.parts)
    parts.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "sections"):
        torch.set_num_threads(args.train_threads)
        for section in args.sections:
            start = time.perf_counter()
            table, _ = run_section(section, quick=args.quick, n_genes=args.n_genes, max_epochs=args.max_epochs)
            table["section_runtime_min"] = round((time.perf_counter() - start) / 60, 1)
            table.to_csv(parts / f"section_{section}.csv")
            log(f"{section} done in {(time.perf_counter() - start) / 60:.1f} min")
    if args.stage in ("all", "timing"):
        log("timing against MAGIC")
        timing = time_vs_magic(args.sections[0], args.threads, repeats=args.timing_repeats)
        pd.Series(timing).to_json(parts / "timing.json")
        log(f"  {timing}")
    if args.stage in ("all", "report"):
        tables = [
            pd.read_csv(parts / f"section_{sec}.csv", index_col=0, dtype={"section": str})
            for sec in args.sections
            if (parts / f"section_{sec}.csv").exists()
        ]
        table = pd.concat(tables)
        timing_path = parts / "timing.json"
        timing = json.loads(timing_path.read_text()) if timing_path.exists() else None
        total = float(table.groupby("section")["section_runtime_min"].first().sum()) * 60
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "impute_dlpfc.csv")
        (out / "impute_dlpfc.md").write_text(to_markdown(table, timing, total))
        log(f"wrote {out / 'impute_dlpfc.md'} and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
