"""Does the H&E image help? ``st.tl.impute`` on the her2st sections with their full-resolution images (issue 5).

For each her2st section in ``../shared/data`` (legacy Spatial Transcriptomics, about 190 spots, a
full-resolution H&E jpg of about 9,300 x 9,900 px, spots about 145 px wide):

* image features with ``st.pp.image_features`` (handcrafted encoder, offline) at tile scales 1, 2 and 3
  spot diameters, cut from the full-resolution jpg;
* two holdouts, each repeated over several seeds:
  ``strategy="spots"`` (20% of the spots hidden whole: unseen spots predicted from what is around them
  and from their tile) and ``strategy="entries"`` (50% of the non-zero entries hidden, the reference
  protocol);
* methods: the per-gene-mean floor, ``"knn"``, ``"positional"``, ``"image"`` at each tile scale,
  ``"multimodal"`` and its ablations without the image and without the position;
* scores on the hidden values (``st.tl.evaluate``: ``log1p`` RMSE and Pearson) and HEST's measure, the
  per-gene Pearson of the 50 most variable genes on ``log1p`` counts per 10^4 (for ``"spots"``: over the
  hidden spots, from each method's depth-free ``output="normalized"`` readout).

Run from the repository root (about 10 minutes on one CPU thread)::

    python benchmarks/image_her2st.py            # writes benchmarks/results/image_her2st.{md,csv}
    python benchmarks/image_her2st.py --quick    # 1 seed, 200 genes, 5 epochs: a smoke run

The data are read from ``st.settings.datadir`` (``$STIMPUTE_DATA`` or ``../shared/data``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse

import stimpute as st
from stimpute._constants import HIDDEN_SPOT_SUFFIX

HERE = Path(__file__).resolve().parent
SECTIONS = ("her2st_C2", "her2st_C3")
TILE_SCALES = (1.0, 2.0, 3.0)
N_TOP = 50
PROTOCOLS = {"spots": 0.2, "entries": 0.5}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pearson_columns(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Pearson per column; 0 where either side is constant (undefined)."""
    yc, pc = y - y.mean(axis=0), p - p.mean(axis=0)
    ok = (np.abs(yc).max(axis=0) > 1e-9) & (np.abs(pc).max(axis=0) > 1e-9)
    den = np.sqrt((yc**2).sum(axis=0) * (pc**2).sum(axis=0))
    return np.where(ok, (yc * pc).sum(axis=0) / np.where(ok, den, 1.0), 0.0)


def top_variable(adata: ad.AnnData) -> np.ndarray:
    """Indices of the 50 genes with the largest variance of log1p(counts per 10^4), detected in >= 10% of spots."""
    a = ad.AnnData(sparse.csr_matrix(adata.X, dtype=np.float32))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    X = a.X.toarray()
    detected = np.asarray(adata.X > 0).sum(axis=0) if not sparse.issparse(adata.X) else (adata.X > 0).sum(axis=0)
    ok = np.asarray(detected).ravel() >= 0.1 * adata.n_obs
    var = np.where(ok, X.var(axis=0), -np.inf)
    return np.argsort(-var, kind="stable")[:N_TOP]


def log_cp10k(M) -> np.ndarray:
    M = M.toarray() if sparse.issparse(M) else np.asarray(M, dtype=np.float64)
    tot = M.sum(axis=1, keepdims=True)
    return np.log1p(np.divide(M * 1e4, tot, out=np.zeros_like(M, dtype=np.float64), where=tot > 0))


def top50_pearson(adata: ad.AnnData, layer: str, genes: np.ndarray, strategy: str) -> float:
    """Mean per-gene Pearson of the top genes on the hidden values.

    ``"spots"``: over the hidden spots, log1p(counts per 10^4) of the truth against the same of the
    depth-free readout ``layer``. ``"entries"``: over each gene's hidden (non-zero) entries, log1p counts.
    """
    X = sparse.csr_matrix(adata.X)
    if strategy == "spots":
        hidden = adata.obs["holdout" + HIDDEN_SPOT_SUFFIX].to_numpy(dtype=bool)
        # the truth is normalised by the spot's total over all genes of the section
        y = log_cp10k(X[hidden])[:, genes]
        p = log_cp10k(np.asarray(adata.layers[layer])[hidden])[:, genes]
        return float(pearson_columns(y, p).mean())
    T = sparse.csc_matrix(adata.layers["holdout_test"])
    P = np.asarray(adata.layers[layer])
    rs = []
    for g in genes:
        rows = T.indices[T.indptr[g] : T.indptr[g + 1]]
        if rows.size < 3:
            continue
        y = np.log1p(T.data[T.indptr[g] : T.indptr[g + 1]].astype(np.float64))
        r = pearson_columns(y[:, None], np.log1p(P[rows, g].astype(np.float64))[:, None])[0]
        rs.append(r)
    return float(np.mean(rs)) if rs else float("nan")


def methods(n_epochs: int | None, strategy: str) -> list[tuple[str, dict]]:
    ep = {"max_epochs": n_epochs} if n_epochs else {}
    if strategy == "spots":
        # whole spots are hidden and scored zeros included: predict the expected count (detection
        # probability x value given detection), not the value given detection
        ep.update(detection=True, output="expected")
    rows: list[tuple[str, dict]] = [
        ("knn", {"method": "knn", **({"output": "expected"} if strategy == "spots" else {})}),
        ("positional", {"method": "positional", **ep}),
    ]
    for ts in TILE_SCALES:
        rows.append((f"image, tile_scale {ts:g}", {"method": "image", "image_key": f"X_image_ts{ts:g}", **ep}))
    best = "X_image_ts2"
    rows += [
        ("multimodal (tile_scale 2)", {"method": "multimodal", "image_key": best, **ep}),
        ("multimodal without image", {"method": "multimodal", "modalities": ("counts", "position"), **ep}),
        (
            "multimodal without position",
            {"method": "multimodal", "image_key": best, "modalities": ("counts", "image"), **ep},
        ),
        (
            "multimodal without counts",
            {"method": "multimodal", "image_key": best, "modalities": ("position", "image"), **ep},
        ),
    ]
    return rows


def run_section(name: str, *, seeds: int, n_genes: int, n_epochs: int | None) -> tuple[list[dict], list[dict]]:
    # the loader (st.settings.datadir: $STIMPUTE_DATA or ../shared/data) records the full-resolution jpg
    adata = st.datasets.her2st(name.split("_")[1])
    # keep the most detected genes: ~190 spots cannot support 15,000 outputs
    detected = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    adata = adata[:, np.sort(np.argsort(-detected, kind="stable")[:n_genes])].copy()
    genes = top_variable(adata)
    log(f"{name}: {adata.n_obs} spots x {adata.n_vars} genes; image {st.get.source_image_path(adata)}")
    feature_rows = []
    for ts in TILE_SCALES:
        t = time.perf_counter()
        st.pp.image_features(adata, tile_scale=ts, key_added=f"X_image_ts{ts:g}")
        feature_rows.append(
            {
                "section": name,
                "tile_scale": ts,
                "seconds": round(time.perf_counter() - t, 2),
                "img_source": adata.uns[f"X_image_ts{ts:g}"]["params"].get("img_source"),
            }
        )
    rows = []
    for strategy, fraction in PROTOCOLS.items():
        for seed in range(seeds):
            st.pp.holdout(adata, fraction=fraction, strategy=strategy, random_state=seed)
            layers = []
            for label, kw in methods(n_epochs, strategy):
                t = time.perf_counter()
                model = st.tl.impute(
                    adata,
                    layer="holdout_train",
                    key_added=label,
                    random_state=seed,
                    progress=False,
                    return_model=kw["method"] != "knn",
                    **kw,
                )
                wall = time.perf_counter() - t
                norm_key = f"{label} [normalized]"
                if model is None:
                    kw_norm = {**kw, "output": "normalized"}
                    st.tl.impute(adata, layer="holdout_train", key_added=norm_key, **kw_norm)
                else:
                    model.predict(adata, layer="holdout_train", key_added=norm_key, output="normalized")
                layers.append(label)
                rows.append(
                    {
                        "section": name,
                        "strategy": strategy,
                        "seed": seed,
                        "method": label,
                        "wall_time_s": wall,
                        "top50_pearson": top50_pearson(
                            adata, norm_key if strategy == "spots" else label, genes, strategy
                        ),
                    }
                )
            scores = st.tl.evaluate(adata, layers)
            for r in rows[-len(layers) :]:
                s = scores.loc[r["method"]]
                r.update({k: float(s[k]) for k in ("rmse_log1p", "pearson_log1p", "median_gene_pearson", "rmse_raw")})
            floor = scores.loc["baseline: gene mean"]
            rows.append(
                {
                    "section": name,
                    "strategy": strategy,
                    "seed": seed,
                    "method": "baseline: gene mean",
                    **{k: float(floor[k]) for k in ("rmse_log1p", "pearson_log1p", "median_gene_pearson", "rmse_raw")},
                    "top50_pearson": 0.0,
                }
            )
            log(
                f"  {strategy} seed {seed}: "
                + ", ".join(f"{r['method']} {r['rmse_log1p']:.3f}" for r in rows[-len(layers) - 1 :])
            )
    return rows, feature_rows


def to_markdown(table: pd.DataFrame, features: pd.DataFrame, seeds: int, total_s: float) -> str:
    import torch

    cols = ["rmse_log1p", "pearson_log1p", "top50_pearson", "median_gene_pearson", "rmse_raw", "wall_time_s"]
    agg = table.groupby(["section", "strategy", "method"], sort=False)[cols].agg(["mean", "std"])
    lines = [
        "# The image modality on her2st (full-resolution H&E)",
        "",
        f"Generated by `python benchmarks/image_her2st.py` in {total_s / 60:.1f} min (Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.machine()}, one torch thread). Each cell is the mean over {seeds} holdout "
        "seeds (± standard deviation). `spots`: 20% of the spots hidden whole; `entries`: 50% of the non-zero entries "
        "hidden. `top50_pearson`: mean per-gene Pearson of the 50 most variable genes (log1p counts per 10^4; "
        "for `spots`, over the hidden spots from the `output='normalized'` readout; for `entries`, over each gene's "
        "hidden entries). Image features: `st.pp.image_features(encoder='handcrafted')` from the full-resolution jpg; "
        "the multimodal rows use tile scale 2.",
        "",
    ]
    for (section, strategy), _ in table.groupby(["section", "strategy"], sort=False):
        lines += [f"## {section}, strategy={strategy}", ""]
        sub = agg.loc[(section, strategy)]
        head = ["method", *cols]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for method, r in sub.iterrows():
            cells = []
            for c in cols:
                m, s = r[(c, "mean")], r[(c, "std")]
                if pd.isna(m):
                    cells.append("")
                elif c == "wall_time_s":
                    cells.append(f"{m:.1f}")
                else:
                    cells.append(f"{m:.3f} ± {s:.3f}" if pd.notna(s) else f"{m:.3f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Does the image help the fused model? (paired by holdout seed)",
        "",
        "Difference `multimodal without image` minus `multimodal (tile_scale 2)` on the same holdout, mean over seeds,",
        "and on how many seeds the model with the image is better (lower RMSE, higher Pearson).",
        "",
        "| section | strategy | Δ rmse_log1p | image better (RMSE) | Δ pearson_log1p | image better (Pearson) "
        "| Δ top50_pearson | image better (top 50) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (section, strategy), t in table.groupby(["section", "strategy"], sort=False):
        w = t[t["method"] == "multimodal (tile_scale 2)"].set_index("seed")
        wo = t[t["method"] == "multimodal without image"].set_index("seed")
        d_rmse = wo["rmse_log1p"] - w["rmse_log1p"]
        d_r = w["pearson_log1p"] - wo["pearson_log1p"]
        d_top = w["top50_pearson"] - wo["top50_pearson"]
        n = len(d_rmse)
        lines.append(
            f"| {section} | {strategy} | {d_rmse.mean():+.4f} | {int((d_rmse > 0).sum())}/{n} | {d_r.mean():+.4f} | "
            f"{int((d_r > 0).sum())}/{n} | {d_top.mean():+.4f} | {int((d_top > 0).sum())}/{n} |"
        )
    lines.append("")
    lines += ["## Image feature time", "", "| section | tile_scale | seconds | source |", "|---|---|---|---|"]
    for _, r in features.iterrows():
        lines.append(f"| {r['section']} | {r['tile_scale']:g} | {r['seconds']:.2f} | {r['img_source']} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="1 seed, 200 genes, 5 epochs (smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    st.settings.verbosity = 1
    seeds, n_genes, n_epochs = (1, 200, 5) if args.quick else (args.seeds, args.genes, None)
    start = time.perf_counter()
    rows, feats = [], []
    for name in SECTIONS:
        if not (st.settings.datadir / name / "adata.h5ad").exists():
            log(f"{name}: not in {st.settings.datadir}, skipped")
            continue
        r, f = run_section(name, seeds=seeds, n_genes=n_genes, n_epochs=n_epochs)
        rows += r
        feats += f
    if not rows:
        log("no her2st section found")
        return 1
    table, features = pd.DataFrame(rows), pd.DataFrame(feats)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "image_her2st" + ("_quick" if args.quick else "")
    table.to_csv(args.out / f"{stem}.csv", index=False)
    (args.out / f"{stem}.md").write_text(to_markdown(table, features, seeds, time.perf_counter() - start))
    log(f"wrote {args.out / stem}.{{csv,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
