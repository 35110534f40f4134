"""The installed stimpute version (read once from the package metadata)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stimpute")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
    __version__ = "0.0.0"
