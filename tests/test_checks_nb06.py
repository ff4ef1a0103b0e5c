"""Notebook 06 checks: right answers written in different ways pass, each misconception is named."""
from itertools import combinations

import numpy as np
import pytest
import torch

from unetlib.checks import CheckError, NotImplementedYet
from unetlib.checks.nb06_isbi2012 import check_count_pairs, check_rand_error_by_hand, check_split_merge_errors
from unetlib.metrics import rand_error


# --------------------------------------------------------------- right answers, three styles
def pairs_by_loops(segments):
    flat = np.asarray(segments).ravel()
    return sum(1 for a, b in combinations(range(flat.size), 2) if flat[a] != 0 and flat[a] == flat[b])


def pairs_by_sizes(segments):
    ids, sizes = np.unique(np.asarray(segments)[np.asarray(segments) > 0], return_counts=True)
    return int(sum(n * (n - 1) // 2 for n in sizes))


def pairs_in_torch(segments):
    seg = torch.as_tensor(segments)
    sizes = torch.bincount(seg.flatten())[1:]
    return int((sizes * (sizes - 1)).sum().item() // 2)


def counts_by_loops(pred, truth):
    p, t = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    both = true_pairs = pred_pairs = 0
    scored = [i for i in range(t.size) if t[i] != 0]
    for a, b in combinations(scored, 2):
        same_true = t[a] == t[b]
        same_pred = p[a] != 0 and p[a] == p[b]
        true_pairs += same_true
        pred_pairs += same_pred
        both += same_true and same_pred
    return both, true_pairs, pred_pairs


def rand_by_loops(pred, truth):
    both, true_pairs, pred_pairs = counts_by_loops(pred, truth)
    return 1 - 2 * both / (true_pairs + pred_pairs)


def split_merge_by_loops(pred, truth):
    both, true_pairs, pred_pairs = counts_by_loops(pred, truth)
    return 1 - both / true_pairs, 1 - both / pred_pairs


def split_merge_as_tensor(pred, truth):
    both, true_pairs, pred_pairs = counts_by_loops(pred, truth)
    return torch.tensor([1 - both / true_pairs, 1 - both / pred_pairs], dtype=torch.float64)


@pytest.mark.parametrize("fn", [pairs_by_loops, pairs_by_sizes, pairs_in_torch])
def test_count_pairs_accepts_right_answers(fn, capsys):
    check_count_pairs(fn)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn", [rand_by_loops, lambda p, t: rand_error(p, t), lambda p, t: np.float32(rand_by_loops(p, t))])
def test_rand_error_accepts_right_answers(fn, capsys):
    check_rand_error_by_hand(fn)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn", [split_merge_by_loops, split_merge_as_tensor, lambda p, t: list(split_merge_by_loops(p, t))])
def test_split_merge_accepts_right_answers(fn, capsys):
    check_split_merge_errors(fn)
    assert "passed" in capsys.readouterr().out


# ----------------------------------------------------------------------- wrong answers
def _fails_with(check, fn, *words):
    with pytest.raises(CheckError) as info:
        check(fn)
    message = str(info.value)
    for word in words:
        assert word in message, message
    return message


def test_count_pairs_names_ordered_pairs():
    _fails_with(check_count_pairs, lambda s: 2 * pairs_by_sizes(s), "ordered pairs")


def test_count_pairs_names_self_pairs():
    def with_self(segments):
        sizes = np.unique(np.asarray(segments)[np.asarray(segments) > 0], return_counts=True)[1]
        return int(sum(n * (n + 1) // 2 for n in sizes))

    _fails_with(check_count_pairs, with_self, "itself")


def test_count_pairs_names_membrane_pairs():
    def with_membrane(segments):
        sizes = np.unique(np.asarray(segments), return_counts=True)[1]
        return int(sum(n * (n - 1) // 2 for n in sizes))

    _fails_with(check_count_pairs, with_membrane, "membrane pixels (id 0)")


def test_count_pairs_stub_is_not_implemented():
    def stub(segments):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet):
        check_count_pairs(stub)


def test_rand_error_names_scored_membrane():
    def all_pixels(pred, truth):
        p, t = np.asarray(pred) + 1, np.asarray(truth) + 1  # membrane becomes cell id 1
        return rand_by_loops(p, t)

    _fails_with(check_rand_error_by_hand, all_pixels, "foreground-restricted")


def test_rand_error_names_predicted_membrane_as_a_cell():
    def membrane_cell(pred, truth):
        p = np.where(np.asarray(pred) == 0, 99, pred)
        return rand_by_loops(p, truth)

    _fails_with(check_rand_error_by_hand, membrane_cell, "belongs to no predicted cell")


def test_rand_error_names_rand_index():
    def rand_index_error(pred, truth):
        p, t = np.asarray(pred).ravel(), np.asarray(truth).ravel()
        scored = [i for i in range(t.size) if t[i] != 0]
        agree = total = 0
        for a, b in combinations(scored, 2):
            total += 1
            agree += (t[a] == t[b]) == (p[a] != 0 and p[a] == p[b])
        return 1 - agree / total

    _fails_with(check_rand_error_by_hand, rand_index_error, "Rand index")


def test_rand_error_names_f_score_and_one_sided_errors():
    _fails_with(check_rand_error_by_hand, lambda p, t: 1 - rand_by_loops(p, t), "1 - F-score")
    _fails_with(check_rand_error_by_hand, lambda p, t: split_merge_by_loops(p, t)[0], "split error")


def test_split_merge_names_the_swap():
    _fails_with(check_split_merge_errors, lambda p, t: split_merge_by_loops(p, t)[::-1], "swapped split and merge")


def test_split_merge_names_recall_and_membrane():
    _fails_with(check_split_merge_errors, lambda p, t: tuple(1 - v for v in split_merge_by_loops(p, t)),
                "recall and precision")
    _fails_with(check_split_merge_errors, lambda p, t: split_merge_by_loops(np.asarray(p) + 1, np.asarray(t) + 1),
                "foreground-restricted")


def test_split_merge_wrong_shape_is_reported():
    message = _fails_with(check_split_merge_errors, lambda p, t: split_merge_by_loops(p, t)[0], "tuple of length 2")
    assert "Traceback" not in message
