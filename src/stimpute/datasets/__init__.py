"""Datasets: ``st.datasets`` makes offline synthetic data and loads the real sections."""

from ._shared import dlpfc, her2st, mouse_olfactory_bulb, mouse_placenta
from ._synthetic import synthetic_visium

__all__ = ["dlpfc", "her2st", "mouse_olfactory_bulb", "mouse_placenta", "synthetic_visium"]
