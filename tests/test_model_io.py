"""Saving, loading and reusing trained imputation models."""

from __future__ import annotations

import json

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
    before = set(renamed.layers)
    with pytest.raises(ValueError, match=r"3 of the model's genes are missing \(e\.g\. \['gene_0000'"):
        model.predict(renamed)
    assert set(renamed.layers) == before
    with pytest.raises(ValueError, match="different genes"):
        model.predict(other[:, :40].copy())
    with pytest.raises(ValueError, match="different order"):
        model.predict(other[:, ::-1].copy())


def test_predict_needs_the_models_inputs(trained):
    _, model = trained
    other = _section(3)
    del other.obsm["X_image"]
    with pytest.raises(KeyError, match=r"obsm\['X_image'\]"):
        model.predict(other)
    other = _section(3)
    other.obsm["X_image"] = other.obsm["X_image"][:, :2]
    with pytest.raises(ValueError, match="features but the model was trained on"):
        model.predict(other)
