"""Benchmark of ``st.tl.impute`` on the two labelled DLPFC sections (issue 4).

For each section: hide 50% of the non-zero entries (``st.pp.holdout(strategy="entries")``), impute the
training layer with every method (defaults), score the hidden entries with ``st.tl.evaluate`` and
cluster every matrix (``st.tl.compare_clusters``, Leiden tuned to 7 clusters and k-means with 7
clusters) against the manual layer labels (adjusted Rand index). Adds the ablations of the fused
model, the loss/readout variants that chose the defaults, and a CPU timing of the default
multimodal model next to MAGIC on the same data.

Run from the repository root (it takes about an hour on 2 busy CPU cores)::

    OMP_NUM_THREADS=2 python benchmarks/impute_dlpfc.py            # writes benchmarks/results/impute_dlpfc.{md,csv}
    python benchmarks/impute_dlpfc.py --sections 151673 --quick    # one section, fewer variants

The data are read from ``$STIMPUTE_DATA`` or ``../shared/data`` (``dlpfc_1516xx/adata.h5ad``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import stimpute as st
from stimpute.tl._knn import spatial_smooth

REPO = Path(__file__).resolve().parents[1]
REFERENCE_RAW_RMSE = {"autoencoder": 8.74, "positional": 4.42, "image": 4.35, "multimodal": 8.40}
N_CLUSTERS = 7


def data_dir() -> Path:
    env = os.environ.get("STIMPUTE_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------
# clustering: st.tl.compare_clusters when present, else the same pipeline locally


def _local_ari(adata: ad.AnnData, layers: list[str], method: str, seed: int = 0) -> dict[str, float]:
    import scanpy as sc
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    labels = adata.obs["label"]
    ok = labels.notna().to_numpy()
    truth = labels.astype(str).to_numpy()[ok]
    out = {}
    for layer in layers:
        M = adata.X if layer == "X" else adata.layers[layer]
        tmp = ad.AnnData(M.astype(np.float32))
        sc.pp.normalize_total(tmp)
        sc.pp.log1p(tmp)
        sc.pp.highly_variable_genes(tmp, n_top_genes=3000, flavor="seurat", subset=True)
        sc.pp.pca(tmp, n_comps=30, random_state=seed)
        if method != "kmeans":
            msg = "the local fallback only does k-means"
            raise ValueError(msg)
        pred = KMeans(N_CLUSTERS, n_init=10, random_state=seed).fit_predict(tmp.obsm["X_pca"])
        out[layer] = adjusted_rand_score(truth, pred[ok])
    return out


def cluster_scores(adata: ad.AnnData, layers: list[str]) -> pd.DataFrame:
    rows = {}
    for method in ("leiden", "kmeans"):
        if hasattr(st.tl, "compare_clusters"):
            st.tl.compare_clusters(
                adata, layers, labels_key="label", n_clusters=N_CLUSTERS, method=method, key_added=f"clusters_{method}"
            )
            rows[f"ari_{method}"] = adata.uns[f"clusters_{method}"]["scores"]["ari_labels"].to_dict()
        elif method == "kmeans":
            rows[f"ari_{method}"] = _local_ari(adata, layers, method)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------


def run_section(section: str, *, quick: bool) -> tuple[pd.DataFrame, dict]:
    path = data_dir() / f"dlpfc_{section}" / "adata.h5ad"
    adata = ad.read_h5ad(path)
    log(f"{section}: {adata.n_obs} spots x {adata.n_vars} genes")
    st.pp.holdout(adata, fraction=0.5, strategy="entries", random_state=0)
    st.pp.image_features(adata, key_added="X_image")
    info: dict = {"section": section, "n_obs": adata.n_obs, "n_vars": adata.n_vars}

    # plain spatial smoothing of the training matrix: each spot = mean of itself and its 6 nearest spots
    adata.layers["smoothed train (self + 6 nearest)"] = spatial_smooth(
        adata.layers["holdout_train"], adata.obsm["spatial"], 6
    )

    rows: dict[str, dict] = {}  # layer -> description
    readouts: dict[str, str] = {}  # normalized readout layer of each method

    def add(key: str, **kw):
        t = time.perf_counter()
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

    # the five methods with their defaults (conditional readout), plus the normalized readout
    add("knn", method="knn")
    add("knn, output=normalized", method="knn", output="normalized")
    readouts["knn"] = "knn, output=normalized"
    for method in ("autoencoder", "positional", "image", "multimodal"):
        model = add(method, method=method, model=True)
        key = f"{method}, output=normalized"
        model.predict(adata, layer="holdout_train", key_added=key, output="normalized")
        readouts[method] = key
        rows[key] = dict(rows[method])
        if method == "multimodal":
            mm_model = model
    # readout / observed-value variants of the default multimodal model (no retraining)
    for output, keep in (("expected", True), ("conditional", False), ("normalized", False)):
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
        # loss chosen by measurement: the count likelihoods
        for loss in ("nb", "poisson"):
            model = add(f"multimodal, loss={loss}", method="multimodal", loss=loss, model=True)
            key = f"multimodal, loss={loss}, output=normalized"
            model.predict(adata, layer="holdout_train", key_added=key, output="normalized")
            rows[key] = dict(rows[f"multimodal, loss={loss}"])
        # the reference design of the fused model: full count encoder, no neighbour input or skip path
        add(
            "multimodal, reference-like (all genes in, no neighbours)",
            method="multimodal",
            count_pcs=0,
            neighbours=False,
            neighbour_skip=False,
            modality_dropout=0.0,
        )
        add("autoencoder, spatial_reg=1", method="autoencoder", spatial_reg=1.0)

    imputed = list(rows)
    scores = st.tl.evaluate(adata, imputed + ["smoothed train (self + 6 nearest)"])
    cluster_layers = ["X", "holdout_train", "smoothed train (self + 6 nearest)", *imputed]
    log("  clustering")
    clusters = cluster_scores(adata, cluster_layers)
    table = scores.join(clusters, how="outer")
    for key, extra in rows.items():
        for col, val in extra.items():
            table.loc[key, col] = val
    table.index.name = "layer"
    table.insert(0, "section", section)
    info["readouts"] = readouts
    return table, info


def time_vs_magic(section: str, threads: int) -> dict:
    """Wall time of the default multimodal model and of scanpy.external.pp.magic on the same training matrix."""
    import scanpy as sc
    import torch

    torch.set_num_threads(threads)
    adata = ad.read_h5ad(data_dir() / f"dlpfc_{section}" / "adata.h5ad")
    st.pp.holdout(adata, fraction=0.5, strategy="entries", random_state=0)
    t = time.perf_counter()
    st.pp.image_features(adata, key_added="X_image")
    t_image = time.perf_counter() - t
    t = time.perf_counter()
    st.tl.impute(adata, method="multimodal", layer="holdout_train", progress=False)
    t_impute = time.perf_counter() - t
    out = {
        "section": section,
        "threads": threads,
        "image_features_s": round(t_image, 1),
        "impute_multimodal_s": round(t_impute, 1),
        "epochs": len(adata.uns["imputed_multimodal"]["history"]["epoch"]),
    }
    try:
        import magic  # noqa: F401
    except ImportError as err:
        out["magic_s"] = float("nan")
        out["magic_note"] = f"magic-impute not installed: {err}"
        return out
    bdata = ad.AnnData(adata.layers["holdout_train"].astype(np.float32))
    t = time.perf_counter()
    sc.external.pp.magic(bdata, n_jobs=threads, random_state=0)
    out["magic_s"] = round(time.perf_counter() - t, 1)
    out["ratio"] = round(out["impute_multimodal_s"] / out["magic_s"], 2)
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
        f"torch {__import__('torch').__version__}; total runtime {total_s / 60:.0f} min.",
        "",
    ]
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
    lines.append("")
    return "\n".join(lines)


def _md(df: pd.DataFrame) -> str:
    df = df.copy()
    header = "| " + " | ".join([df.index.name or "", *map(str, df.columns)]) + " |"
    sep = "|" + "---|" * (len(df.columns) + 1)
    body = []
    for idx, row in df.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if np.isnan(v) else (f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"))
            else:
                cells.append(str(v))
        body.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join([header, sep, *body])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["151673", "151674"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (timing uses the same)")
    parser.add_argument("--quick", action="store_true", help="skip the loss variants and reference-like rows")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    st.settings.device = "cpu"
    st.settings.progress_bar = False
    st.settings.verbosity = 1
    start = time.perf_counter()
    tables = []
    for section in args.sections:
        table, _ = run_section(section, quick=args.quick)
        tables.append(table)
    table = pd.concat(tables)
    timing = None
    if not args.skip_timing:
        log("timing against MAGIC")
        timing = time_vs_magic(args.sections[0], args.threads)
        log(f"  {timing}")
    total = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "impute_dlpfc.csv")
    (out / "impute_dlpfc.md").write_text(to_markdown(table, timing, total))
    log(f"wrote {out / 'impute_dlpfc.md'} and .csv in {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
