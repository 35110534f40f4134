#!/usr/bin/env python
"""Two sections in one AnnData (``library_key``): DLPFC 151673 + 151674 joined as squidpy users join them.

``anndata.concat(..., label="library_id", uns_merge="unique")`` puts both sections in one object whose
``obsm['spatial']`` holds each section's own pixel coordinates: the two frames overlap, so a nearest-neighbour
search over all spots mixes the sections. This script measures what ``library_key="library_id"`` keeps and what
mixing costs:

* the two sections are cut to their 2,340 shared genes and joined; one
  ``st.pp.holdout(fraction=0.5, strategy="entries", random_state=0)`` hides entries of both, and each section's
  "alone" object is cut out of the joined one (the same hidden entries);
* ``alone``: each section on its own (``st.pp.image_features``, then the default ``st.tl.impute(method="multimodal")``);
* ``joint, library_key``: one default fused model trained on both sections at once, image features cut from each
  spot's own library, neighbours searched within a section (``library_key="library_id"``);
* ``joint, sections mixed``: the same, but neighbours and positions taken over both sections as if they were one
  (what a tool without a library key does; reached here by hiding the second library from the check on purpose);
* the same three for ``"knn"``; ``st.tl.evaluate`` scores each section's hidden entries;
* clusters (``st.tl.compare_clusters``, 7 clusters, k-means and Leiden, 5 seeds) of each section's smoothed
  normalized readout against the manual layers, with the smoothed training matrix as the reference row.

Run from the repository root (about 2.5 minutes on one CPU thread)::

    python benchmarks/sections_dlpfc.py            # writes benchmarks/results/sections_dlpfc.{md,csv}
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402

import stimpute as st  # noqa: E402
from stimpute._graph import spatial_graph  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("151673", "151674")
KEY = "library_id"
SEEDS = 5
SMOOTHED = ", readout smoothed"
ROWS = {
    "multimodal, alone": "the section on its own object",
    "multimodal, joint, library_key": "one model for both sections, `library_key='library_id'`",
    "multimodal, joint, sections mixed": "one model for both sections, neighbours and positions over both as one",
    "knn, alone": "`knn` on the section on its own",
    "knn, joint, library_key": "`knn` on the joined object with `library_key`",
    "knn, joint, sections mixed": "`knn` on the joined object, neighbours over both sections",
    "baseline: gene mean": "gene-mean floor",
}


def joined() -> ad.AnnData:
    parts = {s: st.datasets.dlpfc(s) for s in SECTIONS}
    both = ad.concat(parts, label=KEY, uns_merge="unique", index_unique="-", join="inner")
    st.pp.holdout(both, fraction=0.5, strategy="entries", random_state=0)
    return both


def alone(both: ad.AnnData, section: str) -> ad.AnnData:
    sub = both[both.obs[KEY] == section].copy()
    sub.uns["spatial"] = {section: both.uns["spatial"][section]}
    return sub


def mixed(both: ad.AnnData) -> ad.AnnData:
    """The joined object with one library left in ``uns['spatial']`` and its obs column renamed: nothing tells the
    sections apart, so stimpute's refusal to mix them is bypassed on purpose."""
    out = both.copy()
    first = next(iter(out.uns["spatial"]))
    out.uns["spatial"] = {first: out.uns["spatial"][first]}
    out.obs = out.obs.rename(columns={KEY: "section"})
    return out


def run() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    both = joined()
    times = {}
    sections = {s: alone(both, s) for s in SECTIONS}
    for s, a in sections.items():
        st.pp.image_features(a)
        t = time.perf_counter()
        model = st.tl.impute(a, "multimodal", layer="holdout_train", return_model=True)
        times[f"multimodal, alone, {s}"] = time.perf_counter() - t
        a.layers["multimodal, alone"] = a.layers["imputed_multimodal"]
        model.predict(a, layer="holdout_train", key_added="readout", output="normalized")
        st.pp.spatial_smooth(a, "readout", key_added=f"multimodal, alone{SMOOTHED}")
        st.tl.impute(a, "knn", layer="holdout_train", key_added="knn, alone")
        st.pp.spatial_smooth(a, "holdout_train", key_added="smoothed train")

    st.pp.image_features(both, library_key=KEY)
    t = time.perf_counter()
    model = st.tl.impute(both, "multimodal", layer="holdout_train", library_key=KEY, return_model=True)
    times["multimodal, joint, library_key"] = time.perf_counter() - t
    model.predict(both, layer="holdout_train", key_added="readout", output="normalized", library_key=KEY)
    st.pp.spatial_smooth(both, "readout", key_added=f"multimodal, joint, library_key{SMOOTHED}", library_key=KEY)
    st.tl.impute(both, "knn", layer="holdout_train", library_key=KEY, key_added="knn, joint, library_key")

    mix = mixed(both)  # the same image features (cut per library above), but one frame for neighbours and positions
    model_mixed = st.tl.impute(mix, "multimodal", layer="holdout_train", return_model=True, key_added="mixed")
    model_mixed.predict(mix, layer="holdout_train", key_added="readout mixed", output="normalized")
    st.pp.spatial_smooth(mix, "readout mixed", key_added=f"multimodal, joint, sections mixed{SMOOTHED}")
    st.tl.impute(mix, "knn", layer="holdout_train", key_added="knn, joint, sections mixed")
    both.layers["multimodal, joint, library_key"] = both.layers["imputed_multimodal"]
    both.layers["multimodal, joint, sections mixed"] = mix.layers["mixed"]
    both.layers["knn, joint, sections mixed"] = mix.layers["knn, joint, sections mixed"]
    both.layers[f"multimodal, joint, sections mixed{SMOOTHED}"] = mix.layers[
        f"multimodal, joint, sections mixed{SMOOTHED}"
    ]

    scores, clusters = [], []
    for s, a in sections.items():
        mask = (both.obs[KEY] == s).to_numpy()
        joint_rows = [k for k in ROWS if ", joint, " in k]
        for name in joint_rows + [f"{k}{SMOOTHED}" for k in joint_rows if k.startswith("multimodal")]:
            a.layers[name] = both.layers[name][mask]
        evaluated = [k for k in ROWS if not k.startswith("baseline")]
        table = st.tl.evaluate(a, evaluated).loc[list(ROWS), ["rmse_log1p", "pearson_log1p", "median_gene_pearson"]]
        table.insert(0, "section", s)
        scores.append(table.rename_axis("layer").reset_index())
        smoothed = ["smoothed train"] + [f"{k}{SMOOTHED}" for k in ROWS if k.startswith("multimodal")]
        for method in ("kmeans", "leiden"):
            st.tl.compare_clusters(
                a, smoothed, method=method, n_clusters=7, labels_key="label", n_repeats=SEEDS, key_added=f"c_{method}"
            )
            ari = a.uns[f"c_{method}"]["scores"]
            for layer in smoothed:
                clusters.append(
                    {
                        "section": s,
                        "matrix (smoothed, self + 6 nearest)": layer.removesuffix(SMOOTHED).replace(
                            "smoothed train", "training matrix"
                        ),
                        "method": method,
                        "ari_labels_mean": float(ari.loc[layer, "ari_labels"]),
                        "ari_labels_sd": float(ari.loc[layer, "ari_labels_sd"]),
                    }
                )
    g = spatial_graph(st.get.spatial_coords(both), 6).tocoo()
    lib = both.obs[KEY].to_numpy()
    label = both.obs["label"].astype(str).to_numpy()
    cross = lib[g.row] != lib[g.col]
    labelled = (both.obs["label"].notna().to_numpy()[g.row]) & (both.obs["label"].notna().to_numpy()[g.col])
    same = label[g.row] == label[g.col]
    info = {
        "n_spots": int(both.n_obs),
        "n_genes": int(both.n_vars),
        "cross_section_edges": float(cross.mean()),
        # how aligned the two frames are: same manual layer at both ends of an edge
        "same_layer_within": float(same[~cross & labelled].mean()),
        "same_layer_across": float(same[cross & labelled].mean()),
        **{k: round(v, 1) for k, v in times.items()},
    }
    return pd.concat(scores, ignore_index=True), pd.DataFrame(clusters), info


def to_markdown(scores: pd.DataFrame, clusters: pd.DataFrame, info: dict, minutes: float) -> str:
    import torch

    lines = [
        "# Two DLPFC sections in one AnnData (`library_key`)",
        "",
        f"Generated by `python benchmarks/sections_dlpfc.py` ({minutes:.1f} min on one CPU thread; Python "
        f"{platform.python_version()}, torch {torch.__version__}). 151673 and 151674 joined with `anndata.concat` "
        f"({info['n_spots']:,} spots x {info['n_genes']:,} shared genes); one holdout over both; protocol in the "
        "script's docstring. Without a library key, "
        f"{info['cross_section_edges']:.0%} of the 6-nearest-neighbour edges over all spots join a spot to the "
        "other section (the two sections' pixel frames overlap). These are adjacent serial sections of one donor "
        "whose frames happen to be roughly aligned: an edge across the sections joins spots of the same manual layer "
        f"{info['same_layer_across']:.0%} of the time, against {info['same_layer_within']:.0%} within a section, so "
        "mixing them costs less here than it would for unrelated sections. Rows:",
        "",
        *[f"- `{k}`: {v}" for k, v in ROWS.items()],
        "",
        "## Hidden entries (`st.tl.evaluate`, log1p)",
        "",
        "| section | layer | rmse_log1p | pearson_log1p | median_gene_pearson |",
        "|---|---|---|---|---|",
    ]
    for r in scores.itertuples(index=False):
        lines.append(
            f"| {r.section} | {r.layer} | {r.rmse_log1p:.4f} | {r.pearson_log1p:.4f} | {r.median_gene_pearson:.4f} |"
        )
    lines += [
        "",
        f"## Clusters against the manual layers (ARI, mean and sd over {SEEDS} clustering seeds)",
        "",
        "Each normalized readout (`output='normalized'`) smoothed over each spot and its 6 nearest spots of its own "
        "section (the mixed model's readout over both sections, as that model saw them), the recipe of the "
        "tutorials; the smoothed training matrix is the reference.",
        "",
        "| section | matrix (smoothed, self + 6 nearest) | k-means | Leiden |",
        "|---|---|---|---|",
    ]
    wide = clusters.pivot_table(
        index=["section", "matrix (smoothed, self + 6 nearest)"],
        columns="method",
        values=["ari_labels_mean", "ari_labels_sd"],
        sort=False,
    )
    for (section, matrix), r in wide.iterrows():
        lines.append(
            f"| {section} | {matrix} | {r[('ari_labels_mean', 'kmeans')]:.3f} ({r[('ari_labels_sd', 'kmeans')]:.3f}) | "
            f"{r[('ari_labels_mean', 'leiden')]:.3f} ({r[('ari_labels_sd', 'leiden')]:.3f}) |"
        )
    lines += [
        "",
        "Training time of the fused model (one thread): "
        + "; ".join(f"{k.removeprefix('multimodal, ')} {v} s" for k, v in info.items() if k.startswith("multimodal"))
        + ".",
        "",
        "## Reading",
        "",
        *summary(scores),
        "",
    ]
    return "\n".join(lines)


def summary(scores: pd.DataFrame) -> list[str]:
    out = []
    for section, sub in scores.groupby("section", sort=False):
        v = sub.set_index("layer")["rmse_log1p"]
        out.append(
            f"- {section}: multimodal alone {v['multimodal, alone']:.4f}, joint with `library_key` "
            f"{v['multimodal, joint, library_key']:.4f} ({v['multimodal, joint, library_key'] - v['multimodal, alone']:+.4f}), "
            f"sections mixed {v['multimodal, joint, sections mixed']:.4f}; knn {v['knn, alone']:.4f} alone, "
            f"{v['knn, joint, library_key']:.4f} with `library_key`, {v['knn, joint, sections mixed']:.4f} mixed."
        )
    return out


def main(argv=None) -> int:
    from _measure import one_cpu_thread_quiet, out_dir_args  # benchmarks/ is on the path when the script runs

    args = out_dir_args(__doc__, str(REPO / "benchmarks" / "results"), argv)
    one_cpu_thread_quiet()
    start = time.perf_counter()
    scores, clusters, info = run()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scores.to_csv(out / "sections_dlpfc.csv", index=False)
    clusters.to_csv(out / "sections_dlpfc_clusters.csv", index=False)
    (out / "sections_dlpfc.md").write_text(to_markdown(scores, clusters, info, (time.perf_counter() - start) / 60))
    print(f"wrote {out / 'sections_dlpfc.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
