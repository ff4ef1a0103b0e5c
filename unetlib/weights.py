"""The U-Net paper's pixel weight map (Ronneberger et al. 2015, eq. 2).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

* ``w_c`` balances the class frequencies (background vs. cell).
* ``d1`` / ``d2`` are the distances from pixel ``x`` to the nearest and the
  second-nearest cell.  The second term is large only where two cells come
  close, i.e. on the thin background gaps that separate touching cells.  Those
  few pixels decide whether two cells are predicted as one blob or as two, so
  the loss is told to care about them much more.

Design choices (stated, because papers leave them open):

* The border term is applied on **background pixels only**, as in the paper's
  Fig. 3d.  Inside a cell ``d1`` is 0 and the term would light up every cell
  edge that faces a neighbour; the gap pixels are the ones that matter.
* ``d_i`` is the Euclidean distance to the nearest pixel of cell ``i``
  (``scipy.ndimage.distance_transform_edt``), computed per cell inside the
  cell's bounding box enlarged by a margin.  Beyond the margin the border term
  is below ``tolerance`` anyway, so the map is exact to ``tolerance`` while the
  cost grows with the number of cells, not with (cells x image area).
* ``"balanced"`` class weights are computed per image:
  ``w_c = n_pixels / (n_present_classes * n_pixels_of_class)``, so ``w_c``
  averages to 1 over the image.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import numpy as np
import torch
from scipy import ndimage

__all__ = ["weight_map", "border_distances", "class_balance_weights", "balanced_class_weights"]

ClassWeights = Union[str, None, Mapping[int, float]]


def _as_numpy_labels(instance_labels) -> np.ndarray:
    if isinstance(instance_labels, torch.Tensor):
        arr = instance_labels.detach().cpu().numpy()
    else:
        arr = np.asarray(instance_labels)
    if arr.dtype == bool:
        arr = arr.astype(np.int32)
    if not (np.issubdtype(arr.dtype, np.integer)):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(
                f"instance_labels must hold integer instance ids (0 = background), got dtype "
                f"{arr.dtype} with non-integer values. Pass a label image, e.g. from "
                "scipy.ndimage.label(mask > 0)[0]."
            )
    if arr.size and arr.min() < 0:
        raise ValueError(
            f"instance_labels must be >= 0 (0 = background, 1..K = cells); found minimum {arr.min()}."
        )
    return arr


def border_distances(
    instance_labels, max_distance: Optional[float] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest cell, d1 and d2.

    Args:
        instance_labels: int array (H, W); 0 = background, each cell its own id.
        max_distance: only distances up to this value are computed exactly
            (per-cell bounding box plus this margin); farther cells count as
            ``inf``.  ``None`` computes every cell over the whole image.

    Returns:
        ``(d1, d2)``, float32 arrays (H, W).  Inside cell ``i`` d1 is 0.  With
        fewer than two cells (in range) d2 is ``inf``.
    """
    labels = _as_numpy_labels(instance_labels)
    if labels.ndim != 2:
        raise ValueError(f"instance_labels must be 2-D (H, W), got shape {labels.shape}.")
    h, w = labels.shape
    d1 = np.full((h, w), np.inf, dtype=np.float32)
    d2 = np.full((h, w), np.inf, dtype=np.float32)
    boxes = ndimage.find_objects(labels)
    margin = None if max_distance is None else int(math.ceil(max_distance)) + 1
    for cell_index, box in enumerate(boxes, start=1):
        if box is None:  # id not used (labels need not be consecutive)
            continue
        if margin is None:
            ys, xs = slice(0, h), slice(0, w)
        else:
            ys = slice(max(box[0].start - margin, 0), min(box[0].stop + margin, h))
            xs = slice(max(box[1].start - margin, 0), min(box[1].stop + margin, w))
        # The whole cell lies inside the window, so distances to it are exact there.
        dist = ndimage.distance_transform_edt(labels[ys, xs] != cell_index).astype(np.float32)
        win_d1 = d1[ys, xs]
        win_d2 = d2[ys, xs]
        # Keep the two smallest values seen so far (order matters: d2 uses the old d1).
        np.minimum(win_d2, np.maximum(win_d1, dist), out=win_d2)
        np.minimum(win_d1, dist, out=win_d1)
    return d1, d2


def balanced_class_weights(foreground) -> dict[int, float]:
    """Inverse-frequency class weights ``{0: w_background, 1: w_foreground}`` of one image.

    ``w_c = n_pixels / (n_present_classes * n_pixels_of_class_c)``: each present
    class gets the same total weight and the weights average to 1 per pixel.
    A class with no pixels gets 0 (it never occurs, so its weight is unused).
    """
    fg = np.asarray(foreground, dtype=bool)
    n_fg = int(fg.sum())
    n_bg = fg.size - n_fg
    present = (n_fg > 0) + (n_bg > 0)
    return {
        0: fg.size / (present * n_bg) if n_bg else 0.0,
        1: fg.size / (present * n_fg) if n_fg else 0.0,
    }


def class_balance_weights(foreground: np.ndarray, class_weights: ClassWeights = "balanced") -> np.ndarray:
    """The class-balancing term w_c(x), float32 (H, W).

    Args:
        foreground: bool array (H, W), True on cell pixels.
        class_weights: ``"balanced"`` (inverse class frequency in this image,
            mean 1), ``None`` (all ones) or a mapping ``{0: w_background, 1: w_foreground}``.
    """
    fg = np.asarray(foreground, dtype=bool)
    if class_weights is None:
        return np.ones(fg.shape, dtype=np.float32)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f"class_weights must be 'balanced', None or a dict {{0: w_bg, 1: w_fg}}, got {class_weights!r}."
            )
        balanced = balanced_class_weights(fg)
        w_bg, w_fg = balanced[0], balanced[1]
    elif isinstance(class_weights, Mapping):
        missing = {0, 1} - set(class_weights)
        if missing:
            raise ValueError(
                f"class_weights dict needs keys 0 (background) and 1 (foreground); missing {sorted(missing)}."
            )
        w_bg, w_fg = float(class_weights[0]), float(class_weights[1])
    else:
        raise TypeError(
            "class_weights must be 'balanced', None or a dict {0: w_bg, 1: w_fg}, "
            f"got {type(class_weights).__name__}."
        )
    return np.where(fg, np.float32(w_fg), np.float32(w_bg)).astype(np.float32)


def weight_map(
    instance_labels,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: ClassWeights = "balanced",
    tolerance: float = 1e-6,
):
    """The paper's weight map w(x) for one image or a batch.

    Args:
        instance_labels: integer instance ids, (H, W) or (N, H, W), numpy array
            or torch tensor; 0 = background, each cell its own id.  A binary mask
            works too but then touching cells are one instance and get no border
            weight (use ``scipy.ndimage.label`` on cells that do not touch).
        w0: height of the border term (paper: 10).
        sigma: width of the border term in pixels (paper: about 5).
        class_weights: ``"balanced"``, ``None`` (w_c = 1) or ``{0: w_bg, 1: w_fg}``.
        tolerance: cells farther away than where the border term drops below
            this value are skipped (speed); the map is exact up to ``tolerance``.

    Returns:
        float32 weights with the input's shape; a numpy array for numpy input,
        a tensor on the input's device for tensor input.  The border term is
        added on background pixels only.
    """
    if w0 < 0 or sigma <= 0:
        raise ValueError(f"need w0 >= 0 and sigma > 0, got w0={w0}, sigma={sigma}.")
    is_tensor = isinstance(instance_labels, torch.Tensor)
    labels = _as_numpy_labels(instance_labels)
    if labels.ndim == 3:
        out = np.stack([weight_map(x, w0, sigma, class_weights, tolerance) for x in labels])
    elif labels.ndim == 2:
        out = _weight_map_2d(labels, w0, sigma, class_weights, tolerance)
    else:
        raise ValueError(
            f"instance_labels must be (H, W) or (N, H, W), got shape {labels.shape}. "
            "Squeeze a channel dimension of size 1 first."
        )
    if is_tensor:
        return torch.from_numpy(out).to(instance_labels.device)
    return out


def _weight_map_2d(labels, w0, sigma, class_weights, tolerance) -> np.ndarray:
    foreground = labels > 0
    weights = class_balance_weights(foreground, class_weights)
    if w0 == 0:
        return weights
    # w0 * exp(-(d1+d2)^2 / 2 sigma^2) < tolerance once d1 + d2 > cutoff.  If the true d2 is
    # beyond the cutoff the term is negligible; otherwise both cells lie within the cutoff and
    # their distances are computed exactly inside the enlarged bounding boxes.
    cutoff = sigma * math.sqrt(2.0 * math.log(max(w0 / tolerance, 1.0 + 1e-12)))
    d1, d2 = border_distances(labels, max_distance=cutoff)
    background = ~foreground
    total = d1[background] + d2[background]  # inf where fewer than two cells are in range
    weights[background] += (w0 * np.exp(-(total**2) / (2.0 * sigma**2))).astype(np.float32)
    return weights
