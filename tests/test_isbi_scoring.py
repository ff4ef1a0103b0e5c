"""unetlib.isbi_scoring: the ISBI 2012 pixel and Rand errors, checked on cases counted by hand
and against a brute-force pair count."""
import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import unetlib
from unetlib.isbi_scoring import DEFAULT_THRESHOLDS, isbi_scores, rand_pair_counts
from unetlib.metrics import connected_components, pixel_error, rand_error


def at(result, key, t):
    """The value of ``key`` at threshold ``t`` in the per-threshold curve."""
    return result["per_threshold"][key][result["thresholds"].index(t)]


def test_default_sweep_is_the_challenges():
    assert DEFAULT_THRESHOLDS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def test_a_bright_membrane_pixel_merges_two_cells_until_the_threshold_passes_it():
    # cell {0,1} | membrane | cell {3}; the membrane pixel has p(cell) = 0.4
    label = np.array([[255, 255, 0, 255]])
    prob = np.array([[0.9, 0.9, 0.4, 0.9]])
    r = isbi_scores(prob, label)
    # t <= 0.3: pixel 2 is called cell, joining both cells into one segment.
    #   pixels: TP 3, FP 1, FN 0 -> F = 6/7; wrong pixels 1 of 4
    #   pairs among the scored pixels {0, 1, 3}: true 1 ({0,1}), predicted 3, both 1 -> F = 2/4
    assert at(r, "pixel_error", 0.3) == pytest.approx(1 / 7)
    assert at(r, "pixel_error_hamming", 0.3) == pytest.approx(1 / 4)
    assert at(r, "rand_error", 0.3) == pytest.approx(1 / 2)
    # 0.4 <= t < 0.9: exactly the label (p > t is strict, so 0.4 > 0.4 is membrane)
    assert at(r, "pixel_error", 0.4) == at(r, "rand_error", 0.4) == at(r, "pixel_error_hamming", 0.4) == 0
    # t >= 0.9: nothing is cell: F = 0 for pixels and for pairs
    assert at(r, "pixel_error", 0.9) == at(r, "rand_error", 1.0) == 1.0
    assert at(r, "pixel_error_hamming", 0.9) == pytest.approx(3 / 4)
    # best values, found first at the lowest threshold that reaches them
    assert (r["pixel_error"], r["rand_error"], r["pixel_error_hamming"]) == (0, 0, 0)
    assert r["pixel_error_threshold"] == r["rand_error_threshold"] == r["pixel_error_hamming_threshold"] == 0.4


def test_a_split_cell():
    # one true cell of 5 pixels (10 pairs); the prediction cuts it in the middle
    label = np.ones((1, 5), dtype=np.uint8)
    prob = np.array([[1.0, 1.0, 0.0, 1.0, 1.0]])
    r = isbi_scores(prob, label, thresholds=[0.5])
    # predicted pairs: {0,1} and {3,4} = 2, both in the true cell; pixel 2 is in no pair
    assert r["rand_error"] == pytest.approx(1 - 2 * 2 / (10 + 2))  # 2/3
    assert r["pixel_error"] == pytest.approx(1 - 8 / 9)  # TP 4, FN 1
    assert r["pixel_error_hamming"] == pytest.approx(1 / 5)
    assert rand_pair_counts(connected_components(prob > 0.5), label) == (2, 10, 2)


def test_a_diagonal_one_pixel_membrane_separates_two_cells():
    # 4-connectivity: the two cells touch only at corners, so they are two cells (3 pairs each)
    label = np.array([[1, 1, 0],
                      [1, 0, 1],
                      [0, 1, 1]])
    perfect = isbi_scores(label.astype(float), label, thresholds=[0.5])
    assert perfect["rand_error"] == perfect["pixel_error"] == 0
    merged = isbi_scores(np.ones((3, 3)), label, thresholds=[0.5])  # the membrane called cell
    # 6 scored pixels in one predicted segment: 15 predicted pairs, 6 true, 6 both
    assert merged["rand_error"] == pytest.approx(1 - 2 * 6 / (6 + 15))
    assert merged["pixel_error"] == pytest.approx(1 - 12 / 15)  # TP 6, FP 3


def test_a_stack_is_scored_as_a_whole():
    label = np.array([[[1, 1, 1, 1, 1]],
                      [[1, 1, 0, 0, 0]]])
    prob = np.array([[[1.0, 1.0, 0.0, 1.0, 1.0]],   # the split cell: both 2, true 10, pred 2
                     [[1.0, 1.0, 0.0, 0.0, 0.0]]])  # perfect: both 1, true 1, pred 1
    r = isbi_scores(prob, label, thresholds=[0.5])
    assert r["rand_error"] == pytest.approx(1 - 2 * 3 / (11 + 3))  # counts summed, not errors averaged
    assert r["pixel_error"] == pytest.approx(1 - 12 / 13)  # TP 6, FN 1
    assert r["pixel_error_hamming"] == pytest.approx(1 / 10)


def test_membrane_probabilities_and_torch_tensors_give_the_same_scores():
    rng = np.random.default_rng(0)
    label = (rng.random((2, 12, 12)) > 0.3).astype(np.uint8) * 255
    p_cell = np.clip(label / 255 + rng.normal(0, 0.3, label.shape), 0, 1)
    expected = isbi_scores(p_cell, label)
    keys = ("pixel_error", "rand_error", "pixel_error_hamming")
    membrane = isbi_scores(1 - p_cell, label, prob_of="membrane")
    for key in keys:
        assert membrane["per_threshold"][key] == pytest.approx(expected["per_threshold"][key])
    got = isbi_scores(torch.from_numpy(p_cell.astype(np.float32)), torch.from_numpy(label))
    for key in keys:
        assert got[key] == pytest.approx(expected[key], abs=1e-6)


def test_one_threshold_agrees_with_unetlib_metrics():
    rng = np.random.default_rng(1)
    label = (rng.random((16, 16)) > 0.35).astype(np.int64)
    prob = np.clip(label + rng.normal(0, 0.4, label.shape), 0, 1)
    r = isbi_scores(prob, label, thresholds=[0.5])
    pred = (prob > 0.5).astype(np.int64)
    assert r["rand_error"] == pytest.approx(rand_error(connected_components(pred), connected_components(label)))
    assert r["pixel_error_hamming"] == pytest.approx(pixel_error(pred, label))


# ---------------------------------------------------------------------------------------------
# Brute force: flood fill and every pair of pixels, on random tiny images
# ---------------------------------------------------------------------------------------------
def _components_4(mask):
    """4-connected components by flood fill (independent of scipy)."""
    ids = np.zeros(mask.shape, dtype=int)
    current = 0
    for start in zip(*np.nonzero(mask)):
        if ids[start]:
            continue
        current += 1
        stack = [start]
        ids[start] = current
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not ids[ny, nx]:
                    ids[ny, nx] = current
                    stack.append((ny, nx))
    return ids


def _brute_force(prob, label, t):
    tp = fp = fn = wrong = 0
    both = true_pairs = pred_pairs = 0
    for p_slice, l_slice in zip(prob, label):
        pred, truth = p_slice > t, l_slice > 0
        tp += np.sum(pred & truth)
        fp += np.sum(pred & ~truth)
        fn += np.sum(~pred & truth)
        wrong += np.sum(pred != truth)
        p_ids, t_ids = _components_4(pred), _components_4(truth)
        scored = list(zip(*np.nonzero(truth)))
        for a, b in itertools.combinations(scored, 2):  # pairs within one slice only
            same_true = t_ids[a] == t_ids[b]
            same_pred = p_ids[a] != 0 and p_ids[a] == p_ids[b]
            true_pairs += same_true
            pred_pairs += same_pred
            both += same_true and same_pred
    pixel = 1 - 2 * tp / (2 * tp + fp + fn)
    rand = 0.0 if true_pairs + pred_pairs == 0 else 1 - 2 * both / (true_pairs + pred_pairs)
    return pixel, rand, wrong / label.size


@st.composite
def _tiny_cases(draw):
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    cells = draw(st.lists(st.booleans(), min_size=n * h * w, max_size=n * h * w))
    levels = draw(st.lists(st.sampled_from([0.0, 0.2, 0.45, 0.5, 0.8, 1.0]), min_size=n * h * w, max_size=n * h * w))
    label = np.array(cells, dtype=np.uint8).reshape(n, h, w) * 255
    if not label.any():
        label.flat[0] = 255  # the scores need at least one cell pixel
    return np.array(levels).reshape(n, h, w), label


@settings(max_examples=60, deadline=None)
@given(_tiny_cases())
def test_matches_a_brute_force_pair_count(case):
    prob, label = case
    r = isbi_scores(prob, label)
    for i, t in enumerate(r["thresholds"]):
        pixel, rand, hamming = _brute_force(prob, label, t)
        assert r["per_threshold"]["pixel_error"][i] == pytest.approx(pixel)
        assert r["per_threshold"]["rand_error"][i] == pytest.approx(rand)
        assert r["per_threshold"]["pixel_error_hamming"][i] == pytest.approx(hamming)
    assert r["rand_error"] == min(r["per_threshold"]["rand_error"])
    assert r["pixel_error"] == min(r["per_threshold"]["pixel_error"])


# ---------------------------------------------------------------------------------------------
# A real slice, and the errors
# ---------------------------------------------------------------------------------------------
_DATA_ROOT = Path(os.environ.get("UNETLIB_DATA_DIR") or Path(unetlib.__file__).resolve().parents[2] / "shared" / "data")


@pytest.mark.skipif(not (_DATA_ROOT / "isbi2012" / "labels" / "0.png").is_file(),
                    reason=f"the shared ISBI 2012 copy is not at {_DATA_ROOT / 'isbi2012'}")
def test_a_real_label_scores_zero_against_itself_and_not_when_membranes_vanish():
    label = np.array(Image.open(_DATA_ROOT / "isbi2012" / "labels" / "0.png"))
    perfect = isbi_scores(label / 255.0, label)
    assert perfect["pixel_error"] == perfect["rand_error"] == 0 and perfect["rand_error_threshold"] == 0.0
    # Half-certain membranes (p = 0.5) vanish for every threshold below 0.5: the cells merge.
    blurred = np.where(label > 0, 1.0, 0.5)
    r = isbi_scores(blurred, label, thresholds=[0.4, 0.5])
    assert at(r, "rand_error", 0.4) > 0.5 and r["rand_error"] == 0 and r["rand_error_threshold"] == 0.5


def test_clear_errors():
    label = np.ones((4, 4))
    with pytest.raises(ValueError, match="softmax"):
        isbi_scores(np.full((4, 4), 3.0), label)
    with pytest.raises(ValueError, match="shape"):
        isbi_scores(np.zeros((4, 5)), label)
    with pytest.raises(ValueError, match="no cell pixels"):
        isbi_scores(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        isbi_scores(np.zeros((4, 4)), label, thresholds=[0.5, 2])
    with pytest.raises(ValueError, match="prob_of"):
        isbi_scores(np.zeros((4, 4)), label, prob_of="background")
