"""Command line entry point: ``stimpute demo`` and ``stimpute --version``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._constants import IMPUTED_PREFIX

__all__ = ["main"]


DEFAULT_SECTION = "dlpfc_151673"


def _section_path(section: str | None, datadir: Path) -> Path | None:
    """The h5ad of ``section`` (None: the default section, if present); None for the synthetic data."""
    if section == "synthetic":
        return None
    folder = datadir / (section or DEFAULT_SECTION)
    path = _h5ad_in(folder)
    if path is not None:
        return path
    if section is None:  # the default is a convenience: without the data, the synthetic section
        print(
            f"[stimpute demo] {folder / 'adata.h5ad'} not found; using the synthetic dataset instead.", file=sys.stderr
        )
        return None
    found = sorted(p.name for p in datadir.iterdir() if _h5ad_in(p) is not None) if datadir.is_dir() else []
    msg = (
        f"--section {section!r}: no h5ad file in {folder} (adata.h5ad, or a single .h5ad) found; use 'synthetic' "
        f"or one of {found} (in {datadir})."
    )
    raise FileNotFoundError(msg)


def _h5ad_in(folder: Path) -> Path | None:
    """``folder/adata.h5ad``, else the folder's only ``.h5ad`` file, else None."""
    if not folder.is_dir():
        return None
    if (folder / "adata.h5ad").is_file():
        return folder / "adata.h5ad"
    files = sorted(folder.glob("*.h5ad"))
    return files[0] if len(files) == 1 else None


def _load(path: Path | None):
    import anndata as ad

    from . import datasets

    if path is not None:
        return ad.read_h5ad(path), f"{path.parent.name} ({path})"
    return datasets.synthetic_visium(n_spots=900, n_genes=200, random_state=0), "synthetic (900 spots x 200 genes)"


def demo(args: argparse.Namespace) -> int:
    """Holdout -> impute -> evaluate -> cluster comparison, printing a table and writing a PNG."""
    from ._settings import settings

    saved = (settings.device, settings.progress_bar)
    try:  # the demo's settings are not left behind (also on error)
        settings.device = args.device
        settings.progress_bar = not args.no_progress
        return _run_demo(args)
    finally:
        settings.device, settings.progress_bar = saved


def _run_demo(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    import stimpute as st

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    adata, name = _load(args.section_path)
    print(f"[stimpute demo] data: {name}: {adata.n_obs} spots x {adata.n_vars} genes")

    st.pp.holdout(adata, fraction=0.5, strategy="entries", random_state=args.seed)
    layers, cluster_layers = [], []
    for method in args.methods:
        key = IMPUTED_PREFIX + method
        kwargs = {"max_epochs": args.max_epochs} if args.max_epochs is not None and method != "knn" else {}
        model = st.tl.impute(
            adata,
            method=method,
            layer="holdout_train",
            key_added=key,
            random_state=args.seed,
            return_model=method != "knn",
            **kwargs,
        )
        layers.append(key)
        if model is None:
            cluster_layers.append(key)
        else:  # trained models are clustered on their depth-free readout (see st.tl.impute, `output`)
            model.predict(adata, layer="holdout_train", key_added=f"{key}_normalized", output="normalized")
            # ... and on that readout averaged with the 6 nearest spots, the tutorials' clustering recipe
            st.pp.spatial_smooth(adata, f"{key}_normalized", n_neighbors=6)
            cluster_layers += [f"{key}_normalized", f"{key}_normalized_smoothed"]
    # the bar for the smoothed readouts: the training matrix smoothed the same way, without imputation
    st.pp.spatial_smooth(adata, "holdout_train", n_neighbors=6)
    scores = st.tl.evaluate(adata, layers)
    labels_key = "label" if "label" in adata.obs else ("domain" if "domain" in adata.obs else None)
    n_clusters = int(adata.obs[labels_key].nunique()) if labels_key else 7
    st.tl.compare_clusters(
        adata,
        ["X", "holdout_train", "holdout_train_smoothed", *cluster_layers],
        labels_key=labels_key,
        n_clusters=n_clusters,
        random_state=args.seed,
    )
    fig = st.pl.compare_clusters(adata, return_fig=True, show=False)
    png = out / "compare_clusters.png"
    fig.savefig(png, dpi=110, bbox_inches="tight")
    scores_path = out / "scores.csv"
    scores.to_csv(scores_path)

    cols = ["rmse_raw", "rmse_log1p", "pearson_log1p", "median_gene_pearson"]
    with pd.option_context("display.width", 140, "display.precision", 3):
        print("\nHeld-out entries (50% of non-zeros hidden):")
        print(scores[cols].to_string())
        clusters = adata.uns["clusters"]["scores"]
        print(f"\nClusters (k={n_clusters}) agreement:")
        print(clusters.to_string())
    print(f"\n[stimpute demo] wrote {png} and {scores_path} in {time.perf_counter() - start:.0f}s")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"must be a positive integer, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stimpute`` command line."""
    from ._constants import METHODS
    from ._settings import check_device_name, settings
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="stimpute", description="Multimodal imputation of spatial transcriptomics.")
    parser.add_argument("--version", action="version", version=f"stimpute {__version__}")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser(
        "demo", help="holdout -> impute -> evaluate -> cluster comparison on a real or synthetic section"
    )
    p.add_argument(
        "--section",
        default=None,
        help=f"folder in the data directory, or 'synthetic' (default: {DEFAULT_SECTION}, or the synthetic data "
        "when it is not there)",
    )
    p.add_argument("--datadir", default=None, help="data directory (default: $STIMPUTE_DATA or ../shared/data)")
    p.add_argument(
        "--methods", nargs="+", default=["knn", "multimodal"], choices=METHODS, help="imputation methods to run"
    )
    p.add_argument(
        "--max-epochs", type=_positive_int, default=None, help="cap training epochs (default: the method's own)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="stimpute_demo", help="output folder for the PNG and the scores CSV")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    if args.command == "demo":
        args.methods = list(dict.fromkeys(args.methods))  # each method once
        try:
            check_device_name(args.device)
        except (TypeError, ValueError) as err:
            p.error(str(err))
        if Path(args.out).exists() and not Path(args.out).is_dir():
            p.error(f"--out {args.out!r} exists and is not a folder.")
        datadir = Path(args.datadir) if args.datadir else settings.datadir
        try:
            args.section_path = _section_path(args.section, datadir)
        except FileNotFoundError as err:
            p.error(str(err))
        return demo(args)
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
