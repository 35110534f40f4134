"""Readers: ``st.read_visium`` reads a 10x Space Ranger output folder."""

from ._visium import read_visium

__all__ = ["read_visium"]
