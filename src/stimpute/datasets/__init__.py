"""Datasets: ``st.datasets`` makes offline synthetic data and loads the real sections."""

from ._synthetic import synthetic_visium

__all__ = ["synthetic_visium"]
