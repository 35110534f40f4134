"""Saving, loading and reusing trained imputation models."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest

import stimpute as st

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _section(seed: int, n_spots: int = 200):
    adata = st.datasets.synthetic_visium(n_spots=n_spots, n_genes=50, random_state=seed)
    crops = st.get.spot_crops(adata, spot_scale=2.0).astype(np.float64)
    adata.obsm["X_image"] = np.hstack([crops.mean(axis=(1, 2)), crops.std(axis=(1, 2))])
    return adata


def _state(adata) -> tuple:
    """Everything a failed ``predict`` must leave alone: the layer, uns and obsm keys, and X."""
    return sorted(adata.layers), sorted(adata.uns), sorted(adata.obsm), adata.X.copy()


def _assert_unchanged(adata, state) -> None:
    layers, uns, obsm, X = state
    assert sorted(adata.layers) == layers
    assert sorted(adata.uns) == uns
    assert sorted(adata.obsm) == obsm
    assert (adata.X != X).nnz == 0


@pytest.fixture
def trained():
    adata = _section(0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    model = st.tl.impute(adata, "multimodal", layer="holdout_train", max_epochs=15, return_model=True)
    return adata, model


def test_return_model_predicts_what_impute_wrote(trained):
    adata, model = trained
    assert isinstance(model, st.tl.ImputationModel)
    model.predict(adata, layer="holdout_train", key_added="again")
    np.testing.assert_array_equal(adata.layers["again"], adata.layers["imputed_multimodal"])
    assert adata.uns["again"]["best_epoch"] == adata.uns["imputed_multimodal"]["best_epoch"]
    assert adata.uns["again"]["trained"] is False or not adata.uns["again"]["trained"]


def test_save_load_round_trip(trained, tmp_path):
    adata, model = trained
    folder = tmp_path / "model"
    model.save(folder)
    assert (folder / "model.pt").exists() and (folder / "config.json").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == "multimodal"
    assert config["var_names"] == list(adata.var_names)
    assert "stimpute_version" in config and "norm" in config
    loaded = st.tl.load_model(folder, device="cpu")
    assert loaded.method == "multimodal" and loaded.var_names == list(adata.var_names)
    assert loaded.fusion_weights == pytest.approx(model.fusion_weights)
    loaded.predict(adata, layer="holdout_train", key_added="loaded")
    np.testing.assert_array_equal(adata.layers["loaded"], adata.layers["imputed_multimodal"])


@pytest.mark.parametrize("method", ["autoencoder", "positional", "image"])
def test_round_trip_single_modalities(method, tmp_path):
    adata = _section(0)
    model = st.tl.impute(adata, method, max_epochs=2, return_model=True)
    model.save(tmp_path / method)
    st.tl.load_model(tmp_path / method).predict(adata, key_added="loaded")
    np.testing.assert_array_equal(adata.layers["loaded"], adata.layers[f"imputed_{method}"])


def test_load_uses_weights_only(trained, tmp_path, monkeypatch):
    _, model = trained
    model.save(tmp_path / "m")
    seen = {}
    original = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    st.tl.load_model(tmp_path / "m")
    assert seen.get("weights_only") is True


def test_save_refuses_to_overwrite(trained, tmp_path):
    _, model = trained
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        model.save(tmp_path / "file")


def test_load_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no saved model"):
        st.tl.load_model(tmp_path / "nothing")


def test_model_trained_on_one_section_imputes_another(trained):
    _, model = trained
    # another section of the same tissue: same gene parameters (same seed), another grid and other counts
    other = _section(0, n_spots=300)
    st.pp.holdout(other, fraction=0.5, random_state=1)
    model.predict(other, layer="holdout_train", key_added="transferred")
    scores = st.tl.evaluate(other, "transferred")
    assert scores.loc["transferred", "rmse_log1p"] < scores.loc["baseline: gene mean", "rmse_log1p"]
    assert other.layers["transferred"].dtype == np.float32


def test_predict_on_different_genes_raises(trained):
    _, model = trained
    other = _section(3)
    renamed = other.copy()
    renamed.var_names = [f"other_{i}" if i < 3 else g for i, g in enumerate(other.var_names)]
    state = _state(renamed)
    with pytest.raises(ValueError, match=r"3 of the model's genes are missing \(e\.g\. \['gene_0000'"):
        model.predict(renamed)
    _assert_unchanged(renamed, state)
    subset = other[:, :40].copy()
    state = _state(subset)
    with pytest.raises(ValueError, match="different genes"):
        model.predict(subset)
    _assert_unchanged(subset, state)
    reordered = other[:, ::-1].copy()
    state = _state(reordered)
    with pytest.raises(ValueError, match="different order"):
        model.predict(reordered)
    _assert_unchanged(reordered, state)

    def with_genes(names):  # `other` with two more genes named `names`
        two = other[:, :2].copy()
        two.var_names = names
        both = ad.concat([other, two], axis=1)
        both.obsm["spatial"], both.obsm["X_image"], both.uns = other.obsm["spatial"], other.obsm["X_image"], other.uns
        return both

    more = with_genes(["new_0", "new_1"])  # every model gene, and two others
    state = _state(more)
    with pytest.raises(ValueError, match=r"2 genes are not in the model.*every model gene is present") as err:
        model.predict(more)
    assert "missing" not in str(err.value)
    _assert_unchanged(more, state)
    repeated = with_genes(list(other.var_names[:2]))  # every model gene, two of them twice
    with pytest.raises(ValueError, match=r"not unique \(2 repeated\).*var_names_make_unique"):
        model.predict(repeated)


def test_predict_needs_the_models_inputs(trained):
    _, model = trained
    other = _section(3)
    del other.obsm["X_image"]
    state = _state(other)
    with pytest.raises(KeyError, match=r"obsm\['X_image'\]"):
        model.predict(other)
    _assert_unchanged(other, state)
    other = _section(3)
    other.obsm["X_image"] = other.obsm["X_image"][:, :2]
    state = _state(other)
    with pytest.raises(ValueError, match="features but the model was trained on"):
        model.predict(other)
    _assert_unchanged(other, state)
    assert other.obsm["X_image"].shape[1] == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key_added": ""}, TypeError, "`key_added` must be a non-empty string, got ''"),
        ({"key_added": 3}, TypeError, "`key_added` must be a non-empty string, got 3"),
        ({"key_added": ("a",)}, TypeError, "`key_added`"),
        ({"output": "probabilities"}, ValueError, "`output` must be one of"),
        ({"output": "expected"}, ValueError, r"`output='expected'` needs .*detection=True"),
        ({"layer": "holdout_trian"}, KeyError, r"`adata.layers\['holdout_trian'\]` not found"),
        ({"image_key": "X_other"}, KeyError, r"obsm\['X_other'\]"),
        ({"image_key": ""}, TypeError, "`image_key` must be a non-empty string"),
        ({"image_key": 5}, TypeError, "`image_key` must be a non-empty string"),
    ],
)
def test_predict_bad_arguments_leave_adata_unchanged(trained, kwargs, error, match):
    adata, model = trained
    kwargs = {"layer": "holdout_train", **kwargs}
    state = _state(adata)
    train = adata.layers["holdout_train"].copy()
    with pytest.raises(error, match=match):
        model.predict(adata, **kwargs)
    _assert_unchanged(adata, state)
    assert (adata.layers["holdout_train"] != train).nnz == 0
    # the copy path validates before copying too: nothing is returned, nothing written
    with pytest.raises(error, match=match):
        model.predict(adata, copy=True, **kwargs)
    _assert_unchanged(adata, state)


def test_predict_copy_returns_a_copy(trained):
    adata, model = trained
    state = _state(adata)
    imputed = adata.layers["imputed_multimodal"].copy()
    out = model.predict(adata, layer="holdout_train", key_added="copied", copy=True)
    assert isinstance(out, ad.AnnData) and out is not adata
    assert "copied" in out.layers and "copied" in out.uns
    np.testing.assert_array_equal(out.layers["copied"], imputed)
    _assert_unchanged(adata, state)
    assert "copied" not in adata.layers and "copied" not in adata.uns
    np.testing.assert_array_equal(adata.layers["imputed_multimodal"], imputed)
    assert model.predict(adata, layer="holdout_train", key_added="inplace") is None
    assert "inplace" in adata.layers


def test_predict_result_survives_h5ad(trained, tmp_path):
    adata, model = trained
    model.save(tmp_path / "m")
    loaded = st.tl.load_model(tmp_path / "m", device="cpu")  # its config went through JSON (lists, not tuples)
    model.predict(adata, layer="holdout_train", key_added="returned", output="normalized")
    loaded.predict(adata, layer="holdout_train", key_added="loaded")
    adata.write_h5ad(tmp_path / "predicted.h5ad")
    back = ad.read_h5ad(tmp_path / "predicted.h5ad")
    for key in ("returned", "loaded"):
        assert back.layers[key].dtype == np.float32
        np.testing.assert_array_equal(back.layers[key], adata.layers[key])
        ours, theirs = adata.uns[key], back.uns[key]
        assert set(theirs) == set(ours)
        assert theirs["best_epoch"] == ours["best_epoch"] >= 0
        assert theirs["device"] == ours["device"] == "cpu"
        assert theirs["wall_time"] == pytest.approx(ours["wall_time"])
        assert not theirs["trained"]
        assert theirs["fusion_weights"] == pytest.approx(ours["fusion_weights"])
        for name in ("epoch", "train_loss", "val_loss"):
            np.testing.assert_array_equal(theirs["history"][name], ours["history"][name])
        assert len(theirs["history"]["epoch"]) > 0
        params = theirs["params"]
        assert set(params) == set(ours["params"])
        assert params["method"] == "multimodal" and params["layer"] == "holdout_train"
        assert list(params["modalities"]) == ["counts", "position", "image"]
    assert back.uns["returned"]["params"]["output"] == "normalized"
    assert not back.uns["returned"]["params"]["keep_observed"]
    assert back.uns["loaded"]["params"]["output"] == "conditional"


def test_load_model_bad_device(trained, tmp_path):
    _, model = trained
    model.save(tmp_path / "m")
    with pytest.raises(ValueError, match=r"`device` must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps', got 'gpu'"):
        st.tl.load_model(tmp_path / "m", device="gpu")
    with pytest.raises(ValueError, match="`device`"):
        st.tl.load_model(tmp_path / "m", device=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            st.tl.load_model(tmp_path / "m", device="cuda")


def test_load_model_from_a_newer_format(trained, tmp_path):
    _, model = trained
    folder = tmp_path / "m"
    model.save(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 1
    config["format_version"] = 2
    config["stimpute_version"] = "99.0"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"saved by a newer stimpute \(99\.0\); upgrade stimpute to load it"):
        st.tl.load_model(folder, device="cpu")
    config["format_version"] = 1  # the same folder loads again once the version is one this stimpute knows
    (folder / "config.json").write_text(json.dumps(config))
    assert st.tl.load_model(folder, device="cpu").method == "multimodal"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update(format_version=1.5), r"`format_version=1\.5`, expected a whole number"),
        (lambda c: c.update(format_version="1"), r"`format_version='1'`, expected a whole number"),
        (lambda c: c.update(format_version=True), r"`format_version=True`, expected a whole number"),
        (lambda c: c.pop("norm"), r"lacks \['norm'\]: it was not written by `ImputationModel.save`"),
        (lambda c: c.update(latent_dim="big"), r"does not describe a stimpute network"),
        (lambda c: c.update(latent_dim=8), r"do not fit the network described by 'config.json'"),
        (lambda c: c.update(latent_dim=-1), r"does not describe a stimpute network \(RuntimeError"),
        (lambda c: c.update(format_version=-1), r"`format_version=-1`, expected a whole number >= 0"),
        (lambda c: c.update(norm=[1, 2]), r"`norm` is not a mapping with \['library_mean'"),
        (lambda c: c.update(var_names=c["var_names"][:10]), r"`var_names` is not a list of \d+ gene names"),
        (lambda c: c.update(var_names=None), r"`var_names` is not a list of \d+ gene names"),
        (lambda c: c.update(var_names="abc"), r"`var_names` is not a list of \d+ gene names"),
        (lambda c: c.update(n_genes=-5), r"`n_genes=-5` is not a positive whole number"),
        (lambda c: c.update(method="foo"), r"`method='foo'` is not one of \['multimodal', 'autoencoder'"),
        (lambda c: c.update(loss="foo"), r"`loss='foo'` is not one of \['mse'"),
        # hand-edited normalisation values used to load and fail later inside numpy at predict
        (lambda c: c["norm"].update(library_std="x"), r"`norm\['library_std'\]='x'` is not a finite number"),
        (lambda c: c["norm"].update(library_median=0), r"`norm\['library_median'\]=0` is not positive"),
        (lambda c: c["norm"].update(library_mean=None), r"`norm\['library_mean'\]=None` is not a finite number"),
        (lambda c: c["norm"].update(gene_max=c["norm"]["gene_max"][:3]), r"`norm\['gene_max'\]` is not a list of 50"),
        (lambda c: c["norm"]["gene_mean"].__setitem__(0, "a"), r"`norm\['gene_mean'\]` is not a list of 50 finite"),
        (lambda c: c["norm"].update(image_std=[0.0] * len(c["norm"]["image_mean"])), r"`norm\['image_std'\]` has"),
        (lambda c: c["norm"].update(image_mean="abc"), r"`norm\['image_mean'\]` is not a list of 6 finite numbers"),
        (lambda c: c["norm"].update(image_mean=[0.0] * 3), r"`norm\['image_mean'\]` is not a list of 6 finite"),
        (lambda c: c["norm"].pop("image_std"), r"`norm\['image_std'\]` is not a list of 6 finite numbers"),
        (lambda c: c.update(n_image_features="10"), r"`n_image_features='10'` is not a positive whole number"),
        (lambda c: c["norm"]["gene_max"].__setitem__(0, -1.0), r"`norm\['gene_max'\]` has negative values"),
    ],
)
def test_load_model_damaged_config(trained, tmp_path, edit, match):
    _, model = trained
    folder = tmp_path / "m"
    model.save(folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match) as info:
        st.tl.load_model(folder, device="cpu")
    assert "model.save(dirname, overwrite=True)" in str(info.value)


@pytest.mark.parametrize(
    ("config_text", "weights", "match"),
    [
        ("{not json", None, r"config\.json' is not valid JSON"),
        ("[1, 2]", None, r"holds a JSON list, not a stimpute model configuration"),
        (
            None,
            b"not a checkpoint",
            r"model\.pt' could not be read with `torch.load\(\.\.\., weights_only=True\)` \(UnpicklingError",
        ),
        (None, "tensor", r"holds a Tensor, not a state dict"),
        (None, "int keys", r"holds a dict with non-string keys or non-tensors, not a state dict"),
        ("directory", None, r"config\.json' cannot be read \((IsADirectoryError|PermissionError)"),
    ],
)
def test_load_model_damaged_files(trained, tmp_path, config_text, weights, match):
    _, model = trained
    folder = tmp_path / "m"
    model.save(folder)
    if config_text == "directory":
        (folder / "config.json").unlink()
        (folder / "config.json").mkdir()
    elif config_text is not None:
        (folder / "config.json").write_text(config_text)
    if isinstance(weights, bytes):
        (folder / "model.pt").write_bytes(weights)
    elif weights == "tensor":
        torch.save(torch.zeros(3), folder / "model.pt")
    elif weights == "int keys":
        torch.save({1: torch.zeros(2)}, folder / "model.pt")
    with pytest.raises(ValueError, match=match):
        st.tl.load_model(folder, device="cpu")


def test_predict_checks_genes_first_and_names_the_image_settings(trained):
    _, model = trained
    other = _section(3)
    del other.obsm["X_image"]
    other = other[:, other.var_names[::-1]].copy()  # other gene order and no image features: genes come first
    with pytest.raises(ValueError, match="different order"):
        model.predict(other, layer="X")
    other = other[:, other.var_names[::-1]].copy()
    with pytest.raises(KeyError, match="settings used for the training section") as err:
        model.predict(other, layer="X")
    assert "method=" not in str(err.value)  # a trained model's method cannot change


# image features on the model's axes ------------------------------------------------------------------------
@pytest.fixture
def trained_on_image_features():
    adata = st.datasets.synthetic_visium(n_spots=200, n_genes=50, random_state=0)
    st.pp.image_features(adata, n_comps=10, progress=False)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    model = st.tl.impute(adata, "multimodal", layer="holdout_train", max_epochs=5, return_model=True)
    return adata, model


def test_model_stores_its_image_axes(trained_on_image_features, tmp_path):
    adata, model = trained_on_image_features
    record = model.config["image_features"]
    assert record["params"]["n_comps"] == 10 and record["params"]["tile_scale"] == 1.0
    for name in ("mean", "scale", "components"):
        np.testing.assert_array_equal(record["projection"][name], adata.uns["X_image"]["projection"][name])
    model.save(tmp_path / "m")
    loaded = st.tl.load_model(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(
        loaded.config["image_features"]["projection"]["components"], record["projection"]["components"]
    )
    loaded.predict(adata, layer="holdout_train", key_added="again")  # the training section passes the check
    np.testing.assert_array_equal(adata.layers["again"], adata.layers["imputed_multimodal"])


def test_predict_refuses_features_on_other_axes(trained_on_image_features):
    """Another section's features PCA-ed on its own axes were read as if on the model's (silently)."""
    adata, model = trained_on_image_features
    other = st.datasets.synthetic_visium(n_spots=150, n_genes=50, random_state=3)
    st.pp.image_features(other, n_comps=10, progress=False)
    state = _state(other)
    with pytest.raises(ValueError, match=r"other axes.*reference=model"):
        model.predict(other)
    _assert_unchanged(other, state)
    st.pp.image_features(other, reference=model, progress=False)
    assert other.uns["X_image"]["params"]["projection"] == "reference"
    model.predict(other)
    assert other.layers["imputed_multimodal"].shape == other.shape


def test_predict_warns_when_features_cannot_be_checked(trained_on_image_features):
    adata, model = trained_on_image_features
    other = adata.copy()
    del other.uns["X_image"]
    with pytest.warns(st.ImageFeatureWarning, match="cannot be checked against the model's image axes"):
        model.predict(other, layer="holdout_train")


def test_model_without_image_record_is_a_clear_reference_error(trained):
    adata, model = trained  # trained on hand-made obsm['X_image'] without a record
    assert "image_features" not in model.config
    other = st.datasets.synthetic_visium(n_spots=60, n_genes=50, random_state=2)
    with pytest.raises(ValueError, match="stores no image-feature axes"):
        st.pp.image_features(other, reference=model)
    assert "X_image" not in other.obsm


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda r: r.pop("params"), r"`image_features`: it is not a mapping with `params`"),
        (lambda r: r["params"].pop("tile_scale"), r"`image_features`: its `params` lack \['tile_scale'\]"),
        (lambda r: r["params"].update(tile_scale="abc"), r"`params\['tile_scale'\]='abc'` is not a positive number"),
        (lambda r: r["params"].update(tile_scale=None), r"`params\['tile_scale'\]=None` is not a positive number"),
        (lambda r: r["params"].update(tile_size="big"), r"`params\['tile_size'\]='big'` is not a positive whole"),
        (lambda r: r["params"].update(n_comps="x"), r"`params\['n_comps'\]='x'` is not a positive whole number"),
        (lambda r: r["params"].update(encoder=3), r"`params\['encoder'\]=3` is not a string"),
        (lambda r: r.update(key=5), r"`key=5` is not a string"),
        (lambda r: r["projection"].update(mean=[0.0]), r"`projection` is unusable: its arrays do not have 88 features"),
        (lambda r: r["projection"].update(scale="x"), r"`projection` is unusable: its values are not numeric"),
        (lambda r: r["projection"].update(components=r["projection"]["components"][:5]), r"gives 5 features, not 10"),
    ],
)
def test_load_model_damaged_image_record(trained_on_image_features, tmp_path, edit, match):
    _, model = trained_on_image_features
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    edit(config["image_features"])
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        st.tl.load_model(tmp_path / "m", device="cpu")


def test_model_config_is_plain_json_and_owns_its_arrays(trained_on_image_features):
    adata, model = trained_on_image_features
    json.dumps(model.config)  # the class promises a JSON-serialisable configuration
    mean = adata.uns["X_image"]["projection"]["mean"]
    before = list(model.config["image_features"]["projection"]["mean"])
    mean[0] += 100.0  # editing adata does not edit the model
    assert model.config["image_features"]["projection"]["mean"] == before


def test_predict_messages_lead_to_the_reference_call():
    """Models trained on other keys or without PCA: every message names the call that works."""
    adata = st.datasets.synthetic_visium(n_spots=150, n_genes=30, random_state=0)
    st.pp.image_features(adata, n_comps=None, key_added="X_he", progress=False)
    model = st.tl.impute(adata, "image", image_key="X_he", max_epochs=2, return_model=True)
    other = st.datasets.synthetic_visium(n_spots=100, n_genes=30, random_state=4)
    with pytest.raises(
        KeyError, match=r"st\.pp\.image_features\(adata, key_added='X_he', reference=model, n_comps=None\)"
    ):
        model.predict(other)
    st.pp.image_features(other, key_added="X_he", n_comps=10, progress=False)
    with pytest.raises(ValueError, match=r"has 10 features but the model was trained on 88.*n_comps=None\)"):
        model.predict(other)
    st.pp.image_features(other, key_added="X_he", n_comps=None, progress=False)
    with pytest.raises(ValueError, match=r"other axes.*key_added='X_he', reference=model, n_comps=None\)"):
        model.predict(other)
    st.pp.image_features(other, key_added="X_he", reference=model, n_comps=None, progress=False)  # as suggested
    model.predict(other)
    assert "imputed_image" in other.layers


def test_out_of_memory_while_loading_is_not_called_a_damaged_file(trained, tmp_path, monkeypatch):
    import torch

    _, model = trained
    model.save(tmp_path / "m")

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch, "load", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        st.tl.load_model(tmp_path / "m")
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("invalid header")))
    with pytest.raises(ValueError, match="damaged"):
        st.tl.load_model(tmp_path / "m")
