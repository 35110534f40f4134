"""Accessors: ``st.get`` reads images, scale factors, spot sizes and crops from an AnnData."""

from ._crops import spot_crops
from ._spatial import (
    image,
    img_key,
    library_id,
    scale_factor,
    source_image_path,
    spatial_coords,
    spot_diameter,
)

__all__ = [
    "image",
    "img_key",
    "library_id",
    "scale_factor",
    "source_image_path",
    "spatial_coords",
    "spot_crops",
    "spot_diameter",
]
