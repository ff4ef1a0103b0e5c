"""Checks for notebook 05 (the full training run): weighted loss, IoU, overlap-tile stitching.

Each ``check_*`` takes the learner's function, runs it on a few named cases and compares
the result with unetlib's own implementation (:mod:`unetlib.losses`, :mod:`unetlib.metrics`,
:mod:`unetlib.tiling`). When an answer is wrong, the diagnosis recomputes the answer that
each common misconception would give and names the one that matches.

Contracts (also stated in the exercise notebook):

* ``weighted_cross_entropy(logits, target, weight) -> loss``: logits float (N, C, H, W),
  target int64 class ids (N, H, W), weight float (N, H, W); returns a 0-d tensor, the
  pixel-weighted cross-entropy normalised as :func:`unetlib.losses.weighted_cross_entropy`.
* ``iou(pred, target, num_classes) -> per_class``: pred/target integer class ids,
  (H, W) or (N, H, W); returns float (num_classes,), NaN for a class absent from both.
* ``predict_tiled_by_hand(model, image, tile_in, tile_out) -> logits``: image float
  (C, H, W); the model maps (N, C, tile_in, tile_in) to (N, K, tile_out, tile_out);
  returns (K, H, W), the same as running the model once on the whole mirror-padded image.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..tiling import mirror_pad
from ._core import Case, compare_values, run_check

__all__ = [
    "check_weighted_cross_entropy",
    "check_iou",
    "check_stitching",
    "CopyCentre",
    "TinyValidNet",
]


def _close(got: Any, value: Optional[torch.Tensor], atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """True when ``got`` is a tensor with ``value``'s shape and values (NaNs equal)."""
    if value is None or not isinstance(got, torch.Tensor) or got.shape != value.shape:
        return False
    g = got.detach().cpu().to(torch.float64)
    v = value.detach().cpu().to(torch.float64)
    return bool(torch.allclose(g, v, atol=atol, rtol=rtol, equal_nan=True))


def _first_match(got: Any, candidates: list[tuple[str, Callable[[], torch.Tensor]]], atol=1e-5, rtol=1e-4):
    """The hint of the first misconception whose (lazily computed) answer equals ``got``."""
    for hint, compute in candidates:
        try:
            value = compute()
        except Exception:  # a misconception that cannot even run on this case does not match
            continue
        if _close(got, value, atol, rtol):
            return hint
    return None


# ======================================================================================
# Task 1: the pixel-weighted cross-entropy
# ======================================================================================
def _loss_cases() -> list[Case]:
    from ..losses import weighted_cross_entropy  # the library's reference

    gen = torch.Generator().manual_seed(1)
    cases = []

    def add(name, n, c, h, w, weight_kind="random", confident=False):
        logits = torch.randn((n, c, h, w), generator=gen) * 2
        target = torch.randint(0, c, (n, h, w), generator=gen)
        if confident:  # a few confidently wrong pixels: p(true class) = exp(-120) underflows to 0
            logits[:, :, 0, :] = 0.0
            logits[:, 0, 0, :] = 60.0
            logits[:, 1, 0, :] = -60.0
            target[:, 0, :] = 1
        if weight_kind == "random":  # like a paper weight map: ~1 almost everywhere, large on gaps
            weight = 0.5 + torch.rand((n, h, w), generator=gen)
            weight[:, h // 2, :] += 9.0
        else:
            weight = torch.ones((n, h, w))
        logits.requires_grad_(True)  # the loss must stay differentiable
        expected = weighted_cross_entropy(logits, target, weight).detach()
        cases.append(Case(name, args=(logits, target, weight), expected=expected, atol=1e-6, rtol=1e-5))

    add("all weights 1 (must equal plain cross-entropy)", 1, 2, 4, 4, weight_kind="ones")
    add("2 classes, a weight map with a heavy gap row, 1x5x6", 1, 2, 5, 6)
    add("3 classes, batch of 2, 2x7x4", 2, 3, 7, 4)
    add("confidently wrong pixels (logits +-60): needs a numerically stable log_softmax", 2, 2, 3, 3, confident=True)
    return cases


def _diagnose_loss(case: Case, got: Any) -> Optional[str]:
    logits, target, weight = case.args
    if isinstance(got, (float, int)):
        return "return a tensor, not a Python number (no .item()): training needs loss.backward()."
    if isinstance(got, torch.Tensor) and got.ndim > 0:
        if got.shape == target.shape:
            return "reduce the per-pixel losses to one number (a 0-d tensor), as the library does."
        return f"return one number (a 0-d tensor), not a tensor of shape {tuple(got.shape)}."
    if _close(got, case.expected, case.atol, case.rtol):
        return None  # right value; the comparison already said what else is wrong
    if isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
        return ("the loss is not finite: torch.log(torch.softmax(...)) underflows to log(0) = -inf for a "
                "confidently wrong pixel; use torch.log_softmax (or F.cross_entropy), which stays exact.")
    n_pixels = target.numel()
    per_pixel = F.cross_entropy(logits, target, reduction="none")
    probs = torch.softmax(logits, dim=1)
    expected = case.expected

    def renorm(values):
        """The library's normalisation: weighted sum divided by the number of pixels."""
        return (weight * values).sum() / n_pixels

    candidates = [
        ("the weights are ignored: this is plain (unweighted) cross-entropy. Multiply each pixel's "
         "loss by its weight before averaging.", lambda: per_pixel.mean()),
        ("you averaged the loss over the pixels *before* weighting (e.g. F.cross_entropy(logits, target) * "
         "weight): use reduction='none' to get one loss per pixel, multiply by the weight map, then average.",
         lambda: per_pixel.mean() * weight.mean()),
        ("you divided by the sum of the weights; the library divides the weighted sum by the number of "
         "pixels (a mean over pixels), so that heavy border weights really make the loss larger.",
         lambda: (weight * per_pixel).sum() / weight.sum()),
        ("you summed instead of averaging: divide the weighted sum as the library does.",
         lambda: (weight * per_pixel).sum()),
        ("softmax applied twice: F.cross_entropy applies log_softmax itself, so pass it the raw logits, "
         "not probabilities.",
         lambda: renorm(F.cross_entropy(probs, target, reduction="none"))),
        ("you passed probabilities to nll_loss without taking their log: use log_softmax(logits, dim=1) "
         "(or F.cross_entropy on the logits).", lambda: renorm(F.nll_loss(probs, target, reduction="none"))),
        ("the softmax runs over the wrong dimension: the classes are dim=1 of (N, C, H, W).",
         lambda: renorm(-torch.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0])),
        ("target one-hot confusion: target holds class ids (N, H, W), not a one-hot/probability map. "
         "Pick each pixel's log-probability with gather (or one_hot(target, C) moved to dim 1).",
         lambda: renorm(-(target[:, None].to(logits.dtype) * torch.log_softmax(logits, dim=1)).sum(1))),
    ]
    hint = _first_match(got, candidates, atol=1e-6, rtol=1e-5)
    return hint or _diagnose_log_of_softmax_plus_eps(case, got)


# Epsilons learners add to probabilities before the log (1e-7 is Keras' default, 1.19e-7 float32's eps).
_EPSILONS = [10.0 ** -k for k in range(3, 17)] + [torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps]


def _diagnose_log_of_softmax_plus_eps(case: Case, got: Any) -> Optional[str]:
    """Recognise -log(softmax + eps) (or of softmax clamped at eps): finite, but wrong for large logits."""
    logits, target, weight = case.args
    if not isinstance(got, torch.Tensor) or got.ndim != 0:
        return None
    with torch.no_grad():
        probs = torch.softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        true_loss = -torch.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        # An eps of any size: solve the pixels whose probability underflowed to 0 for -log(eps).
        zero = probs == 0
        solved = []
        if zero.any():
            rest = (weight * true_loss)[~zero].sum()
            minus_log_eps = (got.detach().double() * target.numel() - rest) / weight[zero].sum()
            solved = [math.exp(-minus_log_eps.item())] if 0 < minus_log_eps.item() < 745 else []
        for eps in _EPSILONS + solved:
            for per_pixel in (-torch.log(probs + eps), -torch.log(probs.clamp(min=eps))):
                if _close(got, (weight * per_pixel).sum() / target.numel(), case.atol, case.rtol):
                    worst = true_loss.max().item()
                    return (f"you took log(softmax(x) + eps) (or clamped the probabilities at eps; here "
                            f"eps = {eps:.3g}): that keeps the loss finite "
                            f"but caps each pixel's loss at -log(eps) = {-math.log(eps):.3g}, while a "
                            f"confidently wrong pixel should cost {worst:.3g}. Use torch.log_softmax "
                            "(or F.cross_entropy), which is exact and stable for large logits.")
    return None


def _compare_loss(got, expected, atol, rtol):
    if isinstance(got, (float, int)) and not isinstance(got, bool):
        return f"expected a 0-d tensor but got the Python number {got:.6g}"
    problem = compare_values(got, expected, atol, rtol)
    if problem is None and not got.requires_grad:
        return ("the value is right but it is cut off from the logits (no gradient): compute it with torch "
                "operations on `logits` only (no .detach(), .numpy() or torch.no_grad())")
    return problem


def check_weighted_cross_entropy(weighted_cross_entropy: Callable) -> None:
    """Check ``weighted_cross_entropy(logits (N,C,H,W), target (N,H,W), weight (N,H,W)) -> 0-d tensor``
    against :func:`unetlib.losses.weighted_cross_entropy`."""
    run_check("Task 1: pixel-weighted cross-entropy", weighted_cross_entropy, _loss_cases(), _diagnose_loss,
              compare=_compare_loss)


# ======================================================================================
# Task 2: per-class IoU
# ======================================================================================
def _iou_cases() -> list[Case]:
    from ..metrics import iou_per_class  # the library's reference

    gen = torch.Generator().manual_seed(2)
    cases = []

    def add(name, pred, target, num_classes):
        expected = torch.from_numpy(iou_per_class(pred, target, num_classes))
        cases.append(Case(name, args=(pred, target, num_classes), expected=expected))

    t = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]])
    p = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    add("2 classes, 3x4, worked by hand", p, t, 2)
    add("3 classes, batch (2, 6, 5)", torch.randint(0, 3, (2, 6, 5), generator=gen),
        torch.randint(0, 3, (2, 6, 5), generator=gen), 3)
    add("class 2 absent from prediction and target (-> NaN)", torch.tensor([[0, 1], [1, 1]]),
        torch.tensor([[0, 1], [0, 1]]), 3)
    add("class 1 predicted but absent from the target (-> 0)", torch.tensor([[1, 1], [0, 0]]),
        torch.zeros((2, 2), dtype=torch.int64), 2)
    add("perfect prediction", t, t.clone(), 2)
    return cases


def _per_image_mean_iou(pred, target, num_classes):
    from ..metrics import iou_per_class

    if pred.ndim != 3 or pred.shape[0] < 2:
        raise ValueError("not a batch")
    per_image = torch.stack([torch.from_numpy(iou_per_class(p, t, num_classes)) for p, t in zip(pred, target)])
    return per_image.nanmean(0)


def _diagnose_iou(case: Case, got: Any) -> Optional[str]:
    pred, target, num_classes = case.args
    if isinstance(got, np.ndarray) and got.dtype != object:
        got = torch.from_numpy(got)
    if not isinstance(got, torch.Tensor):
        return "return a float tensor of shape (num_classes,), one IoU per class."
    p, t = pred.reshape(-1), target.reshape(-1)
    k = torch.arange(num_classes)[:, None]
    in_p, in_t = (p[None] == k), (t[None] == k)
    inter = (in_p & in_t).sum(1).double()
    size_p, size_t = in_p.sum(1).double(), in_t.sum(1).double()
    union = size_p + size_t - inter
    empty = union == 0
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    expected = case.expected
    if got.shape == (num_classes - 1,):
        return ("you left out class 0 (background); return one IoU per class, background included "
                "(whether to average it is decided later, by the mean).")
    candidates = [
        ("a class absent from both prediction and target scored 1.0; it must be NaN (no evidence either "
         "way), otherwise the mean IoU is inflated by classes that never occur.",
         lambda: torch.where(empty, torch.ones_like(inter), inter / union.clamp(min=1))),
        ("a class absent from both prediction and target scored 0.0; it must be NaN (nothing to measure), "
         "otherwise the mean IoU is deflated by classes that never occur.",
         lambda: torch.where(empty, torch.zeros_like(inter), inter / union.clamp(min=1))),
        ("you computed Dice, 2|P n T| / (|P| + |T|), instead of IoU, |P n T| / |P u T|.",
         lambda: torch.where(empty, nan, 2 * inter / (size_p + size_t).clamp(min=1))),
        ("the union was counted as |P| + |T|, which counts the intersection twice: "
         "|P u T| = |P| + |T| - |P n T|.",
         lambda: torch.where(empty, nan, inter / (size_p + size_t).clamp(min=1))),
        ("you averaged the IoUs of the single images; the library counts the pixels of the whole batch "
         "together (one intersection and one union per class over all N images).",
         lambda: _per_image_mean_iou(pred, target, num_classes)),
        ("you divided by the target size |T| (that is recall/sensitivity), not by the union |P u T|.",
         lambda: torch.where(empty, nan, inter / size_t)),
        ("IoU is a ratio of pixel counts: make sure you count with a boolean mask per class "
         "(pred == k) & (target == k) and divide by the union, without rounding to an integer.",
         lambda: torch.where(empty, nan, torch.div(inter, union.clamp(min=1), rounding_mode="floor"))),
    ]
    hint = _first_match(got, candidates)
    if hint:
        return hint
    if got.shape == expected.shape and torch.isnan(got.double()).any() != torch.isnan(expected).any():
        return "return NaN only for a class that is absent from both prediction and target."
    return None


def _compare_iou(got, expected, atol, rtol):
    """compare_values, plus a clear sentence when NaNs sit in the wrong places."""
    if isinstance(got, (torch.Tensor,)) or hasattr(got, "__array__"):
        g = torch.as_tensor(got) if not isinstance(got, torch.Tensor) else got
        if g.shape == expected.shape and g.is_floating_point():
            g_nan, e_nan = torch.isnan(g.detach().cpu()), torch.isnan(expected)
            if not torch.equal(g_nan, e_nan):
                k = int(torch.nonzero(g_nan != e_nan)[0, 0])
                exp_text = "NaN" if e_nan[k] else f"{expected[k].item():.4g}"
                return f"class {k}: expected {exp_text} but got {g[k].item():.4g}"
    return compare_values(got, expected, atol, rtol)


def check_iou(iou: Callable) -> None:
    """Check ``iou(pred, target, num_classes) -> float (num_classes,)`` against
    :func:`unetlib.metrics.iou_per_class`."""
    run_check("Task 2: per-class IoU", iou, _iou_cases(), _diagnose_iou, compare=_compare_iou)


# ======================================================================================
# Task 3: overlap-tile prediction by hand
# ======================================================================================
class CopyCentre(nn.Module):
    """A stand-in 'network' with valid padding that returns the centre of each input tile.

    Input (N, C, tile_in, tile_in) -> output (N, C, tile_in - 2*context, ...). Stitching its
    tiles correctly must give back the image itself, which makes misplaced tiles obvious.
    ``tile_in`` (optional) makes it refuse other tile sizes, as a real U-Net does.
    """

    def __init__(self, context: int, tile_in: Optional[int] = None):
        super().__init__()
        self.context, self.tile_in = int(context), tile_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tile(x, self.tile_in)
        c = self.context
        return x[..., c : x.shape[-2] - c, c : x.shape[-1] - c]


class TinyValidNet(nn.Module):
    """A tiny valid-padding encoder-decoder: 3x3 conv, 2x2 max-pool, 3x3 conv, 2x2 up-conv, 1x1 conv.

    (N, C, s, s) -> (N, K, s - 6, s - 6) for even s: 3 px of context on each side, and a
    pooling grid, so tiles must start at even pixels (like a U-Net's multiples of 16).
    float64 with seeded weights, so a tiled and a whole-image forward agree to ~1e-12.
    """

    context = 3

    def __init__(self, in_channels: int = 1, num_classes: int = 2, tile_in: Optional[int] = None, seed: int = 0):
        super().__init__()
        self.tile_in = tile_in
        self.conv1 = nn.Conv2d(in_channels, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.out = nn.Conv2d(4, num_classes, 1)
        _fixed_float64_weights(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tile(x, self.tile_in)
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"TinyValidNet needs an even input size, got {tuple(x.shape[-2:])}")
        x = torch.relu(self.conv1(x.to(torch.float64)))
        x = torch.relu(self.conv2(F.max_pool2d(x, 2)))
        return self.out(torch.relu(self.up(x)))


def _fixed_float64_weights(model: nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded N(0, 0.5^2) values, in float64, frozen.

    The reference nets of the checks must give the same numbers on every machine and
    must not depend on torch's global RNG or on learner code that touched it.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    model.double().requires_grad_(False)


def _check_tile(x: Any, tile_in: Optional[int]) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"the model takes a batch of tiles (N, C, tile_in, tile_in), got {shape}")
    if tile_in is not None and tuple(x.shape[-2:]) != (tile_in, tile_in):
        raise ValueError(f"the model expects input tiles of {tile_in}x{tile_in}, got {tuple(x.shape[-2:])}")


class TwoConvNet(nn.Module):
    """Two valid 3x3 convolutions with a tanh between: 2 px of context per side, float64, seeded."""

    context = 2

    def __init__(self, in_channels: int, num_classes: int, tile_in: Optional[int] = None, seed: int = 1):
        super().__init__()
        self.tile_in = tile_in
        self.conv1 = nn.Conv2d(in_channels, 3, 3)
        self.conv2 = nn.Conv2d(3, num_classes, 3)
        _fixed_float64_weights(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tile(x, self.tile_in)
        return self.conv2(torch.tanh(self.conv1(x.to(torch.float64))))


def _pad(image: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> torch.Tensor:
    """Pad (C, H, W) by possibly negative amounts (negative = crop) with a given mode."""
    h, w = image.shape[-2:]
    image = image[..., max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]
    top, bottom, left, right = (max(p, 0) for p in (top, bottom, left, right))
    if mode == "reflect":
        return mirror_pad(image, top, bottom, left, right)
    if mode == "zeros":
        return F.pad(image, (left, right, top, bottom))
    if mode == "replicate":
        return F.pad(image[None], (left, right, top, bottom), mode="replicate")[0]
    if mode == "symmetric":  # mirror that repeats the edge pixel (numpy's "symmetric")
        rows = _symmetric_index(-top, image.shape[-2] + bottom, image.shape[-2])
        cols = _symmetric_index(-left, image.shape[-1] + right, image.shape[-1])
        return image.index_select(-2, rows).index_select(-1, cols)
    raise ValueError(mode)


def _symmetric_index(start: int, stop: int, size: int) -> torch.Tensor:
    coords = torch.arange(start, stop).remainder(2 * size)
    return torch.where(coords < size, coords, 2 * size - 1 - coords)


def _tiles_by_hand(model, image, tile_in, tile_out, *, lead=None, pad="reflect", step=None, drop_last=False,
                   clamp_last=False):
    """Overlap-tile prediction with knobs that reproduce the common mistakes.

    lead: image pixels between an input tile's origin and its output tile's origin
          (correct: the context (tile_in - tile_out) // 2). step: distance between tiles
          (correct: tile_out). drop_last: stop before a partial last tile. clamp_last: move
          the last tile back inside the image (origin H - tile_out) instead of cropping it.
    """
    _, height, width = image.shape
    context = (tile_in - tile_out) // 2
    lead = context if lead is None else lead
    step = tile_out if step is None else step
    stop_h = height - tile_out + 1 if drop_last else height
    stop_w = width - tile_out + 1 if drop_last else width
    ys, xs = list(range(0, stop_h, step)), list(range(0, stop_w, step))
    if clamp_last:  # the later tiles overwrite the overlap, as in a learner's loop
        ys = [max(min(y, height - tile_out), 0) for y in ys]
        xs = [max(min(x, width - tile_out), 0) for x in xs]
    bottom = max(ys + [0]) + tile_in - lead - height
    right = max(xs + [0]) + tile_in - lead - width
    padded = _pad(image, lead, bottom, lead, right, pad)
    result = None
    with torch.no_grad():
        for y in ys:
            for x in xs:
                out = model(padded[None, :, y : y + tile_in, x : x + tile_in])[0]
                if result is None:
                    result = torch.zeros((out.shape[0], height, width), dtype=out.dtype)
                h, w = min(out.shape[-2], height - y), min(out.shape[-1], width - x)
                result[:, y : y + h, x : x + w] = out[:, :h, :w]
    return result


def _stitch_reference(model, image: torch.Tensor, tile_in: int, tile_out: int) -> torch.Tensor:
    """One forward pass over the whole mirror-padded image: what perfect stitching must equal."""
    _, height, width = image.shape
    context = (tile_in - tile_out) // 2
    # Pad to a whole number of output tiles so that the pooling grid matches the tiles'.
    extra_h = math.ceil(height / tile_out) * tile_out - height
    extra_w = math.ceil(width / tile_out) * tile_out - width
    padded = mirror_pad(image, context, context + extra_h, context, context + extra_w)
    saved = getattr(model, "tile_in", None)
    model.tile_in = None  # the reference runs one big "tile"
    try:
        with torch.no_grad():
            return model(padded[None])[0, :, :height, :width]
    finally:
        model.tile_in = saved


def _stitching_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(5)
    cases = []

    def add(name, model, image, tile_in, tile_out):
        image = image.to(torch.float64)
        expected = _stitch_reference(model, image, tile_in, tile_out)
        cases.append(Case(name, args=(model, image, tile_in, tile_out), expected=expected, atol=1e-8, rtol=1e-6))

    add("copy-the-centre model, 1x20x20 image, tiles 10 -> 6 (context 2, last tiles partial)",
        CopyCentre(2, tile_in=10), torch.rand((1, 20, 20), generator=gen), 10, 6)
    add("two 3x3 convs, 2x23x17 image, tiles 12 -> 8 (non-square, border pixels need the mirror)",
        TwoConvNet(2, 3, tile_in=12), torch.rand((2, 23, 17), generator=gen), 12, 8)
    add("tiny net with a 2x2 max-pool, 1x24x24 image, tiles 18 -> 12 (exact fit)",
        TinyValidNet(1, 2, tile_in=18), torch.rand((1, 24, 24), generator=gen), 18, 12)
    # H - tile_out and W - tile_out are odd here: a last tile moved back inside the image
    # would start off the pooling grid (odd pixel), which is not exact.
    add("tiny net with a 2x2 max-pool, 1x29x27 image, tiles 14 -> 8 (odd sizes: tile origins stay even)",
        TinyValidNet(1, 2, tile_in=14, seed=3), torch.rand((1, 29, 27), generator=gen), 14, 8)
    add("an image smaller than one output tile: 1x5x5, tiles 10 -> 6",
        CopyCentre(2, tile_in=10), torch.rand((1, 5, 5), generator=gen), 10, 6)
    return cases


def _diagnose_stitching(case: Case, got: Any) -> Optional[str]:
    model, image, tile_in, tile_out = case.args
    context = (tile_in - tile_out) // 2
    if not isinstance(got, torch.Tensor):
        return "return a tensor of shape (K, H, W): the model's output channels, then the image's height and width."
    _, height, width = image.shape
    if got.ndim == 4 and got.shape[0] == 1 and got.shape[1:] == case.expected.shape:
        return "return (K, H, W) without the batch dimension: take `model(tile)[0]`."
    if got.shape[-2:] != (height, width):
        return (f"the result must have the image's size {height}x{width}: allocate (K, H, W) and crop the "
                f"last tiles where they stick out past the image (they cover up to "
                f"{math.ceil(height / tile_out) * tile_out}x{math.ceil(width / tile_out) * tile_out}).")

    def sim(**kw):
        return lambda: _tiles_by_hand(model, image, tile_in, tile_out, **kw)

    candidates = [
        ("you cut the input tiles without the mirror padding, so every output is shifted by the context: "
         f"pad the image by context = (tile_in - tile_out) // 2 = {context} px on each side first, so that "
         "the input tile for output pixel y starts at image pixel y - context.", sim(lead=0)),
        ("you shifted the input tiles by the context twice: in the mirror-padded image the input tile for "
         "output origin (y, x) starts at (y, x) itself.", sim(lead=2 * context)),
        ("you stepped the tiles by tile_in, i.e. you made the *input* tiles abut; it is the *output* tiles "
         "that must abut, so step by tile_out (input tiles overlap by 2 * context).", sim(step=tile_in)),
        ("off-by-one tile stride: step by exactly tile_out.", sim(step=tile_out + 1)),
        ("off-by-one tile stride: step by exactly tile_out (with pooling, a shifted tile also pools "
         "different pixel pairs).", sim(step=tile_out - 1)),
        ("the last tile at the border is missing: range(0, H - tile_out + 1, tile_out) stops before a "
         "partial last tile; use range(0, H, tile_out), pad enough and crop the last outputs.",
         sim(drop_last=True)),
        ("you moved the last tile back inside the image (origin H - tile_out) instead of letting it "
         "stick out. That origin is off the network's pooling grid: with pooling, tile origins must be "
         "multiples of the pooling factor (2 here, 2**depth = 16 for a depth-4 U-Net), otherwise the "
         "tile pools different pixel groups and its outputs are slightly off. Keep the origins at 0, "
         "tile_out, 2 * tile_out, ..., pad the bottom/right so the last tile fits, and crop its output.",
         sim(clamp_last=True)),
        ("you zero-padded the image; the paper fills the missing context by mirroring "
         "(F.pad(..., mode='reflect')).", sim(pad="zeros")),
        ("you repeated the edge pixels (replicate padding); the paper mirrors the image "
         "(F.pad(..., mode='reflect')).", sim(pad="replicate")),
        ("your mirror repeats the edge pixel (numpy's 'symmetric'); use reflect padding, which mirrors "
         "about the edge pixel without repeating it (F.pad(..., mode='reflect')).", sim(pad="symmetric")),
    ]
    hint = _first_match(got, candidates, atol=1e-8, rtol=1e-6)
    if hint:
        return hint
    diff = (got.detach().to(torch.float64) - case.expected).abs().amax(dim=0)
    bad = diff > 1e-6
    if not bad.any():
        return None
    for shift in (context, -context):  # outputs written at the input tile's coordinates
        if shift and _shifted_match(got.detach().to(torch.float64), case.expected, shift):
            return (f"your result is the right one shifted by {abs(shift)} px (the context): write each output "
                    "tile at its *output* origin (y, x), and cut its input tile from the mirror-padded image "
                    "at the same (y, x), which is image pixel (y - context, x - context).")
    inner = bad[context : height - context, context : width - context]
    if inner.numel() and not inner.any():
        return (f"only pixels within {context} px of the image border are wrong: fill the missing context "
                "by mirroring the image (reflect padding).")
    if got.detach()[:, bad].eq(0).all():
        return ("some output pixels were never written (they are still 0): make sure the output tiles "
                "cover the whole image (origins 0, tile_out, 2*tile_out, ... up to H and W).")
    return None


def _shifted_match(got: torch.Tensor, expected: torch.Tensor, shift: int) -> bool:
    """True when got[y, x] == expected[y - shift, x - shift] wherever both exist (away from borders)."""
    s = abs(shift)
    if got.shape[-1] <= 2 * s or got.shape[-2] <= 2 * s:
        return False
    moved, fixed = (got[..., s:, s:], expected[..., :-s, :-s]) if shift > 0 else (got[..., :-s, :-s], expected[..., s:, s:])
    return _close(moved[..., s:-s or None, s:-s or None], fixed[..., s:-s or None, s:-s or None], 1e-8, 1e-6)


def check_stitching(predict_tiled_by_hand: Callable) -> None:
    """Check ``predict_tiled_by_hand(model, image, tile_in, tile_out) -> (K, H, W)`` against
    one forward pass of the same model over the whole mirror-padded image."""
    run_check("Task 3: overlap-tile prediction by hand", predict_tiled_by_hand, _stitching_cases(),
              _diagnose_stitching)
