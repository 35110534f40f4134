"""Sphinx configuration for stimpute."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import date
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

project = "stimpute"
author = "stimpute developers"
copyright = f"{date.today().year}, {author}"
release = _version("stimpute")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
    "sphinx_copybutton",
]

# notebooks are committed with their outputs and never executed by the docs build
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
always_document_param_types = False

# Intersphinx needs the inventories of anndata, scanpy, squidpy, numpy and torch. They are
# downloaded by Sphinx, which fails offline: link them only when asked (readers' builds set
# STIMPUTE_DOCS_INTERSPHINX=1) or when inventories are cached in docs/_inv/<name>.inv.
_INTERSPHINX = {
    "python": "https://docs.python.org/3",
    "anndata": "https://anndata.readthedocs.io/en/stable",
    "scanpy": "https://scanpy.readthedocs.io/en/stable",
    "squidpy": "https://squidpy.readthedocs.io/en/stable",
    "numpy": "https://numpy.org/doc/stable",
    "pandas": "https://pandas.pydata.org/docs",
    "torch": "https://docs.pytorch.org/docs/stable",
}
intersphinx_mapping = {}
for _name, _url in _INTERSPHINX.items():
    _cached = HERE / "_inv" / f"{_name}.inv"
    if _cached.exists():
        intersphinx_mapping[_name] = (_url, str(_cached))
    elif os.environ.get("STIMPUTE_DOCS_INTERSPHINX") == "1":
        intersphinx_mapping[_name] = (_url, None)

html_theme = "sphinx_book_theme"
html_title = "stimpute"
html_theme_options = {"repository_url": "https://github.com/stimpute/stimpute", "use_repository_button": True}
html_static_path = ["_static"]

# Tutorials live in ../tutorials (committed executed); copy them into the source tree at build time.
_tut_src, _tut_dst = ROOT / "tutorials", HERE / "tutorials"
if _tut_src.exists():
    _tut_dst.mkdir(exist_ok=True)
    for _nb in sorted(_tut_src.glob("*.ipynb")):
        shutil.copy2(_nb, _tut_dst / _nb.name)
# Benchmark tables live in ../benchmarks/results; copy them so the docs show the current numbers.
_bench_src, _bench_dst = ROOT / "benchmarks" / "results", HERE / "benchmark_results"
if _bench_src.exists():
    _bench_dst.mkdir(exist_ok=True)
    for _f in sorted(_bench_src.glob("*")):
        if _f.suffix in {".md", ".png", ".csv"}:
            shutil.copy2(_f, _bench_dst / _f.name)

suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
