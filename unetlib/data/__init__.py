"""Data for the U-Net course: synthetic cells, folder/TIFF loaders and tile datasets.

Quick start::

    from unetlib.data import make_synthetic_dataset, TileDataset, split_holdout
    images = make_synthetic_dataset(8, 256, seed=0)          # list of LabeledImage
    train, val = split_holdout(images, fraction=0.25, seed=0)
    ds = TileDataset(train, input_size=188, depth=4)         # 188 -> 4 label pixels
    item = ds[0]   # {"image": (1,188,188) f32, "mask": (4,4) i64, "weight": (4,4) f32, "instances": (4,4) i32}
"""
from .dataset import GridTileDataset, TileDataset, WholeImageDataset, resolve_output_size, split_holdout
from .io import (
    IMAGE_EXTENSIONS,
    DatasetError,
    LabeledImage,
    load_folder,
    load_isbi_stacks,
    load_sources,
    mask_to_instances,
    normalize_percentile,
    read_array,
    read_image,
    read_mask,
    read_tiff_stack,
)
from .synthetic import SyntheticSample, make_synthetic_dataset, synthetic_cells
from .isbi2012 import ChecksumMismatch, DatasetUnavailable, download_isbi2012, isbi2012, isbi2012_split

__all__ = [
    "DatasetError",
    "LabeledImage",
    "IMAGE_EXTENSIONS",
    "SyntheticSample",
    "synthetic_cells",
    "make_synthetic_dataset",
    "read_array",
    "read_image",
    "read_mask",
    "read_tiff_stack",
    "mask_to_instances",
    "normalize_percentile",
    "load_folder",
    "load_isbi_stacks",
    "load_sources",
    "TileDataset",
    "GridTileDataset",
    "WholeImageDataset",
    "split_holdout",
    "resolve_output_size",
    "isbi2012",
    "isbi2012_split",
    "download_isbi2012",
    "DatasetUnavailable",
    "ChecksumMismatch",
]
