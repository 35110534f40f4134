"""Shared fixtures: synthetic data for fast tests, and the real sections in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import matplotlib
import pytest

import stimpute as st

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """``STIMPUTE_DATA`` or ``../shared/data`` relative to the repository root."""
    env = os.environ.get("STIMPUTE_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def require_data(*parts: str) -> Path:
    """Path to a real dataset; fails under CI when missing, skips elsewhere."""
    path = data_dir().joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real dataset {path} is missing on CI (set STIMPUTE_DATA or provide ../shared/data)")
        pytest.skip(f"real dataset {path} not available")
    return path


@pytest.fixture(autouse=True)
def _quiet_settings():
    """Every test starts from default settings, quiet and without progress bars."""
    st.settings.device = "cpu"
    st.settings.progress_bar = False
    st.settings.verbosity = 1
    yield
    st.settings.device = "auto"
    st.settings.progress_bar = True
    st.settings.verbosity = 2


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (deterministic timings, no oversubscription); restored after."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def synthetic() -> ad.AnnData:
    """Small synthetic section (200 spots x 50 genes), fresh for every test."""
    return st.datasets.synthetic_visium(n_spots=200, n_genes=50, random_state=0)


@pytest.fixture(scope="session")
def _dlpfc_cached() -> ad.AnnData:
    return ad.read_h5ad(require_data("dlpfc_151673", "adata.h5ad"))


@pytest.fixture
def dlpfc(_dlpfc_cached) -> ad.AnnData:
    """The labelled DLPFC section 151673 (3,639 spots x 5,000 genes), a fresh copy per test."""
    return _dlpfc_cached.copy()


@pytest.fixture(scope="session")
def her2st_dir() -> Path:
    """Folder of the her2st C2 section (full-resolution jpg + adata.h5ad)."""
    return require_data("her2st_C2")
