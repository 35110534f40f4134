"""Private image code of stimpute (no torch): reading tissue images, cutting tiles, handcrafted features.

* :mod:`._io` opens an image source (a stored ``hires``/``lowres`` array, a TIFF read through a memory
  map or a lazy zarr store, or a JPEG/PNG decoded once by Pillow, optionally at a reduced JPEG scale)
  and cuts padded square crops from it without copying the whole image.
* :mod:`._tiles` picks the source for an AnnData, checks that the spots sit on it, and yields batches of
  RGB ``uint8`` tiles resized to the encoder's input.
* :mod:`._handcrafted` computes colour, haematoxylin/eosin and texture features of tiles, vectorised
  over a batch.
"""

from ._handcrafted import handcrafted_feature_names, handcrafted_features
from ._io import ImageSource, open_array, open_file
from ._tiles import TileSpec, iter_tiles, prepare_tiles

__all__ = [
    "ImageSource",
    "TileSpec",
    "handcrafted_feature_names",
    "handcrafted_features",
    "iter_tiles",
    "open_array",
    "open_file",
    "prepare_tiles",
]
