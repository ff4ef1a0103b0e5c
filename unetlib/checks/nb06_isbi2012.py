"""Checks for notebook 06 (the paper's EM experiment): the Rand error by pair counting.

The ISBI 2012 challenge scored cells, not pixels: two pixels of one true cell should end up
in one predicted cell, and two pixels of different cells should not. The learner counts
those pairs by hand on small label images; :mod:`unetlib.isbi_scoring` is the reference.

Contracts (also stated in the exercise notebook). Label images are integer (H, W) arrays
(numpy or torch), 0 = membrane / background, any other value = the id of one cell:

* ``count_pairs(segments) -> int``: the number of unordered pairs of two different
  pixels that lie in the same cell (membrane pixels belong to no pair).
* ``rand_error_by_hand(pred, truth) -> float``: the foreground-restricted Rand error,
  1 - 2 * both / (true_pairs + pred_pairs), counted over the pixels that are cell in
  ``truth`` only; ``both`` = pairs in one cell in both images.
* ``split_merge_errors(pred, truth) -> (split_error, merge_error)``: 1 - Rand recall
  (both / true_pairs: true same-cell pairs the prediction cuts apart) and 1 - Rand
  precision (both / pred_pairs: predicted same-cell pairs that are different true cells).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from ..isbi_scoring import rand_pair_counts
from ._core import Case, compare_values, run_check

__all__ = ["check_count_pairs", "check_rand_error_by_hand", "check_split_merge_errors"]


# ---------------------------------------------------------------------------------- cases
def _labels(rows: list[str]) -> np.ndarray:
    """A label image from rows of digits, '.' = membrane: ["11.22", "11.22"]."""
    return np.array([[0 if c == "." else int(c) for c in row] for row in rows], dtype=np.int64)


def _random_labels(seed: int, shape=(7, 9), cells: int = 4, membrane: float = 0.25) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, cells + 1, size=shape)
    ids[rng.random(shape) < membrane] = 0
    return ids


# Hand-made pairs (pred, truth) that tell the misconceptions apart, then random ones.
_SPLIT = (_labels(["112.3", "112.3", "112.3"]), _labels(["111.3", "111.3", "111.3"]))  # one cell cut in two
_MERGE = (_labels(["1111.3", "1111.3"]), _labels(["11.2.3", "11.2.3"]))              # a membrane missed
_SHIFTED = (_labels(["11..", "1122", "..22", "3333"]), _labels(["111.", "1.22", ".222", "33.."]))
_RENUMBERED = (_labels(["77.5", "77.5", "....", "9999"]), _labels(["11.2", "11.2", "....", "3333"]))


def _pair_images() -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs = [("one true cell predicted as two (a split)", *_SPLIT),
             ("two true cells predicted as one (a merge)", *_MERGE),
             ("cells shifted by a pixel", *_SHIFTED),
             ("a perfect prediction with other cell ids", *_RENUMBERED)]
    for seed in (3, 11, 26):
        pairs.append((f"random 7x9 labels (seed {seed})", _random_labels(seed), _random_labels(seed + 100)))
    return pairs


# ----------------------------------------------------------------------- reference + mistakes
def _count_pairs(segments: np.ndarray, *, ordered: bool = False, with_self: bool = False,
                 membrane_counts: bool = False) -> int:
    """Pairs of pixels sharing a cell id; the flags give the misconceptions' counts."""
    values = segments.ravel() if membrane_counts else segments[segments != 0]
    sizes = np.unique(values, return_counts=True)[1].astype(np.int64)
    if ordered:
        return int(np.sum(sizes * sizes if with_self else sizes * (sizes - 1)))
    return int(np.sum(sizes * (sizes + 1) // 2 if with_self else sizes * (sizes - 1) // 2))


def _rand_errors(pred: np.ndarray, truth: np.ndarray, *, score_membrane: bool = False,
                 pred_membrane_is_a_cell: bool = False) -> tuple[float, float, float]:
    """(rand_error, split_error, merge_error), as the challenge counted, or as a mistake does.

    score_membrane: true membrane pixels are scored too, as if membrane were one more cell.
    pred_membrane_is_a_cell: predicted membrane pixels pair with each other.
    """
    p, t = pred.astype(np.int64), truth.astype(np.int64)
    shift = int(max(p.max(), t.max())) + 1  # a fresh id for "membrane as a cell"
    if score_membrane:
        t = np.where(t == 0, shift, t)
        p = np.where(p == 0, shift, p)
    elif pred_membrane_is_a_cell:
        p = np.where(p == 0, shift, p)
    both, true_pairs, pred_pairs = rand_pair_counts(p, t)
    return (1.0 - 2.0 * both / (true_pairs + pred_pairs), 1.0 - both / true_pairs, 1.0 - both / pred_pairs)


def _rand_index_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """1 - Rand index over the scored pixels: agreement of *all* pairs, also different-cell ones."""
    p, t = pred.astype(np.int64), truth.astype(np.int64)
    scored = t != 0
    n = int(scored.sum())
    both, true_pairs, pred_pairs = rand_pair_counts(p, t)
    all_pairs = n * (n - 1) / 2
    agree = all_pairs - true_pairs - pred_pairs + 2 * both  # together in both, or apart in both
    return 1.0 - agree / all_pairs


def _as_pair(got: Any) -> Any:
    """An array or tensor of two numbers as a tuple (a learner may return either)."""
    if isinstance(got, np.ndarray) or hasattr(got, "detach"):
        values = np.asarray(got.detach().cpu()) if hasattr(got, "detach") else got
        if values.shape == (2,) and values.dtype.kind in "biuf":
            return tuple(float(v) for v in values)
    return got


def _close(got: Any, value: Any) -> bool:
    return compare_values(got, value, atol=1e-9, rtol=1e-6) is None


Mistake = tuple[str, Callable[..., Any]]  # (hint, the wrong answer computed from a case's args)


def _diagnosis(fn: Callable, cases: list[Case], mistakes: list[Mistake],
               normalise: Callable[[Any], Any] = lambda got: got) -> Callable[[Case, Any], Optional[str]]:
    """A diagnosis naming the mistake that explains the learner's answers on *every* case.

    On a single small case two mistakes can give the same number by chance; the learner's
    function is cheap, so it is run on all cases and the one mistake that fits them all wins.
    If none fits all, the first one that fits the failed case is named.
    """

    def matches(got: Any, compute: Callable[..., Any], case: Case) -> bool:
        try:
            return _close(normalise(got), compute(*case.args))
        except Exception:  # a mistake that cannot run on this case does not match
            return False

    def diagnose(failed: Case, got: Any) -> Optional[str]:
        answers = []
        for case in cases:
            try:
                answers.append(got if case is failed else fn(*case.args))
            except Exception:
                answers.append(None)
        for hint, compute in mistakes:
            if all(matches(answer, compute, case) for answer, case in zip(answers, cases)):
                return hint
        return next((hint for hint, compute in mistakes if matches(got, compute, failed)), None)

    return diagnose


# --------------------------------------------------------------------------- count_pairs
_ORDERED = ("you counted ordered pairs: (a, b) and (b, a) are the same pair. A cell of n pixels holds "
            "n * (n - 1) / 2 pairs, not n * (n - 1).")
_SELF = ("you paired each pixel with itself: a pair is two *different* pixels, so a cell of n pixels holds "
         "n * (n - 1) / 2 pairs.")
_MEMBRANE_PAIRS = ("you counted pairs of membrane pixels (id 0). Membrane is not a cell: its pixels belong to "
                   "no pair, otherwise the thick membranes of EM images would dominate the score.")


def check_count_pairs(count_pairs: Callable) -> None:
    """Check ``count_pairs(segments) -> int`` on hand-made and random label images."""
    images = [("one cell of 4 pixels", _labels(["11", "11"])),
              ("two cells and a membrane", _labels(["11.2", "11.2", "...."]))]
    images += [(name, truth) for name, _pred, truth in _pair_images()[2:]]
    cases = [Case(name, (image,), expected=_count_pairs(image)) for name, image in images]

    mistakes = [
        (_MEMBRANE_PAIRS, lambda image: _count_pairs(image, membrane_counts=True)),
        (_MEMBRANE_PAIRS + " Also, " + _ORDERED, lambda image: _count_pairs(image, membrane_counts=True, ordered=True)),
        (_ORDERED, lambda image: _count_pairs(image, ordered=True)),
        (_SELF, lambda image: _count_pairs(image, with_self=True)),
        (_SELF + " Also, " + _ORDERED, lambda image: _count_pairs(image, ordered=True, with_self=True)),
    ]
    run_check("Task 1 count_pairs", count_pairs, cases, _diagnosis(count_pairs, cases, mistakes))


# ------------------------------------------------------------------------------ Rand error
_SCORED_MEMBRANE = ("you scored the true membrane pixels too. The challenge's Rand error is foreground-"
                    "restricted: only pixels that are cell in the *truth* are scored, so pairs of membrane "
                    "pixels never count.")
_PRED_MEMBRANE = ("you let the pixels predicted as membrane form a cell of their own. A pixel the network "
                  "calls membrane belongs to no predicted cell, so it is in no predicted pair.")
_RAND_INDEX = ("you computed 1 - Rand index (the fraction of *all* pairs on which both images agree, also "
               "pairs in different cells). The challenge uses the Rand F-score: only same-cell pairs, "
               "2 * both / (true_pairs + pred_pairs).")


def _pair_cases(expected: Callable[[np.ndarray, np.ndarray], Any]) -> list[Case]:
    return [Case(name, (pred, truth), expected=expected(pred, truth)) for name, pred, truth in _pair_images()]


def check_rand_error_by_hand(rand_error_by_hand: Callable) -> None:
    """Check ``rand_error_by_hand(pred, truth) -> float`` (foreground-restricted, 1 - Rand F-score)."""
    cases = _pair_cases(lambda p, t: float(_rand_errors(p, t)[0]))

    mistakes = [
        (_SCORED_MEMBRANE, lambda p, t: _rand_errors(p, t, score_membrane=True)[0]),
        (_PRED_MEMBRANE, lambda p, t: _rand_errors(p, t, pred_membrane_is_a_cell=True)[0]),
        (_RAND_INDEX, _rand_index_error),
        ("you returned the Rand F-score itself; the error is 1 - F-score.", lambda p, t: 1.0 - _rand_errors(p, t)[0]),
        ("you returned the split error (1 - recall) alone; the Rand error combines both kinds of "
         "pair, 1 - 2 * both / (true_pairs + pred_pairs).", lambda p, t: _rand_errors(p, t)[1]),
        ("you returned the merge error (1 - precision) alone; the Rand error combines both kinds of "
         "pair, 1 - 2 * both / (true_pairs + pred_pairs).", lambda p, t: _rand_errors(p, t)[2]),
        (_SELF, _rand_error_with_self_pairs),
    ]
    run_check("Task 2 rand_error_by_hand", rand_error_by_hand, cases,
              _diagnosis(rand_error_by_hand, cases, mistakes))


def _rand_error_with_self_pairs(pred: np.ndarray, truth: np.ndarray) -> float:
    """The mistake of counting n^2 (ordered, self included) pairs per cell, cell sizes as in the challenge."""
    p, t = pred.astype(np.int64), truth.astype(np.int64)
    scored = t != 0
    t_fg, p_fg = t[scored], p[scored]
    keep = p_fg != 0

    def squares(values: np.ndarray) -> float:
        return float(np.sum(np.unique(values, return_counts=True)[1].astype(np.float64) ** 2)) if values.size else 0.0

    both = squares(t_fg[keep] * (int(p.max()) + 1) + p_fg[keep])
    return 1.0 - 2.0 * both / (squares(t_fg) + squares(p_fg[keep]))


# ------------------------------------------------------------------------ split and merge
_SWAPPED = ("you swapped split and merge. A *split* cuts one true cell apart, so true same-cell pairs are "
            "lost: split_error = 1 - both / true_pairs. A *merge* joins different true cells, so predicted "
            "same-cell pairs are wrong: merge_error = 1 - both / pred_pairs.")


def check_split_merge_errors(split_merge_errors: Callable) -> None:
    """Check ``split_merge_errors(pred, truth) -> (split_error, merge_error)``."""
    cases = _pair_cases(lambda p, t: tuple(float(v) for v in _rand_errors(p, t)[1:]))

    def compare(got: Any, expected: Any, atol: float, rtol: float) -> Optional[str]:
        return compare_values(_as_pair(got), expected, atol, rtol)

    mistakes = [
        (_SWAPPED, lambda p, t: _rand_errors(p, t)[:0:-1]),
        ("you returned the Rand recall and precision; the errors are 1 - recall and 1 - precision.",
         lambda p, t: tuple(1.0 - v for v in _rand_errors(p, t)[1:])),
        (_SCORED_MEMBRANE, lambda p, t: _rand_errors(p, t, score_membrane=True)[1:]),
        (_SCORED_MEMBRANE + " Also, " + _SWAPPED, lambda p, t: _rand_errors(p, t, score_membrane=True)[:0:-1]),
        (_PRED_MEMBRANE, lambda p, t: _rand_errors(p, t, pred_membrane_is_a_cell=True)[1:]),
    ]
    run_check("Task 3 split_merge_errors", split_merge_errors, cases,
              _diagnosis(split_merge_errors, cases, mistakes, normalise=_as_pair), compare)
