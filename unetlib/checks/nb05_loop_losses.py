"""Checks for notebook 05's training-loop exercises: one step, the weight map, Dice and focal loss.

Contracts (also stated in the exercise notebook):

* ``train_step(model, images, masks, weights, optimizer) -> float``: one optimisation step
  with the paper's weighted cross-entropy, normalised like
  :func:`unetlib.losses.weighted_cross_entropy` (mean over pixels of ``w(x) * -log p(x)``);
  returns the loss as a Python float. The model is handed over in eval mode (as after a
  validation pass), so the step must call ``model.train()``; the model has BatchNorm, so
  the two modes differ. The check runs two steps in a row (SGD, then Adam) on a tiny
  seeded network and compares the returned losses, the updated parameters and the
  BatchNorm statistics with a reference step.
* ``weight_map(instances, w0=10.0, sigma=5.0) -> (H, W)``: the paper's weight map as
  :func:`unetlib.weights.weight_map` computes it (balanced ``w_c`` plus
  ``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` on background pixels). ``instances`` is an
  integer numpy array (any integer dtype, 0 = background); a numpy array or a tensor may
  come back. Tolerance 1e-4 (the reference skips cells where the term is below 1e-6).
* ``dice_loss(logits, target) -> 0-d tensor``: soft Dice loss as
  :func:`unetlib.losses.soft_dice_loss` (softmax, per class summed over the whole batch,
  ``1 - mean_k (2 sum p t + s) / (sum p + sum t + s)``, all classes). The course uses
  ``s = 1``; the cases are large enough that any smoothing constant up to 1 (added to
  numerator and denominator) passes within the tolerance of 2e-3, while no smoothing at
  all fails on the case with an empty class (0/0 = NaN).
* ``focal_loss(logits, target, gamma=2.0) -> 0-d tensor``: ``mean_x -(1 - p_t)**gamma *
  log p_t`` as :func:`unetlib.losses.focal_loss`. One case has saturated float32 logits
  (+-100): the textbook ``log(softmax(...))`` gives inf/NaN there, and *clipping* the
  probabilities (``p.clamp(eps, 1 - eps)`` or ``p + eps``) is rejected too, as by the
  weighted cross-entropy check: it stays finite but caps a confidently wrong pixel's loss
  at ``-log(eps)`` instead of 200. The stable form takes ``log p_t`` from ``log_softmax``.

Dice and focal losses must stay differentiable: a result without gradient, or whose
gradient with respect to the logits is zero or not finite, fails.
"""
from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..losses import focal_loss as _ref_focal, soft_dice_loss, weighted_cross_entropy
from ..weights import border_distances, class_balance_weights, weight_map as _ref_weight_map
from ._core import Case, _describe, compare_values, run_check

__all__ = ["check_train_step", "check_weight_map", "check_dice_loss", "check_focal_loss"]

# Numbered as in solutions/05_training_exercises.ipynb (Tasks 1-3 are in nb05_training).
TASK_WMAP, TASK_STEP = "Task 4: the weight map", "Task 5: one training step"
TASK_DICE, TASK_FOCAL = "Task 6: soft Dice loss", "Task 7: focal loss"
# Epsilons learners add to probabilities before the log (1e-7 is Keras' default).
_EPSILONS = [10.0 ** -k for k in range(3, 17)] + [torch.finfo(torch.float32).eps]


def _close_to(got, value, atol: float, rtol: float) -> bool:
    g = got.detach().double() if isinstance(got, torch.Tensor) else torch.as_tensor(np.asarray(got, dtype=np.float64))
    value = torch.as_tensor(value).double()
    return value.shape == g.shape and bool(torch.allclose(g, value, atol=atol, rtol=rtol))


def _first_close(got, candidates, atol: float, rtol: float) -> Optional[str]:
    """The hint of the first candidate (hint, thunk) whose value equals ``got``."""
    for hint, make in candidates:
        try:
            if _close_to(got, make(), atol, rtol):
                return hint
        except Exception:  # a variant that does not apply to this case explains nothing
            continue
    return None


# ======================================================================================
# train_step
# ======================================================================================
HINT_EVAL = ("model left in eval mode: it is handed over in eval mode (as after a validation pass), so call "
             "model.train() before the forward pass; in eval mode BatchNorm normalises with its running "
             "statistics instead of the batch's (and dropout is off).")
HINT_NO_ZERO = ("zero_grad forgotten: loss.backward() adds to every parameter's .grad, so without "
                "optimizer.zero_grad() the gradients accumulate and each step also applies all earlier "
                "batches' gradients (the first step is right, the second is not).")
HINT_STEP_FIRST = ("optimizer.step() before loss.backward(): the step then uses the previous batch's gradients "
                   "(or none); call loss.backward() first, then optimizer.step().")
HINT_ZERO_BETWEEN = "optimizer.zero_grad() between loss.backward() and optimizer.step() wipes the fresh gradients."
HINT_NO_UPDATE = ("the parameters did not change: optimizer.step() before loss.backward() finds no gradients (and "
                  "a zero_grad() between backward and step wipes them); call loss.backward(), then optimizer.step().")
HINT_SOFTMAX = ("softmax applied before a loss that already applies it: cross-entropy takes the raw logits "
                "(F.cross_entropy and weighted_cross_entropy apply log_softmax themselves).")
HINT_UNWEIGHTED = ("the weight map is ignored: the paper's loss is the mean over pixels of w(x) * -log p(x), "
                   "e.g. unetlib.losses.weighted_cross_entropy(logits, masks, weights).")
HINT_SUMMED = ("loss summed instead of averaged: divide the weighted sum by the number of pixels (a mean), "
               "otherwise the step size grows with the batch and tile size.")
HINT_BY_WEIGHTS = "you divided by the sum of the weights; the course divides by the number of pixels."
HINT_TENSOR = ("returning a tensor instead of a Python float: return loss.item(). The tensor {alive}; a float "
               "is all a training log needs.")


class _StepNet(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> conv 1x1, seeded, with non-trivial running statistics, in eval mode."""

    def __init__(self, num_classes: int, seed: int):
        super().__init__()
        self.conv, self.bn, self.out = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, num_classes, 1)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            self.bn.running_mean.copy_(torch.randn(4, generator=gen))
            self.bn.running_var.copy_(0.3 + 2 * torch.rand(4, generator=gen))
        self.eval()

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.conv(x))))


@dataclass
class _Steps:
    returned: list
    state: dict


_STEP_LOSSES = {
    "paper": lambda l, t, w: weighted_cross_entropy(l, t, w),
    "softmax": lambda l, t, w: weighted_cross_entropy(torch.softmax(l, 1), t, w),
    "unweighted": lambda l, t, w: F.cross_entropy(l, t),
    "summed": lambda l, t, w: (F.cross_entropy(l, t, reduction="none") * w).sum(),
    "by_weights": lambda l, t, w: weighted_cross_entropy(l, t, w, normalize="weights"),
}


def _make(spec):
    model = _StepNet(spec["classes"], spec["seed"])
    kind, lr = spec["optimizer"]
    optimizer = (torch.optim.SGD if kind == "SGD" else torch.optim.Adam)(model.parameters(), lr=lr)
    return model, optimizer


def _state(model: nn.Module) -> dict:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _simulate(spec, order: str = "zfbs", loss: str = "paper", train: bool = True) -> _Steps:
    """Steps done right, or wrong in one way: ``order`` of zero_grad/forward/backward/step, the loss, the mode."""
    model, optimizer = _make(spec)
    returned = []
    for images, masks, weights in spec["batches"]:
        if train:
            model.train()
        for op in order:
            if op == "z":
                optimizer.zero_grad()
            elif op == "f":
                value = _STEP_LOSSES[loss](model(images), masks, weights)
            elif op == "b":
                value.backward()
            else:
                optimizer.step()
        returned.append(value.item())
    return _Steps(returned, _state(model))


def _state_problem(got: dict, expected: dict, n_steps: int) -> Optional[str]:
    for name, value in expected.items():
        mine = got[name].double()
        if not torch.allclose(mine, value.double(), atol=1e-5, rtol=1e-4):
            what = "the BatchNorm statistic" if "running" in name or "batches" in name else "the parameter"
            diff = (mine - value.double()).abs().max().item()
            return f"after {n_steps} steps {what} '{name}' differs from a correct step's (by up to {diff:.3g})"
    return None


def _compare_steps(got: _Steps, expected: _Steps, atol, rtol) -> Optional[str]:
    for k, (value, right) in enumerate(zip(got.returned, expected.returned), start=1):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"step {k} returned {_describe(value)} instead of the loss as a Python float"
        if not math.isclose(float(value), right, rel_tol=1e-4, abs_tol=1e-5):
            return f"step {k} returned the loss {float(value):.6g}, expected {right:.6g} (this batch's loss before the update)"
    return _state_problem(got.state, expected.state, len(expected.returned))


def _order_hint(order: str) -> Optional[str]:
    """The misconception an order of z(ero_grad) f(orward) b(ackward) s(tep) shows; None if it is right."""
    hints = [HINT_NO_ZERO] if "z" not in order else []
    if order.index("s") < order.index("b"):
        hints.append(HINT_STEP_FIRST)
    elif "z" in order and order.index("b") < order.index("z") < order.index("s"):
        hints.append(HINT_ZERO_BETWEEN)
    return " Also: ".join(hints) or None


def _diagnose_step(case: Case, got: Any) -> Optional[str]:
    spec = case.args[0]
    tensors = [v for v in got.returned if isinstance(v, torch.Tensor)]
    if tensors:
        alive = ("still requires grad, so it keeps the whole computation graph of the step alive (memory grows "
                 "with every loss you store)") if tensors[0].requires_grad else "is not a number a log can print"
        return HINT_TENSOR.format(alive=alive)
    if any(v is None for v in got.returned):
        return "return the loss of the batch: `return loss.item()`."
    initial = _state(_make(spec)[0])
    if all(torch.equal(got.state[n], initial[n]) for n, _ in _make(spec)[0].named_parameters()):
        return HINT_NO_UPDATE
    variants = [({"train": False}, HINT_EVAL), ({"loss": "softmax"}, HINT_SOFTMAX),
                ({"loss": "unweighted"}, HINT_UNWEIGHTED), ({"loss": "summed"}, HINT_SUMMED),
                ({"loss": "by_weights"}, HINT_BY_WEIGHTS)]
    for order in map("".join, itertools.chain(itertools.permutations("zfbs"), itertools.permutations("fbs"))):
        if order.index("f") < order.index("b") and _order_hint(order):
            variants.append(({"order": order}, _order_hint(order)))
    for kwargs, hint in variants:
        try:
            if _compare_steps(got, _simulate(spec, **kwargs), 0, 0) is None:
                return hint
        except RuntimeError:  # e.g. backward after an in-place step: that variant cannot even run
            continue
    return None


def _step_cases() -> list[Case]:
    def spec(name, classes, size, optimizer, seed):
        gen = torch.Generator().manual_seed(seed)
        h, w = size
        batches = []
        for _ in range(2):
            weights = 0.5 + torch.rand((2, h - 2, w - 2), generator=gen)
            weights[:, (h - 2) // 2] += 9.0  # a heavy gap row, as in a paper weight map
            batches.append((torch.randn((2, 1, h, w), generator=gen),
                            torch.randint(0, classes, (2, h - 2, w - 2), generator=gen), weights))
        s = {"classes": classes, "optimizer": optimizer, "seed": seed, "batches": batches}
        return Case(name, args=(s,), expected=_simulate(s))

    return [spec("SGD (lr 0.1), two steps in a row, 2 classes, batches of 2x1x10x10, model handed over in eval mode",
                 2, (10, 10), ("SGD", 0.1), 3),
            spec("Adam (lr 0.01), two steps in a row, 3 classes, batches of 2x1x8x12", 3, (8, 12), ("Adam", 0.01), 4)]


def check_train_step(train_step: Callable) -> None:
    """Check ``train_step(model, images, masks, weights, optimizer) -> float`` (one optimisation
    step with the paper's weighted cross-entropy) against a reference step."""
    def run(spec):
        model, optimizer = _make(spec)
        try:
            returned = [train_step(model, x.clone(), m.clone(), w.clone(), optimizer) for x, m, w in spec["batches"]]
        except RuntimeError as exc:  # the message gets the hint; the traceback (the learner's line) stays
            if "modified by an inplace operation" in str(exc):
                exc.args = (f"{exc.args[0]}\n   Likely mistake: {HINT_STEP_FIRST} optimizer.step() changes the "
                            "weights in place, so a backward() after it finds them modified.",)
            raise
        return _Steps(returned, _state(model))

    if not callable(train_step):
        run = train_step  # let run_check say what it got
    run_check(TASK_STEP, run, _step_cases(), _diagnose_step, compare=_compare_steps)


# ======================================================================================
# weight_map
# ======================================================================================
HINT_CENTRE = ("distance to the cell centre instead of its border: d1 and d2 are distances to the nearest "
               "*pixel* of a cell, distance_transform_edt(instances != i) for cell i.")
HINT_ON_CELLS = "the border term is added on cell pixels too; the course adds it on background pixels only."
HINT_D1_TWICE = "d1 used twice: the border term uses d1 + d2, the nearest and the second-nearest cell."
HINT_SIGMA = "sigma**2 instead of 2 sigma**2: the border term is w0 * exp(-(d1 + d2)**2 / (2 * sigma**2))."
HINT_NO_WC = ("w_c forgotten: the map is the class-balancing weight w_c(x) plus the border term; w_c gives the "
              "background and the cells weights n_pixels / (n_present_classes * n_pixels_of_class).")
HINT_WC_FREQ = "w_c is the class frequency; it must be its inverse, n_pixels / (n_present_classes * n_pixels_of_class)."
HINT_WC_ABSENT = ("w_c counted a class with no pixels: with no cells only the background is present, so "
                  "n_present_classes = 1 and w_c = 1 everywhere.")
HINT_ONE_CELL = ("with a single cell there is no second-nearest cell: d2 is infinite and the border term is 0 "
                 "(w = w_c), not w0 * exp(-d1**2 / (2 sigma**2)).")
HINT_EDT_MASK = ("distance_transform_edt measures the distance to the nearest zero: pass instances != i (zero on "
                 "cell i), not the cell mask instances == i.")
HINT_ABSENT_IDS = ("you computed distance maps for ids that no cell has (range(1, instances.max() + 1) with ids "
                   "{ids}): an image without zeros gives distance_transform_edt no cell to measure to, so those "
                   "maps are not distances to any cell. Loop over the ids present, np.unique(instances) without 0.")
HINT_NO_BORDER = "the border term is missing: add w0 * exp(-(d1 + d2)**2 / (2 sigma**2)) on background pixels."
HINT_WMAP_NAN = ("the map has NaN or inf values: a class without pixels (no cells) must not be divided by (its "
                 "weight is unused: 0), and with fewer than two cells there is no d2 and no border term.")
HINT_FAR = ("far cells dropped in a way that changes the map: the border term is missing on background pixels "
            "whose two nearest cells are {reach:.1f} px or more away in total (d1 + d2), where it is still up "
            "to {term:.2g}. Drop a cell only where the term is negligible (below 1e-6: d1 + d2 > {cutoff:.0f} px "
            "here), or keep every cell.")


def _centre_distances(labels: np.ndarray):
    """Distances to the nearest and second-nearest cell *centre* (the misconception), inf if missing."""
    ids = [i for i in np.unique(labels) if i > 0]
    yy, xx = np.indices(labels.shape)
    maps = [np.hypot(yy - cy, xx - cx) for cy, cx in ndimage.center_of_mass(labels > 0, labels, ids)]
    maps = np.sort(np.stack(maps + [np.full(labels.shape, np.inf)] * 2), axis=0)
    return maps[0], maps[1]


def _diagnose_wmap(case: Case, got: Any) -> Optional[str]:
    labels = np.asarray(case.args[0]).astype(np.int64)
    w0, sigma = case.kwargs.get("w0", 10.0), case.kwargs.get("sigma", 5.0)
    g = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    if g.shape != labels.shape or g.dtype.kind not in "biuf":
        return None
    if not np.isfinite(g).all():
        return HINT_WMAP_NAN
    fg = labels > 0
    bg, n, n_fg = ~fg, fg.size, int(fg.sum())
    d1, d2 = (d.astype(np.float64) for d in border_distances(labels))
    wc = class_balance_weights(fg).astype(np.float64)

    def term(a, b, s2=2 * sigma**2):
        return w0 * np.exp(-((a + b) ** 2) / s2)

    border = term(d1, d2)
    candidates = [
        (HINT_NO_BORDER, lambda: wc),
        (HINT_CENTRE, lambda: wc + bg * term(*_centre_distances(labels))),
        (HINT_ON_CELLS, lambda: wc + border),
        (HINT_D1_TWICE, lambda: wc + bg * term(d1, d1)),
        (HINT_SIGMA, lambda: wc + bg * term(d1, d2, sigma**2)),
        (HINT_NO_WC, lambda: 1 + bg * border),
        (HINT_NO_WC, lambda: bg * border),
        (HINT_WC_FREQ, lambda: np.where(fg, n_fg / n, (n - n_fg) / n) + bg * border),
        (HINT_WC_ABSENT, lambda: np.where(fg, n / (2 * max(n_fg, 1)), n / (2 * max(n - n_fg, 1))) + bg * border),
        (HINT_EDT_MASK, lambda: wc + bg * w0),
    ]
    ids = np.unique(labels[fg])
    if len(ids) and len(ids) < ids.max():  # ids with gaps: a loop over range(1, max + 1) meets absent ones
        def absent_ids():
            maps = np.sort(np.stack([ndimage.distance_transform_edt(labels != i) for i in range(1, ids.max() + 1)]
                                    + [np.full(labels.shape, np.inf)] * 2), axis=0)
            return wc + bg * term(maps[0], maps[1])
        candidates.append((HINT_ABSENT_IDS.format(ids=", ".join(map(str, ids))), absent_ids))
    if not np.isfinite(d2).any():  # fewer than two cells
        candidates.append((HINT_ONE_CELL, lambda: wc + bg * term(d1, 0)))
    hint = _first_close(g, candidates, case.atol, case.rtol)
    if hint:
        return hint
    expected = case.expected.numpy()
    wrong = ~np.isclose(g, expected, atol=case.atol, rtol=case.rtol)
    kept = bg & (border > 1e-3) & ~wrong
    if wrong.any() and bg[wrong].all() and kept.any() and np.allclose(g[wrong], wc[wrong], atol=case.atol):
        cutoff = sigma * math.sqrt(2 * math.log(w0 / 1e-6))
        return HINT_FAR.format(reach=(d1 + d2)[wrong].min(), term=border[wrong].max(), cutoff=cutoff)
    return None


def _cells(shape, cells, dtype) -> np.ndarray:
    """A label image: ``cells`` is a list of (id, (top, bottom, left, right)) rectangles or (id, (cy, cx, r)) discs."""
    labels = np.zeros(shape, dtype=dtype)
    yy, xx = np.indices(shape)
    for cell_id, box in cells:
        if len(box) == 4:
            labels[box[0]:box[1], box[2]:box[3]] = cell_id
        else:
            labels[(yy - box[0]) ** 2 + (xx - box[1]) ** 2 <= box[2] ** 2] = cell_id
    return labels


def _wmap_cases() -> list[Case]:
    cases = []

    def add(name, labels, **kwargs):
        expected = torch.from_numpy(_ref_weight_map(labels.copy(), **kwargs).astype(np.float64))
        cases.append(Case(name, args=(labels,), kwargs=kwargs, expected=expected, atol=1e-4, rtol=1e-4))

    add("two cells with a 3-pixel gap, 20x24, int32 ids (as scipy.ndimage.label gives)",
        _cells((20, 24), [(1, (3, 17, 2, 10)), (2, (3, 17, 13, 22))], np.int32))
    add("four cells (one round), ids 1, 2, 5, 7 (not consecutive), int64, w0=5, sigma=3",
        _cells((24, 26), [(1, (1, 9, 1, 11)), (2, (11, 22, 2, 8)), (5, (16, 15, 5)), (7, (2, 8, 14, 24))],
               np.int64), w0=5.0, sigma=3.0)
    add("two cells 16 px apart, uint16 ids: their border term is small but not zero",
        _cells((16, 40), [(1, (4, 12, 2, 10)), (2, (4, 12, 26, 34))], np.uint16))
    add("no cell at all (an empty tile)", np.zeros((10, 12), dtype=np.int64))
    add("a single cell: no second-nearest cell, so no border term",
        _cells((14, 16), [(3, (7, 8, 4))], np.int32))
    return cases


def check_weight_map(weight_map: Callable) -> None:
    """Check ``weight_map(instances, w0=10.0, sigma=5.0) -> (H, W)`` against :func:`unetlib.weights.weight_map`."""
    run_check(TASK_WMAP, weight_map, _wmap_cases(), _diagnose_wmap)


# ======================================================================================
# Dice and focal loss: shared comparison
# ======================================================================================
def _graded(fn: Callable, last: dict) -> Callable:
    """Call the learner's loss and keep the gradient of its result with respect to the logits."""
    if not callable(fn):
        return fn  # run_check says what it got

    def call(logits, target, **kwargs):
        out = fn(logits, target, **kwargs)
        last["grad"], last["moderate"] = None, bool(logits.detach().abs().max() < 20)
        if isinstance(out, torch.Tensor) and out.requires_grad and out.numel() == 1:
            try:
                (last["grad"],) = torch.autograd.grad(out.sum(), logits, allow_unused=True)
            except RuntimeError:
                pass
        return out

    return call


def _loss_compare(last: dict) -> Callable:
    def compare(got, expected, atol, rtol):
        if isinstance(got, numbers.Real) and not isinstance(got, bool):
            return f"expected a 0-d tensor but got the Python number {float(got):.6g}"
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not torch.isfinite(got).all():
            return f"the loss is {got.item()} (expected {expected.item():.6g})"
        problem = compare_values(got, expected, atol, rtol)
        if problem or not got.requires_grad:
            return problem or "the value is right but it has no gradient (it is cut off from the logits)"
        grad = last.get("grad")
        if grad is None or not torch.isfinite(grad).all() or (last["moderate"] and not grad.any()):
            return "the value is right but its gradient with respect to the logits is missing, zero or not finite"
        return None

    return compare


def _hint_type(got: Any) -> Optional[str]:
    if isinstance(got, numbers.Real):
        return "return a tensor, not a Python number (no .item()): training needs loss.backward()."
    if isinstance(got, torch.Tensor) and got.ndim > 0 and got.numel() != 1:
        return f"reduce to one number (a 0-d tensor), not a tensor of shape {tuple(got.shape)}."
    return None


def _logits_cases(specs, reference, atol, rtol, seed) -> list[Case]:
    """``specs``: (name, N, C, H, W, kwargs, edit); ``edit(logits, target)`` may saturate logits in place."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for name, n, c, h, w, kwargs, edit in specs:
        logits = torch.randn((n, c, h, w), generator=gen) * 2
        target = torch.randint(0, c, (n, h, w), generator=gen)
        if edit:
            edit(logits, target, gen)
        logits.requires_grad_(True)
        expected = reference(logits, target, **kwargs).detach()
        cases.append(Case(name, args=(logits, target), kwargs=kwargs, expected=expected, atol=atol, rtol=rtol))
    return cases


# ======================================================================================
# dice_loss
# ======================================================================================
HINT_NO_SMOOTH = ("no smoothing: a class absent from the target and not predicted has sum p = sum t = 0, and "
                  "Dice = 0/0 = NaN. Add a constant to numerator and denominator, (2 sum p t + s) / (sum p + "
                  "sum t + s) (the course uses s = 1): such a class then scores 1.")
HINT_ARGMAX = ("argmax instead of probabilities: the loss has no gradient (argmax and one_hot cannot be "
               "differentiated). Use the probabilities themselves, softmax(logits, dim=1).")
HINT_NO_GRAD = ("the loss has no gradient: it is cut off from the logits (a .detach(), a numpy step, or "
                "torch.tensor(...) around a computed number); compute it with torch operations on the logits.")
HINT_DICE_UNION = ("2 sum p t divided by the union sum p + sum t - sum p t (IoU's denominator): that ratio reaches 2 "
                   "for a perfect prediction, a Dice above 1. Dice's denominator is sum p + sum t.")
HINT_DICE_RANGE = ("the loss is outside [0, 1], i.e. a Dice above 1 or negative, impossible for probabilities "
                   "(2 sum p t <= sum p + sum t): apply softmax over the classes (dim=1), compute one Dice per "
                   "class and return 1 - their mean (not their sum).")


def _soft_dice(p, t, smooth=1.0, dims=(0, 2, 3), factor=2.0, numerator=True, square=False, jaccard=False,
               union=False):
    inter = (p * t).sum(dims)
    denominator = (p**2).sum(dims) + (t**2).sum(dims) if square else p.sum(dims) + t.sum(dims)
    if jaccard or union:
        denominator = denominator - inter
    if jaccard:
        factor = 1.0
    return 1 - ((factor * inter + (smooth if numerator else 0.0)) / (denominator + smooth)).mean()


def _onehot(logits, target):
    return F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)


_DICE_VARIANTS = [
    ("no softmax: the Dice is computed on raw logits; turn them into probabilities with softmax(logits, dim=1).",
     lambda l, t: _soft_dice(l, _onehot(l, t))),
    ("sigmoid instead of softmax: the classes compete, so use softmax over dim=1.",
     lambda l, t: _soft_dice(torch.sigmoid(l), _onehot(l, t))),
    ("you returned the Dice coefficient; the loss is 1 - Dice (0 for a perfect prediction).",
     lambda l, t: 1 - _soft_dice(torch.softmax(l, 1), _onehot(l, t))),
    ("the factor 2 is missing: Dice = 2 sum p t / (sum p + sum t).",
     lambda l, t: _soft_dice(torch.softmax(l, 1), _onehot(l, t), factor=1.0)),
    ("that is the soft Jaccard/IoU, sum p t / (sum p + sum t - sum p t), not Dice.",
     lambda l, t: _soft_dice(torch.softmax(l, 1), _onehot(l, t), jaccard=True)),
    ("you averaged per-image Dice scores; the course sums each class over the whole batch (dims 0, 2, 3) "
     "before dividing.", lambda l, t: _soft_dice(torch.softmax(l, 1), _onehot(l, t), dims=(2, 3))),
    ("you left out class 0 (background); the course averages the Dice of all classes.",
     lambda l, t: _soft_dice(torch.softmax(l, 1)[:, 1:], _onehot(l, t)[:, 1:])),
    ("smoothing only in the denominator: an absent class that is correctly not predicted then scores 0 "
     "instead of 1; add the same constant to the numerator.",
     lambda l, t: _soft_dice(torch.softmax(l, 1), _onehot(l, t), numerator=False)),
    ("you squared the terms of the denominator (V-Net's form); the course's soft Dice uses sum p + sum t.",
     lambda l, t: _soft_dice(torch.softmax(l, 1), _onehot(l, t), square=True)),
    (HINT_DICE_UNION, lambda l, t: _soft_dice(torch.softmax(l, 1), _onehot(l, t), union=True)),
]


def _matching_variant(case: Case, got: Any, fn: Callable, variants, *extra) -> Optional[str]:
    """The hint of the first variant that reproduces ``got`` on the case *and* on a second, random
    input of the same shape (so that a coincidence within the tolerance does not name a mistake)."""
    logits, target = case.args[0].detach().double(), case.args[1]
    gen = torch.Generator().manual_seed(99)
    n, c, h, w = logits.shape  # at least 32x32, so that any smoothing constant up to 1 stays within tolerance
    probe = (torch.randn((n, c, max(h, 32), max(w, 32)), generator=gen) * 2,
             torch.randint(0, c, (n, max(h, 32), max(w, 32)), generator=gen))
    try:
        again = fn(probe[0].clone().requires_grad_(True), probe[1].clone(), **case.kwargs)
    except Exception:
        again = None
    for hint, variant in variants:
        try:
            if _close_to(got, variant(logits, target, *extra), case.atol, case.rtol) and (
                    again is None or _close_to(again, variant(probe[0].double(), probe[1], *extra), case.atol, case.rtol)):
                return hint
        except Exception:  # a variant that does not apply to this case explains nothing
            continue
    return None


def _diagnose_dice(case: Case, got: Any, fn: Callable) -> Optional[str]:
    hint = _hint_type(got)
    if hint or not isinstance(got, torch.Tensor):
        return hint
    if not got.requires_grad:
        logits, target = case.args[0].detach().double(), case.args[1]
        hard = _onehot(logits, logits.argmax(1))
        explained = any(_close_to(got, _soft_dice(hard, _onehot(logits, target), smooth=s), case.atol, case.rtol)
                        for s in (1.0, 1e-6, 0.0))
        return HINT_ARGMAX if explained else HINT_NO_GRAD
    if not torch.isfinite(got).all():
        return HINT_NO_SMOOTH
    hint = _matching_variant(case, got, fn, _DICE_VARIANTS)
    if hint is None and not -case.atol <= got.item() <= 1 + case.atol:
        hint = HINT_DICE_RANGE
    return hint


def _informative(logits, target, gen):
    logits += 3.0 * F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)


def _empty_class(logits, target, gen):
    target.clamp_(max=1)      # class 2 never occurs...
    logits[:, 2] = -200.0     # ...and is never predicted: softmax gives exactly 0


def _perfect(logits, target, gen):
    logits.copy_(F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2) * 200.0 - 100.0)


def _mixed_batch(logits, target, gen):
    target[0] = (torch.rand(target.shape[1:], generator=gen) < 0.1).long()  # image 0: mostly background
    logits[1, 2] += 2.0  # image 1: class 2 over-predicted


def check_dice_loss(dice_loss: Callable) -> None:
    """Check ``dice_loss(logits (N, C, H, W), target (N, H, W) int64) -> 0-d tensor`` against
    :func:`unetlib.losses.soft_dice_loss` (any smoothing constant up to 1 passes)."""
    specs = [("2 classes, 1x2x32x32, a half-trained prediction", 1, 2, 32, 32, {}, _informative),
             ("3 classes, a batch of 2 images with different class mixes, 2x3x32x32", 2, 3, 32, 32, {}, _mixed_batch),
             ("class 2 absent from the target and never predicted (logits -200: probability exactly 0)",
              2, 3, 24, 24, {}, _empty_class),
             ("a perfect prediction (logits +-100): loss 0", 1, 2, 16, 16, {}, _perfect)]
    last: dict = {}
    run_check(TASK_DICE, _graded(dice_loss, last), _logits_cases(specs, soft_dice_loss, 2e-3, 0.0, seed=21),
              lambda case, got: _diagnose_dice(case, got, dice_loss), compare=_loss_compare(last))


# ======================================================================================
# focal_loss
# ======================================================================================
HINT_FOCAL_NAN = ("the loss is not finite at saturated logits: log(softmax(x)) underflows to log(0) = -inf for a "
                  "confidently wrong pixel (and 0 * -inf = NaN in a one-hot sum). Take log p_t from "
                  "torch.log_softmax, and p_t = exp(log p_t).")
HINT_CLIPPED = ("you clipped the probabilities (here eps = {eps:.3g}): that keeps the loss finite but caps a "
                "confidently wrong pixel's loss at -log(eps) = {cap:.3g}, where it should be {worst:.3g}. Take "
                "log p_t from torch.log_softmax, which is exact for large logits.")
HINT_GAMMA_FIXED = ("you used gamma = 2 although gamma={gamma:g} was passed: use the gamma argument (a `gamma or "
                    "2.0` turns 0 into 2).")
HINT_GAMMA_ZERO = ("with gamma = 0 the factor (1 - p_t)**0 is 1, so the focal loss must equal plain "
                   "cross-entropy, mean over pixels of -log p_t.")


def _focal_parts(logits, target):
    log_p = torch.log_softmax(logits, 1)
    log_pt = log_p.gather(1, target[:, None])[:, 0]
    return log_p, log_pt.exp(), -log_pt


def _focal_variant(per_pixel, reduce=torch.mean):
    """A variant ``(logits, target, gamma) -> loss`` from ``per_pixel(log_p, p_t, ce, gamma)``."""
    return lambda l, t, g: reduce(per_pixel(*_focal_parts(l, t), g))


_FOCAL_VARIANTS = [
    ("the factor uses p_t instead of 1 - p_t: (1 - p_t)**gamma makes the easy pixels (p_t near 1) count "
     "less; p_t**gamma does the opposite.", _focal_variant(lambda lp, pt, ce, g: pt**g * ce)),
    ("gamma on the wrong factor: it is the exponent of (1 - p_t), not of p_t.",
     _focal_variant(lambda lp, pt, ce, g: (1 - pt**g) * ce)),
    ("gamma on the wrong factor: (1 - p_t)**gamma * (-log p_t), not (1 - p_t) * (-log p_t)**gamma.",
     _focal_variant(lambda lp, pt, ce, g: (1 - pt) * ce**g)),
    ("gamma is an exponent, not a factor: (1 - p_t)**gamma.", _focal_variant(lambda lp, pt, ce, g: g * (1 - pt) * ce)),
    ("the modulating factor is missing: this is plain cross-entropy; multiply each pixel's -log p_t by "
     "(1 - p_t)**gamma.", _focal_variant(lambda lp, pt, ce, g: ce if g else None)),
    ("loss summed instead of averaged: take the mean over the pixels.",
     _focal_variant(lambda lp, pt, ce, g: (1 - pt) ** g * ce, torch.sum)),
    ("you summed over all classes: the focal loss of a pixel uses only its true class's p_t.",
     _focal_variant(lambda lp, pt, ce, g: -((1 - lp.exp()) ** g * lp).sum(1))),
    ("a constant factor alpha = 0.25 (RetinaNet's alpha_t, copied from the detection paper): the course's "
     "focal loss has no alpha, so that with gamma = 0 it equals plain cross-entropy.",
     _focal_variant(lambda lp, pt, ce, g: 0.25 * (1 - pt) ** g * ce)),
    ("a constant factor alpha = 0.75 (RetinaNet's alpha_t for the other class): the course's focal loss has no "
     "alpha, so that with gamma = 0 it equals plain cross-entropy.",
     _focal_variant(lambda lp, pt, ce, g: 0.75 * (1 - pt) ** g * ce)),
    ("sigmoid instead of softmax: the classes compete, so p_t comes from softmax over dim=1.",
     lambda l, t, g: (-(1 - torch.sigmoid(l)) ** g * F.logsigmoid(l)).gather(1, t[:, None]).mean()),
]


def _diagnose_focal(case: Case, got: Any, fn: Callable) -> Optional[str]:
    hint = _hint_type(got)
    if hint or not isinstance(got, torch.Tensor):
        return hint
    if not got.requires_grad:
        return "the loss has no gradient: compute it with torch operations on the logits (no .detach(), no argmax)."
    if not torch.isfinite(got).all():
        return HINT_FOCAL_NAN
    gamma = case.kwargs.get("gamma", 2.0)
    variants = list(_FOCAL_VARIANTS)
    if gamma != 2:
        variants.insert(0, (HINT_GAMMA_FIXED.format(gamma=gamma), lambda l, t, g: _focal_variant(
            lambda lp, pt, ce, _: (1 - pt) ** 2 * ce)(l, t, g)))
    hint = _matching_variant(case, got, fn, variants, gamma)
    if hint:
        # the gamma = 0 case is where "reduces to cross-entropy" is tested: say so with the mistake
        return hint + (" " + HINT_GAMMA_ZERO if gamma == 0 and HINT_GAMMA_ZERO not in hint else "")
    target = case.args[1]
    p = torch.softmax(case.args[0].detach(), 1).gather(1, target[:, None])[:, 0].double()
    worst = _focal_parts(case.args[0].detach().double(), target)[2].max().item()
    for eps in _EPSILONS:
        for q in (p.clamp(eps, 1 - eps), p + eps, p.clamp(min=eps)):
            if _close_to(got, (-(1 - q) ** gamma * q.log()).mean(), case.atol, case.rtol):
                return HINT_CLIPPED.format(eps=eps, cap=-math.log(eps), worst=worst)
    return HINT_GAMMA_ZERO if gamma == 0 else None


def _saturated(logits, target, gen):
    logits[:, 0, :2] = torch.where(target[:, :2] == 0, 100.0, -100.0)  # rows 0-1: confidently right ...
    logits[:, 0, 0, :3] *= -1                                          # ... except 3 confidently wrong pixels
    logits[:, 1, :2] = -logits[:, 0, :2]  # p_t = exp(-200) is exactly 0 in float32


def check_focal_loss(focal_loss: Callable) -> None:
    """Check ``focal_loss(logits (N, C, H, W), target (N, H, W) int64, gamma=2.0) -> 0-d tensor`` against
    :func:`unetlib.losses.focal_loss`, including saturated float32 logits."""
    specs = [("2 classes, 1x2x6x6, the default gamma (2)", 1, 2, 6, 6, {}, None),
             ("3 classes, batch of 2, 2x3x5x7, gamma=1.5", 2, 3, 5, 7, {"gamma": 1.5}, None),
             ("gamma=0: must equal plain cross-entropy", 2, 3, 4, 4, {"gamma": 0.0}, None),
             ("saturated float32 logits (+-100): confidently right pixels cost 0, confidently wrong ones 200",
              1, 2, 6, 6, {"gamma": 2.0}, _saturated)]
    last: dict = {}
    reference = lambda logits, target, gamma=2.0: _ref_focal(logits, target, gamma=gamma)  # noqa: E731
    run_check(TASK_FOCAL, _graded(focal_loss, last), _logits_cases(specs, reference, 1e-5, 1e-4, seed=31),
              lambda case, got: _diagnose_focal(case, got, focal_loss), compare=_loss_compare(last))
