"""Plotting: ``st.pl`` draws cluster maps, holdout scatter plots, gene maps and training curves."""

__all__: list[str] = []
