"""Measuring helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations


class PeakRSS:
    """Peak resident-set-size increase of this process while the block runs.

    A daemon thread samples ``psutil.Process().memory_info().rss`` every 5 ms; the result is the
    largest sample minus the RSS right before the block (after ``gc.collect()`` and ``malloc_trim``).
    """

    def __init__(self, interval: float = 0.005):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self.peak_mb = float("nan")

    def __enter__(self) -> PeakRSS:
        import gc
        import threading

        gc.collect()
        _malloc_trim()
        self._base = self._proc.memory_info().rss
        self._peak = self._base
        self._stop = threading.Event()

        def poll():
            while not self._stop.is_set():
                self._peak = max(self._peak, self._proc.memory_info().rss)
                self._stop.wait(self._interval)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self._stop.set()
        self._thread.join()
        self.peak_mb = (self._peak - self._base) / 2**20


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def predict_on_unchecked_axes(model, adata, *, image_key: str, layer: str, key_added: str) -> None:
    """``model.predict`` with its image-axes check bypassed: what it accepted before it checked.

    The record's axes are taken out of ``adata.uns[image_key]`` for the call and put back afterwards, so the
    model reads ``obsm[image_key]`` (fitted to this section) as if it were on its own axes.
    """
    record = adata.uns[image_key]
    projection = record.pop("projection")
    try:
        model.predict(adata, layer=layer, image_key=image_key, key_added=key_added)
    finally:
        record["projection"] = projection


def one_cpu_thread_quiet(verbosity: str = "warning") -> None:
    """The settings of the single-thread benchmark scripts: torch on one thread, CPU, no progress bars."""
    import torch

    import stimpute as st

    torch.set_num_threads(1)
    st.settings.device = "cpu"
    st.settings.progress_bar = False
    st.settings.verbosity = verbosity


def out_dir_args(description: str, default: str, argv=None):
    """``--out`` (where results go) parsed for a benchmark script whose docstring is ``description``."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=default)
    return parser.parse_args(argv)
