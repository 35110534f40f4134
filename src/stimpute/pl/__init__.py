"""Plotting: ``st.pl`` draws cluster maps, holdout scatter plots, gene maps and training curves."""

from ._clusters import compare_clusters
from ._genes import genes
from ._history import history
from ._holdout import holdout
from ._tiles import tiles

__all__ = ["compare_clusters", "genes", "history", "holdout", "tiles"]
