"""Image sources that square crops can be cut from without copying the whole image.

Three kinds of source:

* an in-memory array (a stored ``hires``/``lowres`` image, or an array passed by the user): crops are gathered
  with index arithmetic (:func:`stimpute.get._crops.crop_centred`), the array is never copied or padded;
* a TIFF file: memory-mapped with :func:`tifffile.memmap` when it is stored uncompressed and contiguous, read
  through tifffile's lazy zarr store when it is tiled or compressed (only the tiles under the crops are
  decoded), and decoded once as a last resort;
* a JPEG/PNG file: decoded once by Pillow, which keeps the only copy; crops are cut from it box by box. A JPEG
  can be decoded at 1/2, 1/4 or 1/8 of its size (Pillow's ``draft`` mode, DCT scaling) when the tiles are to
  be shrunk anyway (:meth:`ImageSource.reduce_to`), which saves time and memory.

Pixels of a crop that fall outside the image are white (the glass background of an H&E slide), so border
tiles do not look like dark, nucleus-rich tissue.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..get._crops import crop_centred

__all__ = ["ImageSource", "open_array", "open_file", "to_rgb_uint8"]

#: Largest image (in pixels) Pillow may open inside stimpute: about 40,000 x 40,000. Pillow's own default
#: (about 89 million pixels) already warns for a 9,300 x 9,900 full-resolution H&E scan.
MAX_PIL_PIXELS = 1_600_000_000
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".svs", ".ome.tif", ".ome.tiff")
PIL_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".jp2")
_PIL_CONVERT = {"P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1", "La", "RGBa", "RGBX"}


@contextlib.contextmanager
def _pil_pixel_limit() -> Iterator[None]:
    """Raise Pillow's decompression-bomb limit to :data:`MAX_PIL_PIXELS` for one read, then restore it."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIL_PIXELS if old is None else max(old, MAX_PIL_PIXELS)
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


class ImageSource:
    """A tissue image that square tiles are cut from.

    Attributes
    ----------
    kind
        ``"file"``, ``"uns"`` (an image stored in ``adata.uns['spatial']``) or ``"array"``.
    name
        File name, image key or ``"array"``.
    native_shape
        ``(height, width)`` of the image at its own resolution.
    native_scale
        Pixels of the image per full-resolution pixel (1.0 for a full-resolution file).
    n_channels
        Number of channels (1 for a grey image).
    dtype
        Data type of the pixels as stored.
    """

    kind: str
    name: str
    native_shape: tuple[int, int]
    native_scale: float
    n_channels: int
    dtype: np.dtype

    def __init__(self) -> None:
        self._value_max: float | None = None

    # geometry --------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the image as read (after any reduced decode)."""
        return self.native_shape

    @property
    def reduction(self) -> int:
        """Native pixels per pixel as read along each axis (1, or 2, 4, 8 for a JPEG decoded at reduced size)."""
        return 1

    @property
    def scale(self) -> float:
        """Pixels of the image as read per full-resolution pixel."""
        return self.native_scale / self.reduction

    def to_pixels(self, coords: np.ndarray) -> np.ndarray:
        """Full-resolution ``(x, y)`` to pixel coordinates of the image as read (pixel ``i`` centred at ``i``).

        A reduced JPEG pixel ``j`` is the mean of the native block ``j * r .. j * r + r - 1``, centred at
        native coordinate ``j * r + (r - 1) / 2``; hence the shift, and the exact factor ``1 / r`` rather
        than the ratio of the widths (which the rounded-up reduced width biases towards the far edge).
        """
        r = self.reduction
        return (np.asarray(coords, dtype=np.float64) * self.native_scale - (r - 1) / 2) / r

    def reduce_to(self, fraction: float) -> None:
        """Allow reading at a reduced resolution of at least ``fraction`` of the native one (JPEG only)."""

    # pixel values ----------------------------------------------------------------------------------------
    @property
    def value_max(self) -> float:
        """Largest pixel value, estimated on a strided sample (decides the range of float images)."""
        if self._value_max is None:
            self._value_max = float(self._sample_max())
        return self._value_max

    def _sample_max(self) -> float:
        raise NotImplementedError

    @property
    def white(self) -> float:
        """The value of a white pixel in this image's range (used to pad crops)."""
        if self.dtype == np.bool_:
            return 1
        if np.issubdtype(self.dtype, np.floating):
            return 1.0 if self.value_max <= 1.0 + 1e-6 else 255.0
        if self.dtype == np.uint16:
            return 65535
        return 255

    def crops(self, centres_xy: np.ndarray, radius: int) -> np.ndarray:
        """Cut ``(2 * radius + 1)``-pixel squares around ``centres_xy`` (pixels of the image as read, x then y).

        Returns an array ``(n, side, side, channels)`` of the stored dtype, white outside the image.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoded image or the open file."""

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        h, w = self.shape
        return f"{type(self).__name__}({self.kind}:{self.name!r}, {w}x{h} px, scale {self.scale:.4g})"


class _ArraySource(ImageSource):
    """A numpy array or memory map; crops by one vectorised gather."""

    def __init__(self, arr: np.ndarray, *, kind: str, name: str, native_scale: float) -> None:
        super().__init__()
        _check_layout(arr.shape, name)
        self.arr = arr
        self.kind, self.name, self.native_scale = kind, name, float(native_scale)
        self.native_shape = (int(arr.shape[0]), int(arr.shape[1]))
        self.n_channels = 1 if arr.ndim == 2 else int(arr.shape[2])
        self.dtype = arr.dtype.newbyteorder("=")  # crops are native: a big-endian TIFF maps as '>u2'

    def _sample_max(self) -> float:
        step = max(1, int(np.sqrt(self.arr.shape[0] * self.arr.shape[1] / 250_000)))
        return np.asarray(self.arr[::step, ::step]).max()

    def crops(self, centres_xy: np.ndarray, radius: int) -> np.ndarray:
        return crop_centred(self.arr, centres_xy, radius, cval=self.white)

    def close(self) -> None:
        self.arr = None  # type: ignore[assignment]


class _BoxSource(ImageSource):
    """A source read box by box (Pillow image, lazy zarr array)."""

    def _read_box(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        raise NotImplementedError

    def crops(self, centres_xy: np.ndarray, radius: int) -> np.ndarray:
        h, w = self.shape
        side = 2 * radius + 1
        n = len(centres_xy)
        out = np.full((n, side, side, self.n_channels), self.white, dtype=self.dtype)
        cx = np.rint(centres_xy[:, 0]).astype(np.int64)
        cy = np.rint(centres_xy[:, 1]).astype(np.int64)
        for i in range(n):
            y0, x0 = cy[i] - radius, cx[i] - radius
            ya, yb = max(0, y0), min(h, y0 + side)
            xa, xb = max(0, x0), min(w, x0 + side)
            if ya >= yb or xa >= xb:
                continue
            box = self._read_box(int(ya), int(yb), int(xa), int(xb))
            out[i, ya - y0 : yb - y0, xa - x0 : xb - x0] = box.reshape(yb - ya, xb - xa, self.n_channels)
        return out


class _PILSource(_BoxSource):
    """A JPEG/PNG decoded once by Pillow (lazily, on the first crop), optionally at a reduced JPEG scale."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        from PIL import Image, UnidentifiedImageError

        self.path, self.kind, self.name, self.native_scale = path, "file", path.name, 1.0
        try:
            with _pil_pixel_limit():
                self._im = Image.open(path)
        except Image.DecompressionBombError as err:
            msg = (
                f"`source_image={str(path)!r}` has more than {MAX_PIL_PIXELS:,} pixels, too many to decode with "
                "Pillow; convert it to a tiled TIFF (for example with `vips tiffsave --tile`), which stimpute reads lazily."
            )
            raise ValueError(msg) from err
        except UnidentifiedImageError as err:
            msg = f"`source_image={str(path)!r}` is not an image file Pillow can read."
            raise ValueError(msg) from err
        w, h = self._im.size
        self.native_shape = (int(h), int(w))
        mode = self._im.mode
        self._convert = mode in _PIL_CONVERT
        if self._convert:
            self.n_channels, self.dtype = 3, np.dtype(np.uint8)
        else:
            self.n_channels = len(self._im.getbands())
            self.dtype = {"I;16": np.dtype(np.uint16), "I;16B": np.dtype(np.uint16), "I": np.dtype(np.int32)}.get(
                mode, np.dtype(np.float32) if mode == "F" else np.dtype(np.uint8)
            )
        self._loaded = False

    @property
    def shape(self) -> tuple[int, int]:
        w, h = self._im.size
        return (int(h), int(w))

    @property
    def reduction(self) -> int:
        # the DCT scale Pillow's JPEG decoder was set to by `draft` (1 when not reduced)
        config = getattr(self._im, "decoderconfig", ())
        return int(config[0]) if self._im.format == "JPEG" and config and int(config[0]) > 1 else 1

    def reduce_to(self, fraction: float) -> None:
        if self._loaded or self._im.format != "JPEG" or self._im.mode not in ("RGB", "L") or fraction >= 1:
            return
        h, w = self.native_shape
        # the largest DCT reduction r (2, 4 or 8) that keeps at least `fraction` of the native resolution
        r = 2 ** int(np.floor(np.log2(min(8.0, 1.0 / float(fraction)) + 1e-9)))
        if r < 2:
            return
        # Pillow uses the largest power of two <= native // requested and decodes ceil(native / r) px: asking for
        # native // r gives exactly r, odd-sized images included (asking for ceil(native / r) gave r / 2 there)
        self._im.draft(self._im.mode, (max(1, w // r), max(1, h // r)))

    def _load(self) -> None:
        if self._loaded:
            return
        with _pil_pixel_limit():
            try:
                self._im.load()
            except OSError as err:  # e.g. "image file is truncated"
                msg = f"`source_image={str(self.path)!r}` could not be decoded ({err}); the file may be damaged."
                raise ValueError(msg) from err
            if self._convert:
                self._im = self._im.convert("RGB")
        self._loaded = True

    def _sample_max(self) -> float:
        self._load()
        extrema = self._im.getextrema()
        bands = extrema if self.n_channels > 1 else (extrema,)
        return float(max(hi for _, hi in bands))

    def _read_box(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(self._im.crop((x0, y0, x1, y1)))

    def crops(self, centres_xy: np.ndarray, radius: int) -> np.ndarray:
        self._load()
        return super().crops(centres_xy, radius)

    def close(self) -> None:
        self._im.close()


class _ZarrSource(_BoxSource):
    """A tiled or compressed TIFF read lazily through tifffile's zarr store: only tiles under crops are decoded."""

    def __init__(self, z: Any, store: Any, path: Path, axes: str) -> None:
        super().__init__()
        self.z, self.store, self.kind, self.name, self.native_scale = z, store, "file", path.name, 1.0
        self.axes = axes
        self.lead = len(z.shape) - len(axes)  # leading singleton axes (a one-plane T, Z, ...), indexed with 0
        shape = _yxs_shape(tuple(z.shape)[self.lead :], axes)
        _check_layout(shape, path.name)
        self.native_shape = (int(shape[0]), int(shape[1]))
        self.n_channels = 1 if len(shape) == 2 else int(shape[2])
        self.dtype = np.dtype(z.dtype).newbyteorder("=")

    def _get(self, rows: slice, cols: slice) -> np.ndarray:
        channels_first = self.axes[0] in "SC"
        index = (0,) * self.lead + ((slice(None), rows, cols) if channels_first else (rows, cols))
        arr = np.asarray(self.z[index])
        return np.moveaxis(arr, 0, -1) if channels_first else arr

    def _read_box(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self._get(slice(y0, y1), slice(x0, x1))

    def _sample_max(self) -> float:
        h, w = self.native_shape
        step = max(1, int(np.sqrt(h * w / 250_000)))
        return float(self._get(slice(0, h, step * 64), slice(0, w, step)).max())  # a few strips keep this cheap

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.store.close()


def _yxs_shape(shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    """``(height, width[, channels])`` from a TIFF series shape and its axes (``YX``, ``YXS``, ``SYX``, ``CYX``)."""
    if axes in ("YX", "YXS", "YXC"):
        return shape
    if axes in ("SYX", "CYX"):
        return (shape[1], shape[2], shape[0])
    msg = f"TIFF with axes {axes!r} (shape {shape}) is not a single 2-D RGB or grey image; save one plane as RGB."
    raise ValueError(msg)


def _check_layout(shape: tuple[int, ...], name: str) -> None:
    if len(shape) not in (2, 3) or (len(shape) == 3 and not 1 <= shape[2] <= 4):
        msg = (
            f"Image {name!r} has shape {tuple(shape)}; expected (height, width) for grey or (height, width, 3|4) "
            "for RGB/RGBA. A multi-channel (for example immunofluorescence) image is not H&E."
        )
        raise ValueError(msg)
    if shape[0] < 2 or shape[1] < 2:
        msg = f"Image {name!r} has shape {tuple(shape)}; it is too small to cut tiles from."
        raise ValueError(msg)


def open_array(arr: Any, *, kind: str, name: str, native_scale: float) -> ImageSource:
    """Wrap an in-memory image (``(h, w)``, ``(h, w, 3)`` or ``(h, w, 4)``) without copying it."""
    a = np.asarray(arr)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or np.issubdtype(a.dtype, np.complexfloating):
        msg = f"Image {name!r} must hold real numbers, got dtype {a.dtype}."
        raise TypeError(msg)
    return _ArraySource(a, kind=kind, name=name, native_scale=native_scale)


def open_file(path: str | os.PathLike) -> ImageSource:
    """Open an image file lazily: TIFF (memory map or lazy zarr store) or JPEG/PNG (Pillow, decoded on first use).

    Only the header is read here, so the size can be checked before anything is decoded.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        msg = f"`source_image={str(path)!r}` does not exist or is not a file."
        raise FileNotFoundError(msg)
    if p.name.lower().endswith(TIFF_SUFFIXES):
        return _open_tiff(p)
    return _PILSource(p)


def _open_tiff(path: Path) -> ImageSource:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, tuple(series.shape)
    except tifffile.TiffFileError as err:
        msg = f"`source_image={str(path)!r}` is not a TIFF file tifffile can read ({err})."
        raise ValueError(msg) from err
    # drop leading singleton axes such as a one-plane Z or T
    while len(axes) > 2 and axes[0] not in "YSC" and shape[0] == 1:
        axes, shape = axes[1:], shape[1:]
    _yxs_shape(shape, axes)  # raises for unsupported layouts before reading anything
    try:
        mm = tifffile.memmap(path, mode="r")
    except (ValueError, OSError, TypeError):
        mm = None
    if mm is not None and mm.size == int(np.prod(shape)):
        mm = mm.reshape(shape)
        arr = np.moveaxis(mm, 0, -1) if axes[0] in "SC" else mm  # a view: nothing is read yet
        return _ArraySource(arr, kind="file", name=path.name, native_scale=1.0)
    try:
        import zarr

        store = tifffile.imread(path, aszarr=True)
        z = zarr.open(store, mode="r")
        if not hasattr(z, "shape"):  # a pyramid: level 0 is the full resolution
            z = z[sorted(z.array_keys())[0]]
        if tuple(z.shape)[len(z.shape) - len(shape) :] != shape or any(
            d != 1 for d in z.shape[: len(z.shape) - len(shape)]
        ):
            raise ValueError("unexpected zarr layout")  # noqa: EM101 - caught below: fall back to one full read
        return _ZarrSource(z, store, path, axes)
    except (ImportError, ValueError, TypeError, KeyError, OSError, IndexError):
        arr = tifffile.imread(path).reshape(shape)
        arr = np.moveaxis(arr, 0, -1) if axes[0] in "SC" else arr
        return _ArraySource(arr, kind="file", name=path.name, native_scale=1.0)


def to_rgb_uint8(tiles: np.ndarray, *, value_max: float) -> np.ndarray:
    """Convert a batch of tiles ``(n, s, s, c)`` to RGB ``uint8`` (documented conversions).

    * grey (1 channel) -> the grey value repeated in R, G and B; grey + alpha (2) -> alpha dropped, then grey;
    * RGBA (4 channels) -> alpha dropped (no compositing);
    * ``uint8`` as is; ``uint16`` divided by 257; ``bool`` times 255; floats in [0, 1] (``value_max <= 1``) times
      255, other floats and integers clipped to [0, 255].
    """
    tiles = tiles.astype(tiles.dtype.newbyteorder("="), copy=False)  # '>u2' is uint16 too
    c = tiles.shape[-1]
    if c in (1, 2):
        tiles = np.repeat(tiles[..., :1], 3, axis=-1)
    elif c == 4:
        tiles = tiles[..., :3]
    if tiles.dtype == np.uint8:
        return np.ascontiguousarray(tiles)
    if tiles.dtype == np.bool_:
        return tiles.astype(np.uint8) * np.uint8(255)
    if tiles.dtype == np.uint16:
        return np.rint(tiles / 257.0).astype(np.uint8)
    x = tiles.astype(np.float32)
    if np.issubdtype(tiles.dtype, np.floating) and value_max <= 1.0 + 1e-6:
        x = x * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
