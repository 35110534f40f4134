"""st.read_visium on the real Space Ranger folders and on small folders built in tmp_path."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import io as spio
from scipy import sparse
from tests.conftest import require_data

import stimpute as st

VISIUM_FOLDERS = ["dlpfc_151673", "dlpfc_151674", "mouse_placenta_cytassist"]
POSITION_HEADER = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


# helpers ------------------------------------------------------------------------------------------
def _write_10x_h5(path: Path, X: sparse.csr_matrix, barcodes, gene_ids, names, *, library_id=None, legacy=False):
    """A 10x HDF5 count file (v3 ``matrix`` group, or the legacy Cell Ranger 2 per-genome layout)."""
    X = sparse.csr_matrix(X)  # spots x genes CSR == genes x spots CSC, as 10x stores it
    with h5py.File(path, "w") as f:
        if library_id is not None:
            f.attrs["library_ids"] = np.array([library_id.encode()])
            f.attrs["chemistry_description"] = "Spatial 3' v1"
        g = f.create_group("GRCh38" if legacy else "matrix")
        g.create_dataset("data", data=X.data)
        g.create_dataset("indices", data=X.indices.astype(np.int64))
        g.create_dataset("indptr", data=X.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([X.shape[1], X.shape[0]], dtype=np.int32))
        g.create_dataset("barcodes", data=np.array([b.encode() for b in barcodes]))
        ids = np.array([i.encode() for i in gene_ids])
        nms = np.array([n.encode() for n in names])
        if legacy:
            g.create_dataset("genes", data=ids)
            g.create_dataset("gene_names", data=nms)
        else:
            feats = g.create_group("features")
            feats.create_dataset("id", data=ids)
            feats.create_dataset("name", data=nms)
            feats.create_dataset("feature_type", data=np.array([b"Gene Expression"] * len(ids)))
            feats.create_dataset("genome", data=np.array([b"GRCh38"] * len(ids)))


def _write_mtx(folder: Path, X: sparse.csr_matrix, barcodes, gene_ids, names, *, v3=True):
    folder.mkdir(parents=True)
    with gzip.open(folder / "matrix.mtx.gz", "wb") as fh:
        spio.mmwrite(fh, sparse.csr_matrix(X).T.tocoo(), field="integer")
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as fh:
        fh.write("".join(f"{b}\n" for b in barcodes))
    if v3:
        with gzip.open(folder / "features.tsv.gz", "wt") as fh:
            fh.write("".join(f"{i}\t{n}\tGene Expression\n" for i, n in zip(gene_ids, names, strict=True)))
    else:
        with open(folder / "genes.tsv", "w") as fh:
            fh.write("".join(f"{i}\t{n}\n" for i, n in zip(gene_ids, names, strict=True)))


@pytest.fixture(scope="module")
def dlpfc_folder() -> Path:
    return require_data("dlpfc_151673")


@pytest.fixture(scope="module")
def dlpfc_read(dlpfc_folder) -> ad.AnnData:
    return st.read_visium(dlpfc_folder)


@pytest.fixture(scope="module")
def subset(dlpfc_read) -> ad.AnnData:
    """60 spots x 40 genes of DLPFC 151673 as read (integer counts)."""
    rng = np.random.default_rng(0)
    spots = np.sort(rng.choice(dlpfc_read.n_obs, 60, replace=False))
    return dlpfc_read[spots, :40].copy()


def _small_folder(
    tmp_path: Path, src: Path, sub: ad.AnnData, *, positions: str, n_extra: int = 25, library_id: str = "sub1"
) -> Path:
    """A Space Ranger folder with the subset's counts and a shuffled positions subset (+ spots not in the counts)."""
    folder = tmp_path / "outs"
    (folder / "spatial").mkdir(parents=True)
    _write_10x_h5(
        folder / "filtered_feature_bc_matrix.h5",
        sub.X,
        list(sub.obs_names),
        list(sub.var["gene_ids"]),
        list(sub.var_names),
        library_id=library_id,
    )
    full = pd.read_csv(src / "spatial" / "tissue_positions_list.csv", header=None, names=POSITION_HEADER)
    extra = full[~full["barcode"].isin(sub.obs_names)].sample(n_extra, random_state=0)
    table = pd.concat([full[full["barcode"].isin(sub.obs_names)], extra]).sample(frac=1, random_state=1)
    if positions == "v2":
        table.to_csv(folder / "spatial" / "tissue_positions.csv", index=False)
    elif positions == "v1":
        table.to_csv(folder / "spatial" / "tissue_positions_list.csv", index=False, header=False)
    else:
        table.to_parquet(folder / "spatial" / "tissue_positions.parquet", index=False)
    shutil.copy(src / "spatial" / "scalefactors_json.json", folder / "spatial")
    shutil.copy(src / "spatial" / "tissue_lowres_image.png", folder / "spatial")
    return folder


# real folders ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VISIUM_FOLDERS)
def test_real_folder_matches_ready_made_h5ad(name):
    folder = require_data(name)
    adata = st.read_visium(folder)
    ref = ad.read_h5ad(folder / "adata.h5ad")

    assert set(adata.obs_names) == set(ref.obs_names)
    assert adata.n_obs == ref.n_obs
    assert list(adata.var_names) == list(ref.var_names)
    assert adata.var_names.is_unique
    ref = ref[adata.obs_names]
    # counts: integer CSR as stored, identical values
    assert sparse.isspmatrix_csr(adata.X)
    assert np.issubdtype(adata.X.dtype, np.integer)
    assert (sparse.csr_matrix(adata.X, dtype=np.float64) != sparse.csr_matrix(ref.X, dtype=np.float64)).nnz == 0
    np.testing.assert_array_equal(np.asarray(adata.X.sum(axis=1)).ravel(), np.asarray(ref.X.sum(axis=1)).ravel())
    # positions
    assert adata.obsm["spatial"].dtype == np.float64
    np.testing.assert_allclose(adata.obsm["spatial"], ref.obsm["spatial"], rtol=0, atol=1e-6)
    for col in ["in_tissue", "array_row", "array_col"]:
        np.testing.assert_array_equal(adata.obs[col].to_numpy(), ref.obs[col].to_numpy())
    assert (adata.obs["in_tissue"] == 1).all()
    # library, scale factors, image
    lib, ref_lib = st.get.library_id(adata), st.get.library_id(ref)
    assert lib == ref_lib
    sf, ref_sf = adata.uns["spatial"][lib]["scalefactors"], ref.uns["spatial"][lib]["scalefactors"]
    assert sf.keys() == ref_sf.keys()
    for key in sf:
        assert sf[key] == pytest.approx(ref_sf[key], rel=1e-12)
    assert list(adata.uns["spatial"][lib]["images"]) == ["lowres"]  # no hires PNG in the folder: tolerated
    np.testing.assert_array_equal(st.get.image(adata), st.get.image(ref))
    assert st.get.image(adata).dtype == np.uint8
    assert st.get.img_key(adata) == "lowres"
    assert st.get.scale_factor(adata) == pytest.approx(st.get.scale_factor(ref))


def test_real_folder_metadata_and_roundtrip(dlpfc_read, tmp_path):
    meta = dlpfc_read.uns["spatial"]["151673"]["metadata"]
    assert meta["chemistry_description"] == "Spatial 3' v1"
    assert "source_image_path" not in meta
    assert list(dlpfc_read.obs.columns) == ["in_tissue", "array_row", "array_col"]
    dlpfc_read.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert back.uns["spatial"]["151673"]["scalefactors"] == dlpfc_read.uns["spatial"]["151673"]["scalefactors"]
    assert (back.X != dlpfc_read.X).nnz == 0


def test_v2_positions_placenta_header():
    folder = require_data("mouse_placenta_cytassist")
    assert (folder / "spatial" / "tissue_positions.csv").is_file()
    adata = st.read_visium(folder, load_images=False)
    positions = pd.read_csv(folder / "spatial" / "tissue_positions.csv", index_col=0).loc[adata.obs_names]
    np.testing.assert_array_equal(adata.obsm["spatial"][:, 0], positions["pxl_col_in_fullres"].to_numpy())
    np.testing.assert_array_equal(adata.obsm["spatial"][:, 1], positions["pxl_row_in_fullres"].to_numpy())
    assert adata.uns["spatial"]["Placenta_S3"]["images"] == {}
    assert adata.uns["spatial"]["Placenta_S3"]["scalefactors"]["tissue_lowres_scalef"] == 0.2


# small folders -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("positions", ["v1", "v2", "parquet"])
def test_positions_formats_subset(tmp_path, dlpfc_folder, dlpfc_read, subset, positions):
    if positions == "parquet" and not (importlib.util.find_spec("pyarrow") or importlib.util.find_spec("fastparquet")):
        pytest.skip("no parquet engine installed")
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions=positions)
    adata = st.read_visium(folder)
    # only the spots of the counts, in the order of the counts, despite the shuffled extra positions
    assert list(adata.obs_names) == list(subset.obs_names)
    assert (adata.X != subset.X).nnz == 0
    assert adata.X.dtype == subset.X.dtype
    np.testing.assert_array_equal(adata.obsm["spatial"], subset.obsm["spatial"])
    pd.testing.assert_frame_equal(adata.obs, subset.obs)
    assert st.get.library_id(adata) == "sub1"  # from the h5 attribute, not the folder name
    assert st.get.scale_factor(adata) == 0.045004502


def test_positions_v1_values_by_hand(tmp_path, dlpfc_folder, subset):
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions="v1")
    raw = pd.read_csv(folder / "spatial" / "tissue_positions_list.csv", header=None)
    spot = subset.obs_names[7]
    row = raw[raw[0] == spot].iloc[0]
    adata = st.read_visium(folder, load_images=False)
    i = adata.obs_names.get_loc(spot)
    assert adata.obsm["spatial"][i].tolist() == [float(row[5]), float(row[4])]  # x = pxl_col, y = pxl_row
    assert adata.obs.iloc[i][["in_tissue", "array_row", "array_col"]].tolist() == [row[1], row[2], row[3]]


@pytest.mark.parametrize("v3", [True, False])
def test_mtx_folder(tmp_path, dlpfc_folder, subset, v3):
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions="v2")
    (folder / "filtered_feature_bc_matrix.h5").unlink()
    names = list(subset.var_names)
    names[1] = names[0]  # a duplicated symbol, made unique on reading
    _write_mtx(folder / "filtered_feature_bc_matrix", subset.X, subset.obs_names, subset.var["gene_ids"], names, v3=v3)
    # the default count_file falls back to the mtx folder when the .h5 is absent
    adata = st.read_visium(folder)
    explicit = st.read_visium(folder, count_file="filtered_feature_bc_matrix", library_id="lib")
    for a in (adata, explicit):
        assert list(a.obs_names) == list(subset.obs_names)
        assert sparse.isspmatrix_csr(a.X)
        assert np.issubdtype(a.X.dtype, np.integer)
        assert (a.X != subset.X).nnz == 0
        assert a.var_names.is_unique
        assert a.var_names[0] == names[0] and a.var_names[1] == f"{names[0]}-1"
        np.testing.assert_array_equal(a.var["gene_ids"].to_numpy(), subset.var["gene_ids"].to_numpy())
        np.testing.assert_array_equal(a.obsm["spatial"], subset.obsm["spatial"])
    assert st.get.library_id(adata) == "outs"  # the folder name when the counts carry no library id
    assert st.get.library_id(explicit) == "lib"


def test_legacy_h5_layout(tmp_path, dlpfc_folder, subset):
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions="v1")
    _write_10x_h5(
        folder / "legacy.h5",
        subset.X,
        list(subset.obs_names),
        list(subset.var["gene_ids"]),
        list(subset.var_names),
        legacy=True,
    )
    adata = st.read_visium(folder, count_file="legacy.h5")
    assert (adata.X != subset.X).nnz == 0
    assert list(adata.var_names) == list(subset.var_names)
    assert st.get.library_id(adata) == "outs"


def test_non_gene_expression_features_dropped(tmp_path, dlpfc_folder, subset):
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions="v2")
    path = folder / "filtered_feature_bc_matrix.h5"
    with h5py.File(path, "a") as f:
        types = f["matrix/features/feature_type"][:]
        types[:5] = b"Antibody Capture"
        del f["matrix/features/feature_type"]
        f["matrix/features"].create_dataset("feature_type", data=types)
    adata = st.read_visium(folder)
    assert list(adata.var_names) == list(subset.var_names[5:])
    assert (adata.X != subset.X[:, 5:]).nnz == 0


def test_hires_loaded_when_present(tmp_path, dlpfc_folder, subset):
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions="v2")
    hires = np.random.default_rng(0).integers(0, 255, size=(40, 30, 4), dtype=np.uint8)  # RGBA PNG
    Image.fromarray(hires).save(folder / "spatial" / "tissue_hires_image.png")
    adata = st.read_visium(folder)
    images = adata.uns["spatial"]["sub1"]["images"]
    assert set(images) == {"hires", "lowres"}
    np.testing.assert_array_equal(images["hires"], hires[..., :3])
    assert st.get.img_key(adata) == "hires"
    assert st.get.scale_factor(adata) == 0.150015
    no_images = st.read_visium(folder, load_images=False)
    assert no_images.uns["spatial"]["sub1"]["images"] == {}
    assert no_images.uns["spatial"]["sub1"]["scalefactors"] == adata.uns["spatial"]["sub1"]["scalefactors"]


def test_no_image_at_all(tmp_path, dlpfc_folder, subset):
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions="v2")
    (folder / "spatial" / "tissue_lowres_image.png").unlink()
    with pytest.warns(st.ImageFeatureWarning, match="no tissue_hires_image.png or tissue_lowres_image.png"):
        adata = st.read_visium(folder)
    assert adata.uns["spatial"]["sub1"]["images"] == {}
    with pytest.raises(KeyError, match="no H&E image"):
        st.get.img_key(adata)


def test_source_image_recorded(tmp_path, dlpfc_folder, subset, monkeypatch):
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions="v2")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "fullres.jpg")
    monkeypatch.chdir(tmp_path)
    adata = st.read_visium(folder, source_image="fullres.jpg")  # relative: recorded as an absolute path
    meta = adata.uns["spatial"]["sub1"]["metadata"]
    assert meta["source_image_path"] == str((tmp_path / "fullres.jpg").resolve())
    assert isinstance(meta["source_image_path"], str)
    assert set(adata.uns["spatial"]["sub1"]["images"]) == {"lowres"}  # not loaded into uns
    adata.write_h5ad(tmp_path / "a.h5ad")
    assert ad.read_h5ad(tmp_path / "a.h5ad").uns["spatial"]["sub1"]["metadata"]["source_image_path"] == str(
        (tmp_path / "fullres.jpg").resolve()
    )


# errors --------------------------------------------------------------------------------------------------
def _break(folder: Path, what: str) -> dict:
    spatial = folder / "spatial"
    if what == "count_file":
        (folder / "filtered_feature_bc_matrix.h5").unlink()
    elif what == "positions":
        (spatial / "tissue_positions.csv").unlink()
    elif what == "scalefactors":
        (spatial / "scalefactors_json.json").unlink()
    elif what == "spatial":
        shutil.rmtree(spatial)
    elif what == "source_image":
        return {"source_image": folder / "missing.tif"}
    elif what == "count_name":
        return {"count_file": "raw_feature_bc_matrix.h5"}
    elif what == "mtx_without_matrix":
        (folder / "counts_mtx").mkdir()
        return {"count_file": "counts_mtx"}
    return {}


@pytest.mark.parametrize(
    ("what", "error", "match"),
    [
        ("count_file", FileNotFoundError, r"filtered_feature_bc_matrix\.h5.*not found.*count_file="),
        ("count_name", FileNotFoundError, r"raw_feature_bc_matrix\.h5.*not found.*candidates"),
        ("mtx_without_matrix", FileNotFoundError, r"counts_mtx.*matrix\.mtx"),
        ("positions", FileNotFoundError, r"No spot positions file.*tissue_positions\.csv"),
        ("scalefactors", FileNotFoundError, r"scalefactors_json\.json.*not found"),
        ("spatial", FileNotFoundError, r"spatial.*not found.*positions"),
        ("source_image", FileNotFoundError, r"`source_image` file.*missing\.tif.*not found"),
    ],
)
def test_missing_files_clear_errors(tmp_path, dlpfc_folder, subset, what, error, match):
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions="v2")
    kwargs = _break(folder, what)
    with pytest.raises(error, match=match):
        st.read_visium(folder, **kwargs)


def test_other_errors(tmp_path, dlpfc_folder, subset):
    with pytest.raises(FileNotFoundError, match=r"Visium folder.*not found"):
        st.read_visium(tmp_path / "nope")
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions="v2")
    with pytest.raises(NotADirectoryError, match="is a file"):
        st.read_visium(folder / "filtered_feature_bc_matrix.h5")
    with pytest.raises(TypeError, match="`path`"):
        st.read_visium(3)
    with pytest.raises(TypeError, match="`library_id`"):
        st.read_visium(folder, library_id=5)
    (tmp_path / "img.bmp").write_bytes(b"x")
    with pytest.raises(ValueError, match="`source_image` must be one of"):
        st.read_visium(folder, source_image=tmp_path / "img.bmp")
    # positions that miss some counted barcodes: a different sample
    table = pd.read_csv(folder / "spatial" / "tissue_positions.csv")
    table[~table["barcode"].isin(subset.obs_names[:3])].to_csv(folder / "spatial" / "tissue_positions.csv", index=False)
    with pytest.raises(ValueError, match=r"3 of 60 barcodes.*same sample"):
        st.read_visium(folder)
    (folder / "spatial" / "scalefactors_json.json").write_text("{not json")
    (folder / "spatial" / "tissue_positions.csv").unlink()
    table.to_csv(folder / "spatial" / "tissue_positions.csv", index=False)
    with pytest.raises(ValueError, match="not valid JSON"):
        st.read_visium(folder)


# dataset loaders --------------------------------------------------------------------------------------------
@pytest.fixture
def shared_datadir():
    root = require_data("dlpfc_151673").parent
    old = st.settings._datadir
    st.settings.datadir = root
    yield root
    st.settings._datadir = old


def test_loader_dlpfc_matches_reader(shared_datadir, dlpfc_read):
    adata = st.datasets.dlpfc()
    assert adata.shape == (3639, 5000)
    assert adata.obs["label"].value_counts().to_dict() == {
        "L3": 989, "L6": 692, "L5": 673, "WM": 513, "L1": 273, "L2": 253, "L4": 218
    }  # fmt: skip
    assert int(adata.obs["label"].isna().sum()) == 28
    adata = adata[dlpfc_read.obs_names]
    assert (sparse.csr_matrix(adata.X, dtype=np.float64) != sparse.csr_matrix(dlpfc_read.X, dtype=np.float64)).nnz == 0
    np.testing.assert_allclose(adata.obsm["spatial"], dlpfc_read.obsm["spatial"])
    other = st.datasets.dlpfc(151674)  # an int section is accepted
    assert other.shape == (3673, 5000) and st.get.library_id(other) == "151674"


@pytest.mark.parametrize(
    ("section", "n_obs", "jpg"), [("C2", 187, "5714_HE_BT_C2.jpg"), ("C3", 180, "5714_HE_BT_D1.jpg")]
)
def test_loader_her2st(shared_datadir, section, n_obs, jpg):
    adata = st.datasets.her2st(section)
    assert adata.n_obs == n_obs
    assert np.issubdtype(adata.X.dtype, np.integer)
    meta = adata.uns["spatial"][section]["metadata"]
    assert meta["source_image_path"] == str((shared_datadir / f"her2st_{section}" / jpg).resolve())
    assert Path(meta["source_image_path"]).is_absolute() and Path(meta["source_image_path"]).is_file()
    assert set(adata.uns["spatial"][section]["images"]) == {"hires"}
    assert st.get.scale_factor(adata) == pytest.approx(
        2000 / max(meta["fullres_height"], meta["fullres_width"]), rel=1e-3
    )


def test_loader_mob_and_placenta(shared_datadir):
    mob = st.datasets.mouse_olfactory_bulb()
    assert mob.shape == (379, 1000)
    assert st.get.library_id(mob) == "MOB1" and st.get.scale_factor(mob) == 1.0
    placenta = st.datasets.mouse_placenta()
    assert placenta.shape == (2898, 19465)
    read = st.read_visium(shared_datadir / "mouse_placenta_cytassist")
    assert (sparse.csr_matrix(placenta.X, dtype=np.float64) != sparse.csr_matrix(read.X, dtype=np.float64)).nnz == 0


def test_readme_quick_start_runs_on_a_space_ranger_folder(tmp_path, dlpfc_folder, dlpfc_read):
    """The first code block of README.md, run as written on a small Space Ranger folder (no labels)."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, flags=re.S).group(1)
    assert 'st.read_visium("path/to/spaceranger/outs")' in code
    rng = np.random.default_rng(0)
    spots = np.sort(rng.choice(dlpfc_read.n_obs, 400, replace=False))
    sub = dlpfc_read[spots].copy()
    genes = np.argsort(-np.asarray((sub.X > 0).sum(axis=0)).ravel(), kind="stable")[:80]
    sub = sub[:, np.sort(genes)].copy()
    folder = _small_folder(tmp_path, dlpfc_folder, sub, positions="v1")
    namespace: dict = {}
    with pytest.warns(st.ImageFeatureWarning, match="Tiles are only"):  # the small folder has a lowres image only
        exec(compile(code.replace("path/to/spaceranger/outs", str(folder)), "README.md", "exec"), namespace)
    adata = namespace["adata"]
    scores = adata.uns["clusters"]["scores"]
    assert list(scores.index) == [
        "X",
        "holdout_train_smoothed",
        "imputed_multimodal_normalized",
        "imputed_multimodal_normalized_smoothed",
    ]
    assert (scores["n_clusters"] == 7).all()
    assert "rmse_log1p" in adata.uns["holdout"]["scores"].columns
    import matplotlib.pyplot as plt

    plt.close("all")


def test_library_id_with_slash(tmp_path, dlpfc_folder, subset):
    """h5ad reads uns['spatial']['a/b'] back as ['a']['b']: refused when given, replaced when read from the h5."""
    folder = _small_folder(tmp_path, dlpfc_folder, subset, positions="v2", library_id="run1/A")
    with pytest.raises(ValueError, match="contains '/'"):
        st.read_visium(folder, library_id="run1/A")
    adata = st.read_visium(folder)
    assert st.get.library_id(adata) == "run1_A"
    adata.write_h5ad(tmp_path / "a.h5ad")
    assert list(ad.read_h5ad(tmp_path / "a.h5ad").uns["spatial"]) == ["run1_A"]
