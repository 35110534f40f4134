"""Pick the image to tile for an AnnData, check that the spots sit on it, and yield resized RGB tiles.

Geometry: a tile covers ``tile_scale`` spot diameters. In pixels of the image it is cut from, its side is
``2 * radius + 1`` with ``radius = max(1, round(spot_diameter_fullres * scale * tile_scale / 2))``, where
``scale`` is the image's pixels per full-resolution pixel (1 for a full-resolution file, the
``tissue_{img_key}_scalef`` factor for a stored image, less for a JPEG decoded at a reduced scale). The tile
is centred on ``obsm['spatial'] * scale`` (for a JPEG decoded at 1/r of its size, on the centre of the r x r block
holding that point), padded with white where it leaves the image, converted to RGB
``uint8`` (see :func:`._io.to_rgb_uint8`) and resized (Pillow, bilinear with antialiasing) to the encoder's
input side.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .._constants import IMAGE_KEYS
from .._warnings import ImageFeatureWarning, warn
from ..get import _spatial
from ..get._crops import spot_indices
from ._io import ImageSource, open_array, open_file, to_rgb_uint8
from ._orientation import orientation_warning

__all__ = ["TileSpec", "check_tile_scale", "iter_tiles", "prepare_tiles"]

#: Fraction of spot centres outside the image above which the coordinates are taken to be wrong (an error).
MAX_OUTSIDE_FRACTION = 0.25
#: Tiles narrower than this many pixels of the source image trigger a warning (texture is meaningless there).
MIN_USEFUL_SIDE = 10


@dataclass
class TileSpec:
    """Everything needed to cut the tiles of some spots from one image.

    Attributes
    ----------
    source
        The image (opened lazily; nothing is decoded until the first tile).
    coords
        Full-resolution spot centres ``(x, y)``, one row per spot to tile.
    obs_names
        The spots' names, aligned with ``coords``.
    diameter
        Spot diameter in full-resolution pixels.
    tile_scale
        Tile side in spot diameters.
    library_id
        The library of ``adata.uns['spatial']`` used.
    """

    source: ImageSource
    coords: np.ndarray
    obs_names: np.ndarray
    diameter: float
    tile_scale: float
    library_id: str

    @property
    def radius(self) -> int:
        """Half the tile side, in pixels of the image as read."""
        return max(1, int(round(self.diameter * self.source.scale * self.tile_scale / 2)))

    @property
    def side(self) -> int:
        """Tile side in pixels of the image as read."""
        return 2 * self.radius + 1

    @property
    def spot_fraction(self) -> float:
        """Spot diameter as a fraction of the tile side (at most 1): the side is rounded up to odd pixels."""
        return float(min(1.0, self.diameter * self.source.scale / self.side))

    @property
    def centres(self) -> np.ndarray:
        """Spot centres in pixels of the image as read (x, y)."""
        return self.source.to_pixels(self.coords)

    def reduce_for(self, out_side: int) -> None:
        """Let a JPEG be decoded at a reduced scale while tiles stay at least ``out_side`` pixels wide."""
        native_side = self.diameter * self.source.native_scale * self.tile_scale
        if native_side > out_side:
            self.source.reduce_to(out_side / native_side)


def check_tile_scale(tile_scale) -> None:
    """Raise unless ``tile_scale`` is a finite positive number."""
    if not (isinstance(tile_scale, Real) and not isinstance(tile_scale, bool) and np.isfinite(tile_scale)):
        msg = f"`tile_scale` must be a positive number, got {tile_scale!r}."
        raise TypeError(msg)
    if tile_scale <= 0:
        msg = f"`tile_scale` must be a positive number (tile side in spot diameters), got {tile_scale!r}."
        raise ValueError(msg)


def prepare_tiles(
    adata: AnnData,
    *,
    library_id: str | None = None,
    img_key: str | None = None,
    source_image: str | os.PathLike | np.ndarray | None = None,
    tile_scale: float = 1.0,
    obs_names: Sequence[str] | None = None,
    per_library: bool = False,
) -> TileSpec:
    """Choose the image, open it lazily and check it against the scale factors and the spot coordinates.

    Source order: ``source_image`` (a full-resolution file or array), else the file in the library's
    ``metadata['source_image_path']`` when ``img_key`` is None and the file exists, else the stored image
    ``img_key`` (default: ``hires``, then ``lowres``). Raises before anything is decoded. ``per_library``: one
    library of several (``st.pp.image_features(library_key=...)``), where ``source_image`` is not offered.
    """
    check_tile_scale(tile_scale)
    if source_image is not None and img_key is not None:
        msg = (
            f"Pass either `source_image` (a full-resolution image) or `img_key={img_key!r}` (an image stored in "
            "`adata.uns['spatial']`), not both."
        )
        raise ValueError(msg)
    all_coords = _spatial.spatial_coords(adata)
    coords = all_coords
    names = np.asarray(adata.obs_names)
    if obs_names is not None:
        idx = spot_indices(adata, obs_names)
        coords, names = coords[idx], names[idx]
    lib = _spatial.library_id(adata, library_id)
    diameter = _spatial.spot_diameter(adata, lib, "fullres")

    source = _open_source(adata, lib, img_key, source_image, per_library=per_library)
    try:
        if source.kind != "uns":
            _check_source_size(adata, lib, source)
        _check_coords(adata, lib, source, all_coords)
    except Exception:
        source.close()
        raise
    mixup = orientation_warning(adata, lib, all_coords)
    if mixup is not None:
        warn(mixup, ImageFeatureWarning)
    spec = TileSpec(source, coords, names, diameter, float(tile_scale), lib)
    if not per_library:  # several libraries: the caller warns once for all of them
        warn_small_tiles([spec], per_library=False)
    return spec


def warn_small_tiles(specs: Sequence[TileSpec], *, per_library: bool) -> None:
    """One warning for the images whose tiles are too small for texture (colour features only)."""
    small = [spec for spec in specs if spec.side < MIN_USEFUL_SIDE]
    if not small:
        return
    fix = (
        "Record each library's full-resolution H&E file in `adata.uns['spatial'][library]['metadata']"
        "['source_image_path']`"
        if per_library
        else "Pass `source_image=` with the full-resolution H&E"
    )
    where = "; ".join(
        f"{spec.side} px wide in image {spec.source.name!r} of library {spec.library_id!r} (spot diameter "
        f"{spec.diameter * spec.source.scale:.1f} px)"
        for spec in small
    )
    warn(
        f"Tiles are only {where} at tile_scale {small[0].tile_scale}; colour features are usable but texture is not. "
        f"{fix} (or use a larger `tile_scale`) for real tissue detail.",
        ImageFeatureWarning,
    )


def _stored_keys(adata: AnnData, lib: str) -> list[str]:
    keys = []
    for key in IMAGE_KEYS:
        try:
            keys.append(_spatial.img_key(adata, lib, key))
        except KeyError:
            continue
    return keys


def _open_source(
    adata: AnnData,
    lib: str,
    img_key: str | None,
    source_image: str | os.PathLike | np.ndarray | None,
    *,
    per_library: bool = False,
) -> ImageSource:
    if source_image is not None:
        if isinstance(source_image, np.ndarray):
            return open_array(source_image, kind="array", name="array", native_scale=1.0)
        if not isinstance(source_image, str | os.PathLike):
            msg = (
                "`source_image` must be a path to a full-resolution image file (jpg, png, tif) or an array, "
                f"got {type(source_image).__name__}."
            )
            raise TypeError(msg)
        return open_file(source_image)
    if img_key is None:
        path = _spatial.source_image_path(adata, lib)
        if path is not None:
            if os.path.isfile(path):
                logg.info(f"Using the full-resolution image {path!r} recorded for library {lib!r}.")
                return open_file(path)
            warn(
                f"The full-resolution image {path!r} recorded for library {lib!r} does not exist; using the stored image.",
                ImageFeatureWarning,
            )
    try:
        key = _spatial.img_key(adata, lib, img_key)
    except KeyError as err:
        fix = (
            f"Or record the library's full-resolution H&E file in `adata.uns['spatial'][{lib!r}]['metadata']"
            "['source_image_path']`."
            if per_library
            else "Or pass `source_image=` with the path of the full-resolution H&E image."
        )
        msg = f"{err.args[0]} {fix}"
        raise KeyError(msg) from err
    scale = _spatial.scale_factor(adata, lib, key)
    return open_array(_spatial.image(adata, lib, key), kind="uns", name=key, native_scale=scale)


def _check_source_size(adata: AnnData, lib: str, source: ImageSource) -> None:
    """A full-resolution image must be the stored images' size divided by their scale factors."""
    h, w = source.native_shape
    for key in _stored_keys(adata, lib):
        try:
            s = _spatial.scale_factor(adata, lib, key)
        except (KeyError, ValueError):
            continue
        kh, kw = _spatial.image(adata, lib, key).shape[:2]
        eh, ew = kh / s, kw / s
        tol_h, tol_w = max(0.01 * eh, 2 / s + 2), max(0.01 * ew, 2 / s + 2)
        if abs(h - eh) <= tol_h and abs(w - ew) <= tol_w:
            continue
        what = f"`source_image` {source.name!r} is {w} x {h} px (width x height)"
        expected = (
            f"the stored {key!r} image ({kw} x {kh} px at `tissue_{key}_scalef` = {s:.6g}) implies a "
            f"full-resolution image of about {ew:.0f} x {eh:.0f} px"
        )
        rw, rh = w / ew, h / eh
        if abs(w - eh) <= tol_h and abs(h - ew) <= tol_w:
            why = "The file looks rotated or transposed relative to the stored image."
        elif abs(rw / rh - 1) < 0.03:
            why = (
                f"The file is {rw:.3g} times that size with the same aspect ratio: it is probably a rescaled copy "
                f"(pass the original full-resolution scan) or `tissue_{key}_scalef` belongs to another image."
            )
        else:
            why = (
                f"Width and height differ by different factors ({rw:.3g}, {rh:.3g}): the file is probably another "
                "image or a crop of it."
            )
        msg = f"{what}, but {expected}. {why}"
        raise ValueError(msg)


def _check_coords(adata: AnnData, lib: str, source: ImageSource, coords: np.ndarray) -> None:
    """Raise when many spots lie outside the image; warn when a few do or when they crowd into a corner."""
    h, w = source.native_shape
    cen = coords * source.native_scale
    inside = (cen[:, 0] >= 0) & (cen[:, 0] < w) & (cen[:, 1] >= 0) & (cen[:, 1] < h)
    n_out = int((~inside).sum())
    where = f"image {source.name!r} ({w} x {h} px, {source.native_scale:.6g} px per full-resolution px)"
    if n_out > MAX_OUTSIDE_FRACTION * len(cen):
        msg = (
            f"{n_out} of {len(cen)} spot centres lie outside {where}: spot x spans {cen[:, 0].min():.0f} to "
            f"{cen[:, 0].max():.0f} and y {cen[:, 1].min():.0f} to {cen[:, 1].max():.0f} in image pixels. "
            f"{_coord_hint(adata, lib, source, cen)}"
        )
        raise ValueError(msg)
    if n_out:
        warn(
            f"{n_out} of {len(cen)} spot centres lie outside {where}; their tiles are padded with white.",
            ImageFeatureWarning,
        )
    if len(cen) >= 10 and cen[:, 0].max() < 0.2 * w and cen[:, 1].max() < 0.2 * h:
        warn(
            f"All spots sit in the top-left corner of {where} (x <= {cen[:, 0].max():.0f}, y <= {cen[:, 1].max():.0f}). "
            f"{_coord_hint(adata, lib, source, cen)}",
            ImageFeatureWarning,
        )


def _coord_hint(adata: AnnData, lib: str, source: ImageSource, cen: np.ndarray) -> str:
    h, w = source.native_shape
    hint = (
        "`adata.obsm['spatial']` must hold full-resolution pixel coordinates (x = column, y = row); they may be in "
        "hires/lowres pixels (or microns) instead, or the image does not belong to these spots."
    )
    xmax, ymax = cen[:, 0].max(), cen[:, 1].max()
    if xmax > 0 and ymax > 0:
        fit = min(w / xmax, h / ymax)
        hint += f" Multiplying the coordinates by about {fit:.4g} or less would put every spot inside the image."
        for key in _stored_keys(adata, lib):
            try:
                s = _spatial.scale_factor(adata, lib, key)
            except (KeyError, ValueError):
                continue
            for f, what in (
                (1 / s, f"the coordinates look like {key} pixels: divide `obsm['spatial']` by tissue_{key}_scalef"),
                (s, f"the image looks like the {key} image rather than the full-resolution one"),
            ):
                if 0.5 * fit <= f <= 1.05 * fit:
                    return f"{hint} That is close to {f:.4g}, the {key} conversion: {what}."
    swapped = (cen[:, 1] >= 0) & (cen[:, 1] < w) & (cen[:, 0] >= 0) & (cen[:, 0] < h)
    if swapped.mean() > 1 - MAX_OUTSIDE_FRACTION:
        hint += " With x and y swapped the spots would fit: column 0 must be x (image column), column 1 y (row)."
    return hint


def iter_tiles(
    spec: TileSpec, out_side: int, *, batch_size: int = 128, progress: bool = False
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(positions, tiles)``: RGB ``uint8`` tiles ``(b, out_side, out_side, 3)`` for consecutive spots."""
    from tqdm.auto import tqdm

    spec.reduce_for(out_side)
    n = len(spec.coords)
    source = spec.source
    value_max = source.value_max if np.issubdtype(source.dtype, np.floating) else 255.0
    with tqdm(total=n, disable=not progress, desc="image tiles", unit="spot") as bar:
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            raw = source.crops(spec.centres[sl], spec.radius)
            yield sl, resize_tiles(to_rgb_uint8(raw, value_max=value_max), out_side)
            bar.update(sl.stop - sl.start)


def resize_tiles(tiles: np.ndarray, out_side: int) -> np.ndarray:
    """Resize RGB ``uint8`` tiles ``(n, s, s, 3)`` to ``(n, out_side, out_side, 3)`` (Pillow bilinear, antialiased)."""
    if tiles.shape[1] == out_side and tiles.shape[2] == out_side:
        return tiles
    from PIL import Image

    out = np.empty((len(tiles), out_side, out_side, 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        out[i] = np.asarray(Image.fromarray(tile).resize((out_side, out_side), Image.Resampling.BILINEAR))
    return out
