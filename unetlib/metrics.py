"""Segmentation metrics: IoU, Dice, pixel error, Rand error and object (instance) matching.

Inputs may be numpy arrays or torch tensors:

* **predictions**: integer class ids (N, H, W), (H, W) or (N, 1, H, W); or
  float **logits** (N, C, H, W) - C == 1 is thresholded at 0 (sigmoid 0.5),
  C >= 2 takes the argmax.
* **targets**: integer class ids (N, H, W), (H, W) or (N, 1, H, W).

Empty-class rule (so absent classes cannot inflate a mean): a class that is
absent from both prediction and target has IoU/Dice **NaN** and is left out
of the mean (``nanmean``); a class absent from the target but predicted scores
0; IoU and Dice never exceed 1.

Rand error (``rand_error``): the ISBI 2012 style *foreground-restricted Rand
error*, ``1 - F``, where F is the Rand F-score of pixel pairs
(Arganda-Carreras et al. 2015):

* only pixels that are foreground in the **ground truth** (label != 0) are
  used (so the membranes/gaps themselves are not scored, only whether cells
  are merged or split);
* a pair of such pixels is a *true* pair if both lie in the same ground-truth
  cell and a *predicted* pair if both lie in the same predicted segment;
  pixels the prediction calls background (0) are singletons (in no pair);
* precision = (true and predicted pairs) / predicted pairs, recall = (true and
  predicted pairs) / true pairs, F = 2PR / (P + R).

Pairs are unordered pairs of distinct pixels (``n*(n-1)/2``); the CREMI /
scikit-image ``adapted_rand_error`` conventions differ slightly in how they
count self-pairs and predicted background, which matters only for tiny
segments.  The challenge reported the minimum of this error over thresholds
of the probability map; here it is evaluated for the given segmentation.
``rand_index`` gives the plain Rand index over all pixels (background is a
segment), whose error ``1 - RI`` is the classic Rand error.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "to_label_array",
    "confusion_matrix",
    "iou_per_class",
    "dice_per_class",
    "mean_iou",
    "mean_dice",
    "pixel_error",
    "rand_index",
    "rand_error",
    "connected_components",
    "match_instances",
    "segmentation_metrics",
]

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def to_label_array(x, name: str = "input") -> np.ndarray:
    """Class-id array (N, H, W) int64 from ids or logits.

    Accepts integer/bool (H, W), (N, H, W), (N, 1, H, W), or float logits
    (N, C, H, W) (C == 1: ``logit > 0``; C >= 2: argmax over C).
    """
    arr = _numpy(x)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.ndim != 4:
            raise TypeError(
                f"{name}: float arrays are read as logits (N, C, H, W), got shape {arr.shape}. Pass class ids "
                "as an integer array (e.g. logits.argmax(1), or (probs > 0.5).long() for one channel)."
            )
        arr = (arr[:, 0] > 0).astype(np.int64) if arr.shape[1] == 1 else arr.argmax(1)
        return arr
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected integer class ids or float logits, got dtype {arr.dtype}.")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 4:
        if arr.shape[1] != 1:
            raise ValueError(
                f"{name}: integer arrays must be (N, H, W) or (N, 1, H, W) class ids, got shape {arr.shape}. "
                "One-hot masks can be converted with argmax over the channel axis."
            )
        arr = arr[:, 0]
    elif arr.ndim != 3:
        raise ValueError(f"{name}: expected (H, W), (N, H, W) or (N, 1, H, W), got shape {arr.shape}.")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name}: class ids must be >= 0, found {arr.min()}.")
    return arr.astype(np.int64, copy=False)


def _pair(pred, target):
    p = to_label_array(pred, "pred")
    t = to_label_array(target, "target")
    if p.shape != t.shape:
        raise ValueError(
            f"pred has shape {p.shape} but target has {t.shape} (as (N, H, W)). With valid padding crop the "
            "target to the network's output region (centre crop) before comparing."
        )
    return p, t


def _num_classes(p, t, num_classes: Optional[int]) -> int:
    found = int(max(p.max(initial=0), t.max(initial=0))) + 1
    if num_classes is None:
        return max(found, 2)
    if found > num_classes:
        raise ValueError(f"found class id {found - 1} but num_classes={num_classes}.")
    return num_classes


def confusion_matrix(pred, target, num_classes: Optional[int] = None) -> np.ndarray:
    """Confusion matrix, int64 (K, K); entry [t, p] counts pixels of true class t predicted as p."""
    p, t = _pair(pred, target)
    k = _num_classes(p, t, num_classes)
    return np.bincount(t.ravel() * k + p.ravel(), minlength=k * k).reshape(k, k)


def _per_class(cm: np.ndarray, kind: str) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    denom = tp + fp + fn if kind == "iou" else 2 * tp + fp + fn
    num = tp if kind == "iou" else 2 * tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, num / np.maximum(denom, 1), np.nan)


def iou_per_class(pred, target, num_classes: Optional[int] = None) -> np.ndarray:
    """IoU per class, float64 (K,): TP / (TP + FP + FN); NaN for a class absent from both."""
    return _per_class(confusion_matrix(pred, target, num_classes), "iou")


def dice_per_class(pred, target, num_classes: Optional[int] = None) -> np.ndarray:
    """Dice per class, float64 (K,): 2TP / (2TP + FP + FN) <= 1; NaN for a class absent from both."""
    return _per_class(confusion_matrix(pred, target, num_classes), "dice")


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def mean_iou(pred, target, num_classes: Optional[int] = None, include_background: bool = True) -> float:
    """Mean IoU over classes present in prediction or target (NaN classes excluded)."""
    v = iou_per_class(pred, target, num_classes)
    return _nanmean(v if include_background else v[1:])


def mean_dice(pred, target, num_classes: Optional[int] = None, include_background: bool = True) -> float:
    """Mean Dice over classes present in prediction or target (NaN classes excluded)."""
    v = dice_per_class(pred, target, num_classes)
    return _nanmean(v if include_background else v[1:])


def pixel_error(pred, target) -> float:
    """Fraction of pixels whose predicted class differs from the target (ISBI pixel error)."""
    p, t = _pair(pred, target)
    return float(np.mean(p != t)) if p.size else float("nan")


# ---------------------------------------------------------------------------------------------
# Rand
# ---------------------------------------------------------------------------------------------
def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float(np.sum(counts * (counts - 1) / 2))


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Counts of the distinct (a, b) label pairs (non-zero cells of the contingency table)."""
    a = a.ravel().astype(np.int64)
    b = b.ravel().astype(np.int64)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, b_idx = np.unique(b, return_inverse=True)
    key = a * (int(b_idx.max()) + 1) + b_idx.ravel()
    _, counts = np.unique(key, return_counts=True)
    return counts


def rand_index(seg_a, seg_b) -> float:
    """Plain Rand index of two label images of equal shape: fraction of pixel pairs on which they agree.

    All pixels count, label 0 is an ordinary segment.  ``1 - rand_index`` is the classic Rand error.
    """
    a, b = _numpy(seg_a), _numpy(seg_b)
    if a.shape != b.shape:
        raise ValueError(f"segmentations must have the same shape, got {a.shape} and {b.shape}.")
    n = a.size
    total = n * (n - 1) / 2
    if total == 0:
        return 1.0
    same_a = _pairs(np.unique(a, return_counts=True)[1])
    same_b = _pairs(np.unique(b, return_counts=True)[1])
    same_both = _pairs(_contingency(a, b))
    # agreements = pairs together in both + pairs apart in both
    return float((total - same_a - same_b + 2 * same_both) / total)


def rand_error(pred_segments, true_segments) -> float:
    """Foreground-restricted Rand error (ISBI 2012 style), ``1 - Rand F-score``; float in [0, 1].

    Args:
        pred_segments: int (H, W) predicted segment ids (0 = background; e.g.
            connected components of the predicted foreground).
        true_segments: int (H, W) ground-truth instance ids (0 = background /
            membrane, not scored).

    Returns:
        NaN if the ground truth has no foreground; 0.0 if neither segmentation
        puts any two scored pixels together.  See the module docstring.
    """
    p, t = _numpy(pred_segments), _numpy(true_segments)
    if p.shape != t.shape:
        raise ValueError(f"segmentations must have the same shape, got {p.shape} and {t.shape}.")
    scored = t != 0
    if not scored.any():
        return float("nan")
    t_fg, p_fg = t[scored], p[scored]
    true_pairs = _pairs(np.unique(t_fg, return_counts=True)[1])
    in_pred = p_fg != 0  # predicted background pixels are singletons
    pred_pairs = _pairs(np.unique(p_fg[in_pred], return_counts=True)[1])
    both = _pairs(_contingency(t_fg[in_pred], p_fg[in_pred]))
    if true_pairs + pred_pairs == 0:
        return 0.0
    return float(1.0 - 2.0 * both / (true_pairs + pred_pairs))


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------
def connected_components(mask, connectivity: int = 1) -> np.ndarray:
    """Instance ids, int32 (H, W), of the connected foreground (mask > 0) regions.

    ``connectivity=1``: 4-neighbours (a diagonal touch does not connect);
    ``connectivity=2``: 8-neighbours.
    """
    m = _numpy(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}.")
    structure = ndimage.generate_binary_structure(2, connectivity)
    return ndimage.label(m > 0, structure=structure)[0].astype(np.int32)


def match_instances(pred_instances, true_instances, iou_threshold: float = 0.5) -> dict:
    """Match predicted to true objects by IoU and count the errors.

    Pairs are matched one-to-one, greedily by decreasing IoU, if IoU >=
    ``iou_threshold`` (for thresholds >= 0.5 a match is unique anyway).

    * merge: a predicted object that covers more than half of each of two or
      more true objects (``merges`` counts such predicted objects);
    * split: a true object of which two or more predicted objects each have
      more than half of their own area inside it (``splits`` counts such true objects).

    Args:
        pred_instances, true_instances: int (H, W) instance ids, 0 = background.

    Returns:
        dict of ints/floats: n_true, n_pred, tp, fp, fn, precision, recall, f1,
        merges, splits, mean_matched_iou (NaN if no match).  precision/recall/f1
        are NaN when undefined (no predicted / no true objects).
    """
    p, t = _numpy(pred_instances).astype(np.int64), _numpy(true_instances).astype(np.int64)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"instances must be two (H, W) arrays of equal shape, got {p.shape} and {t.shape}.")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}.")
    p_ids, p_inv = np.unique(p, return_inverse=True)
    t_ids, t_inv = np.unique(t, return_inverse=True)
    p_area = np.bincount(p_inv.ravel(), minlength=len(p_ids))
    t_area = np.bincount(t_inv.ravel(), minlength=len(t_ids))
    inter = np.bincount(t_inv.ravel() * len(p_ids) + p_inv.ravel(), minlength=len(t_ids) * len(p_ids))
    inter = inter.reshape(len(t_ids), len(p_ids))
    # drop background rows/columns
    t_keep, p_keep = t_ids != 0, p_ids != 0
    inter = inter[t_keep][:, p_keep].astype(np.float64)
    t_area, p_area = t_area[t_keep].astype(np.float64), p_area[p_keep].astype(np.float64)
    n_true, n_pred = int(t_keep.sum()), int(p_keep.sum())
    union = t_area[:, None] + p_area[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

    rows, cols = np.nonzero(iou >= iou_threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_t, used_p, matched_ious = set(), set(), []
    for r, c in zip(rows[order], cols[order]):
        if r not in used_t and c not in used_p:
            used_t.add(r)
            used_p.add(c)
            matched_ious.append(iou[r, c])
    tp = len(matched_ious)
    fp, fn = n_pred - tp, n_true - tp

    covers_true = inter > 0.5 * t_area[:, None]  # pred covers most of the true object
    merges = int(np.sum(covers_true.sum(0) >= 2))
    inside_true = inter > 0.5 * p_area[None, :]  # pred lies mostly inside the true object
    splits = int(np.sum(inside_true.sum(1) >= 2))

    precision = tp / n_pred if n_pred else float("nan")
    recall = tp / n_true if n_true else float("nan")
    f1 = 2 * tp / (n_pred + n_true) if (n_pred + n_true) else float("nan")
    return {
        "n_true": n_true,
        "n_pred": n_pred,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "merges": merges,
        "splits": splits,
        "mean_matched_iou": float(np.mean(matched_ious)) if matched_ious else float("nan"),
    }


def _json_float(x: float):
    x = float(x)
    return None if math.isnan(x) else x


def segmentation_metrics(
    pred,
    target,
    *,
    num_classes: Optional[int] = None,
    target_instances=None,
    iou_threshold: float = 0.5,
    connectivity: int = 1,
) -> dict:
    """All metrics in one JSON-serialisable dict (NaN becomes ``None``).

    Args:
        pred: class ids (N, H, W) / (H, W) / (N, 1, H, W) or logits (N, C, H, W).
        target: class ids, same layouts.
        num_classes: number of classes K (default: from the data, at least 2).
        target_instances: optional int (N, H, W) / (H, W) true instance ids
            (e.g. the dataset's ``"instances"``); without it the true objects
            are the connected components of the target foreground, which merges
            touching cells.
        iou_threshold: IoU for an object match.
        connectivity: 1 (4-neighbours) or 2 (8-neighbours) for the predicted
            (and derived true) objects.

    Returns:
        dict with ``pixel_error``, ``iou_per_class`` (list), ``mean_iou``,
        ``foreground_iou`` (foreground = any class != 0), ``dice_per_class``,
        ``mean_dice``, ``foreground_dice``, ``rand_error`` (mean over images),
        and object statistics summed over images: ``n_true``, ``n_pred``,
        ``tp``, ``fp``, ``fn``, ``merges``, ``splits``, plus ``precision``,
        ``recall``, ``f1`` from the sums.
    """
    p, t = _pair(pred, target)
    k = _num_classes(p, t, num_classes)
    cm = confusion_matrix(p, t, k)
    ious, dices = _per_class(cm, "iou"), _per_class(cm, "dice")
    fg_cm = confusion_matrix((p > 0).astype(np.int64), (t > 0).astype(np.int64), 2)
    fg_iou, fg_dice = _per_class(fg_cm, "iou")[1], _per_class(fg_cm, "dice")[1]

    if target_instances is not None:
        ti = to_label_array(target_instances, "target_instances")
        if ti.shape != t.shape:
            raise ValueError(f"target_instances has shape {ti.shape} but target has {t.shape}.")
    else:
        ti = np.stack([connected_components(x, connectivity) for x in t]) if len(t) else t
    totals = dict(n_true=0, n_pred=0, tp=0, fp=0, fn=0, merges=0, splits=0)
    rand_errors = []
    for pi_mask, t_inst in zip(p, ti):
        p_inst = connected_components(pi_mask, connectivity)
        stats = match_instances(p_inst, t_inst, iou_threshold)
        for key in totals:
            totals[key] += stats[key]
        rand_errors.append(rand_error(p_inst, t_inst))
    n_pred, n_true, tp = totals["n_pred"], totals["n_true"], totals["tp"]
    result = {
        "pixel_error": _json_float(np.mean(p != t)) if p.size else None,
        "iou_per_class": [_json_float(v) for v in ious],
        "mean_iou": _json_float(_nanmean(ious)),
        "foreground_iou": _json_float(fg_iou),
        "dice_per_class": [_json_float(v) for v in dices],
        "mean_dice": _json_float(_nanmean(dices)),
        "foreground_dice": _json_float(fg_dice),
        "rand_error": _json_float(_nanmean(np.array(rand_errors))) if rand_errors else None,
        **{key: int(v) for key, v in totals.items()},
        "precision": _json_float(tp / n_pred) if n_pred else None,
        "recall": _json_float(tp / n_true) if n_true else None,
        "f1": _json_float(2 * tp / (n_pred + n_true)) if (n_pred + n_true) else None,
    }
    return result
