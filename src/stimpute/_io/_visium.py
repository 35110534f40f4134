"""Read a 10x Space Ranger output folder: ``st.read_visium``.

Unlike ``scanpy.read_visium`` and ``squidpy.read.visium``, a missing ``tissue_hires_image.png``
is not an error, counts keep the integer dtype of the file, and a full-resolution microscope
image can be recorded by path without loading it.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from anndata import AnnData
from anndata.utils import make_index_unique
from scipy import io as spio
from scipy import sparse

from .. import _logging as logg
from .._constants import IMAGE_KEYS
from .._warnings import ImageFeatureWarning, warn
from ..get._spatial import set_spatial

__all__ = ["read_visium"]

DEFAULT_COUNT_FILE = "filtered_feature_bc_matrix.h5"
MTX_FOLDER = "filtered_feature_bc_matrix"
# positions files in order of preference: Space Ranger >= 2 (header), 1.x (no header), 4.x / HD (parquet)
POSITION_FILES = ("tissue_positions.csv", "tissue_positions_list.csv", "tissue_positions.parquet")
POSITION_COLUMNS = ("barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres")
SOURCE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".btf")
GENE_EXPRESSION = "Gene Expression"


def read_visium(
    path: str | os.PathLike,
    *,
    count_file: str = DEFAULT_COUNT_FILE,
    library_id: str | None = None,
    load_images: bool = True,
    source_image: str | os.PathLike | None = None,
) -> AnnData:
    """Read a 10x Visium (Space Ranger) output folder into an AnnData.

    Reads the counts, the spot positions, the scale factors and the tissue images. Only the spots
    present in the count matrix are kept (the filtered matrix holds the in-tissue spots). Missing
    images are tolerated: many shared folders hold only ``tissue_lowres_image.png``.

    Parameters
    ----------
    path
        The Space Ranger ``outs`` folder, holding the count file and a ``spatial/`` folder with
        ``scalefactors_json.json`` and ``tissue_positions.csv`` (Space Ranger 2 and later, with a
        header), ``tissue_positions_list.csv`` (Space Ranger 1, no header) or
        ``tissue_positions.parquet``.
    count_file
        Count matrix inside ``path``: a 10x HDF5 file (``.h5``, for example
        ``"raw_feature_bc_matrix.h5"``) or a Matrix Market folder (``"filtered_feature_bc_matrix"``
        with ``matrix.mtx(.gz)``, ``features.tsv(.gz)`` or ``genes.tsv(.gz)`` and ``barcodes.tsv(.gz)``).
        With the default, a ``filtered_feature_bc_matrix/`` folder is used when the ``.h5`` file is absent.
        Only "Gene Expression" features are kept.
    library_id
        Key of the library in ``adata.uns['spatial']``. ``None`` takes the library id stored in the
        HDF5 file, else the folder name.
    load_images
        Load ``spatial/tissue_hires_image.png`` and ``spatial/tissue_lowres_image.png`` (each only
        when present) as uint8 RGB arrays. Positions and scale factors are read either way.
    source_image
        Path to the full-resolution microscope image (jpg, png or tif) that Space Ranger was run
        with. It is not loaded (it is often gigabytes); its absolute path is recorded so that
        image features can cut high-resolution tiles from it.

    Returns
    -------
    AnnData with

    ``adata.X``
        Counts as stored in the file (CSR, integer dtype), spots x genes; gene symbols as
        ``var_names`` (made unique), Ensembl ids in ``adata.var['gene_ids']``.
    ``adata.obs['in_tissue' | 'array_row' | 'array_col']``
        From the positions file.
    ``adata.obsm['spatial']``
        Full-resolution pixel coordinates as float: column 0 = x (``pxl_col_in_fullres``),
        column 1 = y (``pxl_row_in_fullres``).
    ``adata.uns['spatial'][library_id]``
        ``images`` (``hires``/``lowres`` when present), ``scalefactors`` and ``metadata``
        (``chemistry_description``, ``software_version`` and ``source_image_path`` when known).

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.read_visium("spaceranger/outs")  # doctest: +SKIP
    >>> adata = st.read_visium(
    ...     "spaceranger/outs", source_image="images/slide_fullres.tif"
    ... )  # doctest: +SKIP
    >>> st.get.img_key(adata)  # doctest: +SKIP
    'lowres'
    """
    # validate everything before reading anything large ----------------------------------------
    folder = _check_folder(path)
    if not isinstance(count_file, str | os.PathLike) or not str(count_file):
        msg = f"`count_file` must be a file or folder name inside {str(folder)!r}, got {count_file!r}."
        raise TypeError(msg)
    if library_id is not None and (not isinstance(library_id, str) or not library_id):
        msg = f"`library_id` must be a non-empty string or None, got {library_id!r}."
        raise TypeError(msg)
    if library_id is not None and "/" in library_id:
        msg = f"`library_id={library_id!r}` contains '/', which h5ad files cannot read back; use another separator."
        raise ValueError(msg)
    if not isinstance(load_images, bool):
        msg = f"`load_images` must be True or False, got {load_images!r}."
        raise TypeError(msg)
    counts_path = _find_counts(folder, count_file)
    spatial_dir = folder / "spatial"
    positions_path = _find_positions(spatial_dir)
    scalefactors_path = spatial_dir / "scalefactors_json.json"
    if not scalefactors_path.is_file():
        msg = (
            f"Scale factors file {str(scalefactors_path)!r} not found. Space Ranger writes it to "
            "`outs/spatial/`; copy it there (it is needed to align spots and images)."
        )
        raise FileNotFoundError(msg)
    source_path = _check_source_image(source_image)

    start = logg.info(f"reading Visium folder {str(folder)!r}")
    # counts ---------------------------------------------------------------------------------
    if counts_path.is_dir():
        adata, metadata = _read_mtx(counts_path)
    else:
        adata, metadata = _read_10x_h5(counts_path)
    adata.var_names_make_unique()

    # positions ------------------------------------------------------------------------------
    positions = _read_positions(positions_path)
    missing = adata.obs_names.difference(positions.index)
    if len(missing):
        msg = (
            f"{len(missing)} of {adata.n_obs} barcodes of {str(counts_path)!r} are not in {str(positions_path)!r} "
            f"(for example {list(missing[:3])}); are the counts and the spatial folder from the same sample?"
        )
        raise ValueError(msg)
    positions = positions.loc[adata.obs_names]
    for col in ("in_tissue", "array_row", "array_col"):
        adata.obs[col] = positions[col].to_numpy(dtype=np.int64)
    adata.obsm["spatial"] = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)

    # scale factors, images, metadata --------------------------------------------------------
    scalefactors = _read_scalefactors(scalefactors_path)
    images: dict[str, np.ndarray] = {}
    if load_images:
        for key in IMAGE_KEYS:
            img_path = spatial_dir / f"tissue_{key}_image.png"
            if img_path.is_file():
                images[key] = _read_image(img_path)
        if not images:
            warn(
                f"no tissue_hires_image.png or tissue_lowres_image.png in {str(spatial_dir)!r}; "
                "the AnnData has no image (image features need `source_image=`).",
                ImageFeatureWarning,
            )
        elif "hires" not in images:
            logg.info("    no tissue_hires_image.png: using the lowres image only")
    if source_path is not None:
        metadata["source_image_path"] = str(source_path)
    if library_id is None:
        library_id = metadata.pop("library_id", None) or folder.resolve().name
        library_id = library_id.replace("/", "_")  # an h5ad key cannot hold '/' (it would read back nested)
    else:
        metadata.pop("library_id", None)
    set_spatial(adata, library_id, images=images, scalefactors=scalefactors, metadata=metadata)

    logg.info(
        f"    read {adata.n_obs:,} spots x {adata.n_vars:,} genes, images {list(images)}, library_id {library_id!r}",
        time_start=start,
    )
    return adata


# checks ---------------------------------------------------------------------------------------
def _check_folder(path: Any) -> Path:
    if not isinstance(path, str | os.PathLike):
        msg = f"`path` must be a folder path (str or os.PathLike), got {type(path).__name__}."
        raise TypeError(msg)
    folder = Path(path).expanduser()
    if not folder.exists():
        msg = f"Visium folder {str(folder)!r} not found; pass the Space Ranger `outs` folder as `path`."
        raise FileNotFoundError(msg)
    if not folder.is_dir():
        msg = (
            f"`path` must be the Space Ranger `outs` folder, but {str(folder)!r} is a file; "
            "pass its parent folder (and the file name as `count_file=`)."
        )
        raise NotADirectoryError(msg)
    return folder


def _find_counts(folder: Path, count_file: str | os.PathLike) -> Path:
    counts = folder / count_file
    if counts.exists():
        if counts.is_dir() and not _mtx_file(counts, "matrix.mtx"):
            msg = (
                f"Count folder {str(counts)!r} holds no matrix.mtx or matrix.mtx.gz; pass a 10x .h5 file or mtx folder."
            )
            raise FileNotFoundError(msg)
        return counts
    if str(count_file) == DEFAULT_COUNT_FILE and (folder / MTX_FOLDER).is_dir():
        return _find_counts(folder, MTX_FOLDER)
    present = sorted(p.name for p in folder.iterdir() if p.suffix == ".h5" or "feature_bc_matrix" in p.name)
    msg = (
        f"Count file {str(counts)!r} not found. Pass `count_file=` naming the 10x .h5 file or the mtx folder "
        f"inside {str(folder)!r} (candidates there: {present})."
    )
    raise FileNotFoundError(msg)


def _find_positions(spatial_dir: Path) -> Path:
    if not spatial_dir.is_dir():
        msg = (
            f"Folder {str(spatial_dir)!r} not found: the Space Ranger `outs/spatial/` folder with the spot "
            "positions and scale factors is needed next to the count file."
        )
        raise FileNotFoundError(msg)
    for name in POSITION_FILES:
        if (spatial_dir / name).is_file():
            return spatial_dir / name
    msg = (
        f"No spot positions file in {str(spatial_dir)!r}; expected one of {list(POSITION_FILES)} as written by "
        "Space Ranger (copy it from the `outs/spatial/` folder)."
    )
    raise FileNotFoundError(msg)


def _check_source_image(source_image: Any) -> Path | None:
    if source_image is None:
        return None
    if not isinstance(source_image, str | os.PathLike):
        msg = f"`source_image` must be a path to an image file or None, got {type(source_image).__name__}."
        raise TypeError(msg)
    path = Path(source_image).expanduser()
    if not path.is_file():
        msg = f"`source_image` file {str(path)!r} not found; pass the path of the full-resolution image."
        raise FileNotFoundError(msg)
    if path.suffix.lower() not in SOURCE_IMAGE_SUFFIXES:
        msg = f"`source_image` must be one of {list(SOURCE_IMAGE_SUFFIXES)} files, got {path.name!r}."
        raise ValueError(msg)
    return path.resolve()


# counts -----------------------------------------------------------------------------------------
def _decode(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


def _h5_str_attr(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _read_10x_h5(path: Path) -> tuple[AnnData, dict[str, Any]]:
    """Read a 10x HDF5 count file (v3 ``matrix`` group, or the legacy per-genome layout) keeping dtypes."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        msg = f"Cannot read {str(path)!r} as a 10x HDF5 count file ({err}); is it a Space Ranger .h5 file?"
        raise ValueError(msg) from err
    with f:
        metadata: dict[str, Any] = {}
        for attr in ("chemistry_description", "software_version"):
            if attr in f.attrs:
                metadata[attr] = _h5_str_attr(f.attrs[attr])
        if "library_ids" in f.attrs:
            ids = [_h5_str_attr(v) for v in np.atleast_1d(f.attrs["library_ids"])]
            if len(ids) == 1 and ids[0]:
                metadata["library_id"] = ids[0]
        if "matrix" in f:
            group = f["matrix"]
            feats = group["features"]
            gene_ids, names = _decode(feats["id"][:]), _decode(feats["name"][:])
            var = {"gene_ids": gene_ids}
            if "feature_type" in feats:
                var["feature_types"] = _decode(feats["feature_type"][:])
            if "genome" in feats:
                var["genome"] = _decode(feats["genome"][:])
        else:
            genomes = [k for k in f if isinstance(f[k], h5py.Group)]
            if len(genomes) != 1 or "genes" not in f[genomes[0]]:
                msg = f"{str(path)!r} is not a 10x HDF5 count file (no `matrix` group and not one genome group)."
                raise ValueError(msg)
            group = f[genomes[0]]
            gene_ids, names = _decode(group["genes"][:]), _decode(group["gene_names"][:])
            var = {"gene_ids": gene_ids, "feature_types": np.full(gene_ids.size, GENE_EXPRESSION, dtype=object)}
            var["genome"] = np.full(gene_ids.size, genomes[0], dtype=object)
        n_features, n_barcodes = (int(v) for v in group["shape"][:2])
        X = sparse.csc_matrix(
            (group["data"][:], group["indices"][:], group["indptr"][:]), shape=(n_features, n_barcodes)
        )
        barcodes = _decode(group["barcodes"][:])
    return _counts_to_adata(X.T.tocsr(), barcodes, names, var, path), metadata


def _mtx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, dtype=str, compression="infer")


def _read_mtx(folder: Path) -> tuple[AnnData, dict[str, Any]]:
    """Read a 10x Matrix Market folder (Cell Ranger/Space Ranger v2 ``genes.tsv`` or v3 ``features.tsv``)."""
    matrix = _mtx_file(folder, "matrix.mtx")
    features = _mtx_file(folder, "features.tsv") or _mtx_file(folder, "genes.tsv")
    barcodes = _mtx_file(folder, "barcodes.tsv")
    for name, found in (("features.tsv(.gz) or genes.tsv(.gz)", features), ("barcodes.tsv(.gz)", barcodes)):
        if found is None:
            msg = f"Count folder {str(folder)!r} has no {name}; it is needed next to matrix.mtx."
            raise FileNotFoundError(msg)
    opener = gzip.open if matrix.suffix == ".gz" else open
    with opener(matrix, "rb") as fh:
        X = sparse.csr_matrix(spio.mmread(fh))
    feats = _read_tsv(features)
    bcs = _read_tsv(barcodes)[0].to_numpy(dtype=object)
    gene_ids = feats[0].to_numpy(dtype=object)
    names = feats[1].to_numpy(dtype=object) if feats.shape[1] > 1 else gene_ids
    var = {"gene_ids": gene_ids}
    var["feature_types"] = (
        feats[2].to_numpy(dtype=object) if feats.shape[1] > 2 else np.full(gene_ids.size, GENE_EXPRESSION, dtype=object)
    )
    if X.shape != (gene_ids.size, bcs.size):
        msg = (
            f"{str(matrix)!r} has shape {X.shape}, but {features.name} lists {gene_ids.size} features and "
            f"{barcodes.name} {bcs.size} barcodes."
        )
        raise ValueError(msg)
    if np.issubdtype(X.dtype, np.integer) and (X.nnz == 0 or X.data.max() <= np.iinfo(np.int32).max):
        X = X.astype(np.int32)
    return _counts_to_adata(X.T.tocsr(), bcs, names, var, matrix), {}


def _counts_to_adata(
    X: sparse.csr_matrix, barcodes: np.ndarray, names: np.ndarray, var: Mapping[str, np.ndarray], source: Path
) -> AnnData:
    if len(pd.Index(barcodes).unique()) != len(barcodes):
        msg = f"{str(source)!r} has duplicated barcodes; is it a single-library count matrix?"
        raise ValueError(msg)
    var_df = pd.DataFrame(dict(var), index=make_index_unique(pd.Index(names, dtype=object)))
    for col in ("feature_types", "genome"):
        if col in var_df:
            var_df[col] = pd.Categorical(var_df[col])
    keep = None
    if "feature_types" in var_df and (var_df["feature_types"] != GENE_EXPRESSION).any():
        keep = (var_df["feature_types"] == GENE_EXPRESSION).to_numpy()
        logg.info(f"    keeping {int(keep.sum())} 'Gene Expression' features of {keep.size}")
    X.sort_indices()
    adata = AnnData(X=X, obs=pd.DataFrame(index=pd.Index(barcodes, dtype=object)), var=var_df)
    if keep is not None:
        adata = adata[:, keep].copy()
    return adata


# spatial ----------------------------------------------------------------------------------------
def _read_positions(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        try:
            table = pd.read_parquet(path)
        except ImportError as err:
            msg = f"Reading {str(path)!r} needs a parquet engine: `pip install pyarrow`."
            raise ImportError(msg) from err
    else:
        with open(path) as fh:
            first = fh.readline()
        has_header = first.split(",")[0].strip().strip('"') == "barcode" or not _is_number(first.split(",")[1:2])
        table = pd.read_csv(path, header=0 if has_header else None, dtype={0: str} if not has_header else None)
    if table.shape[1] < len(POSITION_COLUMNS):
        msg = f"{str(path)!r} has {table.shape[1]} columns; expected {len(POSITION_COLUMNS)}: {list(POSITION_COLUMNS)}."
        raise ValueError(msg)
    if "barcode" in table.columns:
        missing = [c for c in POSITION_COLUMNS if c not in table.columns]
        if missing:
            msg = f"{str(path)!r} lacks the columns {missing}; expected {list(POSITION_COLUMNS)}."
            raise ValueError(msg)
        table = table[list(POSITION_COLUMNS)]
    else:
        table = table.iloc[:, : len(POSITION_COLUMNS)]
        table.columns = list(POSITION_COLUMNS)
    table = table.assign(barcode=table["barcode"].astype(str)).set_index("barcode")
    if not table.index.is_unique:
        msg = f"{str(path)!r} lists some barcodes more than once."
        raise ValueError(msg)
    numeric = table.apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        msg = f"{str(path)!r} has missing or non-numeric positions; is it a Space Ranger positions file?"
        raise ValueError(msg)
    return numeric


def _is_number(fields: list[str]) -> bool:
    if not fields:
        return False
    try:
        float(fields[0])
    except ValueError:
        return False
    return True


def _read_scalefactors(path: Path) -> dict[str, float]:
    try:
        with open(path) as fh:
            raw = json.load(fh)
    except json.JSONDecodeError as err:
        msg = f"{str(path)!r} is not valid JSON ({err}); it should be Space Ranger's scalefactors_json.json."
        raise ValueError(msg) from err
    if not isinstance(raw, dict):
        msg = f"{str(path)!r} must hold a JSON object of scale factors."
        raise ValueError(msg)
    factors = {
        k: float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
    }
    skipped = sorted(set(raw) - set(factors))
    if skipped:
        logg.debug(f"    ignored non-numeric scale factors {skipped}")
    return factors


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.asarray(img, dtype=np.uint8).copy()
