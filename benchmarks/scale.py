"""How stimpute scales with the number of spots: wall time and peak memory of each step.

Visium HD bins a slide into hundreds of thousands of spots. This script builds synthetic sections of
growing size (``st.datasets.synthetic_visium``: hexagonal grid, negative-binomial counts, H&E-like
image) and times every step of the workflow on each, in a fresh process per size so that peaks do
not carry over: ``st.pp.holdout``, ``st.tl.impute(method="knn")``, ``st.pp.spatial_smooth``,
``st.pp.image_features`` (handcrafted), ``st.tl.impute(method="multimodal")`` with a fixed number
of epochs (time per epoch, not convergence) and ``st.tl.evaluate``. Memory is the peak resident-set
size increase of the process during the step (sampled every 5 ms), next to the size of one dense
float32 spots x genes matrix, which the imputed layer is by nature.

Usage::

    python benchmarks/scale.py                       # 10k, 50k, 200k spots x 2,000 genes (about 11 min here)
    python benchmarks/scale.py --quick               # 2k spots x 200 genes, for the smoke test

Writes ``results/scale.md`` and ``results/scale.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one_size(n_spots: int, n_genes: int, epochs: int, image_max_spots: int, seed: int) -> list[dict]:
    """Every step on one synthetic section, in this process."""
    import torch
    from _measure import PeakRSS  # benchmarks/ is on the path when the script runs

    import stimpute as st

    torch.set_num_threads(1)
    st.settings.device = "cpu"
    st.settings.progress_bar = False
    st.settings.verbosity = 0
    t0 = time.perf_counter()
    adata = st.datasets.synthetic_visium(n_spots=n_spots, n_genes=n_genes, mean_depth=300.0, random_state=seed)
    build_s = time.perf_counter() - t0
    dense_mb = n_spots * n_genes * 4 / 2**20
    rows = []

    def step(name: str, func) -> None:
        with PeakRSS() as m:
            t = time.perf_counter()
            func()
            wall_s = time.perf_counter() - t
        rows.append(
            {
                "n_spots": n_spots,
                "n_genes": n_genes,
                "step": name,
                "wall_s": round(wall_s, 2),
                "peak_mb": round(m.peak_mb, 0),
                "dense_matrix_mb": round(dense_mb, 0),
                "nnz_fraction": round(adata.X.nnz / (n_spots * n_genes), 3),
            }
        )
        print(f"  {n_spots:>7} spots  {name:<40} {wall_s:8.1f} s  {m.peak_mb:8.0f} MB", flush=True)

    step("st.pp.holdout (entries, 50%)", lambda: st.pp.holdout(adata, fraction=0.5, random_state=seed))
    step("st.tl.impute knn", lambda: st.tl.impute(adata, method="knn", layer="holdout_train"))
    step("st.pp.spatial_smooth", lambda: st.pp.spatial_smooth(adata, "holdout_train"))
    modalities = ("counts", "position")
    if n_spots <= image_max_spots:
        step("st.pp.image_features (handcrafted)", lambda: st.pp.image_features(adata, random_state=seed))
        modalities = ("counts", "position", "image")
    step(
        f"st.tl.impute multimodal, {epochs} epochs",
        lambda: st.tl.impute(
            adata,
            method="multimodal",
            layer="holdout_train",
            modalities=modalities,
            max_epochs=epochs,
            random_state=seed,
        ),
    )
    per_epoch = rows[-1]["wall_s"] / epochs
    rows[-1]["note"] = (
        f"{per_epoch:.1f} s per epoch (the final prediction of every spot included); modalities {'+'.join(modalities)}"
    )
    step("st.tl.evaluate", lambda: st.tl.evaluate(adata, ["imputed_knn", "imputed_multimodal"]))
    rows[0]["note"] = f"building the synthetic section took {build_s:.0f} s (not counted)"
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spots", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2, help="multimodal epochs (time per epoch, not convergence)")
    p.add_argument("--image-max-spots", type=int, default=1_000_000, help="skip image features above this size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="2,000 spots x 200 genes (smoke test)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: one size, JSON to stdout
    args = p.parse_args(argv)
    if args.quick:
        args.spots, args.genes = [2000], 200
    if args.one is not None:
        rows = one_size(args.one, args.genes, args.epochs, args.image_max_spots, args.seed)
        print("JSON " + json.dumps(rows), flush=True)
        return 0

    import pandas as pd

    start = time.perf_counter()
    all_rows = []
    for n in args.spots:
        cmd = [sys.executable, __file__, "--one", str(n), "--genes", str(args.genes), "--epochs", str(args.epochs)]
        cmd += ["--image-max-spots", str(args.image_max_spots), "--seed", str(args.seed)]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        sys.stdout.write("".join(line + "\n" for line in res.stdout.splitlines() if not line.startswith("JSON ")))
        if res.returncode != 0:
            msg = f"size {n} failed:\n{res.stderr[-3000:]}"
            raise RuntimeError(msg)
        line = next(line for line in res.stdout.splitlines() if line.startswith("JSON "))
        all_rows += json.loads(line[5:])
    table = pd.DataFrame(all_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "scale.csv", index=False)
    import stimpute

    lines = [
        "# How stimpute scales with the number of spots",
        "",
        f"Generated by `benchmarks/scale.py` (stimpute {stimpute.__version__}, {time.strftime('%Y-%m-%d')}); "
        f"synthetic sections of {args.genes:,} genes, mean depth 300; one CPU thread; {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs; total {(time.perf_counter() - start) / 60:.1f} min. "
        "`peak_mb` is the peak RSS increase of the process during the step; `dense_matrix_mb` the size of one "
        "dense float32 spots x genes matrix (the imputed layer is one).",
        "",
        "| spots | step | wall s | peak MB | dense matrix MB | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in all_rows:
        lines.append(
            f"| {r['n_spots']:,} | {r['step']} | {r['wall_s']:.1f} | {r['peak_mb']:.0f} | {r['dense_matrix_mb']:.0f} "
            f"| {r.get('note', '')} |"
        )
    (args.out / "scale.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'scale.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
