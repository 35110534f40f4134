"""Tests of ``st.pl``: image comparisons on small synthetic data, behaviour, bad input, a DLPFC smoke test.

Baselines live in ``tests/_images/<name>/expected.png`` (dpi 40). To regenerate them after an intended
change, run ``STIMPUTE_UPDATE_IMAGES=1 pytest tests/test_plotting.py`` and look at every new image.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure
from matplotlib.testing.compare import compare_images
from scipy import sparse
from sklearn.neighbors import NearestNeighbors

import stimpute as st

IMAGES = Path(__file__).parent / "_images"
DPI = 40
TOL = 5  # RMS on 0-255; baselines are exact on the same matplotlib (moving one dashed line gives ~6)


@pytest.fixture(autouse=True)
def _close_figures():
    with plt.rc_context({"font.family": "DejaVu Sans", "font.size": 10, "figure.dpi": 100}):
        yield
    plt.close("all")


def check_image(fig: Figure, name: str, tmp_path: Path) -> None:
    """Compare ``fig`` (saved at dpi 40) with ``_images/<name>/expected.png``."""
    expected = IMAGES / name / "expected.png"
    actual = tmp_path / name / "actual.png"
    actual.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(actual, dpi=DPI)
    if os.environ.get("STIMPUTE_UPDATE_IMAGES"):
        expected.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(actual, expected)
    assert expected.exists(), f"no baseline {expected}; run with STIMPUTE_UPDATE_IMAGES=1 and check the image"
    result = compare_images(str(expected), str(actual), tol=TOL)
    assert result is None, result


def _smoothed(adata: ad.AnnData, layer: str, k: int = 7) -> np.ndarray:
    xy = st.get.spatial_coords(adata)
    idx = NearestNeighbors(n_neighbors=k).fit(xy).kneighbors(xy, return_distance=False)
    n = adata.n_obs
    W = sparse.csr_matrix((np.full(idx.size, 1.0 / k), idx.ravel(), np.arange(0, idx.size + 1, k)), shape=(n, n))
    return np.asarray((W @ adata.layers[layer]).toarray(), dtype=np.float32)


@pytest.fixture
def syn() -> ad.AnnData:
    adata = st.datasets.synthetic_visium(n_spots=150, n_genes=40, random_state=0)
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    adata.layers["smoothed"] = _smoothed(adata, "holdout_train")
    return adata


@pytest.fixture
def clustered(syn) -> ad.AnnData:
    """Hand-made stored clusters (no clustering run): the domains, and the domains with flipped spots."""
    rng = np.random.default_rng(0)
    codes = syn.obs["domain"].cat.codes.to_numpy()
    noisy = codes.copy()
    flip = rng.random(codes.size) < 0.25
    noisy[flip] = rng.integers(0, 5, flip.sum())  # id 4 exists only in this layer
    syn.obs["clusters_X"] = pd.Categorical(codes.astype(str), categories=["0", "1", "2", "3"])
    syn.obs["clusters_smoothed"] = pd.Categorical(noisy.astype(str), categories=["0", "1", "2", "3", "4"])
    scores = pd.DataFrame(
        {
            "ari_reference": [1.0, 0.567],
            "nmi_reference": [1.0, 0.6],
            "ari_labels": [0.912, 0.345],
            "nmi_labels": [0.9, 0.4],
            "n_clusters": [4, 5],
            "resolution": [1.0, 1.0],
        },
        index=pd.Index(["X", "smoothed"], name="layer"),
    )
    syn.uns["clusters"] = {
        "params": {"layers": ["X", "smoothed"], "reference": "X", "labels_key": "domain", "method": "leiden"},
        "scores": scores,
    }
    return syn


@pytest.fixture
def trained(syn) -> ad.AnnData:
    epoch = np.arange(25)
    syn.uns["imputed_multimodal"] = {
        "history": {
            "epoch": epoch,
            "train_loss": 2.0 * np.exp(-epoch / 6) + 1.0,
            "val_loss": 2.0 * np.exp(-epoch / 6) + 1.2 + 0.004 * (epoch - 15).clip(0) ** 2,
        },
        "best_epoch": 15,
    }
    return syn


# ---- image comparisons ------------------------------------------------------------------------


def test_compare_clusters_image(clustered, tmp_path):
    fig = st.pl.compare_clusters(clustered, return_fig=True)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "original counts\nARI 0.91 vs domain\n(ARI: adjusted Rand index)",
        "smoothed\nARI 0.34 vs domain",
        "domain\n(known labels)",
    ]
    check_image(fig, "compare_clusters", tmp_path)


def test_compare_clusters_no_image(clustered, tmp_path):
    del clustered.uns["spatial"]
    fig = st.pl.compare_clusters(clustered, ncols=2, return_fig=True)
    assert len(fig.axes) == 3
    assert not any(ax.get_images() for ax in fig.axes)
    check_image(fig, "compare_clusters_no_image", tmp_path)


def test_holdout_image(syn, tmp_path):
    fig = st.pl.holdout(syn, ["holdout_train", "smoothed"], return_fig=True)
    check_image(fig, "holdout", tmp_path)


def test_genes_image(syn, tmp_path):
    fig = st.pl.genes(syn, ["gene_0003", "gene_0010"], ["X", "holdout_train", "smoothed"], return_fig=True)
    check_image(fig, "genes", tmp_path)


def test_history_image(trained, tmp_path):
    fig = st.pl.history(trained, "imputed_multimodal", return_fig=True)
    check_image(fig, "history", tmp_path)


def test_image_check_detects_small_changes(trained, tmp_path):
    trained.uns["imputed_multimodal"]["best_epoch"] = 10
    fig = st.pl.history(trained, "imputed_multimodal", return_fig=True)
    fig.savefig(tmp_path / "moved.png", dpi=DPI)
    # the baseline check must notice a dashed line moved by five epochs
    assert compare_images(str(IMAGES / "history" / "expected.png"), str(tmp_path / "moved.png"), tol=TOL) is not None


# ---- behaviour --------------------------------------------------------------------------------


def test_compare_clusters_colours_follow_ids(clustered):
    axes = st.pl.compare_clusters(clustered, show=False)
    assert isinstance(axes, list) and len(axes) == 3
    x_colors = axes[0].collections[0].get_facecolors()
    sm_colors = axes[1].collections[0].get_facecolors()
    same_id = (clustered.obs["clusters_X"].astype(str) == clustered.obs["clusters_smoothed"].astype(str)).to_numpy()
    np.testing.assert_allclose(x_colors[same_id], sm_colors[same_id])
    assert not np.allclose(x_colors[~same_id], sm_colors[~same_id])
    # the labels panel reuses the matched cluster colours (the hand-made X clusters are the domains)
    np.testing.assert_allclose(axes[2].collections[0].get_facecolors(), x_colors)
    # an image is drawn and the view is cropped to the spots
    assert axes[0].get_images()
    img_h, img_w = st.get.image(clustered).shape[:2]
    x0, x1 = axes[0].get_xlim()
    assert 0 <= x0 and x1 - x0 < img_w


def test_compare_clusters_uses_stored_results(clustered, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("recomputed stored clusters")

    monkeypatch.setattr(st.tl, "compare_clusters", boom)
    fig = st.pl.compare_clusters(clustered, ["smoothed"], return_fig=True)
    assert len(fig.axes) == 2  # the layer and the labels


def test_compare_clusters_computes_when_missing(syn):
    assert "clusters" not in syn.uns
    fig = st.pl.compare_clusters(syn, ["X", "smoothed"], labels_key="domain", return_fig=True)
    scores = syn.uns["clusters"]["scores"]
    assert list(scores.index) == ["X", "smoothed"]
    assert {"clusters_X", "clusters_smoothed"} <= set(syn.obs)
    assert fig.axes[1].get_title() == f"smoothed\nARI {scores.loc['smoothed', 'ari_labels']:.2f} vs domain"
    assert fig.axes[2].get_title().startswith("domain")


def test_ax_and_show(clustered, trained):
    # the stored labels_key adds a labels panel: one layer needs two Axes
    fig, axes = plt.subplots(1, 2)
    out = st.pl.compare_clusters(clustered, ["X"], ax=axes, show=False)
    assert out == list(axes)
    assert st.pl.history(trained, "imputed_multimodal", show=True) is None  # Agg: shown quietly
    fig, ax = plt.subplots()
    assert st.pl.history(trained, "imputed_multimodal", ax=ax, show=False) is ax
    assert st.pl.history(trained, "imputed_multimodal", ax=ax, return_fig=True) is fig


def test_history_without_validation_or_best(syn):
    syn.uns["m"] = {"history": {"epoch": [0, 1, 2], "train_loss": [3.0, 2.0, 1.0]}, "best_epoch": -1}
    ax = st.pl.history(syn, "m", show=False, logy=True)
    assert [line.get_label() for line in ax.get_lines()] == ["training"]
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [3.0, 2.0, 1.0])
    assert ax.get_yscale() == "log"


def test_history_after_h5ad_round_trip(trained, tmp_path):
    trained.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    ax = st.pl.history(back, "imputed_multimodal", show=False)
    assert ax.get_lines()[2].get_label() == "best epoch (15)"


@pytest.mark.parametrize("strategy", ["entries", "thinning", "spots", "gene_folds"])
def test_holdout_titles_match_evaluate_and_ignore_stale_scores(syn, strategy):
    st.pp.holdout(syn, fraction=0.5, strategy=strategy, random_state=0)
    syn.layers["smoothed"] = _smoothed(syn, "holdout_train")
    scores = st.tl.evaluate(syn, ["smoothed"], baselines=False)
    ax = st.pl.holdout(syn, "smoothed", show=False)
    want = scores.loc["smoothed"]
    assert ax.get_title() == f"smoothed\nRMSE {want['rmse_log1p']:.3f}, Pearson {want['pearson_log1p']:.3f}"
    # the layer imputed again under the same key: the stored row is stale, the title is not
    syn.layers["smoothed"] = _smoothed(syn, "holdout_train", k=15)
    now = st.tl.evaluate(syn.copy(), ["smoothed"], baselines=False).loc["smoothed"]  # syn keeps the stale row
    assert now["rmse_log1p"] != pytest.approx(want["rmse_log1p"], abs=1e-3)
    ax = st.pl.holdout(syn, "smoothed", show=False)
    assert ax.get_title() == f"smoothed\nRMSE {now['rmse_log1p']:.3f}, Pearson {now['pearson_log1p']:.3f}"


def test_genes_shared_scale_per_gene(syn):
    fig = st.pl.genes(syn, ["gene_0003", "gene_0010"], ["X", "smoothed"], return_fig=True)
    spot_axes = [ax for ax in fig.axes if ax.collections and isinstance(ax.collections[0], EllipseCollection)]
    assert len(spot_axes) == 4
    colls = [ax.collections[0] for ax in spot_axes[:4]]
    assert colls[0].norm is colls[1].norm and colls[2].norm is colls[3].norm
    assert colls[0].norm is not colls[2].norm
    assert colls[0].norm.vmin == 0
    j = list(syn.var_names).index("gene_0003")
    np.testing.assert_allclose(colls[0].get_array(), np.log1p(syn.X[:, j].toarray().ravel()))


# ---- bad input --------------------------------------------------------------------------------


def _state(adata):
    return sorted(adata.obs.columns), sorted(adata.uns.keys()), sorted(adata.layers.keys())


def test_bad_input(clustered, trained):
    before = _state(clustered)
    with pytest.raises(KeyError, match="imputed_nope"):
        st.pl.compare_clusters(clustered, ["X", "imputed_nope"], show=False)
    with pytest.raises(KeyError, match="layer_guess"):
        st.pl.compare_clusters(clustered, labels_key="layer_guess", show=False)
    with pytest.raises(KeyError, match="img_key='highres'"):
        st.pl.compare_clusters(clustered, img_key="highres", show=False)
    with pytest.raises(ValueError, match="list of 2 Axes"):
        st.pl.compare_clusters(clustered, ["X"], ax=plt.subplots()[1], show=False)
    with pytest.raises(KeyError, match="NOPE"):
        st.pl.genes(clustered, ["gene_0001", "NOPE"], show=False)
    with pytest.raises(KeyError, match="imputed_nope"):
        st.pl.genes(clustered, "gene_0001", ["imputed_nope"], show=False)
    with pytest.raises(KeyError, match="imputed_nope"):
        st.pl.holdout(clustered, ["imputed_nope"], show=False)
    with pytest.raises(KeyError, match="'hold'"):
        st.pl.holdout(clustered, ["smoothed"], holdout_key="hold", show=False)
    with pytest.raises(KeyError, match="no_model"):
        st.pl.history(trained, "no_model", show=False)
    assert _state(clustered) == before

    no_xy = clustered.copy()
    del no_xy.obsm["spatial"]
    with pytest.raises(KeyError, match=r"obsm\['spatial'\]"):
        st.pl.compare_clusters(no_xy, show=False)
    with pytest.raises(KeyError, match=r"obsm\['spatial'\]"):
        st.pl.genes(no_xy, "gene_0001", show=False)

    trained.uns["short"] = {"history": {"epoch": [0, 1, 2], "train_loss": [1.0, 0.5]}}
    with pytest.raises(ValueError, match="equal length"):
        st.pl.history(trained, "short", show=False)
    trained.uns["no_hist"] = {"params": {"a": 1}}
    with pytest.raises(KeyError, match=r"\['history'\]"):
        st.pl.history(trained, "no_hist", show=False)


# ---- real data --------------------------------------------------------------------------------


def test_dlpfc_compare_clusters_figure(dlpfc, tmp_path):
    totals = np.asarray(dlpfc.X.sum(axis=0)).ravel()
    adata = dlpfc[:, np.sort(np.argsort(-totals)[:1500])].copy()
    st.pp.holdout(adata, fraction=0.5, random_state=0)
    adata.layers["smoothed"] = _smoothed(adata, "holdout_train")
    st.tl.compare_clusters(adata, ("X", "holdout_train", "smoothed"), labels_key="label", n_clusters=7)
    fig = st.pl.compare_clusters(adata, return_fig=True)
    fig.savefig(tmp_path / "dlpfc_compare.png", dpi=60)
    scores = adata.uns["clusters"]["scores"]
    titles = [ax.get_title() for ax in fig.axes]
    names = {"X": "original counts", "holdout_train": "training matrix", "smoothed": "smoothed"}
    for layer, title in zip(names, titles, strict=False):
        assert title.startswith(f"{names[layer]}\nARI {scores.loc[layer, 'ari_labels']:.2f} vs label")
    assert titles[0].endswith("\n(ARI: adjusted Rand index)") and "adjusted" not in "".join(titles[1:])
    assert titles[3] == "label\n(known labels)"
    # the lowres image is drawn, cropped to the tissue
    assert all(ax.get_images() for ax in fig.axes[:4])
    assert fig.axes[0].get_xlim()[1] - fig.axes[0].get_xlim()[0] < 600

    st.tl.evaluate(adata, ["smoothed"])
    ax = st.pl.holdout(adata, "smoothed", show=False)
    assert f"{adata.uns['holdout']['scores'].loc['smoothed', 'rmse_log1p']:.3f}" in ax.get_title()
    fig = st.pl.genes(adata, ["MBP", "PCP4"], ["X", "holdout_train", "smoothed"], return_fig=True)
    assert sum(1 for a in fig.axes if a.collections and isinstance(a.collections[0], EllipseCollection)) == 6


def test_compare_clusters_title_says_mean_over_repeats(syn):
    st.tl.compare_clusters(syn, ["X"], n_clusters=4, labels_key="domain", n_repeats=2)
    fig = st.pl.compare_clusters(syn, return_fig=True, show=False)
    title = fig.axes[0].get_title()
    assert title.startswith("original counts\nARI ") and "± " in title and "(mean)" in title
    plt.close(fig)


def test_compare_clusters_wrong_ax_leaves_adata_alone(syn):
    """A wrong `ax` is refused before the missing clusters are computed (nothing written)."""
    _, ax = plt.subplots()
    obs, uns = list(syn.obs.columns), set(syn.uns)
    with pytest.raises(ValueError, match="`ax` must be a list of 2 Axes"):
        st.pl.compare_clusters(syn, ["X"], labels_key="domain", ax=ax)
    assert list(syn.obs.columns) == obs and set(syn.uns) == uns


@pytest.mark.parametrize("layers", [[], 3, [1]])
def test_compare_clusters_bad_layers(clustered, layers):
    with pytest.raises(TypeError, match="`layers` must be a layer name or a non-empty list of layer names"):
        st.pl.compare_clusters(clustered, layers)


def test_compare_clusters_recompute_keeps_n_repeats(syn):
    st.tl.compare_clusters(syn, ["X"], method="kmeans", n_clusters=4, n_repeats=3, labels_key="domain")
    st.pl.compare_clusters(syn, ["X", "smoothed"], show=False)  # smoothed is missing: recomputed
    assert syn.uns["clusters"]["params"]["n_repeats"] == 3
    assert np.isfinite(syn.uns["clusters"]["scores"].loc["smoothed", "ari_labels_sd"])


def test_compare_clusters_label_only_outside_plotted_clusters(clustered):
    """A (non-categorical) label found only on spots whose reference cluster is in no plotted layer."""
    clustered.obs["clusters_X"] = clustered.obs["clusters_X"].cat.add_categories(["9"])
    clustered.obs.loc[clustered.obs_names[:5], "clusters_X"] = "9"
    clustered.obs["lab"] = np.where(np.arange(clustered.n_obs) < 5, "Z", "other").astype(object)
    axes = st.pl.compare_clusters(clustered, ["smoothed"], labels_key="lab", show=False)
    assert {t.get_text() for t in axes[-1].get_legend().get_texts()} == {"Z", "other"}


def test_history_of_knn_is_an_error(syn):
    st.tl.impute(syn, "knn", layer="holdout_train")
    with pytest.raises(ValueError, match=r"is empty \(method='knn' trains no model\)"):
        st.pl.history(syn, "imputed_knn")


def test_genes_and_holdout_accept_list_likes(syn):
    fig = st.pl.genes(syn, syn.var_names[:2], np.array(["X", "smoothed"]), percentile=np.float32(95), return_fig=True)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["gene_0000\nX", "gene_0000\nsmoothed"]
    ax = st.pl.holdout(syn, pd.Index(["smoothed"]), show=False)
    assert ax.get_title().startswith("smoothed\nRMSE")
    syn.var_names = ["dup", "dup", *syn.var_names[2:]]
    with pytest.raises(ValueError, match="var_names_make_unique"):
        st.pl.genes(syn, "gene_0005")


@pytest.mark.parametrize(
    ("convert", "grey"),
    [
        (lambda im: im.mean(axis=-1).astype(np.uint8), True),
        (lambda im: np.dstack([im.mean(axis=-1).astype(np.uint8), np.full(im.shape[:2], 255, np.uint8)]), True),
        (lambda im: im.astype(np.float32), False),  # floats in [0, 255]
        (lambda im: im.astype(np.uint16) * np.uint16(257), False),  # 16 bit
    ],
)
def test_maps_draw_any_stored_image_like_the_tiles(syn, convert, grey):
    """The image behind spatial maps goes through the tiles' conversion: grey is grey, 16 bit and 0-255 floats
    are not saturated to white, grey+alpha draws (matplotlib refused it)."""
    lib, key = st.get.library_id(syn), st.get.img_key(syn)

    def shown():
        ax = st.pl.genes(syn, "gene_0000", "X", show=False)
        return np.asarray(ax.get_images()[0].get_array())

    reference = shown().astype(np.float64)
    syn.uns["spatial"][lib]["images"][key] = convert(syn.uns["spatial"][lib]["images"][key])
    now = shown()
    assert now.dtype == np.uint8 and now.shape == reference.shape
    want = np.repeat(reference.mean(axis=-1, keepdims=True), 3, axis=-1) if grey else reference
    assert np.abs(now - want).max() <= 1.0


def test_several_libraries_warn(syn):
    """With several sections in uns['spatial'], every spot is drawn on the chosen library's image: say so."""
    from stimpute.get._spatial import set_spatial

    entry = syn.uns["spatial"]["synthetic"]
    set_spatial(syn, "other", images={"lowres": entry["images"]["lowres"]}, scalefactors=entry["scalefactors"])
    with pytest.raises(ValueError, match="pass `library_id=` to pick one.*library_key="):
        st.pl.genes(syn, [syn.var_names[0]], ["X"], show=False)
    with pytest.warns(st.SectionWarning, match="every spot is drawn with the scale and image of library 'synthetic'"):
        st.pl.genes(syn, [syn.var_names[0]], ["X"], library_id="synthetic", show=False)
    with pytest.raises(KeyError, match=r"library_id='nope'.*available: \['synthetic', 'other'\]"):
        st.pl.genes(syn, [syn.var_names[0]], ["X"], library_id="nope", show=False)


# ---- save / return_fig / show, readable titles (issue 24) ---------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg"])
def test_save_writes_a_file(clustered, tmp_path, suffix, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    path = tmp_path / f"clusters{suffix}"
    out = st.pl.compare_clusters(clustered, save=path)
    assert path.is_file() and path.stat().st_size > 0
    assert not shown  # show=None: a saved figure is not shown (scanpy)
    assert isinstance(out, list) and len(out) == 3  # the Axes, as with show=False
    st.pl.compare_clusters(clustered, save=str(tmp_path / "shown.png"), show=True)
    assert shown == [1] and (tmp_path / "shown.png").stat().st_size > 0


def test_save_on_every_plot(syn, trained, tmp_path):
    st.pl.genes(syn, "gene_0003", ["X", "smoothed"], save=tmp_path / "genes.png")
    st.pl.holdout(syn, "smoothed", save=tmp_path / "holdout.pdf")
    st.pl.history(trained, "imputed_multimodal", save=tmp_path / "history.svg")
    st.pl.tiles(syn, n=4, save=tmp_path / "tiles.png")
    for name in ("genes.png", "holdout.pdf", "history.svg", "tiles.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_return_fig_with_save_returns_the_open_figure(clustered, tmp_path, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("return_fig must not show"))
    mine = plt.figure()
    fig = st.pl.compare_clusters(clustered, return_fig=True, save=tmp_path / "c.png")
    assert isinstance(fig, Figure) and fig is not mine
    assert plt.fignum_exists(mine.number) and plt.fignum_exists(fig.number)  # nothing closed
    assert (tmp_path / "c.png").stat().st_size > 0
    assert len(fig.axes) == 3 and fig.axes[0].get_images()


@pytest.mark.parametrize(
    ("save", "error", "match"),
    [
        ("figure", ValueError, r"`save='figure'` needs a file suffix naming the format, one of \[.*'png'"),
        ("figure.docx", ValueError, "needs a file suffix"),
        ("no_such_folder/figure.png", ValueError, "does not exist; create it first"),
        (3, TypeError, "`save` must be a file path"),
        (True, TypeError, "`save` must be a file path"),
    ],
)
def test_bad_save(clustered, tmp_path, monkeypatch, save, error, match):
    monkeypatch.chdir(tmp_path)
    obs = list(clustered.obs.columns)
    with pytest.raises(error, match=match):
        st.pl.compare_clusters(clustered, save=save)
    with pytest.raises(error, match=match):
        st.pl.history(clustered, "clusters", save=save)
    assert list(clustered.obs.columns) == obs and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("X", "original counts"),
        (None, "original counts"),
        ("holdout_train", "training matrix"),
        ("holdout_test", "held-out values"),
        ("imputed_multimodal", "multimodal"),
        ("imputed_knn", "knn"),
        ("imputed_multimodal_normalized_smoothed", "multimodal, normalized, smoothed"),
        ("imputed_autoencoder_expected", "autoencoder, expected"),
        ("X_imputed_multimodal", "multimodal latent"),
        ("holdout_train_smoothed", "training matrix, smoothed"),
        ("X_smoothed", "original counts, smoothed"),
        # not written by stimpute under these names: as they are
        ("smoothed", "smoothed"),
        ("imputed_multimodal_my_run", "imputed_multimodal_my_run"),
        ("imputed_other", "imputed_other"),
        ("X_pca", "X_pca"),
        ("X_imputed_thing", "X_imputed_thing"),
    ],
)
def test_layer_label(key, label):
    from stimpute.pl._utils import layer_label

    assert layer_label(key) == label


def test_compare_clusters_readable_reference_title(clustered):
    """Against the reference (no labels scored): the reference is named by its label too."""
    clustered.uns["clusters"]["params"]["labels_key"] = "none"
    axes = st.pl.compare_clusters(clustered, show=False)
    titles = [a.get_title() for a in axes]
    assert titles[0] == "original counts\n(reference)"
    assert titles[1].startswith("smoothed\nARI ") and titles[1].endswith(
        "vs original counts\n(ARI: adjusted Rand index)"
    )
