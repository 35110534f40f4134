#!/usr/bin/env python
"""Benchmark stimpute's imputation methods against peers on held-out counts.

One command (see benchmarks/README.md)::

    python benchmarks/run_benchmark.py                # every real section, every protocol, every method
    python benchmarks/run_benchmark.py --quick        # synthetic data, tiny settings (about 15 s)

For each dataset x protocol x method the harness hides counts with ``st.pp.holdout``, lets the method
see only ``layers['holdout_train']`` (plus positions and image), scores the prediction on the hidden
entries with ``st.tl.evaluate``, clusters it against the manual labels where a dataset has them
(adjusted Rand index), and measures wall time and peak resident memory. Results are written to
``<out>/benchmark.csv``, ``<out>/benchmark.md`` and ``<out>/benchmark.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

DATASETS = {
    # name: (loader name, loader kwargs, fallback path under settings.datadir, labels key, n clusters)
    "dlpfc_151673": ("dlpfc", {"section": "151673"}, ("dlpfc_151673", "adata.h5ad"), "label", 7),
    "dlpfc_151674": ("dlpfc", {"section": "151674"}, ("dlpfc_151674", "adata.h5ad"), "label", 7),
    "mouse_placenta_cytassist": ("mouse_placenta", {}, ("mouse_placenta_cytassist", "adata.h5ad"), None, 0),
    "mob_st": ("mouse_olfactory_bulb", {}, ("mob_st", "mob_st_MOB1.h5ad"), None, 0),
    "her2st_C2": ("her2st", {"section": "C2"}, ("her2st_C2", "adata.h5ad"), None, 0),
    "her2st_C3": ("her2st", {"section": "C3"}, ("her2st_C3", "adata.h5ad"), None, 0),
    "synthetic": ("synthetic_visium", {}, None, "domain", 4),
}
# small sections first, so that a run cut short still has them
REAL_DATASETS = ["mob_st", "her2st_C2", "her2st_C3", "dlpfc_151673", "dlpfc_151674", "mouse_placenta_cytassist"]
PROTOCOLS = ("entries", "gene_folds", "thinning")
STIMPUTE_METHODS = ("knn", "autoencoder", "positional", "image", "multimodal", "multimodal_nb", "multimodal_det")
# the expected-count readouts (zeros included), for protocols that score zeros: run on --nb-protocols only
EXPECTED_VARIANTS = ("multimodal_nb", "multimodal_det")
# benchmark name -> (st.tl.impute method, extra keyword arguments)
STIMPUTE_CALLS = {m: (m, {}) for m in STIMPUTE_METHODS} | {
    # keep_observed=False, the default for "expected", passed explicitly so that the benchmark does not follow a
    # change of default: thinning scores every entry, so a kept observed count would keep its sampling noise
    "multimodal_nb": ("multimodal", {"loss": "nb", "output": "expected", "keep_observed": False}),
    "multimodal_det": ("multimodal", {"detection": True, "output": "expected", "keep_observed": False}),
}
PEER_METHODS = ("smoothing", "magic", "scvi", "stlearn_sme")
ALL_METHODS = STIMPUTE_METHODS + PEER_METHODS
LABEL = {
    **{m: f"stimpute: {m}" for m in STIMPUTE_METHODS},
    "multimodal_nb": "stimpute: multimodal (loss=nb)",
    "multimodal_det": "stimpute: multimodal (detection=True)",
    "smoothing": "spatial smoothing (7-spot mean)",
    "magic": "MAGIC",
    "scvi": "scVI",
    "stlearn_sme": "stLearn SME",
}
BASELINES = ("baseline: train as is", "baseline: gene mean")
METRICS = (
    "rmse_raw",
    "mae_raw",
    "rmse_log1p",
    "mae_log1p",
    "pearson_log1p",
    "spearman",
    "median_gene_pearson",
    "rmse_log2cpm",
    "pearson_log2cpm",
)
COLUMNS = (
    "dataset",
    "protocol",
    "method",
    "family",
    "status",
    "n_spots",
    "n_genes",
    "max_genes",
    "n_splits",
    "n_hidden",
    *METRICS,
    "ari",
    "ari_smoothed",
    "wall_s",
    "cpu_s",
    "peak_rss_mb",
    "device",
    "settings",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark stimpute imputation methods and peers on held-out spatial counts.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--datasets", nargs="+", default=None, choices=list(DATASETS), help="default: every real section")
    p.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=list(ALL_METHODS))
    p.add_argument("--quick", action="store_true", help="synthetic data only, tiny epochs and sizes")
    p.add_argument("--out", type=Path, default=HERE / "results", help="folder for benchmark.csv/.md/.png")
    p.add_argument("--device", default="auto", help="st.settings.device: auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--max-genes", type=int, default=2000, help="keep this many most-detected genes per dataset")
    p.add_argument("--folds", type=int, default=5, help="gene_folds: how many of the 5 folds to run and average")
    p.add_argument("--scvi-epochs", type=int, default=20, help="scVI max_epochs (--quick: 2)")
    p.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="max_epochs of stimpute's trained methods (--quick: 1); 0 keeps st.tl.impute's default (100, early stopping)",
    )
    p.add_argument(
        "--ari-protocols",
        nargs="*",
        default=["entries", "thinning"],
        choices=list(PROTOCOLS),
        help="protocols whose imputations are clustered for the ARI (labelled datasets only)",
    )
    p.add_argument(
        "--fold-budget-s",
        type=float,
        default=60.0,
        help="gene_folds: a method gets no further fold once its folds took this long in total (at least one fold runs)",
    )
    p.add_argument(
        "--nb-protocols",
        nargs="*",
        default=["thinning"],
        choices=list(PROTOCOLS),
        help="protocols on which the expected-count variants of multimodal (loss='nb'; detection=True) run "
        "(they predict expected counts, zeros included)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for BLAS/OpenMP/torch (1 avoids spin-wait collapse on a shared CPU)",
    )
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--replot", action="store_true", help="only redraw <out>/benchmark.png from <out>/benchmark.csv")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------
# environment: threads must be fixed before numpy/torch are imported
# ------------------------------------------------------------------------------------------------


def _set_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("MPLBACKEND", "Agg")


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def load_dataset(name: str, *, max_genes: int, quick: bool, seed: int):
    """The section as AnnData with float32 CSR counts in X, restricted to the most-detected genes."""
    import anndata as ad
    import numpy as np
    from scipy import sparse

    import stimpute as st

    loader, kwargs, fallback, _, _ = DATASETS[name]
    if name == "synthetic":
        n_spots, n_genes = (200, 50) if quick else (1000, 300)
        adata = st.datasets.synthetic_visium(n_spots=n_spots, n_genes=n_genes, random_state=seed)
    elif hasattr(st.datasets, loader):
        adata = getattr(st.datasets, loader)(**kwargs)
    else:
        adata = ad.read_h5ad(st.settings.datadir.joinpath(*fallback))
    X = sparse.csr_matrix(adata.X, dtype=np.float32)
    X.eliminate_zeros()
    adata.X = X
    n_genes_all = adata.n_vars
    if adata.n_vars > max_genes:
        detected = np.asarray((X > 0).sum(axis=0)).ravel()
        total = np.asarray(X.sum(axis=0)).ravel()
        order = np.lexsort((-total, -detected))  # most detected first, ties by total count
        keep = np.sort(order[:max_genes])
        adata = adata[:, keep].copy()
    lib = np.asarray(adata.X.sum(axis=1)).ravel()
    if (lib == 0).any():
        adata = adata[lib > 0].copy()
    return adata, n_genes_all


def holdout_splits(protocol: str, n_folds_run: int, seed: int) -> list[dict]:
    if protocol == "entries":
        return [{"fraction": 0.5, "strategy": "entries", "random_state": seed}]
    if protocol == "thinning":
        return [{"fraction": 0.5, "strategy": "thinning", "random_state": seed}]
    return [
        {"fraction": 0.2, "strategy": "gene_folds", "fold": k, "min_spot_fraction": 0.5, "random_state": seed}
        for k in range(n_folds_run)
    ]


# ------------------------------------------------------------------------------------------------
# methods
# ------------------------------------------------------------------------------------------------


class NotAvailable(Exception):
    """The method cannot run here; the message says why."""


def run_stimpute(adata, method: str, train_key: str, cfg: dict):
    """``st.tl.impute(adata, method=..., layer=train_key)``; returns the layer it wrote."""
    import inspect

    import stimpute as st

    if not hasattr(st.tl, "impute"):
        raise NotAvailable("not available: st.tl.impute does not exist in this stimpute")
    sig = inspect.signature(st.tl.impute).parameters
    method, extra = STIMPUTE_CALLS[method]
    kwargs = {"method": method, "layer": train_key, **extra}
    optional = {"key_added": "bench_pred", "random_state": cfg["seed"], "device": cfg["device_setting"]}
    optional["progress"] = False
    if cfg["epochs"] is not None:
        for name in ("max_epochs", "epochs", "n_epochs"):
            optional[name] = cfg["epochs"]
    kwargs.update({k: v for k, v in optional.items() if k in sig})
    trained = method != "knn" and "return_model" in sig
    if trained:
        kwargs["return_model"] = True
    before = set(adata.layers.keys())
    model = st.tl.impute(adata, **kwargs)
    new = [k for k in adata.layers.keys() if k not in before]
    if not new:
        raise RuntimeError("st.tl.impute wrote no new layer")
    return adata.layers[new[0]], new, (model if trained else None)


def import_peers(methods) -> dict[str, str]:
    """Import the heavy peer packages once, outside the timed region; say which are missing."""
    import importlib
    import logging

    needs = {"magic": ("magic", "scanpy.external"), "scvi": ("scvi",)}
    missing = {}
    for method in methods:
        for module in needs.get(method, ()):
            try:
                importlib.import_module(module)
            except ImportError as err:
                missing[method] = (
                    f"not available: cannot import {module!r} ({err}); install the benchmark extra: "
                    "pip install -e '.[benchmark]'"
                )
    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return missing


def warm_up(methods, cfg: dict) -> None:
    """Run every method once on tiny synthetic data so that JIT compilation and lazy imports are not timed."""
    import stimpute as st

    tiny = st.datasets.synthetic_visium(n_spots=60, n_genes=20, random_state=0)
    st.pp.holdout(tiny, 0.5)
    warm_cfg = {**cfg, "epochs": 1, "scvi_epochs": 1}
    if {"image", "multimodal", *EXPECTED_VARIANTS} & set(methods) and hasattr(st.tl, "impute"):
        st.pp.image_features(tiny)
    for m in methods:
        try:
            if m in STIMPUTE_METHODS:
                run_stimpute(tiny, m, "holdout_train", warm_cfg)
            elif m != "stlearn_sme":
                run_peer(tiny, m, "holdout_train", warm_cfg)
        except Exception:  # noqa: BLE001 - failures are reported by the real run
            pass


def run_peer(adata, method: str, train_key: str, cfg: dict):
    import peers

    if method in cfg["unavailable"]:
        raise NotAvailable(cfg["unavailable"][method])
    if method == "smoothing":
        return peers.spatial_smoothing(adata, train_key, n_neighbors=6), []
    if method == "magic":
        return peers.magic_impute(adata, train_key, random_state=cfg["seed"], n_jobs=cfg["threads"]), []
    if method == "scvi":
        acc = "gpu" if cfg["device"].startswith("cuda") else "cpu"
        return peers.scvi_impute(
            adata, train_key, max_epochs=cfg["scvi_epochs"], accelerator=acc, random_state=cfg["seed"]
        ), []
    if method == "stlearn_sme":
        raise NotAvailable(peers.stlearn_sme_unavailable())
    raise ValueError(method)


def image_features_row(name: str, adata, cfg: dict) -> dict:
    """Compute ``obsm['X_image']`` once per dataset (image only, no counts), timed as its own row."""
    from _measure import PeakRSS  # benchmarks/ is on the path when the script runs

    import stimpute as st

    try:
        with PeakRSS() as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            st.pp.image_features(adata, random_state=cfg["seed"])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    except Exception as err:  # noqa: BLE001
        status = f"failed: {type(err).__name__}: {err}"[:300]
        return _row(name, "none", "image features (st.pp.image_features)", "preprocessing", status, adata, cfg)
    return _row(
        name,
        "none",
        "image features (st.pp.image_features)",
        "preprocessing",
        "ok",
        adata,
        cfg,
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=mem.peak_mb,
        settings=f"default encoder, obsm['X_image'] {adata.obsm['X_image'].shape[1]} dims; shared by image and multimodal",
    )


def method_settings(method: str, cfg: dict) -> str:
    if method == "smoothing":
        return "mean of the spot and its 6 nearest spots (sparse kNN)"
    if method == "magic":
        return "libsize-normalise to median, sqrt, MAGIC knn=5 t=3 decay=1 n_pca=100 exact; square, x lib/median"
    if method == "scvi":
        return f"scVI n_latent=10 max_epochs={cfg['scvi_epochs']} batch 128, freq x training library size"
    if method in STIMPUTE_METHODS:
        name, extra = STIMPUTE_CALLS[method]
        ep = "default max_epochs (100, early stopping)" if cfg["epochs"] is None else f"max_epochs={cfg['epochs']}"
        opts = "".join(f", {k}={v!r}" for k, v in extra.items())
        return f"st.tl.impute(method={name!r}, layer='holdout_train'{opts}), {ep}, other options default"
    return ""


# ------------------------------------------------------------------------------------------------
# clustering (ARI against manual labels)
# ------------------------------------------------------------------------------------------------


def cluster_ari(matrix, obs, labels_key: str, n_clusters: int, seed: int) -> float:
    """ARI of k-means clusters of ``matrix`` against ``obs[labels_key]`` (labelled spots only)."""
    import numpy as np
    from anndata import AnnData
    from scipy import sparse

    import stimpute as st

    if sparse.issparse(matrix):
        M = sparse.csr_matrix(matrix, dtype=np.float32)
    else:
        M = np.clip(np.asarray(matrix, dtype=np.float32), 0, None)
    tmp = AnnData(X=M, obs=obs[[labels_key]].copy())
    if hasattr(st.tl, "compare_clusters"):
        st.tl.compare_clusters(
            tmp,
            ["X"],
            method="kmeans",
            n_clusters=n_clusters,
            labels_key=labels_key,
            n_top_genes=3000,
            n_pcs=30,
            key_added="bench",
            random_state=seed,
        )
        return float(tmp.uns["bench"]["scores"]["ari_labels"].iloc[0])
    return _local_ari(tmp, labels_key, n_clusters, seed)


def smoothed(matrix, coords):
    """The matrix with each spot replaced by the mean of itself and its 6 nearest spots (st.pp.spatial_smooth)."""
    from anndata import AnnData

    import stimpute as st

    tmp = AnnData(X=matrix, obsm={"spatial": coords})
    st.pp.spatial_smooth(tmp, n_neighbors=6)
    return tmp.layers["X_smoothed"]


def _local_ari(tmp, labels_key: str, n_clusters: int, seed: int) -> float:
    """normalize_total, log1p, 3,000 HVG (seurat), PCA 30, k-means (seeded)."""
    import scanpy as sc
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    sc.pp.normalize_total(tmp)
    sc.pp.log1p(tmp)
    if tmp.n_vars > 3000:
        sc.pp.highly_variable_genes(tmp, n_top_genes=3000, flavor="seurat", subset=True)
    sc.pp.pca(tmp, n_comps=min(30, tmp.n_obs - 1, tmp.n_vars - 1), random_state=seed)
    pred = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(tmp.obsm["X_pca"])
    lab = tmp.obs[labels_key]
    has = lab.notna().to_numpy()
    return float(adjusted_rand_score(lab.astype(str).to_numpy()[has], pred[has]))


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------


def _row(dataset, protocol, method, family, status, adata, cfg, **values) -> dict:
    row = dict.fromkeys(COLUMNS, float("nan"))
    row.update(
        dataset=dataset,
        protocol=protocol,
        method=method,
        family=family,
        status=status,
        n_spots=adata.n_obs,
        n_genes=adata.n_vars,
        max_genes=cfg["max_genes"],
        device=cfg["device"],
        settings="",
    )
    row.update(values)
    return row


def _fmt(row: dict) -> str:
    def f(key, spec):
        v = row.get(key)
        return "   -  " if v is None or v != v else format(v, spec)

    return (
        f"{row['dataset']:<25} {row['protocol']:<10} {row['method']:<32} "
        f"log1p rmse {f('rmse_log1p', '.3f')} r {f('pearson_log1p', '.3f')}  raw rmse {f('rmse_raw', '.2f')}  "
        f"log2cpm r {f('pearson_log2cpm', '.3f')}  ARI {f('ari', '.3f')}  {f('wall_s', '.1f')} s  "
        f"{f('peak_rss_mb', '.0f')} MB  {row['status'] if row['status'] != 'ok' else ''}"
    )


def run_protocol(name, adata, protocol, methods, cfg, emit) -> None:
    import numpy as np
    from _measure import PeakRSS  # benchmarks/ is on the path when the script runs

    import stimpute as st

    labels_key, n_clusters = DATASETS[name][3], DATASETS[name][4]
    do_ari = labels_key is not None and labels_key in adata.obs and protocol in cfg["ari_protocols"]
    splits = holdout_splits(protocol, cfg["folds"], cfg["seed"])
    acc: dict[str, list[dict]] = {}
    status: dict[str, str] = {}
    for variant in [v for v in EXPECTED_VARIANTS if v in methods]:
        if protocol not in cfg["nb_protocols"]:
            status[LABEL[variant]] = (
                f"not run: the expected-count variants run on {sorted(cfg['nb_protocols'])} only (--nb-protocols; "
                "CPU budget)"
            )
    for i, split in enumerate(splits):
        try:
            st.pp.holdout(adata, **split)
        except ValueError as err:  # e.g. no gene detected in half of the spots
            for m in [LABEL[m] for m in methods] + list(BASELINES):
                status[m] = f"protocol not applicable: {err}"
            break
        train_key = "holdout_train"
        base = st.tl.evaluate(adata, train_key, baselines=True)
        for b in BASELINES:
            res = base.loc[b].to_dict()
            if b == BASELINES[0] and do_ari:
                res["ari"] = cluster_ari(adata.layers[train_key], adata.obs, labels_key, n_clusters, cfg["seed"])
                res["ari_smoothed"] = cluster_ari(
                    smoothed(adata.layers[train_key], adata.obsm["spatial"]),
                    adata.obs,
                    labels_key,
                    n_clusters,
                    cfg["seed"],
                )
            acc.setdefault(b, []).append(res)
        for m in methods:
            label = LABEL[m]
            if label in status:  # not available / failed on an earlier split
                continue
            spent = sum(r["wall_s"] for r in acc.get(label, []))
            if i > 0 and spent > cfg["fold_budget_s"]:
                continue  # over the fold budget: this method is averaged over the folds it ran (n_splits)
            family = "stimpute" if m in STIMPUTE_METHODS else "peer"
            added: list[str] = []
            model = None
            try:
                with PeakRSS() as mem:
                    t0, c0 = time.perf_counter(), time.process_time()
                    if family == "stimpute":
                        pred, added, model = run_stimpute(adata, m, train_key, cfg)
                    else:
                        pred, added = run_peer(adata, m, train_key, cfg)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                adata.layers["bench_pred"] = pred
                scores = st.tl.evaluate(adata, "bench_pred", baselines=False).iloc[0].to_dict()
                scores.update(wall_s=wall, cpu_s=cpu, peak_rss_mb=mem.peak_mb)
                if do_ari:
                    clustered = pred
                    if family == "stimpute" and model is not None:
                        # trained stimpute models are clustered on their depth-free readout (output="normalized"),
                        # the one st.tl.impute documents for clustering; not included in wall_s
                        model.predict(adata, layer=train_key, key_added="bench_cluster", output="normalized")
                        added.append("bench_cluster")
                        clustered = adata.layers["bench_cluster"]
                    scores["ari"] = cluster_ari(clustered, adata.obs, labels_key, n_clusters, cfg["seed"])
                    # the same matrix smoothed over each spot and its 6 nearest spots, for every method alike
                    scores["ari_smoothed"] = cluster_ari(
                        smoothed(clustered, adata.obsm["spatial"]), adata.obs, labels_key, n_clusters, cfg["seed"]
                    )
                acc.setdefault(label, []).append(scores)
            except NotAvailable as err:
                status[label] = str(err)
            except Exception as err:  # noqa: BLE001 - a failing method is a result row, not a crash
                status[label] = f"failed: {type(err).__name__}: {err}"[:300]
            finally:
                for key in ["bench_pred", *added]:
                    if key in adata.layers:
                        del adata.layers[key]
                    adata.uns.pop(key, None)  # its record names the split it was made on (st.tl.evaluate checks)
                pred = None
            if label in acc and label not in status and len(acc[label]) == i + 1:
                print(
                    f"    {protocol} split {i + 1}/{len(splits)} {label}: {acc[label][-1]['wall_s']:.1f} s", flush=True
                )
    for label in list(BASELINES) + [LABEL[m] for m in methods]:
        family = "baseline" if label in BASELINES else ("stimpute" if label.startswith("stimpute") else "peer")
        m = next((k for k, v in LABEL.items() if v == label), "")
        if label in status:
            row = _row(name, protocol, label, family, status[label], adata, cfg, settings=method_settings(m, cfg))
        else:
            runs = acc.get(label, [])
            values = {
                k: float(np.nanmean([r.get(k, np.nan) for r in runs]))
                for k in [*METRICS, "ari", "ari_smoothed", "wall_s", "cpu_s"]
            }
            values["peak_rss_mb"] = float(np.nanmax([r.get("peak_rss_mb", np.nan) for r in runs]))
            values["n_hidden"] = float(np.mean([r["n_hidden"] for r in runs]))
            row = _row(name, protocol, label, family, "ok", adata, cfg, n_splits=len(runs), **values)
            row["settings"] = method_settings(m, cfg)
            if family == "baseline":
                row["wall_s"] = row["cpu_s"] = row["peak_rss_mb"] = float("nan")
        emit(row)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _set_threads(args.threads)
    if args.replot:
        return replot(Path(args.out))
    sys.path.insert(0, str(HERE))

    import warnings

    import numpy as np

    import stimpute as st

    warnings.filterwarnings("ignore")
    st.settings.verbosity = "error"
    st.settings.progress_bar = False
    st.settings.device = args.device

    datasets = args.datasets or (["synthetic"] if args.quick else REAL_DATASETS)
    if args.quick and any(d != "synthetic" for d in datasets):
        print("--quick runs on synthetic data only; ignoring the real sections", flush=True)
        datasets = ["synthetic"]
    folds = min(args.folds, 2) if args.quick else args.folds
    if not 1 <= folds <= 5:
        raise SystemExit("--folds must be between 1 and 5")

    import torch

    from stimpute._nn._device import resolve_device

    torch.set_num_threads(args.threads)
    device = str(resolve_device(None))
    cfg = {
        "seed": args.seed,
        "threads": args.threads,
        "folds": folds,
        "max_genes": args.max_genes,
        "device": device,
        "device_setting": args.device,
        "scvi_epochs": 2 if args.quick else args.scvi_epochs,
        "epochs": 1 if args.quick else (args.epochs or None),
        "ari_protocols": set(args.ari_protocols),
        "fold_budget_s": args.fold_budget_s,
        "nb_protocols": set(PROTOCOLS) if args.quick else set(args.nb_protocols),
    }
    cfg["unavailable"] = import_peers(args.methods)
    if not args.quick:
        warm_up(args.methods, cfg)

    print(
        f"stimpute {st.__version__} | device {device} | threads {args.threads} | datasets {datasets} | "
        f"protocols {args.protocols} | methods {args.methods} | max_genes {args.max_genes} | gene folds {folds}",
        flush=True,
    )
    if not hasattr(st.tl, "impute"):
        print("st.tl.impute is not available yet: stimpute methods get a 'not available' row", flush=True)

    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(_fmt(row), flush=True)

    import gc

    t_start = time.perf_counter()
    for name in datasets:
        gc.collect()
        gc.freeze()  # later gc.collect() calls (before each timed method) skip the long-lived objects
        t_ds = time.perf_counter()
        try:
            adata, n_genes_all = load_dataset(name, max_genes=args.max_genes, quick=args.quick, seed=args.seed)
        except Exception as err:  # noqa: BLE001
            print(f"{name}: cannot load ({type(err).__name__}: {err})", flush=True)
            continue
        print(f"== {name}: {adata.n_obs} spots x {adata.n_vars} genes (of {n_genes_all})", flush=True)
        labels_key, n_clusters = DATASETS[name][3], DATASETS[name][4]
        if labels_key is not None and labels_key in adata.obs and cfg["ari_protocols"]:
            ari = cluster_ari(adata.X, adata.obs, labels_key, n_clusters, args.seed)
            emit(_row(name, "none", "reference: all counts", "reference", "ok", adata, cfg, ari=ari))
        if {"image", "multimodal", *EXPECTED_VARIANTS} & set(args.methods) and hasattr(st.tl, "impute"):
            emit(image_features_row(name, adata, cfg))
        for protocol in args.protocols:
            run_protocol(name, adata, protocol, args.methods, cfg, emit)
        print(f"   {name} done in {time.perf_counter() - t_ds:.0f} s", flush=True)
        write_results(rows, cfg, time.perf_counter() - t_start, args, plot_it=False)  # a cut-short run keeps these
    total = time.perf_counter() - t_start
    n = write_results(rows, cfg, total, args, plot_it=not args.no_plot)
    print(f"wrote {Path(args.out) / 'benchmark.csv'} ({n} rows) in {total:.0f} s", flush=True)
    return 0 if np.isfinite(total) else 1


def write_results(rows: list[dict], cfg: dict, total: float, args, *, plot_it: bool) -> int:
    import pandas as pd

    table = pd.DataFrame(rows, columns=list(COLUMNS))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "benchmark.csv", index=False, float_format="%.6g")
    (out / "benchmark.md").write_text(markdown(table, cfg, total, args))
    if plot_it and len(table):
        plot(table, out / "benchmark.png")
    return len(table)


# ------------------------------------------------------------------------------------------------
# reporting
# ------------------------------------------------------------------------------------------------


def markdown(table, cfg: dict, total: float, args) -> str:
    import platform

    import psutil

    def cell(v, spec):
        if isinstance(v, str):
            return v
        return "–" if v != v else format(v, spec)

    lines = [
        "# stimpute benchmark results",
        "",
        f"Command: `{' '.join(['python benchmarks/run_benchmark.py', *sys.argv[1:]])}`  ",
        f"stimpute {__import__('stimpute').__version__} (working tree of {time.strftime('%Y-%m-%d')}). Device: {cfg['device']}; CPU threads: {cfg['threads']}; machine: {platform.machine()}, "
        f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; total {total / 60:.1f} min.  ",
        f"Genes: the {cfg['max_genes']:,} most-detected genes of each dataset; gene_folds: "
        f"up to {cfg['folds']} of 5 folds averaged per method (a {cfg['fold_budget_s']:g} s budget per method and "
        "dataset; the `n_splits` column gives the count); "
        f"seed {cfg['seed']}; stimpute max_epochs "
        f"{cfg['epochs'] or 'default (100, early stopping)'}; scVI max_epochs {cfg['scvi_epochs']}.",
        "",
        "Scores are on the hidden entries only (see benchmarks/README.md). RMSE lower is better, Pearson and ARI",
        "higher is better. `wall s` / `CPU s` are the method's fit + predict wall-clock and process CPU time per split",
        "(mean over folds), `peak MB` its peak RSS increase (max over folds). The machine was shared with other",
        "jobs, so wall times are noisy; CPU time is the steadier measure. ARI: 7 k-means clusters against the",
        "manual layers; stimpute's trained methods are clustered on their depth-free readout",
        "(`model.predict(..., output='normalized')`, the readout its docs recommend for clustering), every other",
        "method on the matrix it returns. `ARI sm.`: the same matrix smoothed first (each spot the mean of itself and",
        "its 6 nearest spots, `st.pp.spatial_smooth`), for every method alike; for `train as is` that is the",
        "smoothing peer's ARI.",
        "",
    ]
    lines += summary(table)
    header = (
        "| protocol | method | RMSE log1p | Pearson log1p | RMSE raw | RMSE log2CPM | Pearson log2CPM "
        "| ARI | ARI sm. | wall s | CPU s | peak MB | status |"
    )
    for dataset, sub in table.groupby("dataset", sort=False):
        first = sub.iloc[0]
        lines += ["", f"## {dataset} ({first['n_spots']} spots x {first['n_genes']} genes)", "", header]
        lines.append("|" + "---|" * 13)
        for _, r in sub.iterrows():
            status = "" if r["status"] == "ok" else str(r["status"]).split(";")[0].replace("|", "/")
            lines.append(
                f"| {r['protocol']} | {r['method']} | {cell(r['rmse_log1p'], '.3f')} | {cell(r['pearson_log1p'], '.3f')} "
                f"| {cell(r['rmse_raw'], '.3f')} | {cell(r['rmse_log2cpm'], '.3f')} | {cell(r['pearson_log2cpm'], '.3f')} "
                f"| {cell(r['ari'], '.3f')} | {cell(r['ari_smoothed'], '.3f')} | {cell(r['wall_s'], '.1f')} | {cell(r['cpu_s'], '.1f')} | {cell(r['peak_rss_mb'], '.0f')} | {status} |"
            )
    return "\n".join(lines) + "\n"


SHORT = {"mouse_placenta_cytassist": "placenta", "dlpfc_151673": "151673", "dlpfc_151674": "151674"}


def summary(table) -> list[str]:
    """Headline table: each metric averaged over the datasets where the method ran."""
    import numpy as np

    ok = table[(table["status"] == "ok") & table["family"].isin(["stimpute", "peer", "baseline"])]
    if ok.empty:
        return []
    cols = [
        ("entries", "rmse_log1p", "entries RMSE log1p"),
        ("entries", "pearson_log1p", "entries Pearson log1p"),
        ("gene_folds", "rmse_log2cpm", "gene_folds RMSE log2CPM"),
        ("gene_folds", "pearson_log2cpm", "gene_folds Pearson log2CPM"),
        ("thinning", "rmse_log1p", "thinning RMSE log1p"),
        ("thinning", "pearson_log1p", "thinning Pearson log1p"),
        ("entries", "ari", "ARI entries"),
        ("entries", "ari_smoothed", "ARI entries, smoothed"),
        ("thinning", "ari", "ARI thinning"),
    ]
    methods = list(dict.fromkeys(ok["method"]))
    n_data = ok["dataset"].nunique()
    lines = [
        "",
        f"## Summary: mean over the {n_data} datasets (ARI: labelled datasets only)",
        "",
        "Best value of each column in bold. `CPU s` is the mean CPU time per split over all datasets and protocols;",
        "`peak MB` the largest peak RSS increase seen.",
        "",
        "| method | " + " | ".join(c[2] for c in cols) + " | CPU s | peak MB |",
        "|---|" + "---|" * (len(cols) + 2),
    ]
    means = {}
    for protocol, metric, _ in cols:
        sub = ok[ok["protocol"] == protocol]
        means[(protocol, metric)] = sub.groupby("method")[metric].mean()
    for m in methods:
        cells = []
        for protocol, metric, _ in cols:
            ser = means[(protocol, metric)].dropna()
            v = ser.get(m, np.nan)
            if v != v:
                cells.append("–")
                continue
            best = ser.min() if metric.startswith("rmse") else ser.max()
            text = f"{v:.3f}"
            cells.append(f"**{text}**" if np.isclose(v, best) else text)
        sub = ok[ok["method"] == m]
        cpu = sub["cpu_s"].mean()
        mem = sub["peak_rss_mb"].max()
        cells.append("–" if cpu != cpu else f"{cpu:.1f}")
        cells.append("–" if mem != mem else f"{mem:.0f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot(table, path: Path) -> None:
    """One panel per metric; groups are dataset x protocol, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = table[(table["status"] == "ok") & table["family"].isin(["stimpute", "peer", "baseline"])]
    if ok.empty:
        return
    panels = [
        ("rmse_log1p", "RMSE, log1p counts (lower is better)", False),
        ("pearson_log1p", "Pearson r, log1p counts (higher is better)", False),
        ("rmse_raw", "RMSE, raw counts (lower is better)", False),
        ("ari", "ARI of 7 k-means clusters vs manual layers (DLPFC; dashed: all counts before holdout)", False),
        ("ari_smoothed", "ARI as above, each matrix first smoothed over the spot and its 6 nearest spots", False),
        ("wall_s", "wall time of fit + predict per split (s, log)", True),
        ("peak_rss_mb", "peak RSS increase (MB, log)", True),
    ]
    methods = list(dict.fromkeys(ok["method"]))
    colours = _colours(ok, methods)
    all_groups = list(dict.fromkeys(zip(ok["dataset"], ok["protocol"], strict=True)))
    width = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(10, 0.75 * len(all_groups) + 3), 3.0 * len(panels)))
    axes = np.atleast_1d(axes)
    for ax, (metric, title, log) in zip(axes, panels, strict=True):
        groups = [g for g in all_groups if ok.set_index(["dataset", "protocol"]).loc[[g], metric].notna().any()]
        if not groups:
            ax.text(0.5, 0.5, f"no {metric} in this run", transform=ax.transAxes, ha="center")
            ax.set_title(title, fontsize=10, loc="left")
            ax.set_xticks([])
            continue
        for j, m in enumerate(methods):
            sub = ok[ok["method"] == m].set_index(["dataset", "protocol"])[metric]
            vals = [float(sub.get(g, np.nan)) for g in groups]
            x = np.arange(len(groups)) - 0.4 + width * (j + 0.5)
            vals = [v if v == v and (not log or v > 0) else np.nan for v in vals]
            ax.bar(x, vals, width=width, color=colours[m], label=m)
        if metric == "ari":
            ref = table[table["method"] == "reference: all counts"].set_index("dataset")["ari"]
            for k, (d, _) in enumerate(groups):
                if d in ref.index:
                    ax.hlines(ref[d], k - 0.45, k + 0.45, colors="k", linestyles="--", linewidth=1)
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xticks(np.arange(len(groups)))
        ax.set_xticklabels([f"{SHORT.get(d, d)}\n{p}" for d, p in groups], fontsize=7)
        ax.set_xlim(-0.5, len(groups) - 0.5)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in methods]
    fig.legend(handles, methods, ncol=min(len(methods), 6), fontsize=8, loc="upper center", frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _colours(ok, methods) -> dict:
    """Greys for baselines, blues/greens for stimpute, warm hues for peers."""
    import matplotlib.pyplot as plt
    import numpy as np

    family = dict(zip(ok["method"], ok["family"], strict=False))
    out = {}
    by_family = {f: [m for m in methods if family[m] == f] for f in ("baseline", "stimpute", "peer")}
    for m, c in zip(by_family["baseline"], np.linspace(0.45, 0.75, max(len(by_family["baseline"]), 1)), strict=False):
        out[m] = plt.get_cmap("Greys")(c)
    for m, c in zip(by_family["stimpute"], np.linspace(0.15, 0.95, max(len(by_family["stimpute"]), 1)), strict=False):
        out[m] = plt.get_cmap("viridis")(c)
    peers = ["#e6550d", "#8856a7", "#d62728", "#fdae6b", "#f768a1"]
    for j, m in enumerate(by_family["peer"]):
        out[m] = peers[j % len(peers)]
    return out


def replot(out: Path) -> int:
    """Redraw ``benchmark.png`` from an existing ``benchmark.csv`` (``--replot``)."""
    import pandas as pd

    plot(pd.read_csv(out / "benchmark.csv"), out / "benchmark.png")
    print(f"wrote {out / 'benchmark.png'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
