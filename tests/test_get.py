"""st.get accessors: library ids, images, scale factors, spot sizes, coordinates and crops."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

import stimpute as st
from stimpute.get._spatial import set_spatial


def _manual_crop(img: np.ndarray, x: float, y: float, radius: int) -> np.ndarray:
    cx, cy = int(np.rint(x)), int(np.rint(y))
    return img[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]


# synthetic --------------------------------------------------------------------------------------------
def test_accessors_synthetic(synthetic):
    assert st.get.library_id(synthetic) == "synthetic"
    assert st.get.library_id(synthetic, "synthetic") == "synthetic"
    assert st.get.img_key(synthetic) == "hires"
    assert st.get.img_key(synthetic, img_key="lowres") == "lowres"
    hires, lowres = st.get.image(synthetic), st.get.image(synthetic, img_key="lowres")
    assert hires is synthetic.uns["spatial"]["synthetic"]["images"]["hires"] or np.shares_memory(
        hires, synthetic.uns["spatial"]["synthetic"]["images"]["hires"]
    )
    assert hires.dtype == np.uint8 and hires.ndim == 3 and hires.shape[2] == 3
    assert lowres.shape[0] == pytest.approx(hires.shape[0] / 4, abs=1)
    assert st.get.scale_factor(synthetic) == 0.2
    assert st.get.scale_factor(synthetic, img_key="lowres") == 0.05
    assert st.get.spot_diameter(synthetic, img_key="fullres") == pytest.approx(55.0)
    assert st.get.spot_diameter(synthetic) == pytest.approx(11.0)
    assert st.get.spot_diameter(synthetic, img_key="lowres") == pytest.approx(2.75)


def test_spatial_coords_synthetic(synthetic):
    coords = st.get.spatial_coords(synthetic)
    assert coords.dtype == np.float64 and coords.shape == (synthetic.n_obs, 2)
    np.testing.assert_array_equal(coords, synthetic.obsm["spatial"])
    coords[0] = -1  # a copy: the AnnData is not touched
    assert synthetic.obsm["spatial"][0, 0] != -1
    # every spot lies inside both images (x indexes columns, y rows)
    for key in ("hires", "lowres"):
        px = st.get.spatial_coords(synthetic) * st.get.scale_factor(synthetic, img_key=key)
        h, w = st.get.image(synthetic, img_key=key).shape[:2]
        assert (px[:, 0] >= 0).all() and (px[:, 0] < w).all()
        assert (px[:, 1] >= 0).all() and (px[:, 1] < h).all()


@pytest.mark.parametrize(("img_key", "spot_scale"), [("hires", 1.0), ("hires", 2.5), ("lowres", 3.0)])
def test_spot_crops_are_centred(synthetic, img_key, spot_scale):
    crops = st.get.spot_crops(synthetic, img_key=img_key, spot_scale=spot_scale)
    img = st.get.image(synthetic, img_key=img_key)
    scale = st.get.scale_factor(synthetic, img_key=img_key)
    radius = max(1, round(st.get.spot_diameter(synthetic, img_key=img_key) * spot_scale / 2))
    assert crops.shape == (synthetic.n_obs, 2 * radius + 1, 2 * radius + 1, 3)
    assert crops.dtype == img.dtype
    px = synthetic.obsm["spatial"] * scale
    h, w = img.shape[:2]
    n_checked = 0
    for i, (x, y) in enumerate(px):
        cx, cy = np.rint(x), np.rint(y)
        if radius <= cx < w - radius and radius <= cy < h - radius:
            np.testing.assert_array_equal(crops[i], _manual_crop(img, x, y, radius))
            n_checked += 1
    assert n_checked > synthetic.n_obs // 2


def test_spot_crops_domain_signal(synthetic):
    """Crops carry the image texture of their domain: the synthetic nuclei density rises with the domain."""
    crops = st.get.spot_crops(synthetic, spot_scale=1.5).astype(float)
    darkness = 255 - crops.mean(axis=(1, 2, 3))
    means = [darkness[(synthetic.obs["domain"] == d).to_numpy()].mean() for d in synthetic.obs["domain"].cat.categories]
    assert means[-1] > means[0]


def test_spot_crops_obs_names(synthetic):
    names = list(synthetic.obs_names[[5, 2, 9]])
    crops = st.get.spot_crops(synthetic, obs_names=names)
    full = st.get.spot_crops(synthetic)
    np.testing.assert_array_equal(crops, full[[5, 2, 9]])
    with pytest.raises(KeyError, match="not in `adata.obs_names`"):
        st.get.spot_crops(synthetic, obs_names=["spot_00001", "nope"])


def test_spot_crops_padding_at_corners(synthetic):
    img = st.get.image(synthetic)
    h, w = img.shape[:2]
    scale = st.get.scale_factor(synthetic)
    radius = max(1, round(st.get.spot_diameter(synthetic) / 2))
    adata = synthetic[:3].copy()
    # spot 0 on the top-left pixel, spot 1 on the bottom-right pixel, spot 2 far outside the image
    adata.obsm["spatial"] = np.array([[0.0, 0.0], [(w - 1) / scale, (h - 1) / scale], [-10 * w / scale, 0.0]])
    crops = st.get.spot_crops(adata, cval=7)
    side = 2 * radius + 1
    assert crops.shape == (3, side, side, 3)
    top_left, bottom_right, outside = crops
    # top-left: rows/cols before the centre are outside the image -> cval; the rest is the image corner
    assert (top_left[:radius, :, :] == 7).all() and (top_left[:, :radius, :] == 7).all()
    np.testing.assert_array_equal(top_left[radius:, radius:], img[: radius + 1, : radius + 1])
    assert (bottom_right[radius + 1 :, :, :] == 7).all() and (bottom_right[:, radius + 1 :, :] == 7).all()
    np.testing.assert_array_equal(bottom_right[: radius + 1, : radius + 1], img[h - radius - 1 :, w - radius - 1 :])
    assert (outside == 7).all()
    # the stored image is not padded or modified in place
    np.testing.assert_array_equal(st.get.image(adata), img)


def test_spot_crops_custom_image(synthetic):
    grey = st.get.image(synthetic).mean(axis=2).astype(np.float32)
    crops = st.get.spot_crops(synthetic, img=grey, scale=0.2)
    radius = max(1, round(11.0 / 2))
    assert crops.shape == (synthetic.n_obs, 2 * radius + 1, 2 * radius + 1, 1)
    assert crops.dtype == np.float32
    x, y = synthetic.obsm["spatial"][50] * 0.2
    np.testing.assert_array_equal(crops[50, :, :, 0], _manual_crop(grey, x, y, radius))
    with pytest.raises(ValueError, match="`scale` is required"):
        st.get.spot_crops(synthetic, img=grey)


def test_multiple_libraries(synthetic):
    entry = synthetic.uns["spatial"]["synthetic"]
    set_spatial(
        synthetic,
        "second",
        images={"lowres": entry["images"]["lowres"]},
        scalefactors={"tissue_lowres_scalef": 0.05, "spot_diameter_fullres": 30.0},
    )
    with pytest.raises(ValueError, match=r"several libraries \['synthetic', 'second'\].*library_id="):
        st.get.library_id(synthetic)
    with pytest.raises(ValueError, match="several libraries"):
        st.get.spot_crops(synthetic)
    assert st.get.img_key(synthetic, "second") == "lowres"
    assert st.get.spot_diameter(synthetic, "second", img_key="fullres") == 30.0
    assert st.get.spot_crops(synthetic, library_id="second").shape[1] == 2 * max(1, round(1.5 / 2)) + 1
    with pytest.raises(KeyError, match=r"library_id='third'.*available: \['synthetic', 'second'\]"):
        st.get.image(synthetic, "third")


def test_missing_scale_factors(synthetic):
    del synthetic.uns["spatial"]["synthetic"]["scalefactors"]["tissue_hires_scalef"]
    with pytest.raises(KeyError, match="tissue_hires_scalef"):
        st.get.scale_factor(synthetic)
    synthetic.uns["spatial"]["synthetic"]["images"]["fullres"] = np.zeros((4, 4, 3), np.uint8)
    assert st.get.scale_factor(synthetic, img_key="fullres") == 1.0  # an image without scale factor is full resolution
    del synthetic.uns["spatial"]["synthetic"]["scalefactors"]["spot_diameter_fullres"]
    with pytest.raises(KeyError, match="spot_diameter_fullres"):
        st.get.spot_diameter(synthetic)


# real data -----------------------------------------------------------------------------------------
def test_accessors_dlpfc(dlpfc):
    assert st.get.library_id(dlpfc) == "151673"
    assert st.get.img_key(dlpfc) == "lowres"  # no hires image in this folder
    assert st.get.scale_factor(dlpfc) == 0.045004502
    assert st.get.spot_diameter(dlpfc, img_key="fullres") == pytest.approx(96.40082438014726)
    assert st.get.spot_diameter(dlpfc) == pytest.approx(96.40082438014726 * 0.045004502)
    img = st.get.image(dlpfc)
    assert img.shape == (600, 600, 3)
    with pytest.raises(KeyError, match="img_key='hires'"):
        st.get.image(dlpfc, img_key="hires")

    crops = st.get.spot_crops(dlpfc, spot_scale=2.0)
    radius = round(96.40082438014726 * 0.045004502)  # diameter * 2 / 2
    assert crops.shape == (dlpfc.n_obs, 2 * radius + 1, 2 * radius + 1, 3)
    px = st.get.spatial_coords(dlpfc) * 0.045004502
    assert px.min() > radius and px.max() < 600 - radius  # the whole section lies inside the lowres image
    for i in (0, 100, 2000):
        np.testing.assert_array_equal(crops[i], _manual_crop(img, *px[i], radius))
    # spots sit on tissue: their crops are darker than the slide background in the image corners
    background = img[:30, :30].mean()
    assert crops.mean() < background - 20


@pytest.fixture
def shared_datadir(her2st_dir):
    old = st.settings._datadir
    st.settings.datadir = her2st_dir.parent
    yield her2st_dir.parent
    st.settings._datadir = old


def test_accessors_her2st(her2st_dir, shared_datadir):
    adata = st.datasets.her2st("C2")
    assert st.get.library_id(adata) == "C2"
    assert st.get.img_key(adata) == "hires"
    scale = st.get.scale_factor(adata)
    assert scale == pytest.approx(0.20179598425991324)
    hires = st.get.image(adata)
    assert hires.shape == (2000, 1871, 3)
    assert st.get.spot_diameter(adata) == pytest.approx(145.32813458082632 * scale)

    # the full-resolution jpg is recorded and aligned with obsm['spatial']
    path = adata.uns["spatial"]["C2"]["metadata"]["source_image_path"]
    assert path == str((her2st_dir / "5714_HE_BT_C2.jpg").resolve())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # 92 Mpx, above PIL's default limit
        with Image.open(path) as im:
            assert im.size == (9274, 9911)
            assert round(im.size[1] * scale) == hires.shape[0]
            im.draft("RGB", (im.size[0] // 8, im.size[1] // 8))  # fast reduced JPEG decode
            small = np.asarray(im.convert("RGB"))
    small_scale = small.shape[1] / 9274
    from_jpg = st.get.spot_crops(adata, img=small, scale=small_scale).reshape(adata.n_obs, -1, 3).mean(axis=1)
    from_hires = st.get.spot_crops(adata).reshape(adata.n_obs, -1, 3).mean(axis=1)
    # r is about 0.99 when aligned, below 0.35 with x/y swapped or a 150 px shift
    for c in range(3):
        assert np.corrcoef(from_jpg[:, c], from_hires[:, c])[0, 1] > 0.95


def test_spot_crops_validates_its_inputs(synthetic):
    img = st.get.image(synthetic)
    scalef = st.get.scale_factor(synthetic)
    for scale in (0, -0.2, float("nan")):
        with pytest.raises(ValueError, match="`scale` must be a positive number"):
            st.get.spot_crops(synthetic, img=img, scale=scale)
    with pytest.raises(ValueError, match="`scale` is only used together with `img`"):
        st.get.spot_crops(synthetic, scale=1.0)
    for bad in (img.tolist(), img[None]):
        with pytest.raises(TypeError, match="`img` must be a numpy array"):
            st.get.spot_crops(synthetic, img=bad, scale=scalef)
    with pytest.raises(TypeError, match="`cval` must be a finite number"):
        st.get.spot_crops(synthetic, cval=float("nan"))
    with pytest.raises(ValueError, match="does not fit the image's dtype uint8"):
        st.get.spot_crops(synthetic, cval=-1)
    one = st.get.spot_crops(synthetic, obs_names=synthetic.obs_names[0])  # a single name, not its characters
    np.testing.assert_array_equal(one, st.get.spot_crops(synthetic)[:1])
    # numpy scalars are numbers
    np.testing.assert_array_equal(
        st.get.spot_crops(synthetic, spot_scale=np.float32(1.5)), st.get.spot_crops(synthetic, spot_scale=1.5)
    )
    synthetic.obs_names = ["s"] * synthetic.n_obs
    with pytest.raises(ValueError, match="obs_names_make_unique"):
        st.get.spot_crops(synthetic, obs_names=["s"])
