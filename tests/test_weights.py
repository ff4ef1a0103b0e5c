"""Tests for unetlib.weights: the paper's weight map, checked against known distances and brute force."""
import math

import numpy as np
import pytest
import torch

from unetlib.weights import border_distances, class_balance_weights, weight_map


def two_bars(gap: int, width: int = 12, height: int = 5) -> np.ndarray:
    """Two vertical bar cells, columns [0, 3) and [3 + gap, 6 + gap), separated by `gap` background columns."""
    labels = np.zeros((height, 6 + gap + width), dtype=np.int32)
    labels[:, 0:3] = 1
    labels[:, 3 + gap : 6 + gap] = 2
    return labels


@pytest.mark.parametrize(
    "gap, column, expected",
    [
        (1, 3, 9.231),  # d1 = 1, d2 = 1: d1 + d2 = 2
        (4, 4, 6.065),  # d1 = 2 (to column 2), d2 = 3 (to column 7): 5
        (9, 7, 1.353),  # d1 = 5, d2 = 5: 10
    ],
)
def test_border_term_matches_reference_sanity_values(gap, column, expected):
    labels = two_bars(gap)
    w = weight_map(labels, w0=10, sigma=5, class_weights=None)
    border_term = w[2, column] - 1.0  # w_c = 1 without class weights
    assert border_term == pytest.approx(expected, abs=1e-3)


def brute_force_weight_map(labels, w0, sigma):
    """Direct definition: for each background pixel, sort the distances to every cell."""
    h, w = labels.shape
    ys, xs = np.mgrid[0:h, 0:w]
    cells = [np.argwhere(labels == i) for i in np.unique(labels) if i != 0]
    out = np.ones((h, w))
    for y in range(h):
        for x in range(w):
            if labels[y, x] != 0 or len(cells) < 2:
                continue
            dists = sorted(np.sqrt(((c - [y, x]) ** 2).sum(1)).min() for c in cells)
            out[y, x] += w0 * math.exp(-((dists[0] + dists[1]) ** 2) / (2 * sigma**2))
    return out


def random_cells(seed, shape=(14, 17), n=4):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    for i in range(1, n + 1):
        y, x = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
        labels[y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = i
    return labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_map_matches_brute_force(seed):
    labels = random_cells(seed)
    expected = brute_force_weight_map(labels, w0=10, sigma=3)
    got = weight_map(labels, w0=10, sigma=3, class_weights=None)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_cutoff_does_not_change_result_beyond_tolerance():
    labels = random_cells(3, shape=(40, 60), n=12)
    exact_d1, exact_d2 = border_distances(labels, max_distance=None)
    term_exact = 10 * np.exp(-((exact_d1 + exact_d2) ** 2) / (2 * 2.0**2))
    got = weight_map(labels, w0=10, sigma=2.0, class_weights=None, tolerance=1e-6) - 1
    np.testing.assert_allclose(got[labels == 0], term_exact[labels == 0], atol=1.1e-6)


def test_border_distances_inside_cells_and_single_cell():
    labels = two_bars(2)
    d1, d2 = border_distances(labels)
    assert np.all(d1[labels > 0] == 0)
    assert d2[0, 0] == pytest.approx(5.0)  # column 0 -> first column of cell 2 (column 5)
    one = np.zeros((6, 6), dtype=np.int32)
    one[2:4, 2:4] = 1
    assert np.all(np.isinf(border_distances(one)[1]))


def test_border_term_only_on_background_and_balanced_classes():
    labels = two_bars(1)
    w = weight_map(labels, class_weights="balanced")
    fg = labels > 0
    wc = class_balance_weights(fg, "balanced")
    np.testing.assert_allclose(w[fg], wc[fg])  # no border term on cells
    assert np.mean(wc) == pytest.approx(1.0)
    n_fg, n_bg = fg.sum(), (~fg).sum()
    assert wc[fg][0] * n_fg == pytest.approx(wc[~fg][0] * n_bg)  # each class gets equal total weight
    assert np.all(w[~fg] >= wc[~fg])


def test_class_weight_options():
    fg = np.array([[True, False, False, False]])
    np.testing.assert_allclose(class_balance_weights(fg, None), 1.0)
    np.testing.assert_allclose(class_balance_weights(fg, {0: 0.5, 1: 3.0}), [[3.0, 0.5, 0.5, 0.5]])
    np.testing.assert_allclose(class_balance_weights(np.zeros((2, 2), bool)), 1.0)  # one class only
    with pytest.raises(ValueError, match="missing"):
        class_balance_weights(fg, {1: 2.0})
    with pytest.raises(ValueError, match="balanced"):
        class_balance_weights(fg, "inverse")


def test_no_cells_gives_class_weights_only():
    w = weight_map(np.zeros((8, 9), dtype=np.int64), class_weights=None)
    np.testing.assert_allclose(w, 1.0)
    assert w.dtype == np.float32 and w.shape == (8, 9)


def test_torch_input_batch_and_noncontiguous_ids():
    labels = two_bars(1)
    relabelled = np.where(labels == 2, 77, labels)  # ids need not be consecutive
    np.testing.assert_allclose(weight_map(relabelled), weight_map(labels))
    batch = torch.from_numpy(np.stack([labels, labels[:, ::-1].copy()]))
    w = weight_map(batch)
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32 and w.shape == batch.shape
    np.testing.assert_allclose(w[1].numpy(), weight_map(labels)[:, ::-1], rtol=1e-6)


def test_bad_inputs_are_explained():
    with pytest.raises(TypeError, match="integer instance ids"):
        weight_map(np.full((4, 4), 0.5))
    with pytest.raises(ValueError, match=">= 0"):
        weight_map(-np.ones((4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(N, H, W\)"):
        weight_map(np.zeros((1, 1, 4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="sigma"):
        weight_map(np.zeros((4, 4), dtype=np.int64), sigma=0)
