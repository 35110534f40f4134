"""Smoke test of the benchmark harness (benchmarks/run_benchmark.py) on tiny synthetic data.

The benchmark itself is not part of the test suite; this runs its ``--quick`` mode in a subprocess
(synthetic data, 2 gene folds, 2 epochs) and checks the tables it writes. scVI is left out here
because importing scvi-tools alone takes about 15 s; the full benchmark runs it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stimpute as st

from .conftest import data_dir, require_data

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "run_benchmark.py"
METHODS = [
    "knn",
    "autoencoder",
    "positional",
    "image",
    "multimodal",
    "multimodal_nb",
    "multimodal_det",
    "smoothing",
    "magic",
    "stlearn_sme",
]
PROTOCOLS = ["entries", "gene_folds", "thinning"]
LABELS = {
    "knn": "stimpute: knn",
    "autoencoder": "stimpute: autoencoder",
    "positional": "stimpute: positional",
    "image": "stimpute: image",
    "multimodal": "stimpute: multimodal",
    "multimodal_nb": "stimpute: multimodal (loss=nb)",
    "multimodal_det": "stimpute: multimodal (detection=True)",
    "smoothing": "spatial smoothing (7-spot mean)",
    "magic": "MAGIC",
    "stlearn_sme": "stLearn SME",
}


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(out), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> tuple[pd.DataFrame, Path, str]:
    out = tmp_path_factory.mktemp("bench")
    proc = _run(out, "--methods", *METHODS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return pd.read_csv(out / "benchmark.csv"), out, proc.stdout


def test_rows_for_every_method_and_protocol(quick_results):
    table, _, _ = quick_results
    assert set(table["dataset"]) == {"synthetic"}
    for protocol in PROTOCOLS:
        sub = table[table["protocol"] == protocol]
        expected = [LABELS[m] for m in METHODS] + ["baseline: train as is", "baseline: gene mean"]
        assert sorted(sub["method"]) == sorted(expected), protocol
    # one row per (protocol, method): folds are averaged, not listed
    assert not table.duplicated(["dataset", "protocol", "method"]).any()
    assert (table.loc[table["protocol"] == "gene_folds", "n_splits"].dropna() == 2).all()


def test_values_are_sane(quick_results):
    table, _, _ = quick_results
    ok = table[(table["status"] == "ok") & table["protocol"].isin(PROTOCOLS)]
    assert len(ok) >= 3 * 4  # at least the peers and baselines of every protocol
    for col in ["rmse_raw", "rmse_log1p", "rmse_log2cpm", "n_hidden"]:
        assert (ok[col] > 0).all() and np.isfinite(ok[col]).all(), col
    r = ok["pearson_log1p"].dropna()
    assert ((r >= -1) & (r <= 1)).all()
    methods = ok[ok["family"].isin(["stimpute", "peer"])]
    assert (methods["wall_s"] >= 0).all() and np.isfinite(methods["peak_rss_mb"]).all()
    # the same hidden entries for every method of a protocol
    for _, sub in ok.groupby("protocol"):
        assert sub["n_hidden"].nunique() == 1
    # smoothing the neighbours beats predicting the zeros that the training layer has at hidden entries
    entries = ok[ok["protocol"] == "entries"].set_index("method")
    assert (
        entries.loc["spatial smoothing (7-spot mean)", "rmse_log1p"]
        < entries.loc["baseline: train as is", "rmse_log1p"]
    )
    # labelled synthetic domains: clustering the full counts recovers them well
    ref = table[table["method"] == "reference: all counts"]
    assert len(ref) == 1 and ref["ari"].iloc[0] > 0.5


def test_stimpute_and_peer_status(quick_results):
    table, _, _ = quick_results
    status = table[table["protocol"] == "entries"].set_index("method")["status"]
    assert status["stLearn SME"].startswith("not run")
    assert status["spatial smoothing (7-spot mean)"] == "ok"
    if importlib.util.find_spec("magic") is not None:
        assert status["MAGIC"] == "ok"
    else:
        assert status["MAGIC"].startswith("not available")
    for m in ["knn", "autoencoder", "positional", "image", "multimodal", "multimodal_nb", "multimodal_det"]:
        if hasattr(st.tl, "impute"):
            assert status[LABELS[m]] == "ok", status[LABELS[m]]
        else:
            assert status[LABELS[m]].startswith("not available")


def test_markdown_and_plot(quick_results):
    table, out, stdout = quick_results
    md = (out / "benchmark.md").read_text()
    assert "| protocol | method | RMSE log1p |" in md
    assert md.count("\n| gene_folds |") == (table["protocol"] == "gene_folds").sum()
    png = out / "benchmark.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in stdout  # progress is printed


def test_bad_arguments_fail(tmp_path):
    proc = _run(tmp_path, "--methods", "no_such_method")
    assert proc.returncode != 0 and "invalid choice" in proc.stderr
    assert not (tmp_path / "benchmark.csv").exists()


def _run_script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run benchmarks/<name> with one thread and a headless matplotlib; ``env`` adds variables."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **env}
    cmd = [sys.executable, str(REPO / "benchmarks" / name), *args]
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300, check=False)


def _load_script(name: str):
    """benchmarks/<name> imported as a module (its functions, without running it)."""
    spec = importlib.util.spec_from_file_location(Path(name).stem, REPO / "benchmarks" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_her2st_quick(tmp_path, her2st_dir):
    """benchmarks/image_her2st.py --quick (real her2st sections, 200 genes, 5 epochs) writes sane tables."""
    proc = _run_script("image_her2st.py", "--quick", "--out", str(tmp_path), STIMPUTE_DATA=str(her2st_dir.parent))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "image_her2st_quick.csv")
    assert set(table["strategy"]) == {"spots", "entries"}
    assert {"knn", "image, tile_scale 2", "multimodal (tile_scale 2)", "baseline: gene mean"} <= set(table["method"])
    assert table["rmse_log1p"].between(0, 5).all()
    # finite scores for every method (quality itself is judged by the full run, not by this smoke test)
    assert np.isfinite(table.loc[table["method"] != "baseline: gene mean", "top50_pearson"]).all()
    text = (tmp_path / "image_her2st_quick.md").read_text()
    assert "paired by holdout seed" in text and "full-resolution" in text


def test_scale_quick(tmp_path):
    """benchmarks/scale.py --quick (2,000 synthetic spots, one fresh process) times and measures every step."""
    proc = _run_script("scale.py", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "scale.csv")
    assert (table["n_spots"] == 2000).all()
    assert any(step.startswith("st.tl.impute multimodal") for step in table["step"])
    assert "st.pp.spatial_smooth" in set(table["step"])
    assert (table["wall_s"] >= 0).all() and np.isfinite(table["peak_mb"]).all()
    assert "| 2,000 |" in (tmp_path / "scale.md").read_text()


def test_cluster_seeds_report_merges_sections(tmp_path):
    """benchmarks/cluster_seeds.py --report: per-section tables -> one markdown table per section and a reading."""
    cs = _load_script("cluster_seeds.py")
    parts = tmp_path / "parts"
    parts.mkdir()
    rng = np.random.default_rng(0)
    names = [
        *cs.ROWS.values(),
        "multimodal readout (training seed 0)",
        "multimodal readout smoothed alike (training seed 0)",
    ]
    for section in ("151673", "151674"):
        table = pd.DataFrame(
            {
                c: rng.uniform(0, 1, len(names))
                for c in ("ari_leiden_mean", "ari_leiden_sd", "ari_kmeans_mean", "ari_kmeans_sd")
            },
            index=pd.Index(names, name="matrix"),
        )
        table.insert(0, "section", section)
        table["runtime_min"] = 1.5
        table.to_csv(parts / f"cluster_seeds_{section}.csv")
    assert cs.main(["--report", "--parts", str(parts), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "cluster_seeds.md").read_text()
    assert "## 151673" in text and "## 151674" in text and "(3 min of section runs" in text
    bar = table.loc[cs.ROWS["smoothed_train"]]
    assert f"- 151674: the bar (smoothed training matrix) {bar.ari_leiden_mean:.3f} / {bar.ari_kmeans_mean:.3f}" in text
    merged = pd.read_csv(tmp_path / "out" / "cluster_seeds.csv", index_col=0, dtype={"section": str})
    assert len(merged) == 2 * len(names)


def test_orientation_check_on_every_real_section(tmp_path):
    """benchmarks/orientation_check.py: silent on every section's own coordinates, never names a wrong mix-up."""
    for folder in ("dlpfc_151673", "dlpfc_151674", "her2st_C2", "her2st_C3", "mob_st", "mouse_placenta_cytassist"):
        require_data(folder)
    proc = _run_script("orientation_check.py", "--out", str(tmp_path), STIMPUTE_DATA=str(data_dir()))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (tmp_path / "orientation_check.md").read_text()
    assert "Silent on correct coordinates: 6 of 6 sections" in text
    assert "wrongly named: 0." in text
    named = int(text.split("Mix-ups named correctly: ")[1].split(" of ")[0])
    assert named >= 12  # of 18 (16 when measured)
    false_alarms = int(text.split("False alarms in all: ")[1].split(" of ")[0])
    assert false_alarms <= 6  # of 600 parts of sections with correct coordinates (0 when measured)


def test_holdout_draws_report(tmp_path):
    """benchmarks/holdout_draws_dlpfc.py --stage report: means over draws, paired wins over the bar, targets."""
    hd = _load_script("holdout_draws_dlpfc.py")
    parts = tmp_path / "parts"
    parts.mkdir()
    # two draws; Leiden: the smoothed readout beats the bar on draw 1 only, but on the mean over draws
    ari = {"train": (0.1, 0.1), "bar": (0.5, 0.3), "nor": (0.2, 0.35), "smnor": (0.45, 0.45)}
    rows = [
        {"section": "151673", "draw": -1, "layer": name, "method": m, "ari_mean": v, "ari_min": v, "ari_max": v}
        for name, v in (("X", 0.25), ("X smoothed (complete data)", 0.3))
        for m in ("leiden", "kmeans")
    ]
    for d in (0, 1):
        for prefix, values in ari.items():
            for m in ("leiden", "kmeans"):
                value = values[d] if m == "leiden" else 0.2  # k-means: every matrix ties at 0.2
                row = {"section": "151673", "draw": d, "layer": hd.ROWS[prefix], "method": m, "ari_mean": value}
                if prefix == "nor":
                    row |= {"rmse_log1p": 0.26, "pearson_log1p": 0.83, "floor_rmse_log1p": 0.34}
                rows.append(row)
    pd.DataFrame(rows).to_csv(parts / "holdout_draws_151673.csv", index=False)
    scores = [  # the fused model beats positional on both scores in draw 0 only
        {"section": "151673", "draw": d, "method": m, "rmse_log1p": r, "pearson_log1p": p}
        for d, m, r, p in [
            (0, "multimodal", 0.26, 0.83),
            (1, "multimodal", 0.26, 0.83),
            (0, "positional", 0.27, 0.82),
            (1, "positional", 0.25, 0.82),
        ]
    ]
    pd.DataFrame(scores).to_csv(parts / "holdout_draws_scores_151673.csv", index=False)
    assert hd.main(["--stage", "report", "--parts", str(parts), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "holdout_draws_dlpfc.md").read_text()
    assert "| 151673 | leiden | smoothed training matrix (the bar) | 0.4000 | 0.1414 | 0.3000 | 0.5000 |  |" in text
    assert (
        "| 151673 | leiden | multimodal, output=normalized, smoothed | 0.4500 | 0.0000 | 0.4500 | 0.4500 | 1 of 2 |"
        in text
    )
    assert "| 151673 | leiden | multimodal, output=normalized, smoothed | True | True | True |" in text
    assert (
        "| 151673 | leiden | multimodal, output=normalized | True | True | False |" in text
    )  # 0.275 vs 0.25, 0.1, 0.4
    assert "| 151673 | kmeans | multimodal, output=normalized, smoothed | False | False | False |" in text  # ties
    assert "| 151673 | 1 | 0.2600 | 0.8300 | 0.3400 | 0.1000 | 0.3000 | 0.3500 | 0.4500 |" in text
    assert "| 151673 | positional | 0.2600 | 0.2500 | 0.2700 | 0.8200 | 1 of 2 |" in text
