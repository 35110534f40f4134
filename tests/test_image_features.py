"""Tests of st.pp.image_features, st.pl.tiles and the private image package (reading, tiles, handcrafted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from PIL import Image

import stimpute as st
from stimpute._image._handcrafted import (
    GLCM_PROPS,
    _lbp_hist,
    glcm_batch,
    handcrafted_feature_names,
    handcrafted_features,
)
from stimpute._image._io import open_file, to_rgb_uint8
from stimpute._image._tiles import iter_tiles, prepare_tiles

from .conftest import require_data


# helpers --------------------------------------------------------------------------------------------------
def _fullres(adata: ad.AnnData) -> np.ndarray:
    """The synthetic hires image blown up to full resolution (nearest neighbour, factor 1 / 0.2 = 5)."""
    hires = st.get.image(adata, img_key="hires")
    return np.repeat(np.repeat(hires, 5, axis=0), 5, axis=1)


def _snapshot(adata: ad.AnnData) -> tuple:
    return (set(adata.obsm), set(adata.uns), adata.X.copy())


def _unchanged(adata: ad.AnnData, snap: tuple) -> bool:
    return set(adata.obsm) == snap[0] and set(adata.uns) == snap[1] and (adata.X != snap[2]).nnz == 0


@pytest.fixture(scope="module")
def syn400() -> ad.AnnData:
    return st.datasets.synthetic_visium(n_spots=400, n_genes=30, random_state=0)


# handcrafted features -------------------------------------------------------------------------------------
def test_glcm_matches_skimage():
    from skimage.feature import graycomatrix, graycoprops

    rng = np.random.default_rng(1)
    levels = rng.integers(0, 32, size=(3, 30, 30))
    levels[1] = (np.add.outer(np.arange(30), np.arange(30)) // 3) % 32  # diagonal stripes
    levels[2] = 7  # flat: correlation is 1 by skimage's convention
    ours = glcm_batch(levels, 32, (1, 2, 4)).reshape(3, 3, len(GLCM_PROPS))
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    for k in range(3):
        P = graycomatrix(levels[k].astype(np.uint8), [1, 2, 4], angles, levels=32, symmetric=True, normed=True)
        ref = np.stack([graycoprops(P, prop).mean(axis=1) for prop in GLCM_PROPS], axis=1)
        np.testing.assert_allclose(ours[k], ref, atol=1e-9)


def test_lbp_uniform_codes():
    flat = np.full((1, 10, 10), 5.0)
    hist = _lbp_hist(flat)
    assert hist[0, 8] == 1.0  # every neighbour >= centre: 8 ones, uniform
    rng = np.random.default_rng(0)
    noise = _lbp_hist(rng.random((2, 40, 40)))
    np.testing.assert_allclose(noise.sum(axis=1), 1.0)
    assert noise[0, 9] > 0.3  # random texture: many non-uniform codes


def test_handcrafted_features_follow_stains():
    names = handcrafted_feature_names()
    tiles = np.empty((2, 32, 32, 3), dtype=np.uint8)
    tiles[0] = (90, 55, 140)  # haematoxylin-purple
    tiles[1] = (240, 170, 210)  # eosin-pink
    f = handcrafted_features(tiles)
    assert f.shape == (2, len(names)) == (2, 88)
    assert np.isfinite(f).all()
    h_mean, e_mean = names.index("tile_H_mean"), names.index("tile_E_mean")
    assert f[0, h_mean] > f[1, h_mean]
    assert f[0, h_mean] - f[0, e_mean] > f[1, h_mean] - f[1, e_mean]
    assert f[0, names.index("tile_R_mean")] == pytest.approx(90 / 255, abs=1e-6)
    # spot disc vs context: a dark centre on a pale tile changes only the spot statistics' means strongly
    ring = np.full((1, 33, 33, 3), 240, dtype=np.uint8)
    ring[0, 12:21, 12:21] = 60
    g = handcrafted_features(ring, spot_fraction=1 / 3)
    assert g[0, names.index("spot_R_mean")] < g[0, names.index("tile_R_mean")] - 0.2


def test_to_rgb_uint8_conversions():
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 5, 5, 3)).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((2, 5, 5, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(to_rgb_uint8(rgba, value_max=255), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgb.astype(np.uint16) * 257, value_max=65535), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgb / 255.0, value_max=1.0), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgb.astype(np.float32), value_max=255.0), rgb)
    grey = to_rgb_uint8(rgb[..., :1], value_max=255)
    assert grey.shape == (2, 5, 5, 3) and (grey[..., 0] == grey[..., 2]).all()


# tile geometry ---------------------------------------------------------------------------------------------
def test_tiles_are_centred_on_spots(synthetic):
    """A dot of a unique colour at every spot centre must land in the centre pixel of its tile."""
    coords = synthetic.obsm["spatial"]
    full = np.full_like(_fullres(synthetic), 200)
    cx, cy = np.rint(coords[:, 0]).astype(int), np.rint(coords[:, 1]).astype(int)
    ids = np.arange(synthetic.n_obs)
    full[cy, cx, 0], full[cy, cx, 1], full[cy, cx, 2] = ids % 256, ids // 256, 7
    spec = prepare_tiles(synthetic, source_image=full, tile_scale=1.5)
    raw = spec.source.crops(spec.centres, spec.radius)
    r = spec.radius
    assert raw.shape[1] == 2 * r + 1 == spec.side
    assert r == round(55.0 * 1.5 / 2)  # spot_diameter_fullres = 55 px in the synthetic data
    np.testing.assert_array_equal(raw[:, r, r, 0].astype(int) + 256 * raw[:, r, r, 1].astype(int), ids)


def test_fullres_and_hires_tiles_agree(syn400):
    """Tiles cut from full resolution (scale 1) and from hires (scale 0.2) show the same tissue."""
    spec_full = prepare_tiles(syn400, source_image=_fullres(syn400), tile_scale=2.0)
    spec_hi = prepare_tiles(syn400, img_key="hires", tile_scale=2.0)
    assert spec_hi.source.scale == pytest.approx(0.2)
    t_full = np.concatenate([t for _, t in iter_tiles(spec_full, 16)])
    t_hi = np.concatenate([t for _, t in iter_tiles(spec_hi, 16)])
    m_full = t_full.reshape(len(t_full), -1, 3).mean(axis=1)
    m_hi = t_hi.reshape(len(t_hi), -1, 3).mean(axis=1)
    assert np.corrcoef(m_full[:, 1], m_hi[:, 1])[0, 1] > 0.95
    # a shifted (wrong) alignment is clearly worse
    shifted = np.roll(m_hi[:, 1], 7)
    assert np.corrcoef(m_full[:, 1], shifted)[0, 1] < 0.9


def test_border_tiles_padded_white():
    adata = st.datasets.synthetic_visium(n_spots=50, n_genes=20)
    dark = np.zeros_like(_fullres(adata))
    adata.obsm["spatial"][0] = (2.0, 2.0)  # at the corner: most of its tile is outside the image
    spec = prepare_tiles(adata, source_image=dark, tile_scale=1.0)
    raw = spec.source.crops(spec.centres[:1], spec.radius)
    r = spec.radius
    assert (raw[0, : r - 3] == 255).all() and (raw[0, r + 1 :, r + 1 :] == 0).all()


# the public function ---------------------------------------------------------------------------------------
def test_image_features_default(syn400, tmp_path):
    adata = syn400.copy()
    assert st.pp.image_features(adata) is None
    X = adata.obsm["X_image"]
    assert X.dtype == np.float32 and X.shape == (adata.n_obs, 30) and np.isfinite(X).all()
    params = adata.uns["X_image"]["params"]
    assert params["encoder"] == "handcrafted" and params["weights"] == "none"
    assert (params["img_source"], params["image"], params["library_id"]) == ("uns", "hires", "synthetic")
    assert params["tile_size_source_px"] == 13 and params["tile_size"] == 64 and params["n_features"] == 88
    ratio = params["explained_variance_ratio"]
    assert len(ratio) == 30 and np.all(np.diff(ratio) <= 1e-12) and 0.5 < ratio.sum() <= 1.0
    # deterministic, and survives h5ad
    again = st.pp.image_features(syn400.copy(), copy=True)
    np.testing.assert_array_equal(again.obsm["X_image"], X)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obsm["X_image"], X)
    assert back.uns["X_image"]["params"]["image"] == "hires"


def test_image_features_carry_domains(syn400):
    """The synthetic image's texture follows the domains: features must predict them far above chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    adata = st.pp.image_features(syn400, tile_scale=2.0, n_comps=10, copy=True)
    y = adata.obs["domain"].cat.codes.to_numpy()
    acc = cross_val_score(LogisticRegression(max_iter=2000), adata.obsm["X_image"], y, cv=5).mean()
    shuffled = cross_val_score(
        LogisticRegression(max_iter=2000), adata.obsm["X_image"], np.random.default_rng(0).permutation(y), cv=5
    ).mean()
    assert acc > 0.85 and acc > shuffled + 0.4


def test_copy_key_added_ncomps(synthetic):
    out = st.pp.image_features(synthetic, key_added="img", n_comps=5, copy=True)
    assert "img" not in synthetic.obsm and out.obsm["img"].shape == (synthetic.n_obs, 5)
    raw = st.pp.image_features(synthetic, n_comps=None, copy=True)
    assert (
        raw.obsm["X_image"].shape == (synthetic.n_obs, 88)
        and len(raw.uns["X_image"]["params"]["explained_variance_ratio"]) == 0
    )
    few = st.pp.image_features(synthetic[:6].copy(), copy=True)
    assert few.obsm["X_image"].shape == (6, 5)  # at most n_spots - 1 components


def test_image_conversions_give_same_features(synthetic):
    full = _fullres(synthetic)
    base = st.pp.image_features(synthetic, source_image=full, copy=True).obsm["X_image"]
    alpha = np.concatenate([full, np.full(full.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(st.pp.image_features(synthetic, source_image=alpha, copy=True).obsm["X_image"], base)
    np.testing.assert_array_equal(
        st.pp.image_features(synthetic, source_image=full.astype(np.uint16) * 257, copy=True).obsm["X_image"], base
    )
    as_float = st.pp.image_features(synthetic, source_image=full.astype(np.float32) / 255, copy=True)
    np.testing.assert_allclose(as_float.obsm["X_image"], base, atol=1e-4)
    grey = st.pp.image_features(synthetic, source_image=full.mean(axis=2).astype(np.uint8), copy=True)
    assert grey.obsm["X_image"].shape == base.shape and np.isfinite(grey.obsm["X_image"]).all()


def test_files_jpeg_draft_tiff_png(synthetic, tmp_path):
    import tifffile

    full = _fullres(synthetic)
    base = st.pp.image_features(synthetic, source_image=full, tile_scale=3.0, copy=True)
    # TIFF: uncompressed (memory map) and tiled + compressed (lazy zarr store) give identical features
    tifffile.imwrite(tmp_path / "plain.tif", full)
    tifffile.imwrite(tmp_path / "tiled.tif", full, tile=(64, 64), compression="zlib")
    for name in ("plain.tif", "tiled.tif"):
        with open_file(tmp_path / name) as src:
            assert src.native_shape == full.shape[:2]
        out = st.pp.image_features(synthetic, source_image=tmp_path / name, tile_scale=3.0, copy=True)
        np.testing.assert_allclose(out.obsm["X_image"], base.obsm["X_image"], atol=1e-5)
        assert out.uns["X_image"]["params"]["img_source"] == "file"
    Image.fromarray(full).save(tmp_path / "full.png")
    png = st.pp.image_features(synthetic, source_image=str(tmp_path / "full.png"), tile_scale=3.0, copy=True)
    np.testing.assert_allclose(png.obsm["X_image"], base.obsm["X_image"], atol=1e-5)
    # JPEG: tiles of 165 px shrink to 64 px, so it is decoded at half size (scale 0.5)
    Image.fromarray(full).save(tmp_path / "full.jpg", quality=95)
    jpg = st.pp.image_features(synthetic, source_image=tmp_path / "full.jpg", tile_scale=3.0, copy=True)
    params = jpg.uns["X_image"]["params"]
    assert params["image"] == "full.jpg" and params["scale"] == pytest.approx(0.5, abs=0.01)
    assert params["tile_size_source_px"] == 83
    agree = [abs(np.corrcoef(jpg.obsm["X_image"][:, k], base.obsm["X_image"][:, k])[0, 1]) for k in range(3)]
    assert min(agree) > 0.9


def test_source_image_path_from_metadata(synthetic, tmp_path):
    Image.fromarray(_fullres(synthetic)).save(tmp_path / "slide.png")
    synthetic.uns["spatial"]["synthetic"]["metadata"]["source_image_path"] = str(tmp_path / "slide.png")
    out = st.pp.image_features(synthetic, copy=True)
    assert out.uns["X_image"]["params"]["image"] == "slide.png"
    with pytest.warns(st.ImageFeatureWarning, match="Tiles are only"):  # the lowres image is tiny
        lowres = st.pp.image_features(synthetic, img_key="lowres", copy=True)
    assert lowres.uns["X_image"]["params"]["image"] == "lowres"
    synthetic.uns["spatial"]["synthetic"]["metadata"]["source_image_path"] = str(tmp_path / "gone.png")
    with pytest.warns(st.ImageFeatureWarning, match="does not exist"):
        out = st.pp.image_features(synthetic, copy=True)
    assert out.uns["X_image"]["params"]["image"] == "hires"


# CNN encoders ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def r18_checkpoint(tmp_path_factory) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def syn60() -> ad.AnnData:
    return st.datasets.synthetic_visium(n_spots=60, n_genes=20, random_state=0)


def test_cnn_checkpoint_and_conversions(syn60, r18_checkpoint, tmp_path):
    import torch

    kw = {"encoder": "resnet18", "tile_size": 32, "n_comps": 8, "copy": True}
    out = st.pp.image_features(syn60, weights=r18_checkpoint, **kw)
    X = out.obsm["X_image"]
    params = out.uns["X_image"]["params"]
    assert X.shape == (60, 8) and X.dtype == np.float32 and np.isfinite(X).all()
    assert params["weights"] == "r18.pt" and params["n_features"] == 512 and params["tile_size"] == 32
    # same seed -> the same random initialisation as the checkpoint (built after torch.manual_seed(0))
    torch.manual_seed(123)
    state_before = torch.get_rng_state()
    rand = st.pp.image_features(syn60, weights="random", random_state=0, **kw)
    np.testing.assert_allclose(rand.obsm["X_image"], X, atol=1e-4)
    assert torch.equal(torch.get_rng_state(), state_before)  # seeding did not change the caller's generator
    # documented conversions: Lightning-style wrapper, DataParallel prefix, head keys absent
    state = torch.load(r18_checkpoint, weights_only=True)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items() if not k.startswith("fc.")}, "epoch": 3}
    torch.save(wrapped, tmp_path / "wrapped.pt")
    conv = st.pp.image_features(syn60, weights=tmp_path / "wrapped.pt", **kw)
    np.testing.assert_allclose(conv.obsm["X_image"], X, atol=1e-5)


def test_cnn_features_under_a_float64_default_dtype(syn60, r18_checkpoint):
    """A caller's ``torch.set_default_dtype(torch.float64)`` changes neither the CNN's weights nor its features."""
    import torch

    kw = {"encoder": "resnet18", "tile_size": 32, "n_comps": 8, "copy": True}
    expected = {w: st.pp.image_features(syn60, weights=w, **kw).obsm["X_image"] for w in ("random", r18_checkpoint)}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for weights, X in expected.items():
            np.testing.assert_array_equal(st.pp.image_features(syn60, weights=weights, **kw).obsm["X_image"], X)
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(previous)


def test_cnn_bad_weights(syn60, r18_checkpoint, tmp_path, monkeypatch):
    from urllib.error import URLError

    import torch
    import torchvision

    snap = _snapshot(syn60)
    with pytest.raises(ValueError, match="meaningless features"):
        st.pp.image_features(syn60, encoder="resnet18")
    with pytest.raises(FileNotFoundError, match="existing checkpoint"):
        st.pp.image_features(syn60, encoder="resnet18", weights=tmp_path / "nope.pt")
    with pytest.raises(ValueError, match=r"does not fit 'resnet50'.*missing keys.*layer1\.0\.bn3"):
        st.pp.image_features(syn60, encoder="resnet50", weights=r18_checkpoint, tile_size=32)
    state = torch.load(r18_checkpoint, weights_only=True)
    state.pop("layer4.1.bn2.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"1 missing keys.*layer4\.1\.bn2\.weight.*1 unexpected keys.*extra\.weight"):
        st.pp.image_features(syn60, encoder="resnet18", weights=tmp_path / "broken.pt", tile_size=32)
    torch.save(torchvision.models.resnet18(), tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        st.pp.image_features(syn60, encoder="resnet18", weights=tmp_path / "pickled.pt", tile_size=32)

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"(?s)needs internet access.*weights='/path/to/checkpoint.pt'.*handcrafted"):
        st.pp.image_features(syn60, encoder="resnet18", weights="imagenet", tile_size=32)
    assert _unchanged(syn60, snap)


# bad input ------------------------------------------------------------------------------------------------
def test_bad_arguments(synthetic):
    snap = _snapshot(synthetic)
    with pytest.raises(ValueError, match="`encoder` must be"):
        st.pp.image_features(synthetic, encoder="vit_h14")
    with pytest.raises(ValueError, match="must be None for encoder='handcrafted'"):
        st.pp.image_features(synthetic, weights="imagenet")
    with pytest.raises(ValueError, match="either `source_image`"):
        st.pp.image_features(synthetic, img_key="hires", source_image=np.zeros((10, 10, 3)))
    with pytest.raises(ValueError, match="tile_scale"):
        st.pp.image_features(synthetic, tile_scale=0)
    with pytest.raises(ValueError, match="n_comps"):
        st.pp.image_features(synthetic, n_comps=0)
    with pytest.raises(ValueError, match="tile_size"):
        st.pp.image_features(synthetic, tile_size=4)
    with pytest.raises(KeyError, match="img_key='lowers'"):
        st.pp.image_features(synthetic, img_key="lowers")
    with pytest.raises(KeyError, match="library_id='nope'"):
        st.pp.image_features(synthetic, library_id="nope")
    with pytest.raises(ValueError, match="multi-channel"):
        st.pp.image_features(synthetic, source_image=np.zeros((2000, 2000, 5), np.uint8))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        st.pp.image_features(synthetic, source_image="/no/such/slide.tif")
    assert _unchanged(synthetic, snap)


def test_missing_image(synthetic):
    synthetic.uns["spatial"]["synthetic"]["images"] = {}
    snap = _snapshot(synthetic)
    with pytest.raises(KeyError, match=r"(?s)no H&E image for library 'synthetic'.*source_image="):
        st.pp.image_features(synthetic)
    assert _unchanged(synthetic, snap)
    # a full-resolution image still works without stored images; a blank one gives zero components
    with pytest.warns(st.ImageFeatureWarning, match="constant across spots"):
        st.pp.image_features(synthetic, source_image=np.full((1800, 1800, 3), 200, np.uint8))
    assert synthetic.obsm["X_image"].shape[0] == synthetic.n_obs and not synthetic.obsm["X_image"].any()


def test_spots_outside_image(synthetic):
    snap = _snapshot(synthetic)
    scaled = synthetic.copy()
    scaled.obsm["spatial"] = scaled.obsm["spatial"] / 0.2  # coordinates blown up by 1 / tissue_hires_scalef
    with pytest.raises(
        ValueError, match=r"(?s)spot centres lie outside image 'hires'.*Multiplying the coordinates by about"
    ):
        st.pp.image_features(scaled)
    small = synthetic.copy()
    small.obsm["spatial"] = small.obsm["spatial"] * 0.05  # coordinates in lowres pixels
    with pytest.warns(st.ImageFeatureWarning, match="(?s)top-left corner.*lowres pixels"):
        st.pp.image_features(small, copy=True)
    swapped = st.datasets.synthetic_visium(n_spots=60, n_genes=20)
    swapped.obsm["spatial"] = swapped.obsm["spatial"] * np.array([[1.0, 2.5]])  # now taller than the image
    with pytest.raises(ValueError, match="outside"):
        st.pp.image_features(swapped)
    few = synthetic.copy()
    few.obsm["spatial"][:3] = -500.0
    with pytest.warns(st.ImageFeatureWarning, match="3 of 200 spot centres lie outside"):
        st.pp.image_features(few, copy=True)
    assert _unchanged(synthetic, snap)


def test_source_image_size_mismatch(synthetic, tmp_path):
    full = _fullres(synthetic)
    snap = _snapshot(synthetic)
    Image.fromarray(full[::2, ::2]).save(tmp_path / "half.png")
    with pytest.raises(ValueError, match=r"(?s)implies a full-resolution image.*0\.5 times that size.*rescaled copy"):
        st.pp.image_features(synthetic, source_image=tmp_path / "half.png")
    with pytest.raises(ValueError, match="different factors"):
        st.pp.image_features(synthetic, source_image=full[:, : full.shape[1] // 2 + 300])
    rect = st.datasets.synthetic_visium(n_spots=60, n_genes=20)
    rect_full = _fullres(rect)[:, :-200]
    rect.uns["spatial"]["synthetic"]["images"] = {"hires": rect_full[::5, ::5]}
    rect.uns["spatial"]["synthetic"]["scalefactors"].pop("tissue_lowres_scalef")
    with pytest.raises(ValueError, match="rotated or transposed"):
        st.pp.image_features(rect, source_image=np.ascontiguousarray(rect_full.transpose(1, 0, 2)))
    assert _unchanged(synthetic, snap)


def test_handcrafted_does_not_import_torch():
    code = (
        "import sys, stimpute as st; st.settings.verbosity = 0; "
        "a = st.datasets.synthetic_visium(n_spots=40, n_genes=12); st.pp.image_features(a); "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


# plotting -------------------------------------------------------------------------------------------------
def test_pl_tiles(synthetic):
    import matplotlib.pyplot as plt

    fig = st.pl.tiles(synthetic, n=6, tile_scale=2.0, return_fig=True)
    assert len(fig.axes) == 6
    ax0 = fig.axes[0]
    assert ax0.get_title() in set(synthetic.obs_names) and len(ax0.patches) == 1 and len(ax0.images) == 1
    assert ax0.images[0].get_array().shape[:2] == (2 * round(55 * 0.2 * 2 / 2) + 1,) * 2
    plt.close(fig)
    axes = st.pl.tiles(synthetic, obs_names=["spot_00003", "spot_00010"], source_image=_fullres(synthetic), show=False)
    assert [a.get_title() for a in axes] == ["spot_00003", "spot_00010"]
    plt.close("all")
    with pytest.raises(KeyError, match="not in `adata.obs_names`"):
        st.pl.tiles(synthetic, obs_names=["nope"], show=False)


# real data ------------------------------------------------------------------------------------------------
def test_her2st_fullres_vs_hires(monkeypatch):
    folder = require_data("her2st_C2")
    adata = ad.read_h5ad(folder / "adata.h5ad")
    jpg = folder / "5714_HE_BT_C2.jpg"
    limit = Image.MAX_IMAGE_PIXELS
    full = st.pp.image_features(adata, source_image=jpg, n_comps=None, copy=True)
    assert Image.MAX_IMAGE_PIXELS == limit  # raised for the read only, then restored
    hires = st.pp.image_features(adata, img_key="hires", n_comps=None, copy=True)
    pf, ph = full.uns["X_image"]["params"], hires.uns["X_image"]["params"]
    assert pf["img_source"] == "file" and pf["scale"] == pytest.approx(0.5, abs=0.001)
    assert pf["tile_size_source_px"] == 73 and ph["tile_size_source_px"] == 31
    names = handcrafted_feature_names()
    for feat in ("tile_H_mean", "tile_E_mean", "tile_G_mean"):
        k = names.index(feat)
        assert np.corrcoef(full.obsm["X_image"][:, k], hires.obsm["X_image"][:, k])[0, 1] > 0.9
    # a downscaled copy of the slide is caught by its size
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    small = Image.open(jpg)
    small.draft("RGB", (small.size[0] // 4, small.size[1] // 4))  # decoded at a quarter of the size
    with pytest.raises(ValueError, match=r"0\.25 times that size"):
        st.pp.image_features(adata, source_image=np.asarray(small))


def test_her2st_loader_records_the_jpg(monkeypatch):
    folder = require_data("her2st_C3")
    monkeypatch.setattr(st.settings, "_datadir", folder.parent)
    adata = st.datasets.her2st("C3")
    st.pp.image_features(adata, n_comps=10)
    params = adata.uns["X_image"]["params"]
    assert (params["img_source"], params["image"], params["library_id"]) == ("file", "5714_HE_BT_D1.jpg", "C3")
    assert adata.obsm["X_image"].shape == (180, 10)


def test_dlpfc_lowres_tiles_are_tiny(dlpfc):
    with pytest.warns(st.ImageFeatureWarning, match="Tiles are only 5 px wide in image 'lowres'"):
        st.pp.image_features(dlpfc[:300].copy(), n_comps=10)


@pytest.mark.parametrize("size", [(1001, 803), (1024, 768)])
def test_reduced_jpeg_maps_spots_onto_the_right_pixels(tmp_path, size):
    """A JPEG decoded at 1/4 size: exact factor 1/4 (odd sizes too) and block-centre geometry."""
    from PIL import Image

    from stimpute._image._io import open_file

    w, h = size
    img = np.full((h, w, 3), 255, dtype=np.uint8)
    squares = [(400, 300), (900, 700), (37, 41)]  # top-left corners of dark 40 x 40 squares (native px)
    for x0, y0 in squares:
        img[y0 : y0 + 40, x0 : x0 + 40] = 0
    path = tmp_path / "slide.jpg"
    Image.fromarray(img).save(path, quality=98)
    centres = np.array([[x0 + 19.5, y0 + 19.5] for x0, y0 in squares])  # native pixel i is centred at i
    source = open_file(path)
    source.reduce_to(0.25)
    crops = source.crops(source.to_pixels(centres), 8)
    source.close()
    assert source.reduction == 4 and source.shape == (-(-h // 4), -(-w // 4))
    assert source.scale == 0.25
    np.testing.assert_allclose(source.to_pixels(centres[:1]), [[(419.5 - 1.5) / 4, (319.5 - 1.5) / 4]])
    yy, xx = np.mgrid[-8:9, -8:9]
    for crop, centre in zip(crops, source.to_pixels(centres), strict=True):
        dark = 255.0 - crop[..., 0].astype(float)
        cy, cx = (dark * yy).sum() / dark.sum(), (dark * xx).sum() / dark.sum()
        # the dark square is centred on the mapped spot centre (up to the rounding of the crop to whole pixels)
        frac = centre - np.rint(centre)
        assert abs(cx - frac[0]) < 0.2 and abs(cy - frac[1]) < 0.2


@pytest.mark.parametrize(("side", "fraction", "expected"), [(9, 0.125, 8), (5, 0.25, 4), (11, 0.125, 8), (300, 0.3, 2)])
def test_reduction_comes_from_the_decoder_even_on_tiny_images(tmp_path, side, fraction, expected):
    from PIL import Image

    from stimpute._image._io import open_file

    Image.fromarray(np.zeros((side, side), np.uint8)).save(tmp_path / "t.jpg")
    source = open_file(tmp_path / "t.jpg")
    source.reduce_to(fraction)
    assert source.reduction == expected
    assert source.shape == (-(-side // expected), -(-side // expected))
    assert source.scale == 1 / expected
    source.close()


def test_big_endian_uint16_image(tmp_path):
    """A TIFF written big-endian memory-maps as '>u2': still uint16 (divided by 257, padded with 65535)."""
    import tifffile

    from stimpute._image._io import open_array, open_file, to_rgb_uint8

    img = np.full((64, 64, 3), 128 * 257, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "be.tif", img, byteorder=">")
    sources = [open_file(tmp_path / "be.tif"), open_array(img.astype(">u2"), kind="array", name="a", native_scale=1.0)]
    for src in sources:
        assert src.white == 65535
        rgb = to_rgb_uint8(src.crops(np.array([[32.0, 32.0], [1.0, 1.0]]), 3), value_max=src.value_max)
        assert rgb[0, 3, 3].tolist() == [128, 128, 128]
        assert rgb[1, 0, 0].tolist() == [255, 255, 255]  # padding outside the image is white


def test_several_libraries_warn(synthetic):
    """With several sections in uns['spatial'], every spot is cut from the chosen library's image: say so."""
    from stimpute.get._spatial import set_spatial

    entry = synthetic.uns["spatial"]["synthetic"]
    set_spatial(synthetic, "other", images={"lowres": entry["images"]["lowres"]}, scalefactors=entry["scalefactors"])
    with pytest.raises(ValueError, match="pass `library_id=` to pick one.*library_key="):
        st.pp.image_features(synthetic)
    with pytest.warns(st.SectionWarning, match="every spot is cut from library 'synthetic'"):
        st.pp.image_features(synthetic, library_id="synthetic")


def test_damaged_source_images(synthetic, tmp_path):
    """A truncated JPEG or a non-TIFF '.tif' is a ValueError naming `source_image`, not PIL's or tifffile's error."""
    hires = st.get.image(synthetic)
    scalef = st.get.scale_factor(synthetic)
    size = (round(hires.shape[1] / scalef), round(hires.shape[0] / scalef))
    full = np.asarray(Image.fromarray(hires).resize(size))
    Image.fromarray(full).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "bad.tif").write_text("not a tiff")
    for name, match in (("cut.jpg", "could not be decoded"), ("bad.tif", "is not a TIFF file")):
        with pytest.raises(ValueError, match=rf"`source_image=.*{name}'` {match}"):
            st.pp.image_features(synthetic, source_image=tmp_path / name, progress=False)
        assert "X_image" not in synthetic.obsm


def test_very_large_tile_scale_keeps_a_spot_disc(synthetic):
    """tile_scale so large that the spot is under one pixel of the tile: the disc keeps the centre (was an IndexError)."""
    st.pp.image_features(synthetic, tile_size=16, tile_scale=np.float32(12), progress=False)
    assert np.isfinite(synthetic.obsm["X_image"]).all()


def _black_spots(adata: ad.AnnData) -> None:
    """Replace the hires image by white with a black disc of exactly one spot diameter on every spot."""
    s, d = st.get.scale_factor(adata, img_key="hires"), st.get.spot_diameter(adata, img_key="hires")
    h, w = st.get.image(adata, img_key="hires").shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w, 3), 255, np.uint8)
    for x, y in adata.obsm["spatial"] * s:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= (d / 2) ** 2] = 0
    adata.uns["spatial"][next(iter(adata.uns["spatial"]))]["images"]["hires"] = img


@pytest.mark.parametrize("tile_scale", [1.0, 1.5, 2.0])
def test_spot_disc_is_the_spot(synthetic, tile_scale):
    """The spot statistics read the spot, not its surroundings: tiles are cut with an odd side rounded up, so
    the disc is sized from the real spot fraction (was side / (2 * tile_scale): spot_R_mean 0.28 at tile_scale=1)."""
    _black_spots(synthetic)
    names = handcrafted_feature_names()
    spec = prepare_tiles(synthetic, img_key="hires", tile_scale=tile_scale)
    assert spec.spot_fraction < 1 / tile_scale  # the side was rounded up
    f = np.concatenate([handcrafted_features(t, spot_fraction=spec.spot_fraction) for _, t in iter_tiles(spec, 64)])
    assert f[:, names.index("spot_R_mean")].mean() < 0.08
    assert f[:, names.index("tile_R_mean")].mean() > 0.3


def test_image_features_pass_the_spot_fraction(synthetic, monkeypatch):
    """st.pp.image_features sizes the spot disc from the tiles it cut (after any JPEG reduction)."""
    import stimpute._image._handcrafted as hc

    seen = []
    real = hc.handcrafted_features

    def spy(tiles, *, spot_fraction):
        seen.append(spot_fraction)
        return real(tiles, spot_fraction=spot_fraction)

    monkeypatch.setattr(hc, "handcrafted_features", spy)
    st.pp.image_features(synthetic, img_key="hires", tile_scale=1.0, progress=False)
    spec = prepare_tiles(synthetic, img_key="hires", tile_scale=1.0)
    assert seen and set(seen) == {spec.spot_fraction}
    assert spec.spot_fraction < 1.0


# features on another section's axes (reference=) -----------------------------------------------------------
def test_reference_reproduces_its_own_axes(synthetic):
    st.pp.image_features(synthetic, n_comps=8, progress=False)
    again = st.pp.image_features(synthetic, n_comps=8, reference=synthetic, copy=True, progress=False)
    np.testing.assert_array_equal(again.obsm["X_image"], synthetic.obsm["X_image"])
    assert synthetic.uns["X_image"]["params"]["projection"] == "fitted"
    assert again.uns["X_image"]["params"]["projection"] == "reference"
    np.testing.assert_allclose(
        again.uns["X_image"]["params"]["explained_variance_ratio"],
        synthetic.uns["X_image"]["params"]["explained_variance_ratio"],
    )


def test_reference_projects_another_section(synthetic, tmp_path):
    """The second section is z-scored with the reference's constants and projected on its axes."""
    st.pp.image_features(synthetic, n_comps=8, progress=False)
    synthetic.write_h5ad(tmp_path / "ref.h5ad")  # the record survives h5ad and works from the file
    ref = ad.read_h5ad(tmp_path / "ref.h5ad")
    other = st.datasets.synthetic_visium(n_spots=90, n_genes=20, random_state=5)
    raw = st.pp.image_features(other, n_comps=None, copy=True, progress=False)  # z-scored on its own
    own = st.pp.image_features(other, n_comps=8, copy=True, progress=False)
    st.pp.image_features(other, n_comps=8, reference=ref, progress=False)
    proj = synthetic.uns["X_image"]["projection"]
    own_proj = raw.uns["X_image"]["projection"]
    features = raw.obsm["X_image"].astype(np.float64) * np.where(own_proj["scale"] > 0, own_proj["scale"], 0)
    features += own_proj["mean"]  # back to the raw features
    z = (features - proj["mean"]) / np.where(proj["scale"] > 0, proj["scale"], np.inf)
    np.testing.assert_allclose(other.obsm["X_image"], z @ proj["components"].T, rtol=1e-4, atol=1e-4)
    assert not np.allclose(other.obsm["X_image"], own.obsm["X_image"], atol=1e-3)
    for name in ("mean", "scale", "components"):
        np.testing.assert_array_equal(other.uns["X_image"]["projection"][name], proj[name])
    other.write_h5ad(tmp_path / "other.h5ad")
    back = ad.read_h5ad(tmp_path / "other.h5ad")
    assert back.uns["X_image"]["params"]["projection"] == "reference"


def test_reference_without_pca(synthetic):
    st.pp.image_features(synthetic, n_comps=None, progress=False)
    other = st.datasets.synthetic_visium(n_spots=50, n_genes=20, random_state=6)
    st.pp.image_features(other, n_comps=None, reference=synthetic, progress=False)
    assert other.obsm["X_image"].shape == (50, 88)
    assert "components" not in other.uns["X_image"]["projection"]
    with pytest.raises(ValueError, match=r"without PCA; pass `n_comps=None`"):
        st.pp.image_features(other, reference=synthetic)


def test_reference_bad_inputs(synthetic):
    st.pp.image_features(synthetic, n_comps=8, tile_scale=2.0, progress=False)
    other = st.datasets.synthetic_visium(n_spots=50, n_genes=20, random_state=7)
    snap = _snapshot(other)
    cases = [
        ({"tile_scale": 1.0}, ValueError, r"`tile_scale=1\.0` differs from the reference's \(2\.0\)"),
        ({"tile_scale": 2.0, "tile_size": 32}, ValueError, r"`tile_size=32` differs"),
        ({"tile_scale": 2.0, "n_comps": 4}, ValueError, r"has 8 principal components; pass `n_comps=8`"),
        ({"tile_scale": 2.0, "n_comps": None}, ValueError, r"pass `n_comps=8`"),
        ({"tile_scale": 2.0, "key_added": "X_other"}, KeyError, r"`reference` has no `uns\['X_other'\]`"),
    ]
    for kwargs, err, match in cases:
        with pytest.raises(err, match=match):
            st.pp.image_features(other, reference=synthetic, **kwargs)
        assert _unchanged(other, snap)
    with pytest.raises(TypeError, match="`reference` must be an AnnData"):
        st.pp.image_features(other, reference="X_image")
    with pytest.raises(ValueError, match="is not an image-feature record"):
        st.pp.image_features(other, reference={"params": {}})
    broken = {"params": dict(synthetic.uns["X_image"]["params"]), "projection": {"mean": [0.0], "scale": [1.0]}}
    with pytest.raises(ValueError, match="its `projection` is unusable: its arrays do not have 88 features"):
        st.pp.image_features(other, tile_scale=2.0, reference=broken)
    assert _unchanged(other, snap)


def test_reference_checks_tile_scale_before_anything(synthetic):
    st.pp.image_features(synthetic, n_comps=8, progress=False)
    other = st.datasets.synthetic_visium(n_spots=40, n_genes=20, random_state=8)
    for bad, err in ((None, TypeError), ("abc", TypeError), ("2", TypeError), (-1.0, ValueError)):
        with pytest.raises(err, match="`tile_scale` must be a positive number"):
            st.pp.image_features(other, tile_scale=bad, reference=synthetic)
    with pytest.raises(ValueError, match=r"looks like a whole `\.uns`; pass .*reference=ref\.uns\['X_image'\]"):
        st.pp.image_features(other, reference=synthetic.uns)
    with pytest.raises(ValueError, match=r"`tile_scale=2\.0` differs.*st\.pp\.image_features\(adata, reference=ref"):
        st.pp.image_features(other, tile_scale=2.0, reference=synthetic)


def test_reference_compares_the_cnn_weights(syn60, r18_checkpoint, tmp_path):
    """A different checkpoint file (same name) or another random seed is not the reference's network."""
    import shutil

    import torch

    st.pp.image_features(syn60, encoder="resnet18", weights=r18_checkpoint, tile_size=32, n_comps=5, progress=False)
    assert len(syn60.uns["X_image"]["params"]["weights_sha256"]) == 64
    other = st.datasets.synthetic_visium(n_spots=30, n_genes=20, random_state=9)
    same = tmp_path / "copy" / Path(r18_checkpoint).name
    same.parent.mkdir()
    shutil.copy(r18_checkpoint, same)
    st.pp.image_features(other, encoder="resnet18", weights=same, tile_size=32, reference=syn60, progress=False)
    state = torch.load(r18_checkpoint, weights_only=True)
    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
    changed = tmp_path / "changed" / Path(r18_checkpoint).name
    changed.parent.mkdir()
    torch.save(state, changed)
    with pytest.raises(ValueError, match="is not the reference's"):
        st.pp.image_features(other, encoder="resnet18", weights=changed, tile_size=32, reference=syn60)
    st.pp.image_features(syn60, encoder="resnet18", weights="random", tile_size=32, n_comps=5, random_state=0)
    with pytest.raises(ValueError, match="`random_state=5` differs from the reference's"):
        st.pp.image_features(other, encoder="resnet18", weights="random", tile_size=32, reference=syn60, random_state=5)


def test_reference_warns_about_another_resolution(synthetic):
    st.pp.image_features(synthetic, img_key="hires", n_comps=8, progress=False)
    other = st.datasets.synthetic_visium(n_spots=40, n_genes=20, random_state=10)
    with pytest.warns(st.ImageFeatureWarning) as record:  # the lowres tiles are also tiny: a second warning
        st.pp.image_features(other, img_key="lowres", reference=synthetic, progress=False)
    assert any("not comparable" in str(w.message) for w in record)


def _mixed_up(coords: np.ndarray, height: float, width: float) -> dict[str, np.ndarray]:
    """Full-resolution coordinates under the three mix-ups, in a frame of ``height`` x ``width`` pixels."""
    return {
        "x and y swapped": coords[:, ::-1],
        "the y axis flipped": np.c_[coords[:, 0], height - coords[:, 1]],
        "the x axis flipped": np.c_[width - coords[:, 0], coords[:, 1]],
    }


def test_orientation_check_on_dlpfc(dlpfc):
    """On a real section the spots sit on tissue as placed; swapped or flipped, the check names the mix-up."""
    from stimpute._image._orientation import orientation_warning

    lib = st.get.library_id(dlpfc)
    coords = st.get.spatial_coords(dlpfc)
    assert orientation_warning(dlpfc, lib, coords) is None
    img, scale = st.get.image(dlpfc, lib, "lowres"), st.get.scale_factor(dlpfc, lib, "lowres")
    for name, mixed in _mixed_up(coords, img.shape[0] / scale, img.shape[1] / scale).items():
        message = orientation_warning(dlpfc, lib, mixed)
        assert message is not None and f"with {name}:" in message, name


def test_image_features_warn_about_swapped_coordinates(synthetic):
    """Tissue on the left of the image only: coordinates mirrored left-right put the spots on the glass."""
    lib = st.get.library_id(synthetic)
    coords = st.get.spatial_coords(synthetic)
    x_max = coords[:, 0].min() + 0.45 * np.ptp(coords[:, 0])
    left = synthetic[coords[:, 0] <= x_max].copy()
    for key in ("hires", "lowres"):
        img = left.uns["spatial"][lib]["images"][key]
        scale = st.get.scale_factor(left, lib, key)
        img[:, int(np.ceil((x_max + 40) * scale)) :] = 1.0 if img.dtype.kind == "f" else 255  # glass
    st.pp.image_features(left, copy=True)  # filterwarnings=error: no warning
    height, width = (
        s / st.get.scale_factor(left, lib, "hires") for s in left.uns["spatial"][lib]["images"]["hires"].shape[:2]
    )
    left.obsm["spatial"] = _mixed_up(st.get.spatial_coords(left), height, width)["the x axis flipped"]
    snap = _snapshot(left)
    with pytest.warns(st.ImageFeatureWarning) as record:  # the tiles are then all glass: constant features too
        st.pp.image_features(left, copy=True)
    expected = "with the x axis flipped: `adata.obsm['spatial']` may be in another orientation"
    assert any(expected in str(w.message) for w in record)
    assert _unchanged(left, snap)


def test_orientation_check_stays_silent_on_parts_of_a_section(dlpfc):
    """One domain, or half the section, with correct coordinates: never a warning (they cover too little tissue
    to judge, or fit it as placed)."""
    from stimpute._image._orientation import orientation_warning

    lib = st.get.library_id(dlpfc)
    coords = st.get.spatial_coords(dlpfc)
    for part in (dlpfc.obs["label"] == "L1", dlpfc.obs["label"] == "WM", coords[:, 1] < np.median(coords[:, 1])):
        mask = np.asarray(part)
        assert orientation_warning(dlpfc[mask], lib, coords[mask]) is None


def test_orientation_check_on_awkward_images_and_flags(dlpfc):
    """NaN pixels (glass, no numpy warning), grey or float images, and string `in_tissue` flags."""
    from stimpute._image._orientation import in_tissue_flags, orientation_warning

    lib = st.get.library_id(dlpfc)
    coords = st.get.spatial_coords(dlpfc)
    images = dlpfc.uns["spatial"][lib]["images"]
    lowres = np.asarray(images["lowres"])
    swapped = coords[:, ::-1]
    as_float = lowres.astype(np.float32) / (255.0 if lowres.dtype == np.uint8 else 1.0)
    with_nan = as_float.copy()
    with_nan[:20] = np.nan  # a band of the glass
    for variant in (as_float, with_nan, as_float.mean(axis=-1)):  # filterwarnings=error: no cast warning
        images["lowres"] = variant
        assert orientation_warning(dlpfc, lib, coords) is None
        assert "with x and y swapped" in orientation_warning(dlpfc, lib, swapped)
    images["lowres"] = lowres
    for values in (["1", "0"], ["True", "False"], [True, False], [1.0, 0.0]):
        dlpfc.obs["in_tissue"] = [values[i % 2] for i in range(dlpfc.n_obs)]
        np.testing.assert_array_equal(in_tissue_flags(dlpfc), np.arange(dlpfc.n_obs) % 2 == 0)
    dlpfc.obs["in_tissue"] = ["yes?"] * dlpfc.n_obs  # not understood: every spot is judged
    assert in_tissue_flags(dlpfc) is None
