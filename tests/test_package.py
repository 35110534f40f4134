"""Package structure: lazy torch, namespaces, the signature convention and st.settings."""

from __future__ import annotations

import inspect
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

import stimpute as st

NAMESPACES = {"st": st, "pp": st.pp, "tl": st.tl, "pl": st.pl, "get": st.get, "datasets": st.datasets}
CONVENTION_NAMESPACES = ("pp", "tl", "pl", "get", "datasets")


def _public_functions(include_top: bool = False):
    names = CONVENTION_NAMESPACES + (("st",) if include_top else ())
    for ns_name in names:
        ns = NAMESPACES[ns_name]
        for name in ns.__all__:
            obj = getattr(ns, name)
            if inspect.isfunction(obj):
                yield f"{ns_name}.{name}", obj


ALL_FUNCTIONS = dict(_public_functions(include_top=True))
CONVENTION_FUNCTIONS = dict(_public_functions())


def test_import_does_not_import_torch():
    code = (
        "import sys; import stimpute as st; st.datasets.synthetic_visium(n_spots=20, n_genes=10); "
        "heavy = [m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules]; "
        "assert not heavy, heavy; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_no_module_level_torch_import_outside_model():
    """Torch may be imported only inside functions, and at module level only in ``stimpute._nn``."""
    src = Path(st.__file__).parent
    offenders = []
    for path in src.rglob("*.py"):
        if "_nn" in path.relative_to(src).parts:
            continue
        for line in path.read_text().splitlines():
            if line.startswith(("import torch", "from torch")):
                offenders.append(f"{path.relative_to(src)}: {line}")
    assert not offenders


@pytest.mark.parametrize("ns_name", list(NAMESPACES))
def test_all_resolves(ns_name):
    ns = NAMESPACES[ns_name]
    assert isinstance(ns.__all__, list | tuple)
    assert len(set(ns.__all__)) == len(ns.__all__), "duplicates in __all__"
    for name in ns.__all__:
        assert hasattr(ns, name), f"{ns_name}.__all__ lists {name!r}, which does not exist"


def test_top_level_api():
    for name in ("pp", "tl", "pl", "get", "datasets", "settings", "read_visium"):
        assert name in st.__all__
    assert isinstance(st.__version__, str) and st.__version__
    assert callable(st.read_visium)
    for name in ("dlpfc", "her2st", "mouse_olfactory_bulb", "mouse_placenta", "synthetic_visium"):
        assert name in st.datasets.__all__


def test_there_are_functions_to_check():
    for name in ("pp.holdout", "tl.evaluate", "get.spot_crops", "datasets.synthetic_visium", "datasets.dlpfc"):
        assert name in CONVENTION_FUNCTIONS


@pytest.mark.parametrize("name", sorted(ALL_FUNCTIONS))
def test_signature_convention(name):
    func = ALL_FUNCTIONS[name]
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"{name} has {len(positional)} positional parameters; make the rest keyword-only"
    assert not any(p.kind == p.VAR_POSITIONAL for p in params), f"{name} takes *args"
    names = [p.name for p in params]
    if "adata" in names:
        assert names[0] == "adata", f"{name}: `adata` must be the first parameter"
    if params and "AnnData" in str(params[0].annotation) and not str(params[0].annotation).startswith("Sequence"):
        assert names[0] == "adata", f"{name}: the first AnnData parameter must be called `adata`"
    if "copy" in names:
        copy = params[names.index("copy")]
        assert copy.kind == copy.KEYWORD_ONLY, f"{name}: `copy` must be keyword-only"
        assert copy.default is False, f"{name}: `copy` must default to False"
    for p in params:
        if p.name in ("random_state", "key_added", "layer", "library_id", "img_key", "device", "progress"):
            assert p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD), f"{name}: {p.name}"


def _documented_parameters(doc: str) -> set[str]:
    """Names that start an entry of the numpydoc Parameters section of ``doc``.

    An entry is an unindented line of the section: ``name``, ``name : type``, or several names sharing
    one description (``count_hidden, position_hidden``); ``*args``/``**kwargs`` count as ``args``/``kwargs``.
    The section ends at the next section header (a line underlined with dashes).
    """
    lines = doc.splitlines()
    start = next(
        (i + 2 for i, line in enumerate(lines[:-1]) if line == "Parameters" and _is_underline(lines[i + 1])), None
    )
    if start is None:
        return set()
    names: set[str] = set()
    for i in range(start, len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and _is_underline(lines[i + 1]):  # the next section's title
            break
        if not line or line[0].isspace():
            continue
        head = line.split(" : ", 1)[0]
        names.update(name.strip().lstrip("*") for name in head.split(","))
    return names


def _is_underline(line: str) -> bool:
    return len(line) >= 3 and set(line) == {"-"}


def test_documented_parameters_parser():
    doc = inspect.cleandoc(
        """Summary mentioning n, copy and layer in passing.

        Parameters
        ----------
        adata
            Data; see also `copy`.
        count_hidden, position_hidden
            Widths.
        n : int
            A short name.
        **method_kwargs
            Options.

        Returns
        -------
        layer
            Not a parameter: it is in the Returns section.
        """
    )
    assert _documented_parameters(doc) == {"adata", "count_hidden", "position_hidden", "n", "method_kwargs"}
    assert _documented_parameters("No sections at all, copy") == set()


@pytest.mark.parametrize("name", sorted(ALL_FUNCTIONS))
def test_numpydoc_docstring(name):
    doc = inspect.getdoc(ALL_FUNCTIONS[name]) or ""
    assert doc, f"{name} has no docstring"
    for section in ("Returns", "Examples"):
        assert f"{section}\n--" in doc, f"{name}: docstring lacks a {section} section"
    params = [p for p in inspect.signature(ALL_FUNCTIONS[name]).parameters if p not in ("self",)]
    if params:
        assert "Parameters\n--" in doc, f"{name}: docstring lacks a Parameters section"
        documented = _documented_parameters(doc)
        for p in params:
            assert p in documented, f"{name}: parameter {p!r} does not start an entry of the Parameters section"


# settings ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "CUDA", "cpu ", "cpu\n", "cuda:0\n", "", 0, None, "cuda:-1"])
def test_settings_bad_device(bad):
    before = st.settings.device
    with pytest.raises(ValueError, match=r"`settings\.device`"):
        st.settings.device = bad
    assert st.settings.device == before


@pytest.mark.parametrize("good", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_settings_good_device(good):
    st.settings.device = good  # validated by name only, no torch import
    assert st.settings.device == good


def test_settings_verbosity_and_progress():
    logger = logging.getLogger("stimpute")
    st.settings.verbosity = "debug"
    assert st.settings.verbosity == 3 and logger.level == logging.DEBUG
    st.settings.verbosity = 0
    assert logger.level == logging.ERROR
    for bad in (4, -1, "loud", True, 1.5):
        with pytest.raises(ValueError, match=r"`settings\.verbosity`"):
            st.settings.verbosity = bad
        assert st.settings.verbosity == 0
    st.settings.progress_bar = True
    with pytest.raises(TypeError, match=r"`settings\.progress_bar`"):
        st.settings.progress_bar = "yes"
    assert st.settings.progress_bar is True
    assert "device=" in repr(st.settings)


def test_settings_datadir(monkeypatch, tmp_path):
    old = st.settings._datadir
    try:
        st.settings.datadir = None
        monkeypatch.setenv("STIMPUTE_DATA", str(tmp_path))
        assert st.settings.datadir == tmp_path
        monkeypatch.delenv("STIMPUTE_DATA")
        # without the variable: the nearest shared/data above the working folder
        (tmp_path / "shared" / "data").mkdir(parents=True)
        (tmp_path / "repo" / "tutorials").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / "repo" / "tutorials")
        assert st.settings.datadir == tmp_path / "shared" / "data"
        monkeypatch.chdir(tmp_path / "repo")
        assert st.settings.datadir == tmp_path / "shared" / "data"
        st.settings.datadir = str(tmp_path / "x")
        assert st.settings.datadir == tmp_path / "x"
    finally:
        st.settings._datadir = old


def test_dataset_loader_missing_file_message(tmp_path):
    old = st.settings._datadir
    try:
        st.settings.datadir = tmp_path
        for loader, folder in [
            (st.datasets.dlpfc, "dlpfc_151673"),
            (st.datasets.her2st, "her2st_C2"),
            (st.datasets.mouse_olfactory_bulb, "mob_st"),
            (st.datasets.mouse_placenta, "mouse_placenta_cytassist"),
        ]:
            with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/{folder}/.*st\.settings\.datadir.*STIMPUTE_DATA"):
                loader()
        with pytest.raises(ValueError, match=r"`section` must be one of \['151673', '151674', '151675'\]"):
            st.datasets.dlpfc("151676")
        with pytest.raises(ValueError, match=r"`section` must be one of \['C2', 'C3', 'B1', 'D1'\]"):
            st.datasets.her2st("C1")
    finally:
        st.settings._datadir = old


def test_cli_demo_synthetic(tmp_path, capsys):
    """`stimpute demo` runs end to end and clusters the trained model's depth-free readout."""
    import pandas as pd

    from stimpute._cli import main

    old = st.settings._datadir
    try:
        code = main(
            [
                "demo",
                "--section",
                "synthetic",
                "--methods",
                "knn",
                "positional",
                "--max-epochs",
                "2",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "demo"),
                "--no-progress",
            ]
        )
    finally:
        st.settings._datadir = old
    assert code == 0
    assert (tmp_path / "demo" / "compare_clusters.png").stat().st_size > 0
    scores = pd.read_csv(tmp_path / "demo" / "scores.csv", index_col=0)
    assert {"imputed_knn", "imputed_positional", "baseline: gene mean"} <= set(scores.index)
    out = capsys.readouterr().out
    assert "imputed_positional_normalized" in out  # the clustering readout of the trained model
    assert "imputed_positional_normalized_smoothed" in out  # ... smoothed, next to its bar:
    assert "holdout_train_smoothed" in out
    assert "Held-out entries" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "gpu"], "`device` must be"),
        (["--max-epochs", "0"], "must be a positive integer"),
        (["--methods", "knnn"], "invalid choice"),
        (["--section", "no_such_section"], "no_such_section.*no h5ad file in .* found; use 'synthetic'"),
    ],
)
def test_cli_demo_bad_arguments_are_usage_errors(tmp_path, capsys, args, message):
    """Bad arguments stop before any work with argparse's usage error (exit code 2), settings untouched."""
    from stimpute._cli import main

    before = (st.settings.device, st.settings.progress_bar, st.settings.datadir)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--datadir", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert (st.settings.device, st.settings.progress_bar, st.settings.datadir) == before
    assert not (tmp_path / "o").exists()


def test_cli_demo_out_is_a_file_and_settings_restored(tmp_path, capsys, monkeypatch):
    from stimpute import _cli

    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["demo", "--section", "synthetic", "--out", str(tmp_path / "f")])
    assert exit_info.value.code == 2 and "exists and is not a folder" in capsys.readouterr().err
    # an error during the run leaves the settings as they were
    before = (st.settings.device, st.settings.progress_bar)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(_cli, "_load", boom)
    with pytest.raises(RuntimeError, match="boom"):
        _cli.main(["demo", "--section", "synthetic", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "o")])
    assert (st.settings.device, st.settings.progress_bar) == before


def test_cli_demo_finds_a_sections_only_h5ad(tmp_path):
    """A section folder holds `adata.h5ad`, or one h5ad file of another name (e.g. `mob_st/mob_st_MOB1.h5ad`)."""
    from stimpute._cli import _section_path

    for name, files in {
        "plain": ["adata.h5ad", "other.h5ad"],
        "named": ["mob.h5ad"],
        "two": ["a.h5ad", "b.h5ad"],
    }.items():
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f).touch()
    assert _section_path("plain", tmp_path) == tmp_path / "plain" / "adata.h5ad"
    assert _section_path("named", tmp_path) == tmp_path / "named" / "mob.h5ad"
    with pytest.raises(FileNotFoundError, match=r"no h5ad file in .*two.*one of \['named', 'plain'\]"):
        _section_path("two", tmp_path)


def test_warning_categories_are_public_and_filterable():
    for name in ("StimputeWarning", "InputWarning", "ImageFeatureWarning", "SectionWarning", "ReadoutWarning"):
        assert name in st.__all__
        assert issubclass(getattr(st, name), st.StimputeWarning)
    assert issubclass(st.StimputeWarning, UserWarning)


def test_network_defaults_have_one_source():
    """METHOD_DEFAULTS and the saved configuration's fallbacks read the torch layer's NETWORK_DEFAULTS."""
    from stimpute._nn._config import NETWORK_DEFAULTS
    from stimpute.tl._impute_options import METHOD_DEFAULTS

    mm = METHOD_DEFAULTS["multimodal"]
    for key in ("latent_dim", "decoder_hidden", "count_hidden", "position_hidden", "image_hidden", "dropout"):
        assert mm[key] == NETWORK_DEFAULTS[key]
