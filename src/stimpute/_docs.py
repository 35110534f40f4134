"""Shared docstring paragraphs (like scanpy's ``_doc_params``): one text for a parameter several functions take."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

DOC_LIBRARY_KEY = """\
Column of ``adata.obs`` naming each spot's section, for an object that holds several (as
:func:`anndata.concat` and squidpy's ``library_key`` make them): spatial neighbours are then
searched within a spot's own section and positions are normalised per section (each section's
bounding box to the unit square: this assumes the sections share an orientation, as adjacent
serial sections do; rotated or mirrored sections need aligned coordinates first)."""
DOC_OUTPUT = """\
``"conditional"``, ``"normalized"`` or ``"expected"`` (see :func:`stimpute.tl.impute`)."""
DOC_LAYER = """\
Layer with the counts; ``None`` uses ``adata.X``."""


def doc_params(**paragraphs: str) -> Callable[[F], F]:
    """Put ``paragraphs`` into the decorated function's docstring in place of ``{name}`` (other braces are kept)."""

    def decorate(func: F) -> F:
        lines = []
        for line in (func.__doc__ or "").split("\n"):
            indent = line[: len(line) - len(line.lstrip())]
            for name, text in paragraphs.items():  # continuation lines take the placeholder line's indentation
                line = line.replace("{" + name + "}", text.replace("\n", "\n" + indent))
            lines.append(line)
        func.__doc__ = "\n".join(lines)
        return func

    return decorate
