"""Logging for stimpute: a package logger whose level follows ``st.settings.verbosity``."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("stimpute")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def info(msg: str, *, time_start: float | None = None) -> float:
    """Log ``msg`` at info level; with ``time_start`` append the elapsed time. Returns now."""
    now = time.perf_counter()
    if time_start is not None:
        msg = f"{msg} ({now - time_start:.1f}s)"
    logger.info(msg)
    return now


def debug(msg: str) -> None:
    """Log at debug level."""
    logger.debug(msg)
