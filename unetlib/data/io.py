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
* **Images** are one page: a multi-page TIFF is a stack and is refused (whatever
  its page count), and only a file that says it is RGB (PNG colour type, TIFF
  photometric RGB) gives 3 channels.  NaN/inf pixels are refused.
* **Masks**: single channel.  Either *binary* (values {0, 1} or {0, 255}) or an
  *instance* label image (0 = background, each cell its own positive id).
  Binary masks are turned into instances by 4-connected component labelling,
  so touching cells in a binary mask become one instance: store a background
  gap between them, or use instance masks.  The semantic training mask is
  ``instances > 0`` (classes: 0 background, 1 cell).  ``load_folder`` decides
  for the whole folder and refuses masks that could as well be *class ids*
  (only ids 0-2, or an id covering several separate regions): then say
  ``mask_type="instance"`` or ``mask_type="classes"`` (CLI ``--masks``); class
  masks give one training class per value.
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
from typing import Callable, Optional, Union

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
        instance_classes: None for the usual binary task (every cell is class 1), or, for
            multi-class masks (``mask_type="classes"``), an int64 lookup table: the class id
            of each instance id (index 0 = background, class 0).
    """

    image: np.ndarray
    instances: np.ndarray
    name: str = ""
    meta: dict = field(default_factory=dict)
    instance_classes: Optional[np.ndarray] = None

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
        if self.instance_classes is not None:
            self.instance_classes = np.asarray(self.instance_classes, dtype=np.int64)
            top = int(self.instances.max(initial=0))
            if self.instance_classes.ndim != 1 or self.instance_classes.size <= top:
                raise DatasetError(
                    f"{self.name or 'LabeledImage'}: instance_classes must map every instance id "
                    f"0..{top} to a class, got shape {self.instance_classes.shape}."
                )

    @property
    def mask(self) -> np.ndarray:
        """Semantic mask, int64 (H, W): 1 on cells, 0 on background (class ids for class masks)."""
        return instances_to_classes(self.instances, self.instance_classes)

    @property
    def num_classes(self) -> int:
        """Classes the mask distinguishes, background included (2 for binary masks)."""
        if self.instance_classes is None:
            return 2
        return max(2, int(self.instance_classes.max()) + 1)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return self.instances.shape


def instances_to_classes(instances, instance_classes: Optional[np.ndarray] = None) -> np.ndarray:
    """Class id of every pixel, int64: ``instances > 0`` or ``instance_classes[instances]``."""
    instances = np.asarray(instances)
    if instance_classes is None:
        return (instances > 0).astype(np.int64)
    return np.asarray(instance_classes, dtype=np.int64)[instances]


# ---------------------------------------------------------------------------------------------
# Reading raw arrays
# ---------------------------------------------------------------------------------------------
# What a file's own metadata says its pixels are (the array shape alone cannot tell a 3-page
# grey stack from an RGB picture):
_IMAGE = "image"  # one picture: (H, W) grey, or (H, W, C) colour (PNG colour type / TIFF RGB)
_STACK = "stack"  # several pages: (pages, H, W[, C])
_CHANNELS = "channels"  # one page with several samples per pixel that are not RGB: (H, W, S)


def read_array(path: PathLike, palette: str = "indices") -> np.ndarray:
    """Read a PNG or TIFF file as a numpy array, unchanged.

    Returns (H, W) for single-channel files and (H, W, C) for RGB(A); multi-page
    TIFFs give (pages, H, W[, C]).  Palette PNGs give their palette indices
    (``palette="indices"``, right for label images) or their colours
    (``palette="rgb"``, right for pictures).  Raises DatasetError naming the
    file if it cannot be read.
    """
    return _read_with_layout(path, palette)[0]


def _read_with_layout(path: PathLike, palette: str = "indices") -> tuple[np.ndarray, str]:
    """:func:`read_array` plus the layout the file declares (_IMAGE, _STACK or _CHANNELS)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            arr, layout = _read_tiff(path)
        else:
            from PIL import Image

            layout = _IMAGE  # a PNG is one picture; PIL gives (H, W) or (H, W, C) by colour type
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
    return np.asarray(arr), layout


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    """First series of a TIFF with the pages first and the samples (colour) last.

    The TIFF tags decide, not the shape: only PhotometricInterpretation RGB (or YCbCr)
    with 3+ samples per pixel is a colour picture; several pages are a stack however many
    there are (3 grey pages are not an RGB image); a grey sample plus alpha is grey; other
    samples (e.g. 3 grey samples of unknown meaning) are reported as channels.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        arr = series.asarray()
        axes = series.axes
        photometric = series.keyframe.photometric
        alpha = (tifffile.EXTRASAMPLE.ASSOCALPHA, tifffile.EXTRASAMPLE.UNASSALPHA)
        alpha_samples = sum(1 for e in (series.keyframe.extrasamples or ()) if e in alpha)
    if "Y" not in axes or "X" not in axes or len(axes) != arr.ndim:  # unusual file: trust the shape
        return arr, (_IMAGE if arr.ndim == 2 else _STACK)
    has_samples = "S" in axes
    # Every axis that is not Y, X or S (pages, Z, time, ImageJ channels) becomes one page axis.
    page_axes = [i for i, a in enumerate(axes) if a not in "YXS"]
    order = page_axes + [axes.index("Y"), axes.index("X")] + ([axes.index("S")] if has_samples else [])
    arr = np.transpose(arr, order)
    pages = int(np.prod(arr.shape[: len(page_axes)], dtype=np.int64))
    arr = arr.reshape((pages,) + arr.shape[len(page_axes):])
    layout = _IMAGE
    if has_samples:
        rgb = photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR) and arr.shape[-1] >= 3
        if not rgb and arr.shape[-1] - alpha_samples <= 1:
            arr = arr[..., 0]  # one grey sample plus alpha: the grey is the image
        elif not rgb:
            layout = _CHANNELS
    if pages > 1:
        return arr, _STACK
    return arr[0], layout


def _to_hwc(arr: np.ndarray, path: PathLike, what: str, layout: str = _IMAGE) -> np.ndarray:
    """Bring a single image to (H, W) or (H, W, C); refuse stacks and non-RGB channels."""
    if layout == _STACK:
        raise DatasetError(
            f"{path}: {what} is a stack of {arr.shape[0]} pages (shape {arr.shape}), not a single image. "
            "A single image is one page, grey or RGB(A). For a stack of slices use load_isbi_stacks() "
            "or split it into one file per slice."
        )
    if layout == _CHANNELS:
        raise DatasetError(
            f"{path}: {what} has {arr.shape[-1]} samples per pixel that are not RGB colour (shape "
            f"{arr.shape}). Save it as a grey image (one sample) or an RGB(A) TIFF, or split the channels "
            "into separate files."
        )
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        return arr[..., 0] if arr.shape[-1] == 1 else arr
    raise DatasetError(f"{path}: {what} has {arr.ndim} dimensions {arr.shape}; expected (H, W) or (H, W, C).")


def _check_finite(pixels: np.ndarray, source: str, channel_axis: Optional[int] = None) -> None:
    """Refuse NaN/inf pixels: they would silently turn the normalised image (and the loss) into NaN."""
    if not np.issubdtype(pixels.dtype, np.floating):
        return
    bad = ~np.isfinite(pixels)
    if channel_axis is not None:
        bad = bad.any(axis=channel_axis)  # a pixel is bad if any of its channels is
    n_bad = int(bad.sum())
    if n_bad:
        n_nan = int(np.isnan(pixels).any(axis=channel_axis).sum()) if channel_axis is not None else int(np.isnan(pixels).sum())
        raise DatasetError(
            f"{source}: {n_bad} of {bad.size} pixels are not finite ({n_nan} NaN, {n_bad - n_nan} +/-inf). "
            "Replace them before training or predicting (e.g. np.nan_to_num, or the image's median) and "
            "save the file again, or leave the image out."
        )


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
        path: PNG or TIFF file (one page; a multi-page TIFF is refused as a stack).
        color: ``"keep"`` (RGB -> C = 3, grey -> C = 1) or ``"gray"`` (always C = 1,
            RGB converted with ITU-R 601 luminance weights).
        percentiles: (low, high) percentiles mapped to 0 and 1.

    Raises DatasetError naming the file for stacks, unsupported pixel types and
    NaN/inf pixels.
    """
    if color not in ("keep", "gray"):
        raise ValueError(f"color must be 'keep' or 'gray', got {color!r}.")
    arr, layout = _read_with_layout(path, palette="rgb")
    arr = _to_hwc(arr, path, "image", layout)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DatasetError(f"{path}: unsupported pixel type {arr.dtype}; save it as 8/16-bit PNG or TIFF.")
    _check_finite(arr, str(path), channel_axis=-1 if arr.ndim == 3 else None)
    if arr.ndim == 3:
        arr = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]  # drop alpha
        if color == "gray" and arr.shape[-1] == 3:
            arr = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    chw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return normalize_percentile(chw, *percentiles)


# ---------------------------------------------------------------------------------------------
# Masks: binary, instance ids or class ids
# ---------------------------------------------------------------------------------------------
MASK_TYPES = ("auto", "binary", "instance", "classes")
_MAX_CLASS_ID = 63  # a "class" id above this is almost surely something else (0/255, instances)


def _check_mask_type(mask_type: str) -> str:
    """The canonical name of ``mask_type`` ("instances" is accepted for "instance")."""
    if mask_type == "instances":
        return "instance"
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {', '.join(MASK_TYPES)}, got {mask_type!r}.")
    return mask_type


def _integer_mask(mask: np.ndarray, source: str) -> np.ndarray:
    """Validate a single-channel mask; return it as an integer array (H, W) without negative ids."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatasetError(f"{source}: mask must be 2-D (H, W), got shape {mask.shape}.")
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if np.issubdtype(mask.dtype, np.floating):
        n_bad = int((~np.isfinite(mask)).sum())
        if n_bad:
            raise DatasetError(
                f"{source}: {n_bad} mask pixel(s) are NaN or infinite; masks must hold class or instance "
                "ids (0 = background). Fix or re-export the mask."
            )
        if np.any(np.mod(mask, 1) != 0):
            raise DatasetError(
                f"{source}: mask holds non-integer values (dtype {mask.dtype}); masks must hold class or "
                "instance ids. If it is a probability map, threshold it first, e.g. (mask > 0.5)."
            )
        mask = mask.astype(np.int64)
    elif not np.issubdtype(mask.dtype, np.integer):
        raise DatasetError(f"{source}: unsupported mask type {mask.dtype}; save masks as 8/16-bit PNG or TIFF.")
    if mask.size and mask.min() < 0:
        raise DatasetError(f"{source}: mask has negative values (min {mask.min()}); ids must be >= 0.")
    return mask


def _binary_kind(values: np.ndarray) -> Optional[str]:
    """"0/1" or "0/255" for a binary mask's distinct values, None otherwise."""
    vals = set(values.tolist())
    if vals <= {0, 1}:
        return "0/1"
    if vals <= {0, 255}:
        return "0/255"
    return None


def _split_id(mask: np.ndarray, values: np.ndarray) -> Optional[str]:
    """Why ``mask`` looks like class ids rather than instance ids, or None.

    An instance id marks one cell, so it is one connected region; a class id usually covers
    several separate regions. Only checked for a few distinct ids (classes are few)."""
    positive = values[values > 0]
    if positive.size == 0 or positive.size > 64:
        return None
    index = np.searchsorted(positive, mask) + 1  # 1..n for the positive ids (consecutive)
    index[mask == 0] = 0
    eight = np.ones((3, 3), dtype=bool)  # lenient: a cell touching itself diagonally is one region
    for i, box in enumerate(ndimage.find_objects(index)):
        if box is not None:
            n_regions = ndimage.label(index[box] == i + 1, structure=eight)[1]
            if n_regions > 1:
                return f"id {positive[i]} covers {n_regions} separate regions, as class ids do (an instance id marks one cell)"
    return None


def _ambiguous_error(source: str, values: np.ndarray, reason: str) -> DatasetError:
    return DatasetError(
        f"{source}: mask values {_show_values(values)} could be class ids or instance ids ({reason}). "
        "Say how to read the masks: --masks classes (each value is a class, 0 = background) or "
        "--masks instances (each value is one cell; trained as cell vs background); in Python "
        "mask_type='classes' or mask_type='instance'."
    )


def _classes_to_instances(mask: np.ndarray, values: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Class-id mask -> (instances, instance_classes): the 4-connected regions of each class
    become instances (for the weight map), and the lookup table remembers their class."""
    if values.size and values[-1] > _MAX_CLASS_ID:
        raise DatasetError(
            f"{source}: class id {values[-1]} is too large for a class mask (values {_show_values(values)}); "
            f"class masks hold small ids 0, 1, 2, ... (at most {_MAX_CLASS_ID}). A 0/255 mask is binary "
            "(--masks binary); one id per cell is an instance mask (--masks instances)."
        )
    instances = np.zeros(mask.shape, dtype=np.int32)
    lookup = [0]
    for c in values[values > 0].tolist():
        regions, n = ndimage.label(mask == c, structure=_FOUR_CONNECTED)
        instances[regions > 0] = regions[regions > 0] + (len(lookup) - 1)
        lookup += [c] * n
    return instances, np.asarray(lookup, dtype=np.int64)


def _interpret_masks(masks: list, mask_type: str, where: str, folder_rules: bool = True
                     ) -> tuple[list, str]:
    """Decide together how a set of masks is read and convert them.

    Args:
        masks: list of (source name, integer mask (H, W)) from :func:`_integer_mask`.
        mask_type: "auto", "binary", "instance" or "classes".
        where: the folder, for the summary.
        folder_rules: apply the "could be class ids" refusals below (a training folder);
            off for a single mask read on its own (:func:`mask_to_instances`).

    Returns:
        ``(pairs, summary)``: one ``(instances, instance_classes or None)`` per mask, and a
        one-line description such as ``"3 binary 0/255, 2 instance labels (3-7 ids)"``.

    In "auto" mode a mask set is refused as ambiguous when it could be class ids as well as
    instance ids: no mask uses an id above 2 ({0, 1, 2} = 2 cells or 2 classes?), or one id
    covers several separate regions.
    """
    mask_type = _check_mask_type(mask_type)
    infos = []
    for source, mask in masks:
        values = np.unique(mask)
        infos.append((source, mask, values, _binary_kind(values)))
    labelled = [(s, m, v) for s, m, v, kind in infos if kind is None]
    if mask_type == "auto" and labelled:
        for source, mask, values in labelled:
            if mask.dtype == np.uint8 and 255 in values:
                raise DatasetError(
                    f"{source}: ambiguous mask values {_show_values(values)}. Expected binary {{0, 1}} / "
                    "{0, 255} or instance ids (0 = background, 1, 2, ... one per cell). 255 together with "
                    "other values usually means an anti-aliased or greyscale-saved binary mask: threshold "
                    "it (mask > 127). If it really is an instance label image, pass mask_type='instance'."
                )
        top = max(int(v[-1]) for _, _, v in labelled)
        if folder_rules and top <= 2:
            source, _, values = labelled[0]
            raise _ambiguous_error(source, values, f"no mask {'in ' + where + ' ' if where else ''}"
                                                   f"uses an id above {top}")
        for source, mask, values in labelled if folder_rules else []:
            reason = _split_id(mask, values)
            if reason:
                raise _ambiguous_error(source, values, reason)
    pairs, counts = [], {}
    for source, mask, values, kind in infos:
        if mask_type == "classes":
            pairs.append(_classes_to_instances(mask, values, source))
            key = "class ids"
        elif mask_type == "binary" or (mask_type == "auto" and kind is not None):
            if kind is None:
                raise DatasetError(
                    f"{source}: expected a binary mask with values {{0, 1}} or {{0, 255}}, found "
                    f"{_show_values(values)}. If the edges are anti-aliased or JPEG-compressed, threshold "
                    "it (e.g. mask > 127) and save as PNG; if each cell has its own id, load it with "
                    "mask_type='instance'."
                )
            instances, _ = ndimage.label(mask > 0, structure=_FOUR_CONNECTED)
            pairs.append((instances.astype(np.int32), None))
            key = f"binary {kind}"
        else:
            if values.size and values[-1] > np.iinfo(np.int32).max:
                raise DatasetError(f"{source}: instance id {values[-1]} does not fit in int32; relabel the ids.")
            pairs.append((mask.astype(np.int32), None))
            key = "instance labels"
        counts.setdefault(key, []).append(values)
    parts = []
    for key, value_sets in counts.items():
        if key == "instance labels":
            ids = [int((v > 0).sum()) for v in value_sets]
            span = str(ids[0]) if min(ids) == max(ids) else f"{min(ids)}-{max(ids)}"
            parts.append(f"{len(ids)} instance labels ({span} ids each)")
        elif key == "class ids":
            classes = np.unique(np.concatenate(value_sets))
            parts.append(f"{len(value_sets)} class masks (classes {_show_values(classes)})")
        else:
            parts.append(f"{len(value_sets)} {key}")
    return pairs, ", ".join(parts)


def mask_to_instances(mask: np.ndarray, mask_type: str = "auto", source: str = "mask") -> np.ndarray:
    """Validate a single-channel mask and return instance ids, int32 (H, W).

    Args:
        mask: integer (or integral float/bool) array (H, W).
        mask_type: ``"binary"`` (values {0, 1} or {0, 255}; cells = 4-connected
            components), ``"instance"`` (0 = background, each cell its own id) or
            ``"auto"`` (binary if the values are {0, 1} or {0, 255}, instances
            otherwise; an 8-bit mask mixing 255 with other values is refused as
            ambiguous). :func:`load_folder` decides "auto" for a whole folder and
            also refuses masks that may be class ids. For class masks use
            ``load_folder(..., mask_type="classes")``.
        source: name used in error messages (file name).
    """
    if _check_mask_type(mask_type) == "classes":
        raise ValueError("mask_to_instances() returns instance ids; load class masks with "
                         "load_folder(..., mask_type='classes').")
    mask = _integer_mask(mask, source)
    pairs, _ = _interpret_masks([(source, mask)], mask_type, where="", folder_rules=False)
    return pairs[0][0]


def _show_values(values: np.ndarray, limit: int = 8) -> str:
    vals = values.tolist()
    text = ", ".join(str(v) for v in vals[:limit])
    return "{" + text + (f", ... ({len(vals)} distinct values)" if len(vals) > limit else "") + "}"


def _read_mask_array(path: PathLike) -> np.ndarray:
    """A mask file as a validated integer array (H, W); grey saved as RGB is accepted."""
    arr, layout = _read_with_layout(path)
    arr = _to_hwc(arr, path, "mask", layout)
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
    return _integer_mask(arr, str(path))


def read_mask(path: PathLike, mask_type: str = "auto") -> np.ndarray:
    """Read and validate a mask file; returns instance ids, int32 (H, W).

    RGB(A) masks are refused unless all colour channels are identical (a grey
    mask saved as RGB), because colours are not class ids; multi-page TIFFs are
    refused as stacks. ``mask_type`` as in :func:`mask_to_instances`.
    """
    return mask_to_instances(_read_mask_array(path), mask_type, source=str(path))


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
    log: Optional[Callable[[str], None]] = None,
) -> list[LabeledImage]:
    """Load every image/mask pair of ``root/images`` and ``root/masks``.

    Files are paired by stem (``images/a.png`` <-> ``masks/a.tif``); with
    ``mask_suffix="_mask"`` the mask ``a_mask.png`` pairs with image ``a``.
    All images must have the same number of channels. ``mask_type`` says how the
    masks are read: "auto" (binary or instance ids, decided for the whole folder;
    refuses masks that may be class ids), "binary", "instance" or "classes" (class
    ids 0, 1, 2, ...; the items get ``instance_classes``). ``log`` (e.g. ``print``)
    gets one line saying how the masks were read.

    Returns:
        list of :class:`LabeledImage`, sorted by stem.  Raises
        :class:`DatasetError` for a missing folder, an empty folder, files
        without a partner, unreadable files, size mismatches, colour masks and
        unexpected or ambiguous mask values.
    """
    mask_type = _check_mask_type(mask_type)
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
    stems = sorted(images)
    pixels, raw_masks = [], []
    for stem in stems:
        image = read_image(images[stem], color=color)
        mask = _read_mask_array(masks[stem])
        if image.shape[1:] != mask.shape:
            raise DatasetError(
                f"{masks[stem]}: mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but image "
                f"{images[stem].name} is {image.shape[1]}x{image.shape[2]}. Each mask must have exactly its "
                "image's size; re-export it (do not resize masks with interpolation)."
            )
        if pixels and image.shape[0] != pixels[0].shape[0]:
            raise DatasetError(
                f"{images[stem]}: has {image.shape[0]} channel(s) but {stems[0]} has "
                f"{pixels[0].shape[0]}. Mixed grey and RGB images: pass color='gray' to convert all."
            )
        pixels.append(image)
        raw_masks.append((str(masks[stem]), mask))
    # All masks together: whether {0, 1, 2} means two cells or two classes is a folder-wide question.
    pairs, summary = _interpret_masks(raw_masks, mask_type, where=str(mask_folder))
    if log is not None:
        log(f"masks: {mask_folder} read as {summary}")
    items = []
    for stem, image, (instances, instance_classes) in zip(stems, pixels, pairs):
        meta = {"image_path": str(images[stem]), "mask_path": str(masks[stem])}
        items.append(LabeledImage(image=image, instances=instances, name=stem, meta=meta,
                                  instance_classes=instance_classes))
    return items

# ---------------------------------------------------------------------------------------------
# ISBI 2012 style stacks
# ---------------------------------------------------------------------------------------------
def read_tiff_stack(path: PathLike) -> np.ndarray:
    """Read a (multi-page) TIFF as (pages, H, W); a single page gives (1, H, W)."""
    arr, layout = _read_with_layout(path)
    if arr.ndim == 2 and layout == _IMAGE:
        return arr[None]
    if arr.ndim == 3 and layout == _STACK:
        return arr
    raise DatasetError(
        f"{path}: expected a grey stack (pages, H, W), got shape {arr.shape} (colour or several samples per "
        "pixel). Note: tifffile stores a 3- or 4-page array written without photometric='minisblack' as "
        "one RGB(A) page; rewrite it with tifffile.imwrite(path, stack, photometric='minisblack')."
    )


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
    _check_finite(stack, str(images_path))
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
