"""Reading images, masks and TIFF stacks from disk, with validation that explains itself.

Folder layout (``load_folder``)::

    DIR/images/a.png   DIR/masks/a.png     <- matched by file stem ("a")
    DIR/images/b.tif   DIR/masks/b.tif

Conventions (every loader returns :class:`LabeledImage` objects):

* **Images**: PNG or TIFF, 8-/16-bit integer or float, grey or RGB(A).  Each
  image is normalised to float32 [0, 1] by its own 1st/99th percentiles (not by
  the dtype range: a 16-bit microscope image often uses only 0..4000).  RGB is
  kept as 3 channels by default (``color="keep"``, C = 3); ``color="gray"``
  converts to one luminance channel (C = 1).  An alpha channel is dropped.
* **Masks**: single channel.  Either *binary* (values {0, 1} or {0, 255}) or an
  *instance* label image (0 = background, each cell its own positive id).
  Binary masks are turned into instances by 4-connected component labelling,
  so touching cells in a binary mask become one instance: store a background
  gap between them, or use instance masks.  The semantic training mask is
  always ``instances > 0`` (classes: 0 background, 1 cell).
* **ISBI 2012 stacks** (``load_isbi_stacks``): two multi-page TIFFs.  In the
  ISBI labels 255 (white) is cell interior and 0 (black) is membrane, so 255
  becomes foreground (class 1) and the membrane background; the cells are the
  4-connected components of the foreground.

Every problem raises :class:`DatasetError` (a ``ValueError``) naming the file
and the fix.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
from scipy import ndimage

__all__ = [
    "DatasetError",
    "LabeledImage",
    "IMAGE_EXTENSIONS",
    "read_array",
    "normalize_percentile",
    "read_image",
    "read_mask",
    "mask_to_instances",
    "load_folder",
    "load_isbi_stacks",
    "read_tiff_stack",
    "load_sources",
]

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff")
PathLike = Union[str, os.PathLike]

# 4-connectivity: a diagonal touch does not join two cells.
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


class DatasetError(ValueError):
    """A data file or folder is missing, unreadable or inconsistent; the message says how to fix it."""


@dataclass
class LabeledImage:
    """One image with its labels, as every loader returns it.

    Attributes:
        image: float32 (C, H, W), normalised to about [0, 1].
        instances: int32 (H, W); 0 = background, each cell its own id.
        name: where it came from (file stem, stack page, ...).
        meta: free-form extras, e.g. the source file paths.
    """

    image: np.ndarray
    instances: np.ndarray
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.image = np.asarray(self.image, dtype=np.float32)
        if self.image.ndim == 2:
            self.image = self.image[None]
        self.instances = np.asarray(self.instances).astype(np.int32, copy=False)
        if self.image.ndim != 3 or self.instances.ndim != 2:
            raise DatasetError(
                f"{self.name or 'LabeledImage'}: need image (C, H, W) and instances (H, W), got "
                f"{self.image.shape} and {self.instances.shape}."
            )
        if self.image.shape[1:] != self.instances.shape:
            raise DatasetError(
                f"{self.name or 'LabeledImage'}: image is {self.image.shape[1]}x{self.image.shape[2]} "
                f"but instances are {self.instances.shape[0]}x{self.instances.shape[1]} (HxW); they must match."
            )

    @property
    def mask(self) -> np.ndarray:
        """Semantic mask, int64 (H, W): 1 on cells, 0 on background."""
        return (self.instances > 0).astype(np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return self.instances.shape


# ---------------------------------------------------------------------------------------------
# Reading raw arrays
# ---------------------------------------------------------------------------------------------
def read_array(path: PathLike, palette: str = "indices") -> np.ndarray:
    """Read a PNG or TIFF file as a numpy array, unchanged.

    Returns (H, W) for single-channel files and (H, W, C) for RGB(A); multi-page
    TIFFs give (pages, H, W[, C]).  Palette PNGs give their palette indices
    (``palette="indices"``, right for label images) or their colours
    (``palette="rgb"``, right for pictures).  Raises DatasetError naming the
    file if it cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                img.load()
                if img.mode in ("P", "PA") and palette == "rgb":
                    arr = np.array(img.convert("RGB"))
                elif img.mode in ("P", "PA"):
                    # Palette label images: the indices are the class/instance ids.
                    arr = np.array(img.convert("P") if img.mode == "PA" else img)
                elif img.mode == "LA":
                    arr = np.array(img.convert("L"))
                elif img.mode == "CMYK":
                    arr = np.array(img.convert("RGB"))
                else:
                    arr = np.array(img)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found.") from None
    except Exception as exc:  # PIL / tifffile raise many types for corrupt data
        raise DatasetError(
            f"{path}: cannot read this file ({type(exc).__name__}: {exc}). Is it a valid, complete "
            f"PNG/TIFF? Re-export it, or remove it (and its partner) from the folder."
        ) from exc
    return np.asarray(arr)


def _to_hwc(arr: np.ndarray, path: PathLike, what: str) -> np.ndarray:
    """Bring a single image to (H, W) or (H, W, C)."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3:
        if arr.shape[-1] in (1, 2, 3, 4):
            return arr[..., 0] if arr.shape[-1] == 1 else arr
        if arr.shape[0] in (1, 3, 4):  # (C, H, W) TIFF
            return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
        raise DatasetError(
            f"{path}: {what} has shape {arr.shape}, which looks like a stack of {arr.shape[0]} pages. "
            "Single images must be (H, W) or (H, W, C); for a stack of slices use "
            "load_isbi_stacks() or split it into one file per slice."
        )
    raise DatasetError(f"{path}: {what} has {arr.ndim} dimensions {arr.shape}; expected (H, W) or (H, W, C).")


def normalize_percentile(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of ``image`` to 0/1 and clip, float32, same shape.

    Robust to a few hot pixels and independent of the storage dtype.  A constant
    image maps to zeros.
    """
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:  # flat image (or a flat 98 % of it): fall back to min/max
        lo, hi = float(image.min()), float(image.max())
        if hi <= lo:
            return np.zeros_like(image)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def read_image(path: PathLike, color: str = "keep", percentiles=(1.0, 99.0)) -> np.ndarray:
    """Read and normalise one image, float32 (C, H, W) in [0, 1].

    Args:
        path: PNG or TIFF file.
        color: ``"keep"`` (RGB -> C = 3, grey -> C = 1) or ``"gray"`` (always C = 1,
            RGB converted with ITU-R 601 luminance weights).
        percentiles: (low, high) percentiles mapped to 0 and 1.
    """
    if color not in ("keep", "gray"):
        raise ValueError(f"color must be 'keep' or 'gray', got {color!r}.")
    arr = _to_hwc(read_array(path, palette="rgb"), path, "image")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DatasetError(f"{path}: unsupported pixel type {arr.dtype}; save it as 8/16-bit PNG or TIFF.")
    if arr.ndim == 3:
        arr = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]  # drop alpha
        if color == "gray" and arr.shape[-1] == 3:
            arr = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    chw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return normalize_percentile(chw, *percentiles)


def mask_to_instances(mask: np.ndarray, mask_type: str = "auto", source: str = "mask") -> np.ndarray:
    """Validate a single-channel mask and return instance ids, int32 (H, W).

    Args:
        mask: integer (or integral float/bool) array (H, W).
        mask_type: ``"binary"`` (values {0, 1} or {0, 255}; cells = 4-connected
            components), ``"instance"`` (0 = background, each cell its own id) or
            ``"auto"`` (binary if the values are {0, 1} or {0, 255}, instances
            otherwise; an 8-bit mask mixing 255 with other values is refused as
            ambiguous).
        source: name used in error messages (file name).
    """
    if mask_type not in ("auto", "binary", "instance"):
        raise ValueError(f"mask_type must be 'auto', 'binary' or 'instance', got {mask_type!r}.")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatasetError(f"{source}: mask must be 2-D (H, W), got shape {mask.shape}.")
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if np.issubdtype(mask.dtype, np.floating):
        if not np.all(np.isfinite(mask)) or np.any(np.mod(mask, 1) != 0):
            raise DatasetError(
                f"{source}: mask holds non-integer values (dtype {mask.dtype}); masks must hold class or "
                "instance ids. If it is a probability map, threshold it first, e.g. (mask > 0.5)."
            )
        mask = mask.astype(np.int64)
    elif not np.issubdtype(mask.dtype, np.integer):
        raise DatasetError(f"{source}: unsupported mask type {mask.dtype}; save masks as 8/16-bit PNG or TIFF.")
    values = np.unique(mask)
    if values.size and values[0] < 0:
        raise DatasetError(f"{source}: mask has negative values (min {values[0]}); ids must be >= 0.")
    is_binary = set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}
    shown = _show_values(values)
    if mask_type == "binary" and not is_binary:
        raise DatasetError(
            f"{source}: expected a binary mask with values {{0, 1}} or {{0, 255}}, found {shown}. "
            "If the edges are anti-aliased or JPEG-compressed, threshold it (e.g. mask > 127) and save "
            "as PNG; if each cell has its own id, load it with mask_type='instance'."
        )
    if mask_type == "auto" and not is_binary and mask.dtype == np.uint8 and 255 in values:
        raise DatasetError(
            f"{source}: ambiguous mask values {shown}. Expected binary {{0, 1}} / {{0, 255}} or instance "
            "ids (0 = background, 1, 2, ... one per cell). 255 together with other values usually means "
            "an anti-aliased or greyscale-saved binary mask: threshold it (mask > 127). If it really is "
            "an instance label image, pass mask_type='instance'."
        )
    if mask_type == "binary" or (mask_type == "auto" and is_binary):
        instances, _ = ndimage.label(mask > 0, structure=_FOUR_CONNECTED)
        return instances.astype(np.int32)
    if values.size and values[-1] > np.iinfo(np.int32).max:
        raise DatasetError(f"{source}: instance id {values[-1]} does not fit in int32; relabel the ids.")
    return mask.astype(np.int32)


def _show_values(values: np.ndarray, limit: int = 8) -> str:
    vals = values.tolist()
    text = ", ".join(str(v) for v in vals[:limit])
    return "{" + text + (f", ... ({len(vals)} distinct values)" if len(vals) > limit else "") + "}"


def read_mask(path: PathLike, mask_type: str = "auto") -> np.ndarray:
    """Read and validate a mask file; returns instance ids, int32 (H, W).

    RGB(A) masks are refused unless all colour channels are identical (a grey
    mask saved as RGB), because colours are not class ids.
    """
    arr = read_array(path)
    arr = _to_hwc(arr, path, "mask")
    if arr.ndim == 3:
        colour = arr[..., :3] if arr.shape[-1] >= 3 else arr
        if all(np.array_equal(colour[..., 0], colour[..., c]) for c in range(1, colour.shape[-1])):
            arr = colour[..., 0]  # grey stored as RGB: unambiguous, accept
        else:
            raise DatasetError(
                f"{path}: mask is a colour (RGB) image of shape {arr.shape}. Masks must be single-channel "
                "images of class or instance ids (0 = background). Convert each colour to an id, e.g. "
                "`ids = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)[1].reshape(rgb.shape[:2])` "
                "(then make sure the background colour got id 0), or save the mask as an 8/16-bit grey "
                "or palette ('P' mode) PNG."
            )
    return mask_to_instances(arr, mask_type, source=str(path))


# ---------------------------------------------------------------------------------------------
# Folder datasets
# ---------------------------------------------------------------------------------------------
def _list_by_stem(folder: Path, suffix: str = "") -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith("."):
            continue
        stem = p.stem
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if stem in files:
            raise DatasetError(
                f"{folder}: two files share the stem '{stem}' ({files[stem].name} and {p.name}); "
                "keep only one so images and masks can be paired by name."
            )
        files[stem] = p
    return files


def load_folder(
    root: PathLike,
    *,
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_suffix: str = "",
    color: str = "keep",
    mask_type: str = "auto",
) -> list[LabeledImage]:
    """Load every image/mask pair of ``root/images`` and ``root/masks``.

    Files are paired by stem (``images/a.png`` <-> ``masks/a.tif``); with
    ``mask_suffix="_mask"`` the mask ``a_mask.png`` pairs with image ``a``.
    All images must have the same number of channels.

    Returns:
        list of :class:`LabeledImage`, sorted by stem.  Raises
        :class:`DatasetError` for a missing folder, an empty folder, files
        without a partner, unreadable files, size mismatches, colour masks and
        unexpected mask values.
    """
    root = Path(root)
    img_folder, mask_folder = root / images_dir, root / masks_dir
    for folder, what in ((img_folder, "images"), (mask_folder, "masks")):
        if not folder.is_dir():
            raise DatasetError(
                f"{folder}: folder not found. Expected the layout {root}/{images_dir}/NAME.png and "
                f"{root}/{masks_dir}/NAME.png ({what} are looked for in '{folder.name}/')."
            )
    images = _list_by_stem(img_folder)
    masks = _list_by_stem(mask_folder, mask_suffix)
    exts = ", ".join("*" + e for e in IMAGE_EXTENSIONS)
    if not images:
        raise DatasetError(f"{img_folder}: no images found (looked for {exts}, case-insensitive).")
    if not masks:
        raise DatasetError(
            f"{mask_folder}: no masks found (looked for {exts}"
            + (f" with stems ending in '{mask_suffix}'" if mask_suffix else "")
            + ")."
        )
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images or lonely_masks:
        parts = []
        if lonely_images:
            parts.append(f"images without a mask: {', '.join(lonely_images)}")
        if lonely_masks:
            parts.append(f"masks without an image: {', '.join(lonely_masks)}")
        raise DatasetError(
            f"{root}: unpaired files ({'; '.join(parts)}). Images and masks are paired by file stem"
            + (f" (mask stem = image stem + '{mask_suffix}')" if mask_suffix else "")
            + "; rename or remove the files listed."
        )
    items = []
    for stem in sorted(images):
        image = read_image(images[stem], color=color)
        instances = read_mask(masks[stem], mask_type=mask_type)
        if image.shape[1:] != instances.shape:
            raise DatasetError(
                f"{masks[stem]}: mask is {instances.shape[0]}x{instances.shape[1]} (HxW) but image "
                f"{images[stem].name} is {image.shape[1]}x{image.shape[2]}. Each mask must have exactly its "
                "image's size; re-export it (do not resize masks with interpolation)."
            )
        if items and image.shape[0] != items[0].image.shape[0]:
            raise DatasetError(
                f"{images[stem]}: has {image.shape[0]} channel(s) but {items[0].name} has "
                f"{items[0].image.shape[0]}. Mixed grey and RGB images: pass color='gray' to convert all."
            )
        meta = {"image_path": str(images[stem]), "mask_path": str(masks[stem])}
        items.append(LabeledImage(image=image, instances=instances, name=stem, meta=meta))
    return items


# ---------------------------------------------------------------------------------------------
# ISBI 2012 style stacks
# ---------------------------------------------------------------------------------------------
def read_tiff_stack(path: PathLike) -> np.ndarray:
    """Read a (multi-page) TIFF as (pages, H, W); a single page gives (1, H, W)."""
    arr = read_array(path)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return arr
    raise DatasetError(f"{path}: expected a grey stack (pages, H, W), got shape {arr.shape}.")


def load_isbi_stacks(
    images_path: PathLike, labels_path: PathLike, percentiles=(1.0, 99.0)
) -> list[LabeledImage]:
    """Load an ISBI-2012-style pair of multi-page TIFF stacks.

    Args:
        images_path: TIFF stack (pages, H, W) of grey EM slices.
        labels_path: TIFF stack (pages, H, W), 255 = cell interior, 0 = membrane
            (values {0, 1} are accepted too).

    Returns:
        one :class:`LabeledImage` per slice; foreground = label 255, instances =
        4-connected components of the foreground (membrane is background).
    """
    stack = read_tiff_stack(images_path)
    labels = read_tiff_stack(labels_path)
    if stack.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{labels_path}: has {labels.shape[0]} pages but {images_path} has {stack.shape[0]}; "
            "each image slice needs exactly one label slice."
        )
    if stack.shape[1:] != labels.shape[1:]:
        raise DatasetError(
            f"{labels_path}: slices are {labels.shape[1]}x{labels.shape[2]} (HxW) but {images_path} "
            f"slices are {stack.shape[1]}x{stack.shape[2]}; they must match."
        )
    items = []
    for i in range(stack.shape[0]):
        instances = mask_to_instances(labels[i], "binary", source=f"{labels_path} page {i}")
        image = normalize_percentile(stack[i], *percentiles)
        items.append(LabeledImage(image=image[None], instances=instances, name=f"{Path(images_path).stem}_{i:03d}"))
    return items


# ---------------------------------------------------------------------------------------------
# One entry point for command lines
# ---------------------------------------------------------------------------------------------
def load_sources(
    data: Optional[PathLike] = None,
    *,
    labels: Optional[PathLike] = None,
    n_synthetic: int = 16,
    synthetic_size: int = 256,
    seed: int = 0,
    **folder_kwargs,
) -> list[LabeledImage]:
    """Load a dataset from a CLI-style description.

    * ``data`` is None or ``"synthetic"``: ``n_synthetic`` synthetic images of
      ``synthetic_size`` pixels (seeded by ``seed``);
    * ``data`` is a folder with ``images/`` and ``masks/``: :func:`load_folder`
      (``folder_kwargs`` such as ``color``, ``mask_type`` go there);
    * ``data`` is a TIFF stack and ``labels`` its label stack: :func:`load_isbi_stacks`.

    Returns:
        list of :class:`LabeledImage`.
    """
    if data is None or str(data) == "synthetic":
        from .synthetic import make_synthetic_dataset

        return make_synthetic_dataset(n_synthetic, synthetic_size, seed=seed)
    path = Path(data)
    if labels is not None:
        return load_isbi_stacks(path, labels)
    if path.is_dir():
        return load_folder(path, **folder_kwargs)
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        raise DatasetError(
            f"{path}: a single TIFF stack needs its label stack too (labels=PATH, e.g. train-labels.tif)."
        )
    raise DatasetError(
        f"{path}: not found or not a dataset. Give 'synthetic', a folder containing images/ and masks/, "
        "or an image TIFF stack together with labels=LABEL_STACK."
    )
