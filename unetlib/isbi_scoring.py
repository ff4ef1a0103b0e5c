"""ISBI 2012 challenge scoring: pixel error and Rand error over a threshold sweep.

The challenge (Arganda-Carreras et al., "Crowdsourcing the creation of image segmentation
algorithms for connectomics", Frontiers in Neuroanatomy 9:142, 2015) did not score a
segmentation but a **probability map**, and reported each error at the threshold that suits
the map best.  Its Fiji evaluation code (``trainableSegmentation.metrics``) works like this,
and so does :func:`isbi_scores`:

* the map holds, per pixel, the probability of *cell interior* (1 = surely cell, 0 = surely
  membrane), like the labels (255 = cell); a membrane map is turned round with ``1 - p``;
* for each threshold t (default 0.0, 0.1, ..., 1.0) the prediction is ``p > t`` (= cell), and
  the cells of both prediction and label are their 4-connected components;
* **pixel error** = 1 - F-score of the cell pixels (precision TP/(TP+FP), recall TP/(TP+FN)),
  the challenge's "1 - maximal F-score of pixel similarity";
* **Rand error** = 1 - Rand F-score, foreground-restricted: only pixels that are cell in the
  label are scored, pairs inside one true cell against pairs inside one predicted cell, pixels
  predicted as membrane belong to no pair (exactly :func:`unetlib.metrics.rand_error`);
* each error is the minimum over the thresholds (ties: the lowest threshold);
* a stack (N, H, W) is scored as a whole, as the challenge scored its 30-slice test stack:
  the counts (pixels, pairs) of all slices are summed before the F-score is taken, one
  threshold for the whole stack, and pairs never span two slices.

The challenge's text also describes the pixel error as "the squared Euclidean distance between
the original and the result labels", i.e. the fraction of wrong pixels for binary maps.  That
variant (what :func:`unetlib.metrics.pixel_error` computes for one segmentation) is returned too,
as ``pixel_error_hamming``, minimised over the same thresholds.  Say which one you quote.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .metrics import _contingency, _numpy, _pairs, confusion_matrix, connected_components

__all__ = ["DEFAULT_THRESHOLDS", "isbi_scores", "rand_pair_counts"]

#: The challenge's sweep: 0.0 to 1.0 in steps of 0.1.
DEFAULT_THRESHOLDS = tuple(k / 10 for k in range(11))


def rand_pair_counts(pred_segments, true_segments) -> tuple[float, float, float]:
    """Pair counts behind the foreground-restricted Rand F-score, for one (H, W) slice.

    Args:
        pred_segments: int (H, W) predicted cell ids, 0 = membrane (in no pair).
        true_segments: int (H, W) true cell ids, 0 = membrane (not scored).

    Returns:
        (both, true_pairs, pred_pairs), floats: unordered pairs of distinct scored pixels
        that are in one cell in both / in the truth / in the prediction.  Rand F-score
        = 2 * both / (true_pairs + pred_pairs); summing the counts over slices scores a stack.
    """
    p, t = _numpy(pred_segments), _numpy(true_segments)
    if p.shape != t.shape:
        raise ValueError(f"segmentations must have the same shape, got {p.shape} and {t.shape}.")
    scored = t != 0
    t_fg, p_fg = t[scored], p[scored]
    in_pred = p_fg != 0
    # The same counting as unetlib.metrics.rand_error, kept as counts so that slices can be summed.
    true_pairs = _pairs(np.unique(t_fg, return_counts=True)[1])
    pred_pairs = _pairs(np.unique(p_fg[in_pred], return_counts=True)[1])
    both = _pairs(_contingency(t_fg[in_pred], p_fg[in_pred]))
    return both, true_pairs, pred_pairs


def _as_stack(x, name: str) -> np.ndarray:
    arr = _numpy(x)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (H, W) or a stack (N, H, W), got shape {arr.shape}.")
    return arr


def _thresholds(thresholds: Sequence[float]) -> np.ndarray:
    values = np.unique(np.asarray(list(thresholds), dtype=np.float64))  # sorted: ties -> lowest
    if values.size == 0:
        raise ValueError("thresholds is empty; the challenge used 0.0, 0.1, ..., 1.0.")
    if not np.all(np.isfinite(values)) or values[0] < 0 or values[-1] > 1:
        raise ValueError(f"thresholds must lie in [0, 1] (they cut a probability map), got {values.tolist()}.")
    return values


def isbi_scores(prob_map, label, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, *,
                prob_of: str = "cell") -> dict:
    """Best pixel error and Rand error of a probability map over a threshold sweep (ISBI 2012).

    Args:
        prob_map: float (H, W) or stack (N, H, W), probabilities in [0, 1] (numpy or torch),
            e.g. ``softmax(logits)[1]`` of a two-class U-Net.
        label: (H, W) or (N, H, W), > 0 = cell interior (ISBI labels: 255), 0 = membrane.
            The true cells are its 4-connected components.
        thresholds: the sweep, values in [0, 1]; prediction = ``p > t``.
        prob_of: ``"cell"`` if ``prob_map`` is the probability of cell interior (the
            challenge's convention), ``"membrane"`` if it is the probability of membrane.

    Returns:
        JSON-ready dict of floats: ``pixel_error`` (1 - best pixel F-score) and
        ``pixel_error_threshold``; ``rand_error`` (1 - best Rand F-score) and
        ``rand_error_threshold``; ``pixel_error_hamming`` (fewest wrong pixels, as a
        fraction) and ``pixel_error_hamming_threshold``; ``thresholds`` (the sorted sweep);
        ``per_threshold``: {"pixel_error", "rand_error", "pixel_error_hamming"} lists, one
        value per threshold.  See the module docstring for the exact convention.
    """
    if prob_of not in ("cell", "membrane"):
        raise ValueError(f"prob_of must be 'cell' or 'membrane', got {prob_of!r}.")
    prob = _as_stack(prob_map, "prob_map").astype(np.float64)
    truth = _as_stack(label, "label")
    if prob.shape != truth.shape:
        raise ValueError(
            f"prob_map has shape {prob.shape} but label has {truth.shape} (as (N, H, W)); with valid "
            "padding predict the whole image (overlap-tile) or crop the label to the output region."
        )
    if not np.all(np.isfinite(prob)) or prob.min(initial=0) < 0 or prob.max(initial=0) > 1:
        raise ValueError(
            f"prob_map must hold probabilities in [0, 1], got values in [{prob.min():.3g}, {prob.max():.3g}]. "
            "Logits? Apply softmax over the classes (or a sigmoid) first."
        )
    if prob_of == "membrane":
        prob = 1.0 - prob
    truth_cell = (truth > 0).astype(np.int64)
    if not truth_cell.any():
        raise ValueError("label has no cell pixels (all 0), so the F-scores are undefined; ISBI labels use 255 = cell.")
    true_segments = [connected_components(t, connectivity=1) for t in truth_cell]
    sweep = _thresholds(thresholds)

    curves = {"pixel_error": [], "rand_error": [], "pixel_error_hamming": []}
    for t in sweep:
        pred_cell = (prob > t).astype(np.int64)
        cm = confusion_matrix(pred_cell, truth_cell, num_classes=2)  # [true, predicted]
        tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
        curves["pixel_error"].append(1.0 - 2.0 * tp / (2 * tp + fp + fn))  # tp + fn > 0: label has cells
        curves["pixel_error_hamming"].append(float(fp + fn) / truth_cell.size)
        both = true_pairs = pred_pairs = 0.0
        for pred_slice, true_slice in zip(pred_cell, true_segments):
            b, tr, pr = rand_pair_counts(connected_components(pred_slice, connectivity=1), true_slice)
            both, true_pairs, pred_pairs = both + b, true_pairs + tr, pred_pairs + pr
        # No pair anywhere (every true cell a single pixel, nothing merged): nothing to get wrong.
        curves["rand_error"].append(0.0 if true_pairs + pred_pairs == 0 else
                                    1.0 - 2.0 * both / (true_pairs + pred_pairs))

    result = {}
    for key, values in curves.items():
        best = int(np.argmin(values))  # first minimum = lowest threshold
        result[key] = float(values[best])
        result[f"{key}_threshold"] = float(sweep[best])
    result["thresholds"] = [float(t) for t in sweep]
    result["per_threshold"] = {key: [float(v) for v in values] for key, values in curves.items()}
    return result
