"""Does the imputed matrix bring the tissue's structure back on sections no default was chosen on? (issue 18)

For each labelled section and holdout draw (``st.pp.holdout(fraction=0.5, strategy="entries")``), trains the fused
model twice on the training matrix: with its defaults (the graph encoder on, ``graph_hops=4``) and as before the
graph encoder (``graph_hops=0``), and clusters, with k-means and with Leiden (both at the number of labelled
regions, several clustering seeds each):

* ``X`` (the original counts) and the training matrix;
* the bar: the training matrix smoothed over each spot and its 6 nearest spots (``st.pp.spatial_smooth``);
* each model's default layer (``output="conditional"``), its depth-free readout (``output="normalized"``) and its
  fused latent (``obsm["X_<key>"]``, clustered as it is).

ARI against the labels (DLPFC layers; her2st pathologist regions with ``undetermined`` left out) and against the
clusters of ``X`` (the reference project's check), and each model's log1p RMSE / Pearson on the hidden entries.

Which sections chose what (see ``benchmarks/README.md``): ``graph_hops``, ``graph_neighbors`` and the graph
encoder's design were chosen on dlpfc_151673 and her2st_B1 (her2st_C2 has no labels; its hidden entries were not
used either); every section in ``HELD_OUT`` is reported here as held out.

Run from the repository root (one CPU thread; about 10 minutes per DLPFC section and draw)::

    python benchmarks/structure_heldout.py --sections 151674 151675 D1 --draws 0 1 2 --out /tmp/sh
    python benchmarks/structure_heldout.py --report --out /tmp/sh   # writes results/structure_heldout.{md,csv}

The tuning sections' own table (what the choices above were made on, reported apart):

    python benchmarks/structure_heldout.py --sections 151673 B1 --draws 0 1 --out /tmp/st
    python benchmarks/structure_heldout.py --report --out /tmp/st --name tuning   # results/structure_tuning.*
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

import stimpute as st

REPO = Path(__file__).resolve().parents[1]
TUNING = ("151673", "B1")
HELD_OUT = ("151674", "151675", "D1")
CLUSTER_SEEDS = 3
MODELS = {"graph": {}, "nograph": {"graph_hops": 0}}  # key -> st.tl.impute options
ROWS = {
    "X": "X (original counts)",
    "holdout_train": "training matrix",
    "bar": "training matrix smoothed (6 nearest spots), the bar",
    "graph": "multimodal (graph encoder), default layer",
    "graph_n": "multimodal (graph encoder), output='normalized'",
    "X_graph": "multimodal (graph encoder), fused latent",
    "nograph": "multimodal without graph encoder, default layer",
    "nograph_n": "multimodal without graph encoder, output='normalized'",
    "X_nograph": "multimodal without graph encoder, fused latent",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load(section: str):
    adata = st.datasets.dlpfc(section) if section.isdigit() else st.datasets.her2st(section)
    adata.var_names_make_unique()
    labels = adata.obs["label"].astype("string")
    adata.obs["region"] = labels.where(labels != "undetermined").astype("category")  # undetermined left out
    return adata


def run(section: str, draw: int) -> pd.DataFrame:
    adata = load(section)
    n_regions = int(adata.obs["region"].nunique())
    image = {} if section.isdigit() else {"modalities": ("counts", "position")}  # B1 / D1 have no H&E image
    st.pp.holdout(adata, fraction=0.5, strategy="entries", random_state=draw)
    st.pp.spatial_smooth(adata, "holdout_train", n_neighbors=6, key_added="bar")
    rows = []
    for key, options in MODELS.items():
        t = time.perf_counter()
        model = st.tl.impute(
            adata,
            "multimodal",
            layer="holdout_train",
            key_added=key,
            return_model=True,
            progress=False,
            **image,
            **options,
        )
        seconds = time.perf_counter() - t
        model.predict(adata, layer="holdout_train", output="normalized", key_added=f"{key}_n")
        ev = st.tl.evaluate(adata, [key])
        rows.append(
            {
                "layer": key,
                "log1p_rmse": float(ev.loc[key, "rmse_log1p"]),
                "pearson": float(ev.loc[key, "pearson_log1p"]),
                "fit_seconds": seconds,
            }
        )
    layers = list(ROWS)
    for method in ("kmeans", "leiden"):
        st.tl.compare_clusters(
            adata,
            layers,
            method=method,
            n_clusters=n_regions,
            labels_key="region",
            reference="X",
            n_repeats=CLUSTER_SEEDS,
            key_added=f"cl_{method}",
        )
        scores = adata.uns[f"cl_{method}"]["scores"]
        for layer in layers:
            rows.append(
                {
                    "layer": layer,
                    "clusterer": method,
                    "ari_labels": float(scores.loc[layer, "ari_labels"]),
                    "ari_labels_sd": float(scores.loc[layer, "ari_labels_sd"]),
                    "ari_X": float(scores.loc[layer, "ari_reference"]),
                }
            )
    out = pd.DataFrame(rows)
    out.insert(0, "draw", draw)
    out.insert(0, "section", section)
    return out


def report(parts: Path, name: str = "heldout") -> None:
    df = pd.concat([pd.read_csv(f) for f in sorted(parts.glob("*.csv"))], ignore_index=True)
    df.to_csv(REPO / "benchmarks" / "results" / f"structure_{name}.csv", index=False)
    lines = [
        f"# Tissue structure on the {'held-out' if name == 'heldout' else name} sections (issue 18)",
        "",
        "Written by `benchmarks/structure_heldout.py`. ARI against the labels, mean over holdout draws "
        f"{sorted(df['draw'].unique().tolist())} x {CLUSTER_SEEDS} clustering seeds; k-means / Leiden at the number "
        "of labelled regions. `*` marks the best row of a column. Tuning sections: "
        f"{', '.join(TUNING)}; held out: {', '.join(HELD_OUT)}.",
        "",
    ]
    cl = df.dropna(subset=["clusterer"])
    table = cl.pivot_table(index="layer", columns=["section", "clusterer"], values="ari_labels", aggfunc="mean")
    table = table.reindex([k for k in ROWS if k in table.index])
    cols = list(table.columns)
    lines.append("| matrix | " + " | ".join(f"{s} {c}" for s, c in cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for layer, row in table.iterrows():
        cells = [f"{v:.3f}{'*' if v == table[c].max() else ''}" for c, v in row.items()]
        lines.append(f"| {ROWS[layer]} | " + " | ".join(cells) + " |")
    lines += ["", "Agreement with the clusters of `X` (ARI, the reference project's check; same clusterings):", ""]
    agree = cl.pivot_table(index="layer", columns=["section", "clusterer"], values="ari_X", aggfunc="mean")
    agree = agree.reindex([k for k in ROWS if k in agree.index and k != "X"])
    lines.append("| matrix | " + " | ".join(f"{s} {c}" for s, c in agree.columns) + " |")
    lines.append("|---" * (len(agree.columns) + 1) + "|")
    for layer, row in agree.iterrows():
        lines.append(f"| {ROWS[layer]} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    sc = df[df["clusterer"].isna()].groupby(["section", "layer"])[["log1p_rmse", "pearson", "fit_seconds"]].mean()
    lines += [
        "",
        "Hidden entries (the default `output='conditional'`, mean over the draws):",
        "",
        "| section | model | log1p RMSE | Pearson | fit (s) |",
        "|---|---|---|---|---|",
    ]
    for (section, layer), r in sc.iterrows():
        lines.append(f"| {section} | {ROWS[layer]} | {r.log1p_rmse:.4f} | {r.pearson:.4f} | {r.fit_seconds:.0f} |")
    (REPO / "benchmarks" / "results" / f"structure_{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="*", default=list(HELD_OUT))
    parser.add_argument("--draws", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("structure_parts"))
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--name", default="heldout", help="results/structure_<name>.{md,csv} (--report)")
    args = parser.parse_args()
    if args.report:
        report(args.out, args.name)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    st.settings.verbosity = "warning"
    for section in args.sections:
        for draw in args.draws:
            log(f"{section} draw {draw}")
            run(section, draw).to_csv(args.out / f"{section}_{draw}.csv", index=False)


if __name__ == "__main__":
    main()
