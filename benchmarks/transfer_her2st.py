#!/usr/bin/env python
"""Reusing a trained model on another her2st section, where the image carries signal: do the image axes matter?

``transfer_dlpfc.py`` shows that a model transfers between the DLPFC sections, but there the 5-px lowres tiles add
almost nothing, so whether the target's image features sit on the source's axes cannot show. The her2st sections C2
and C3 have full-resolution H&E and the image network predicts unseen spots best (``image_her2st.md``). For each
direction (C2 -> C3, C3 -> C2) and for the ``"image"`` and ``"multimodal"`` networks:

* both sections are cut to the 2,000 genes most detected over both (among the shared genes); handcrafted image
  features at tile scale 2 from the full-resolution jpg;
* the source model is trained on all of the source's counts (``detection=True, output="expected"``, as
  ``image_her2st.py`` does for unseen spots);
* on the target, 20% of the spots are hidden whole (``st.pp.holdout(strategy="spots")``, seeds 0-4), and the hidden
  spots are scored for: the source model with the target's features on the source's axes
  (``st.pp.image_features(target, reference=model)``, the supported way); the source model with the target's
  features PCA-ed on its own axes (what ``predict`` accepted before it checked; the check is bypassed here on
  purpose by dropping the record's axes); the same network trained on the target's own training matrix; the
  gene-mean floor.

Run from the repository root (about 4 minutes on one CPU thread)::

    python benchmarks/transfer_her2st.py            # writes benchmarks/results/transfer_her2st.{md,csv}
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import stimpute as st  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAIRS = (("C2", "C3"), ("C3", "C2"))
METHODS = ("image", "multimodal")
SEEDS = range(5)
N_GENES = 2000
TILE_SCALE = 2.0
FIT = {"detection": True, "output": "expected"}
ROWS = {
    "transfer, reference axes": "source model, target features on the source's axes (`reference=model`)",
    "transfer, own axes": "source model, target features PCA-ed on the target's own axes (check bypassed)",
    "trained on the target": "the same network trained on the target's training matrix",
    "baseline: gene mean": "gene-mean floor",
}


def sections() -> dict:
    data = {s: st.datasets.her2st(s) for s in ("C2", "C3")}
    shared = data["C2"].var_names.intersection(data["C3"].var_names)
    detected = sum(np.asarray((data[s][:, shared].X > 0).sum(axis=0)).ravel() for s in data)
    genes = shared[np.sort(np.argsort(-detected, kind="stable")[:N_GENES])]
    return {s: data[s][:, genes].copy() for s in data}


def run_pair(source, target, method: str) -> list[dict]:
    a, b = source.copy(), target.copy()
    st.pp.image_features(a, tile_scale=TILE_SCALE)
    model = st.tl.impute(a, method, return_model=True, random_state=0, **FIT)
    st.pp.image_features(b, tile_scale=TILE_SCALE, key_added="own")
    st.pp.image_features(b, tile_scale=TILE_SCALE, key_added="ref", reference=model)
    rows = []
    for seed in SEEDS:
        st.pp.holdout(b, fraction=0.2, strategy="spots", random_state=seed)
        model.predict(b, layer="holdout_train", image_key="ref", key_added="transfer, reference axes")
        unchecked = b.copy()  # what predict accepted before it checked the axes
        unchecked.uns["own"] = {k: v for k, v in unchecked.uns["own"].items() if k != "projection"}
        model.predict(unchecked, layer="holdout_train", image_key="own", key_added="transfer, own axes")
        b.layers["transfer, own axes"] = unchecked.layers["transfer, own axes"]
        b.uns["transfer, own axes"] = unchecked.uns["transfer, own axes"]
        st.tl.impute(
            b,
            method,
            layer="holdout_train",
            image_key="own",
            key_added="trained on the target",
            random_state=seed,
            **FIT,
        )
        scores = st.tl.evaluate(b, ["transfer, reference axes", "transfer, own axes", "trained on the target"])
        for layer in ROWS:
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "layer": layer,
                    "rmse_log1p": float(scores.loc[layer, "rmse_log1p"]),
                    "pearson_log1p": float(scores.loc[layer, "pearson_log1p"]),
                }
            )
    return rows


def to_markdown(table: pd.DataFrame, minutes: float) -> str:
    import torch

    mean = table.groupby(["source", "target", "method", "layer"], sort=False)[["rmse_log1p", "pearson_log1p"]].mean()
    lines = [
        "# Reusing a trained model on another her2st section (unseen spots)",
        "",
        f"Generated by `python benchmarks/transfer_her2st.py` ({minutes:.1f} min on one CPU thread; Python "
        f"{platform.python_version()}, torch {torch.__version__}). Protocol in the script's docstring: 2,000 shared "
        "genes, handcrafted image features at tile scale 2 from the full-resolution jpg, 20% of the target's spots "
        f"hidden whole, mean over holdout seeds {list(SEEDS)}. Rows:",
        "",
        *[f"- `{k}`: {v}" for k, v in ROWS.items()],
        "",
        "| source | target | network | layer | rmse_log1p | pearson_log1p |",
        "|---|---|---|---|---|---|",
    ]
    for (source, target, method, layer), r in mean.iterrows():
        lines.append(f"| {source} | {target} | {method} | {layer} | {r.rmse_log1p:.4f} | {r.pearson_log1p:.4f} |")
    lines += ["", "## Reference axes against own axes, paired by holdout seed", ""]
    lines += [
        "| source | target | network | Δ rmse_log1p (own - reference) | reference better (RMSE) | Δ pearson_log1p (reference - own) | reference better (Pearson) |"
    ]
    lines += ["|---|---|---|---|---|---|---|"]
    for (source, target, method), sub in table.groupby(["source", "target", "method"], sort=False):
        w = sub.pivot(index="seed", columns="layer")
        d_rmse = w["rmse_log1p"]["transfer, own axes"] - w["rmse_log1p"]["transfer, reference axes"]
        d_r = w["pearson_log1p"]["transfer, reference axes"] - w["pearson_log1p"]["transfer, own axes"]
        lines.append(
            f"| {source} | {target} | {method} | {d_rmse.mean():+.4f} | {int((d_rmse > 0).sum())}/{len(d_rmse)} | "
            f"{d_r.mean():+.4f} | {int((d_r > 0).sum())}/{len(d_r)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    st.settings.device = "cpu"
    st.settings.progress_bar = False
    st.settings.verbosity = "error"
    start = time.perf_counter()
    data = sections()
    rows = []
    for source, target in PAIRS:
        for method in METHODS:
            print(f"{source} -> {target}, {method}", flush=True)
            rows += [{"source": source, "target": target, **r} for r in run_pair(data[source], data[target], method)]
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "transfer_her2st.csv", index=False)
    (out / "transfer_her2st.md").write_text(to_markdown(table, (time.perf_counter() - start) / 60))
    print(f"wrote {out / 'transfer_her2st.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
