"""Package-wide settings: ``st.settings``."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

__all__ = ["Settings", "settings"]

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class Settings:
    """Settings of stimpute, reachable as ``stimpute.settings``.

    Attributes
    ----------
    device
        Where torch models train: ``"auto"`` (CUDA when available, else CPU; MPS only when named),
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``. Functions that train take ``device=None``,
        meaning this setting.
    verbosity
        0 (errors), 1 (warnings), 2 (info, the default) or 3 (debug). Also takes a level name.
    progress_bar
        Show tqdm progress bars during long work.
    datadir
        Folder with the real datasets read by the loaders of :mod:`stimpute.datasets` (``dlpfc``,
        ``her2st``...). Defaults to the environment variable ``STIMPUTE_DATA``, else the nearest
        ``shared/data`` folder in a parent of the working folder (``../shared/data`` from the
        repository root, ``../../shared/data`` from ``tutorials/``).

    Examples
    --------
    >>> import stimpute as st
    >>> st.settings.device = "cpu"
    >>> st.settings.progress_bar = False
    >>> st.settings.verbosity = "warning"
    """

    _LEVELS = {"error": 0, "warning": 1, "info": 2, "debug": 3}

    def __init__(self) -> None:
        self._device = "auto"
        self._verbosity = 2
        self._progress_bar = True
        self._datadir: Path | None = None

    # device ---------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Default training device (see class docstring)."""
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        self._device = check_device_name(value, "settings.device")

    # verbosity ------------------------------------------------------------------------------
    @property
    def verbosity(self) -> int:
        """Logging verbosity, 0 (errors) to 3 (debug)."""
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | str) -> None:
        if isinstance(value, str):
            if value.lower() not in self._LEVELS:
                msg = f"`settings.verbosity` must be one of {sorted(self._LEVELS)} or 0-3, got {value!r}."
                raise ValueError(msg)
            value = self._LEVELS[value.lower()]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
            msg = f"`settings.verbosity` must be an integer from 0 to 3 or a level name, got {value!r}."
            raise ValueError(msg)
        self._verbosity = value
        from ._logging import logger

        logger.setLevel({0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}[value])

    # progress bar ---------------------------------------------------------------------------
    @property
    def progress_bar(self) -> bool:
        """Whether long-running functions show a tqdm progress bar."""
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value: bool) -> None:
        if not isinstance(value, bool):
            msg = f"`settings.progress_bar` must be True or False, got {value!r}."
            raise TypeError(msg)
        self._progress_bar = value

    # data folder ----------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        """Folder holding the real datasets (``STIMPUTE_DATA``, else the nearest ``../shared/data``)."""
        if self._datadir is not None:
            return self._datadir
        env = os.environ.get("STIMPUTE_DATA")
        if env:
            return Path(env)
        cwd = Path.cwd()
        for parent in cwd.parents:
            candidate = parent / "shared" / "data"
            if candidate.is_dir():
                return candidate
        return cwd.parent / "shared" / "data"

    @datadir.setter
    def datadir(self, value: str | os.PathLike | None) -> None:
        self._datadir = None if value is None else Path(value)

    def __repr__(self) -> str:
        return (
            f"stimpute.settings(device={self.device!r}, verbosity={self.verbosity}, "
            f"progress_bar={self.progress_bar}, datadir={str(self.datadir)!r})"
        )


def check_device_name(value: object, name: str = "device") -> str:
    """Validate a device string without importing torch."""
    if not isinstance(value, str) or not _DEVICE_RE.fullmatch(value):
        msg = f"`{name}` must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps', got {value!r}."
        raise ValueError(msg)
    return value


settings = Settings()
