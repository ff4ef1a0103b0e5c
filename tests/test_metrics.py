"""Tests for unetlib.metrics against brute-force definitions on tiny examples."""
import itertools
import json

import numpy as np
import pytest
import torch

from unetlib.metrics import (
    confusion_matrix,
    connected_components,
    dice_per_class,
    iou_per_class,
    match_instances,
    mean_dice,
    mean_iou,
    pixel_error,
    rand_error,
    rand_index,
    segmentation_metrics,
    to_label_array,
)


def brute_iou_dice(pred, target, k):
    ious, dices = [], []
    for c in range(k):
        p = {i for i, v in enumerate(pred.ravel()) if v == c}
        t = {i for i, v in enumerate(target.ravel()) if v == c}
        if not p and not t:
            ious.append(np.nan)
            dices.append(np.nan)
            continue
        ious.append(len(p & t) / len(p | t))
        dices.append(2 * len(p & t) / (len(p) + len(t)))
    return np.array(ious), np.array(dices)


@pytest.mark.parametrize("seed", range(4))
def test_iou_and_dice_match_set_definitions(seed):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 3, size=(2, 5, 6))
    target = rng.integers(0, 3, size=(2, 5, 6))
    target[target == 2] = 1 if seed % 2 else 2  # sometimes a class is missing from the target
    ious, dices = brute_iou_dice(pred, target, 4)
    np.testing.assert_allclose(iou_per_class(pred, target, num_classes=4), ious)
    np.testing.assert_allclose(dice_per_class(pred, target, num_classes=4), dices)
    assert np.all(dices[~np.isnan(dices)] <= 1.0)


def test_empty_class_rule():
    target = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 0, 1, 1]])
    ious = iou_per_class(pred, target, num_classes=3)
    assert np.isnan(ious[2])  # absent from both: NaN
    assert mean_iou(pred, target, num_classes=3) == 1.0  # ... and excluded from the mean
    pred_fp = np.array([[0, 2, 1, 1]])
    ious = iou_per_class(pred_fp, target, num_classes=3)
    assert ious[2] == 0.0  # predicted but absent from the target: 0, not a free 1
    assert mean_dice(pred_fp, target, num_classes=3) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert np.isnan(mean_iou(np.zeros((2, 2), int), np.zeros((2, 2), int), include_background=False))


def test_logits_and_binary_layouts():
    target = torch.tensor([[[0, 1], [1, 1]]])
    logits_2 = torch.tensor([[[[2.0, -1.0], [0.0, -3.0]], [[0.0, 1.0], [1.0, 1.0]]]])  # argmax 0,1 / 1,1
    np.testing.assert_array_equal(to_label_array(logits_2), [[[0, 1], [1, 1]]])
    logit_1 = torch.tensor([[[[-1.0, 2.0], [0.5, -0.5]]]])  # (N, 1, H, W) -> threshold at 0
    np.testing.assert_array_equal(to_label_array(logit_1), [[[0, 1], [1, 0]]])
    # (N, 1, H, W) target vs (N, H, W) prediction must not crash
    assert pixel_error(target, target[:, None]) == 0.0
    assert pixel_error(logit_1, target[:, None]) == pytest.approx(0.25)
    with pytest.raises(TypeError, match="logits"):
        to_label_array(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="centre crop"):
        pixel_error(np.zeros((1, 4, 4), int), np.zeros((1, 6, 6), int))


def test_confusion_matrix_counts():
    cm = confusion_matrix(np.array([[0, 1, 1, 2]]), np.array([[0, 1, 2, 2]]))
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    with pytest.raises(ValueError, match="num_classes=2"):
        confusion_matrix(np.array([[0, 2]]), np.array([[0, 1]]), num_classes=2)


def brute_rand_error(pred, true):
    """Enumerate unordered pairs of ground-truth-foreground pixels; predicted 0 = singleton."""
    idx = [i for i, t in enumerate(true.ravel()) if t != 0]
    p, t = pred.ravel(), true.ravel()
    same_t = same_p = both = 0
    for a, b in itertools.combinations(idx, 2):
        st = t[a] == t[b]
        sp = p[a] == p[b] and p[a] != 0
        same_t += st
        same_p += sp
        both += st and sp
    if same_t + same_p == 0:
        return 0.0
    return 1 - 2 * both / (same_t + same_p)


def brute_rand_index(a, b):
    a, b = a.ravel(), b.ravel()
    pairs = list(itertools.combinations(range(a.size), 2))
    agree = sum((a[i] == a[j]) == (b[i] == b[j]) for i, j in pairs)
    return agree / len(pairs)


@pytest.mark.parametrize("seed", range(6))
def test_rand_error_and_index_match_pair_counting(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, size=(4, 5))
    pred = rng.integers(0, 3, size=(4, 5))
    assert rand_error(pred, true) == pytest.approx(brute_rand_error(pred, true))
    assert rand_index(pred, true) == pytest.approx(brute_rand_index(pred, true))


def test_rand_error_perfect_merge_and_split():
    true = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2]])
    assert rand_error(true, true) == 0.0
    assert rand_error(true * 7, true) == 0.0  # ids are arbitrary
    merged = np.where(true > 0, 1, 0)
    assert rand_error(merged, true) > 0.3
    background_gap_ignored = true.copy()
    background_gap_ignored[:, 2] = 5  # predictions on true-background pixels are not scored
    assert rand_error(background_gap_ignored, true) == 0.0
    assert np.isnan(rand_error(true, np.zeros_like(true)))


def test_match_instances_counts_merges_and_splits():
    true = np.zeros((6, 12), dtype=int)
    true[:, 0:3], true[:, 4:7], true[:, 8:12] = 1, 2, 3
    pred = np.zeros_like(true)
    pred[:, 0:7] = 1  # merges true 1 and 2
    pred[:2, 8:12], pred[2:4, 8:12], pred[4:, 8:12] = 2, 3, 4  # splits true 3 in three
    stats = match_instances(pred, true)
    assert (stats["n_true"], stats["n_pred"], stats["tp"], stats["fp"], stats["fn"]) == (3, 4, 0, 4, 3)
    assert stats["merges"] == 1 and stats["splits"] == 1
    assert stats["precision"] == 0.0 and stats["recall"] == 0.0
    half = pred.copy()
    half[:3, 8:12], half[3:, 8:12] = 2, 3  # each half has IoU exactly 0.5 with true 3 -> one match
    assert match_instances(half, true)["tp"] == 1
    assert match_instances(half, true, iou_threshold=0.51)["tp"] == 0
    perfect = match_instances(true, true)
    assert perfect["tp"] == 3 and perfect["f1"] == 1.0 and perfect["mean_matched_iou"] == 1.0
    assert np.isnan(match_instances(np.zeros((3, 3), int), np.zeros((3, 3), int))["f1"])


def test_connected_components_connectivity():
    diagonal = np.array([[1, 0], [0, 1]])
    assert connected_components(diagonal, connectivity=1).max() == 2
    assert connected_components(diagonal, connectivity=2).max() == 1


def test_segmentation_metrics_is_json_and_consistent():
    true_inst = np.zeros((1, 8, 12), dtype=int)
    true_inst[0, 1:7, 1:5], true_inst[0, 1:7, 6:11] = 1, 2  # two cells, gap at column 5
    target = (true_inst > 0).astype(int)
    pred = target.copy()
    pred[0, 3, 5] = 1  # a one-pixel bridge: merges the two cells
    m = segmentation_metrics(pred, target, target_instances=true_inst)
    json.dumps(m, allow_nan=False)
    assert m["pixel_error"] == pytest.approx(1 / 96)
    # the merged blob (55 px) still matches the larger cell (30 px, IoU 0.55); the other is missed
    assert m["n_true"] == 2 and m["n_pred"] == 1 and m["merges"] == 1 and m["tp"] == 1 and m["fn"] == 1
    assert m["rand_error"] > 0.3
    assert m["iou_per_class"][1] == pytest.approx(iou_per_class(pred, target)[1])
    good = segmentation_metrics(torch.from_numpy(target), torch.from_numpy(target)[:, None])
    assert good["pixel_error"] == 0.0 and good["mean_iou"] == 1.0 and good["f1"] == 1.0
    empty = segmentation_metrics(np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int))
    json.dumps(empty, allow_nan=False)
    assert empty["iou_per_class"][1] is None and empty["mean_iou"] == 1.0 and empty["rand_error"] is None
