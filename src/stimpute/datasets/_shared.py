"""Loaders for the real sections kept in ``st.settings.datadir`` (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
from anndata import AnnData

from .. import _logging as logg
from .._settings import settings
from .._validate import check_choice
from .._warnings import ImageFeatureWarning, warn
from ..get._spatial import library_id as _library_id
from ..get._spatial import set_spatial

__all__ = ["dlpfc", "her2st", "mouse_olfactory_bulb", "mouse_placenta"]

DLPFC_SECTIONS = ("151673", "151674", "151675")
HER2ST_SECTIONS = ("C2", "C3", "B1", "D1")
# full-resolution H&E of each her2st section (the file names follow the slide position, not the section)
HER2ST_IMAGES = {"C2": "5714_HE_BT_C2.jpg", "C3": "5714_HE_BT_D1.jpg"}


def _data_file(*parts: str) -> Path:
    """Path of a file under ``st.settings.datadir``; a clear error when it is absent."""
    root = settings.datadir
    path = root.joinpath(*parts)
    if not path.is_file():
        msg = (
            f"Dataset file {str(path)!r} not found (data folder {str(root)!r}). Point stimpute at the folder "
            f"holding {parts[0]!r}: set `st.settings.datadir = '/path/to/data'` or the environment variable "
            "STIMPUTE_DATA. Nothing is downloaded."
        )
        raise FileNotFoundError(msg)
    return path


def _read(*parts: str) -> AnnData:
    path = _data_file(*parts)
    start = logg.info(f"reading {str(path)!r}")
    adata = ad.read_h5ad(path)
    logg.info(f"    {adata.n_obs:,} spots x {adata.n_vars:,} genes", time_start=start)
    return adata


def _section(section: str | int, choices: tuple[str, ...]) -> str:
    if isinstance(section, int) and not isinstance(section, bool):
        section = str(section)
    return check_choice(section, choices, name="section")


def dlpfc(section: str = "151673") -> AnnData:
    """Human dorsolateral prefrontal cortex, 10x Visium, with manual cortical layer labels.

    Sections 151673, 151674 and 151675 of the LIBD spatialLIBD study (Maynard, Collado-Torres et al.,
    Nat Neurosci 24:425-436, 2021): directly adjacent serial sections of donor 3, Space Ranger 1.0.
    Counts are the 5,000-gene subset kept by the Banksy authors (prabhakarlab/Banksy, MIT); the
    images, scale factors, positions and layer labels come from LieberInstitute/HumanPilot
    (Artistic-2.0). Only the 600 x 600 lowres image is present (scale factor 0.045004502, so a spot
    is about 4 px wide in it).

    Parameters
    ----------
    section
        ``"151673"`` (3,639 spots, 3,611 labelled), ``"151674"`` (3,673 spots, 3,635 labelled) or
        ``"151675"`` (3,592 spots, 3,566 labelled; the same donor's other pair of sections, with its own
        5,000-gene subset: intersect ``var['gene_ids']`` to combine it with the others).

    Returns
    -------
    AnnData of about 3,600 spots x 5,000 genes read from
    ``{st.settings.datadir}/dlpfc_{section}/adata.h5ad``: raw counts in ``X`` (CSR),
    ``obs['label']`` (layers L1-L6 and WM, NaN for unlabelled spots), ``obs['in_tissue']``,
    ``obs['array_row']``, ``obs['array_col']``, ``obsm['spatial']`` and
    ``uns['spatial'][section]`` with the ``lowres`` image and scale factors.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.dlpfc("151673")  # doctest: +SKIP
    >>> adata.obs["label"].value_counts()["L3"]  # doctest: +SKIP
    989
    """
    section = _section(section, DLPFC_SECTIONS)
    return _read(f"dlpfc_{section}", "adata.h5ad")


def her2st(section: str = "C2") -> AnnData:
    """Human HER2-positive breast cancer, legacy Spatial Transcriptomics, with a full-resolution H&E.

    Sections C2 and C3 (patient C), B1 (patient B) and D1 (patient D) of Andersson, Larsson, Stenbeck et al.,
    Nat Commun 12:6012 (2021), from almaan/her2st. B1 and D1 carry the pathologist's regions in
    ``obs['label']`` (``"undetermined"`` included: leave it out when scoring) but no H&E image. Older ST array (100 um spots on a 200 um grid, about 190 spots per
    section), full transcriptome, gene symbols only; not Visium. The repository has no licence
    file: treat the data as public research data with unstated terms (fine for development and
    testing, do not redistribute) and cite the paper.

    Parameters
    ----------
    section
        ``"C2"`` (187 spots x 15,706 genes), ``"C3"`` (180 spots x 15,821 genes), ``"B1"`` (295 spots x 15,109
        genes) or ``"D1"`` (306 spots x 15,661 genes).

    Returns
    -------
    AnnData read from ``{st.settings.datadir}/her2st_{section}/adata.h5ad``: integer counts in
    ``X`` (CSR), ``obs['array_x' | 'array_y' | 'array_x_adj' | 'array_y_adj' | 'in_tissue']``,
    ``obsm['spatial']`` (full-resolution pixels of the jpg) and ``uns['spatial'][section]`` with
    a ``hires`` image (longer side 2,000 px) and scale factors. When the full-resolution jpg is
    present, its absolute path is stored in
    ``uns['spatial'][section]['metadata']['source_image_path']`` so that image features can cut
    high-resolution tiles from it.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.her2st("C2")  # doctest: +SKIP
    >>> adata.n_obs  # doctest: +SKIP
    187
    """
    section = _section(section, HER2ST_SECTIONS)
    folder = f"her2st_{section}"
    adata = _read(folder, "adata.h5ad")
    lib = _library_id(adata)
    entry = adata.uns["spatial"][lib]
    metadata = dict(entry.get("metadata") or {})
    if section not in HER2ST_IMAGES:  # B1, D1: no image was published with the counts that could be obtained
        return adata
    jpg = (settings.datadir / folder / str(metadata.get("fullres_image", HER2ST_IMAGES[section]))).resolve()
    if jpg.is_file():
        metadata["source_image_path"] = str(jpg)
    else:
        warn(
            f"full-resolution image {str(jpg)!r} not found; only the stored hires image is available.",
            ImageFeatureWarning,
        )
    set_spatial(
        adata,
        lib,
        images=entry.get("images"),
        scalefactors=entry.get("scalefactors"),
        metadata=metadata,
    )
    return adata


def mouse_olfactory_bulb() -> AnnData:
    """Mouse olfactory bulb (section MOB1), legacy Spatial Transcriptomics.

    Example data of STUtility (jbergenstrahle/STUtility, MIT; Bergenstråhle, Larsson & Lundeberg,
    BMC Genomics 21:482, 2020). Older ST array, not Visium. Only the 1,000 genes shipped with
    STUtility are present. The 1905 x 1905 H&E is stored as ``hires`` with scale factor 1.0; the
    spot diameter (15.9 px) is an approximation.

    Returns
    -------
    AnnData of 379 under-tissue spots x 1,000 genes read from
    ``{st.settings.datadir}/mob_st/mob_st_MOB1.h5ad``: raw integer counts in ``X`` (CSR),
    ``var['gene_ids']`` (Ensembl), ``obs['in_tissue' | 'array_x' | 'array_y']``,
    ``obsm['spatial']`` and ``uns['spatial']['MOB1']``.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.mouse_olfactory_bulb()  # doctest: +SKIP
    >>> adata.shape  # doctest: +SKIP
    (379, 1000)
    """
    return _read("mob_st", "mob_st_MOB1.h5ad")


def mouse_placenta() -> AnnData:
    """Mouse placenta, 10x Visium CytAssist FFPE (probe-based), library ``Placenta_S3``.

    Demo data of CoexpressDeconvolve (Perik-Zavodskii/CoexpressDeconvolve, MIT; Zenodo
    doi:10.5281/zenodo.14881190), Space Ranger 3.0.0, mm10 probe set. Shallow (median 226 UMI per
    spot). Only the 600 x 600 lowres image is present (scale factor 0.2); the "full resolution"
    is the 3000 x 3000 CytAssist capture image, so a spot is about 3 px wide in lowres. No labels.

    Returns
    -------
    AnnData of 2,898 spots x 19,465 genes read from
    ``{st.settings.datadir}/mouse_placenta_cytassist/adata.h5ad``: raw counts in ``X`` (CSR),
    ``obs['in_tissue' | 'array_row' | 'array_col']``, ``obsm['spatial']`` and
    ``uns['spatial']['Placenta_S3']`` with the ``lowres`` image and scale factors.

    Examples
    --------
    >>> import stimpute as st
    >>> adata = st.datasets.mouse_placenta()  # doctest: +SKIP
    >>> st.get.library_id(adata)  # doctest: +SKIP
    'Placenta_S3'
    """
    return _read("mouse_placenta_cytassist", "adata.h5ad")
