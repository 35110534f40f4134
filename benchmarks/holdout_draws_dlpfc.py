"""The DLPFC cluster comparison over several holdout draws, not one (issue 4's cluster target).

``impute_dlpfc.py`` hides the entries with one draw (``st.pp.holdout(random_state=0)``) and averages the
clusters over five clustering seeds. Which entries are hidden is random too, and the training matrix, its
smoothing (the bar of issue 4) and every model trained on it change with the draw. This script repeats the
key rows with holdout draws 0-4 on both labelled sections: for each draw, the training matrix, the bar (the
training matrix smoothed over each spot and its 6 nearest spots), the fused model with defaults (log1p RMSE /
Pearson on the hidden entries) and its depth-free readout (``output="normalized"``), plain and smoothed alike,
each clustered with five clustering seeds (Leiden tuned to 7 clusters, and k-means). ``X`` and ``X`` smoothed do
not depend on the draw. Every method's log1p RMSE / Pearson on each draw is recorded too. Writes
``results/holdout_draws_dlpfc.{md,csv}`` and ``results/holdout_draws_dlpfc_scores.csv``.

Run from the repository root (about 15 minutes per section on one CPU thread; the sections can run in parallel)::

    python benchmarks/holdout_draws_dlpfc.py --stage sections --sections 151673 --parts /tmp/hd &
    python benchmarks/holdout_draws_dlpfc.py --stage sections --sections 151674 --parts /tmp/hd &
    wait; python benchmarks/holdout_draws_dlpfc.py --stage report --parts /tmp/hd
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import stimpute as st

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("151673", "151674")
DRAWS = (0, 1, 2, 3, 4)
CLUSTER_SEEDS = 5
SINGLE_METHODS = ("knn", "autoencoder", "positional", "image")
ROWS = {  # layer prefix -> row name
    "train": "training matrix",
    "bar": "smoothed training matrix (the bar)",
    "nor": "multimodal, output=normalized",
    "smnor": "multimodal, output=normalized, smoothed",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_section(
    section: str, draws: tuple[int, ...], max_epochs: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clusters: one row per (draw, layer), ARI over CLUSTER_SEEDS clustering seeds (mean, sd, min, max), with the
    fused model's scores; scores: one row per (draw, method) with log1p RMSE and Pearson on the hidden entries."""
    adata = st.datasets.dlpfc(section)
    st.pp.image_features(adata, key_added="X_image", progress=False)
    st.pp.spatial_smooth(adata, None, n_neighbors=6, key_added="sm_X")
    layers, draw_of, scores, score_rows = ["X", "sm_X"], {"X": -1, "sm_X": -1}, {}, []
    epochs = {} if max_epochs is None else {"max_epochs": max_epochs}
    for d in draws:
        t = time.perf_counter()
        st.pp.holdout(adata, fraction=0.5, strategy="entries", random_state=d)
        adata.layers[f"train{d}"] = adata.layers["holdout_train"].copy()
        st.pp.spatial_smooth(adata, "holdout_train", n_neighbors=6, key_added=f"bar{d}")
        model = st.tl.impute(
            adata, "multimodal", layer="holdout_train", key_added=f"mm{d}", return_model=True, progress=False, **epochs
        )
        for other in SINGLE_METHODS:  # the single-modality networks and knn, for the RMSE targets on this draw
            st.tl.impute(
                adata,
                other,
                layer="holdout_train",
                key_added=f"{other}{d}",
                progress=False,
                **({} if other == "knn" else epochs),
            )
        ev = st.tl.evaluate(adata, [f"mm{d}", *(f"{other}{d}" for other in SINGLE_METHODS)])
        for name, row in ev.iterrows():
            method = "gene-mean floor" if name == "baseline: gene mean" else str(name).rstrip("0123456789")
            if name != "baseline: train as is":
                method = "multimodal" if method == "mm" else method
                score_rows.append(
                    {
                        "section": section,
                        "draw": d,
                        "method": method,
                        "rmse_log1p": float(row["rmse_log1p"]),
                        "pearson_log1p": float(row["pearson_log1p"]),
                    }
                )
        for other in SINGLE_METHODS:
            del adata.layers[f"{other}{d}"]
        scores[d] = {
            "rmse_log1p": float(ev.loc[f"mm{d}", "rmse_log1p"]),
            "pearson_log1p": float(ev.loc[f"mm{d}", "pearson_log1p"]),
            "floor_rmse_log1p": float(ev.loc["baseline: gene mean", "rmse_log1p"]),
        }
        model.predict(adata, layer="holdout_train", key_added=f"nor{d}", output="normalized")
        st.pp.spatial_smooth(adata, f"nor{d}", n_neighbors=6, key_added=f"smnor{d}")
        del adata.layers[f"mm{d}"]
        for prefix in ROWS:
            layers.append(f"{prefix}{d}")
            draw_of[f"{prefix}{d}"] = d
        log(f"{section} draw {d}: {scores[d]} ({time.perf_counter() - t:.0f} s)")
    rows = []
    for method in ("leiden", "kmeans"):
        t = time.perf_counter()
        st.tl.compare_clusters(
            adata,
            layers,
            method=method,
            n_clusters=7,
            labels_key="label",
            n_repeats=CLUSTER_SEEDS,
            key_added="cc",
            random_state=0,
        )
        rep = adata.uns["cc"]["repeats"]
        for layer, g in rep.groupby("layer", sort=False):
            ari = g["ari_labels"].to_numpy(dtype=float)
            prefix = layer.rstrip("0123456789")
            rows.append(
                {
                    "section": section,
                    "draw": draw_of[layer],
                    "layer": {"X": "X", "sm_X": "X smoothed (complete data)"}.get(layer, ROWS.get(prefix, layer)),
                    "method": method,
                    "ari_mean": ari.mean(),
                    "ari_sd": ari.std(ddof=1) if len(ari) > 1 else np.nan,
                    "ari_min": ari.min(),
                    "ari_max": ari.max(),
                    **(scores.get(draw_of[layer], {}) if prefix == "nor" else {}),
                }
            )
        log(f"{section} {method}: {time.perf_counter() - t:.0f} s")
    return pd.DataFrame(rows), pd.DataFrame(score_rows)


def report(table: pd.DataFrame) -> str:
    """Markdown: per-draw tables, the means over draws, and paired wins of the readouts over the bar."""
    lines = [
        "# DLPFC cluster comparison over holdout draws (issue 4)",
        "",
        "Generated by `benchmarks/holdout_draws_dlpfc.py`. For each holdout draw "
        "(`st.pp.holdout(fraction=0.5, strategy='entries', random_state=draw)`): the training matrix, the bar (the "
        "training matrix smoothed over each spot and its 6 nearest spots, `st.pp.spatial_smooth`), and the fused "
        "model with defaults (one training seed, 0) read out at the median depth (`output='normalized'`), plain and "
        "smoothed alike; each matrix clustered with 5 clustering seeds (`st.tl.compare_clusters(n_repeats=5)`, "
        "Leiden tuned to 7 clusters, and k-means), ARI against the manual layers. `impute_dlpfc.md` is draw 0. "
        "Image features: `st.pp.image_features` (handcrafted, lowres image). `X` and `X` smoothed do not depend on "
        "the draw: their rows give the clustering seeds' mean, minimum and maximum.",
        "",
        "## Mean ARI over draws (each draw: mean of 5 clustering seeds)",
        "",
    ]
    per_draw = table[table["draw"] >= 0]
    fixed = table[table["draw"] < 0]
    summary = []
    for (section, method), g in per_draw.groupby(["section", "method"], sort=False):
        bar = g[g["layer"] == ROWS["bar"]].set_index("draw")["ari_mean"]
        for layer in ROWS.values():
            vals = g[g["layer"] == layer].set_index("draw")["ari_mean"]
            row = {
                "section": section,
                "clustering": method,
                "matrix": layer,
                "mean over draws": vals.mean(),
                "sd over draws": vals.std(ddof=1),
                "min": vals.min(),
                "max": vals.max(),
                "draws above the bar": (
                    "" if layer == ROWS["bar"] else f"{int((vals > bar.reindex(vals.index)).sum())} of {len(vals)}"
                ),
            }
            summary.append(row)
        for _, r in fixed[(fixed["section"] == section) & (fixed["method"] == method)].iterrows():
            summary.append(
                {
                    "section": section,
                    "clustering": method,
                    "matrix": r["layer"],
                    "mean over draws": r["ari_mean"],
                    "sd over draws": np.nan,
                    "min": r["ari_min"],
                    "max": r["ari_max"],
                    "draws above the bar": "",
                }
            )
    s = pd.DataFrame(summary)
    lines += [_md(s), ""]
    lines += ["## Targets over draws (True = met)", ""]
    checks = []
    for (section, method), g in s.groupby(["section", "clustering"], sort=False):
        m = g.set_index("matrix")["mean over draws"]
        for layer in (ROWS["nor"], ROWS["smnor"]):
            checks.append(
                {
                    "section": section,
                    "clustering": method,
                    "readout": layer,
                    "> X": bool(m[layer] > m["X"]),
                    "> training matrix": bool(m[layer] > m[ROWS["train"]]),
                    "> the bar": bool(m[layer] > m[ROWS["bar"]]),
                }
            )
    lines += [_md(pd.DataFrame(checks)), ""]
    lines += [
        "## Each draw",
        "",
        "The fused model's log1p RMSE / Pearson on that draw's hidden entries (and the gene-mean floor's RMSE), then "
        "the ARIs (mean of 5 clustering seeds): training matrix, bar, readout, readout smoothed.",
        "",
    ]
    short = dict(zip(ROWS.values(), ("training", "bar", "readout", "readout smoothed"), strict=True))
    wide = per_draw.pivot_table(index=["section", "draw"], columns=["method", "layer"], values="ari_mean")
    order = [(m, layer) for m in ("leiden", "kmeans") for layer in ROWS.values() if (m, layer) in wide.columns]
    wide = wide[order]
    wide.columns = [f"{short[layer]} ({'Leiden' if m == 'leiden' else 'k-means'})" for m, layer in order]
    fit = per_draw.dropna(subset=["rmse_log1p"]).drop_duplicates(["section", "draw"]).set_index(["section", "draw"])
    wide = fit[["rmse_log1p", "pearson_log1p", "floor_rmse_log1p"]].join(wide).reset_index()
    lines += [_md(wide), ""]
    return "\n".join(lines)


def score_report(scores: pd.DataFrame) -> str:
    """Markdown: every method's log1p RMSE / Pearson over draws, and the draws where the fused model beats it."""
    lines = [
        "## Imputation scores over draws",
        "",
        "log1p RMSE and Pearson on each draw's hidden entries (`st.tl.evaluate`), every method with its defaults; "
        "'multimodal better' counts the draws where the fused model has both the lower RMSE and the higher Pearson.",
        "",
    ]
    rows = []
    for section, g in scores.groupby("section", sort=False):
        fused = g[g["method"] == "multimodal"].set_index("draw")
        for method, m in g.groupby("method", sort=False):
            m = m.set_index("draw")
            better = (fused["rmse_log1p"] < m["rmse_log1p"]) & (fused["pearson_log1p"] > m["pearson_log1p"])
            rows.append(
                {
                    "section": section,
                    "method": method,
                    "rmse_log1p mean": m["rmse_log1p"].mean(),
                    "rmse_log1p min": m["rmse_log1p"].min(),
                    "rmse_log1p max": m["rmse_log1p"].max(),
                    "pearson_log1p mean": m["pearson_log1p"].mean(),
                    "multimodal better": "" if method == "multimodal" else f"{int(better.sum())} of {len(m)}",
                }
            )
    return "\n".join([*lines, _md(pd.DataFrame(rows)), ""])


def _md(df: pd.DataFrame) -> str:
    """A markdown table: floats to 4 decimals, NaN as an empty cell."""

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if np.isfinite(v) else ""
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["all", "sections", "report"], default="all")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS))
    p.add_argument("--draws", nargs="+", type=int, default=list(DRAWS))
    p.add_argument("--parts", type=Path, default=None, help="folder for the per-section tables (default: --out)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--max-epochs", type=int, default=None, help="(smoke tests) fewer epochs than the default")
    args = p.parse_args(argv)
    parts = args.parts or args.out
    parts.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "sections"):
        from _measure import one_cpu_thread_quiet  # benchmarks/ is on the path when the script runs

        one_cpu_thread_quiet("error")
        for section in args.sections:
            clusters, scores = run_section(section, tuple(args.draws), args.max_epochs)
            clusters.to_csv(parts / f"holdout_draws_{section}.csv", index=False)
            scores.to_csv(parts / f"holdout_draws_scores_{section}.csv", index=False)
    if args.stage in ("all", "report"):
        table = pd.concat(
            [pd.read_csv(f, dtype={"section": str}) for f in sorted(parts.glob("holdout_draws_1*.csv"))],
            ignore_index=True,
        )
        score_files = sorted(parts.glob("holdout_draws_scores_1*.csv"))
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "holdout_draws_dlpfc.csv", index=False)
        text = report(table)
        if score_files:
            scores = pd.concat([pd.read_csv(f, dtype={"section": str}) for f in score_files], ignore_index=True)
            scores.to_csv(args.out / "holdout_draws_dlpfc_scores.csv", index=False)
            text += score_report(scores)
        (args.out / "holdout_draws_dlpfc.md").write_text(text)
        log(f"wrote {args.out / 'holdout_draws_dlpfc.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
