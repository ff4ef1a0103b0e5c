"""Checks for notebook 02 (shape arithmetic, 572 -> 388): three tasks on the U-Net's sizes.

* :func:`check_unet_trace`: ``unet_trace(input_size, depth=4) -> list[int]``, the spatial
  size after every layer as in the paper's Fig. 1 (ValueError for an impossible size).
* :func:`check_valid_sizes`: ``valid_sizes(max_size, depth=4) -> list[int]``, every input
  size in ``1..max_size`` (inclusive) that walks through the network.
* :func:`check_center_crop`: ``center_crop(x, height, width)``, the central window of the
  last two dimensions of an ``(N, C, H, W)`` tensor (ValueError if it does not fit).

The expected answers come from :mod:`unetlib.shapes` and :func:`unetlib.models.center_crop`.
On a wrong answer the checks try the known *wrong* versions of each task (a 3x3 convolution
that removes 1 pixel, pooling before the convolutions, padding the decoder instead of
cropping the skip, ...) and name the misconception whose answer the learner reproduced.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import torch

from ._core import Case, CheckError, _describe, compare_values, run_check

__all__ = ["check_unet_trace", "check_valid_sizes", "check_center_crop"]

TASK_TRACE = "Task 1 unet_trace"
TASK_VALID = "Task 2 valid_sizes"
TASK_CROP = "Task 3 center_crop"

# The misconceptions, as the learner reads them (tests match on these sentences).
HINT_PAD = ("you padded instead of cropping: you grew the upsampled decoder map to the skip's "
            "size (the '572 -> 564' variant). In the paper the *skip* is centre-cropped down to "
            "the decoder map, so the size after each up-convolution is just twice the size below.")
HINT_CONV_1 = ("you forgot that each 3x3 valid convolution removes 2 pixels, one per side "
               "(o = i - 3 + 1); you removed 1.")
HINT_CONV_0 = ("you forgot that each 3x3 valid convolution removes 2 pixels, one per side "
               "(o = i - 3 + 1); you removed none (that would be padding='same').")
HINT_POOL_FIRST = ("you halved before the convolutions: each encoder level runs its two 3x3 "
                   "convolutions first and only then the 2x2 max-pool (572 -> 570 -> 568 -> 284).")
HINT_UP_ADD = ("the up-convolution doubles the size (2x2 kernel, stride 2: o = (i - 1) * 2 + 2 = 2i); "
               "you added instead.")
HINT_DEPTH = "you ignored the `depth` argument: your answer is the one for depth 4."
HINT_NO_INPUT = "start the list with the input size itself (572 for the paper)."
HINT_EXTRA_OUTPUT = ("leave out the final 1x1 convolution: it does not change the size, so the list "
                     "ends with the last 3x3 convolution (388 for the paper).")
HINT_ODD_POOL = ("{reason}. A 2x2 max-pool silently drops the last row of an odd map and the skip "
                 "would no longer line up: raise ValueError instead of rounding.")
HINT_TOO_SMALL = "{reason}: raise ValueError instead of returning sizes below 1."
HINT_ODD_INCLUDED = "you included sizes where a pool input is odd (e.g. {size}: {reason})."
HINT_TOO_SMALL_INCLUDED = ("you included sizes that are too small (e.g. {size}: {reason}); a valid size "
                           "needs at least 1 output pixel.")
HINT_MAX_INCLUSIVE = "max_size itself counts when it is valid: loop up to max_size + 1."
HINT_TOP_LEFT = ("the crop is off-centre: you cropped from the top-left corner (x[..., :height, :width]). "
                 "Start at top = (H - height) // 2 and left = (W - width) // 2.")
HINT_OFF_BY_ONE = ("off-by-one in the crop: your window is shifted by one pixel. With an odd "
                   "difference H - height, remove (H - height) // 2 rows at the top and the rest at "
                   "the bottom (same for the columns).")
HINT_ONE_TOO_MANY = ("off-by-one in the crop: with an odd difference H - height, slicing "
                     "x[..., d:H - d] keeps one pixel too many. Slice top:top + height instead.")
HINT_SWAPPED = ("you swapped height and width: the tensor is (N, C, H, W), so `height` crops dim -2 "
                "and `width` crops dim -1.")
HINT_PADDED = ("you padded the skip instead of cropping it: the target is larger than x, which in a "
               "U-Net means the input size is not valid. Raise ValueError instead of padding.")
HINT_TOO_LARGE = ("the target is larger than x, so there is nothing to crop: check height <= H and "
                  "width <= W and raise ValueError (in a U-Net this means the input size is not valid).")
HINT_WRONG_DIMS = ("crop exactly the last two dimensions of the (N, C, H, W) tensor: `height` along dim -2 "
                   "and `width` along dim -1; keep the batch and channel dimensions whole.")


# --------------------------------------------------------------------------------------
# "Raises ValueError" as an answer, so a check can expect it and compare it
# --------------------------------------------------------------------------------------
class _Raised:
    """Stands for "raised ValueError": the expected answer for impossible sizes, and what a
    learner's ValueError becomes so it can be compared like any other answer."""

    def __init__(self, message: str = "") -> None:
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Raised)

    __hash__ = None  # equal by kind alone, so not usable as a dict key

    def __repr__(self) -> str:
        return f"ValueError({self.message!r})" if self.message else "ValueError"


def _catching_value_error(fn: Callable) -> Callable:
    """``fn`` with a ValueError turned into a :class:`_Raised` answer (other errors pass)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            return _Raised(str(exc))

    return wrapped


def _compare(got: Any, expected: Any, atol: float, rtol: float) -> Optional[str]:
    """:func:`compare_values`, plus readable sentences for None and for ValueError answers."""
    if got is None:
        return "your function returned None: did you forget the `return` statement?"
    if isinstance(expected, _Raised):
        if isinstance(got, _Raised):
            return None
        return f"expected a ValueError ({expected.message}) but your function returned {_describe(got)}"
    if isinstance(got, _Raised):
        return f"expected {_describe(expected)} but your function raised ValueError: {got.message}"
    return compare_values(got, expected, atol, rtol)


def _require_function(task: str, fn) -> None:
    """run_check's message for a non-function, needed where ``fn`` is wrapped first."""
    if not callable(fn):
        raise CheckError(f"{task}: expected a function but got {type(fn).__name__}. "
                         "Pass the function itself, without calling it.")


def _as_int_list(got: Any) -> Optional[list[int]]:
    """``got`` as a list of ints if it is a list/tuple of integer-valued numbers, else None."""
    if not isinstance(got, (list, tuple)):
        return None
    out = []
    for value in got:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        try:
            if int(value) != value:
                return None
            out.append(int(value))
        except (TypeError, ValueError, OverflowError):
            return None
    return out


# --------------------------------------------------------------------------------------
# The size walk, right and in the known wrong ways (used only to *name* mistakes)
# --------------------------------------------------------------------------------------
class _Invalid(Exception):
    """The walk met a layer that cannot take its input; the message says which and why."""


@dataclass(frozen=True)
class _Walk:
    """One way of walking a size through a U-Net; the defaults are the paper's way."""

    hint: str = ""
    conv_loss: int = 2           # pixels one 3x3 convolution removes
    pool_first: bool = False     # encoder level = pool, conv, conv (instead of conv, conv, pool)
    up_add: int = 0              # 0: the up-conv doubles; k > 0: it adds k
    skip: str = "crop"           # "crop"; "pad-up": list the up size, then pad; "pad": list the padded size
    fixed_depth: Optional[int] = None  # ignore the depth argument
    with_input: bool = True      # the list starts with the input size
    with_output: bool = False    # the list repeats the last size for the 1x1 convolution
    odd_pool: str = "raise"      # "raise" or "floor"
    too_small: str = "raise"     # "raise" or "ignore" (sizes may drop to 0 or below)


_PAPER = _Walk()


def _walk(size: int, depth: int, how: _Walk = _PAPER) -> list[int]:
    """The sizes after every layer (input, 3x3 convs, pools, up-convs); raises :class:`_Invalid`."""
    depth = how.fixed_depth or depth
    sizes = [size]

    def conv(s: int, where: str) -> int:
        if how.too_small == "raise" and s < 3:
            raise _Invalid(f"{where} gets {s} pixel(s), too few for a 3x3 convolution")
        sizes.append(s - how.conv_loss)
        return sizes[-1]

    def pool(s: int, where: str) -> int:
        if s % 2 and how.odd_pool == "raise":
            raise _Invalid(f"{where} gets the odd size {s}")
        sizes.append(s // 2)
        return sizes[-1]

    skips = []
    for level in range(1, depth + 1):
        if how.pool_first:
            size = pool(size, f"max-pool {level}")
        size = conv(size, f"convolution 1 of level {level}")
        size = conv(size, f"convolution 2 of level {level}")
        skips.append(size)
        if not how.pool_first:
            size = pool(size, f"max-pool {level}")
    size = conv(size, "bottleneck convolution 1")
    size = conv(size, "bottleneck convolution 2")
    for level in range(depth, 0, -1):
        size = size + how.up_add if how.up_add else 2 * size
        if how.skip == "pad":
            size = max(size, skips[level - 1])
        sizes.append(size)
        if how.skip == "pad-up":
            size = max(size, skips[level - 1])
        elif how.too_small == "raise" and skips[level - 1] < size:
            raise _Invalid(f"the skip of level {level} ({skips[level - 1]}) is smaller than "
                           f"the upsampled map ({size})")
        size = conv(size, f"decoder convolution 1 of level {level}")
        size = conv(size, f"decoder convolution 2 of level {level}")
    if how.too_small == "raise" and size < 1:
        raise _Invalid(f"the output would have {size} pixels")
    if how.with_output:
        sizes.append(size)
    return sizes if how.with_input else sizes[1:]


def _walk_answer(size: int, depth: int, how: _Walk = _PAPER):
    """:func:`_walk` as an answer: the list, or a :class:`_Raised` carrying the reason."""
    try:
        return _walk(size, depth, how)
    except _Invalid as exc:
        return _Raised(str(exc))


def _valid(max_size: int, depth: int, how: _Walk = _PAPER) -> list[int]:
    """The sizes ``1..max_size`` that a walk of this kind accepts."""
    return [s for s in range(1, max_size + 1) if not isinstance(_walk_answer(s, depth, how), _Raised)]


def _wrong_walks() -> list[_Walk]:
    """The known wrong ways of walking, each with and without the learner's own validity tests.

    A learner with a structural mistake may or may not raise for odd pools or tiny sizes;
    every combination is tried so the structural mistake is named either way.
    """
    mistakes = [
        _Walk(HINT_PAD, skip="pad"),
        _Walk(HINT_PAD, skip="pad-up"),
        _Walk(HINT_CONV_1, conv_loss=1),
        _Walk(HINT_CONV_0, conv_loss=0),
        _Walk(HINT_POOL_FIRST, pool_first=True),
        _Walk(HINT_UP_ADD, up_add=1),
        _Walk(HINT_UP_ADD, up_add=2),
        _Walk(HINT_UP_ADD, up_add=4),
        _Walk(HINT_DEPTH, fixed_depth=4),
        _Walk(HINT_NO_INPUT, with_input=False),
        _Walk(HINT_EXTRA_OUTPUT, with_output=True),
    ]
    return [replace(m, odd_pool=odd, too_small=small)
            for m in mistakes for odd in ("raise", "floor") for small in ("raise", "ignore")]


_WRONG_WALKS = _wrong_walks()
#: The mistakes that change *which* sizes are valid (used by the valid-sizes diagnosis).
_SIZE_WALKS = [
    _Walk(HINT_CONV_1, conv_loss=1),
    _Walk(HINT_CONV_0, conv_loss=0),
    _Walk(HINT_POOL_FIRST, pool_first=True),
    _Walk(HINT_UP_ADD, up_add=1),
    _Walk(HINT_UP_ADD, up_add=2),
    _Walk(HINT_DEPTH, fixed_depth=4),
]


# --------------------------------------------------------------------------------------
# Task 1: the trace
# --------------------------------------------------------------------------------------
def _reference_trace(input_size: int, depth: int):
    """Expected answer from :func:`unetlib.shapes.unet_shape_trace` (heights of every layer)."""
    from ..shapes import unet_shape_trace

    try:
        stages = unet_shape_trace(input_size, depth=depth)
    except ValueError as exc:
        # Our own walk words the reason in the terms of this task (tests prove both agree).
        own = _walk_answer(input_size, depth)
        return own if isinstance(own, _Raised) else _Raised(str(exc))
    return [st.height for st in stages if st.kind in ("input", "conv", "pool", "up")]


def _trace_cases() -> list[Case]:
    cases = [
        ("the paper's network: 572, depth 4", 572, 4),
        ("the smallest valid input: 188, depth 4", 188, 4),
        ("a shallower U-Net: 60, depth 2", 60, 2),
        ("a one-level U-Net: 20, depth 1", 20, 1),
        ("570, depth 4 (a max-pool input is odd: ValueError)", 570, 4),
        ("172, depth 4 (the decoder runs out of pixels: ValueError)", 172, 4),
    ]
    return [Case(name, args=(size,), kwargs={"depth": depth}, expected=_reference_trace(size, depth))
            for name, size, depth in cases]


def _same_answer(a, b) -> bool:
    if isinstance(a, _Raised) or isinstance(b, _Raised):
        return isinstance(a, _Raised) and isinstance(b, _Raised)
    return _as_int_list(a) is not None and _as_int_list(a) == _as_int_list(b)


@functools.lru_cache(maxsize=None)
def _probe_sizes(depth: int, how: _Walk, count: int = 3) -> list[int]:
    """A few input sizes for which the wrong walk ``how`` gives a list (not an error)."""
    found = []
    for size in range(16, 1300):
        if not isinstance(_walk_answer(size, depth, how), _Raised):
            found.append(size)
            if len(found) == count:
                break
    return found


def _diagnose_trace(fn: Callable) -> Callable[[Case, Any], Optional[str]]:
    """A diagnosis that may call the learner's (ValueError-catching) function on more sizes."""

    def agrees(how: _Walk, size: int, depth: int, got) -> bool:
        if not _same_answer(got, _walk_answer(size, depth, how)):
            return False
        # Both "raised" says little: confirm on sizes where this wrong walk gives a list.
        for probe in _probe_sizes(depth, how) if isinstance(got, _Raised) else []:
            try:
                if not _same_answer(fn(probe, depth=depth), _walk_answer(probe, depth, how)):
                    return False
            except Exception:
                return False
        return True

    def diagnose(case: Case, got) -> Optional[str]:
        size, depth = case.args[0], case.kwargs["depth"]
        right = _walk_answer(size, depth)
        if isinstance(right, _Raised) and not isinstance(got, _Raised):
            hint = HINT_ODD_POOL if "odd" in right.message else HINT_TOO_SMALL
            return hint.format(reason=right.message[0].upper() + right.message[1:])
        for how in _WRONG_WALKS:
            if agrees(how, size, depth, got):
                return how.hint
        return None

    return diagnose


def check_unet_trace(unet_trace: Callable) -> None:
    """Check ``unet_trace(input_size, depth=4) -> list[int]``.

    The list holds the input size, then the size after every 3x3 convolution, every max-pool
    and every up-convolution, in order (27 numbers for depth 4: 572, 570, 568, 284, ..., 388);
    ``ValueError`` when a max-pool would get an odd size or a 3x3 convolution fewer than 3 px.
    """
    _require_function(TASK_TRACE, unet_trace)
    fn = _catching_value_error(unet_trace)
    run_check(TASK_TRACE, fn, _trace_cases(), diagnose=_diagnose_trace(fn), compare=_compare)


# --------------------------------------------------------------------------------------
# Task 2: the valid sizes
# --------------------------------------------------------------------------------------
def _valid_cases() -> list[Case]:
    from ..shapes import valid_input_sizes

    cases = [
        ("max_size 600, depth 4", 600, 4),
        ("max_size 572, depth 4 (572 itself is valid)", 572, 4),
        ("max_size 187, depth 4 (nothing fits)", 187, 4),
        ("max_size 300, depth 2", 300, 2),
        ("max_size 40, depth 1", 40, 1),
    ]
    return [Case(name, args=(max_size,), kwargs={"depth": depth},
                 expected=valid_input_sizes(depth=depth, max_size=max_size))
            for name, max_size, depth in cases]


def _diagnose_valid(case: Case, got) -> Optional[str]:
    max_size, depth = case.args[0], case.kwargs["depth"]
    sizes = _as_int_list(got)
    if sizes is None:
        return None
    expected = _valid(max_size, depth)
    if sizes == expected[:-1] and expected and expected[-1] == max_size:
        return HINT_MAX_INCLUSIVE
    for how in _SIZE_WALKS:
        if sizes == _valid(max_size, depth, how):
            return how.hint
    extra = sorted(set(sizes) - set(expected))
    reasons = {s: _walk_answer(s, depth) for s in extra if s >= 1}
    odd = [s for s, r in reasons.items() if isinstance(r, _Raised) and "odd" in r.message]
    if odd:
        return HINT_ODD_INCLUDED.format(size=odd[0], reason=reasons[odd[0]].message)
    small = [s for s, r in reasons.items() if isinstance(r, _Raised)]
    if small:
        return HINT_TOO_SMALL_INCLUDED.format(size=small[-1], reason=reasons[small[-1]].message)
    return None


def check_valid_sizes(valid_sizes: Callable) -> None:
    """Check ``valid_sizes(max_size, depth=4) -> list[int]``: the valid inputs in ``1..max_size``.

    Valid means every max-pool gets an even size and the output keeps at least 1 pixel;
    for depth 4 that is 188, 204, 220, ... (188 + 16k). ``max_size`` is inclusive.
    """
    run_check(TASK_VALID, valid_sizes, _valid_cases(), diagnose=_diagnose_valid, compare=_compare)


# --------------------------------------------------------------------------------------
# Task 3: the centre crop
# --------------------------------------------------------------------------------------
def _numbered(*shape: int) -> torch.Tensor:
    """0, 1, 2, ... laid out in ``shape`` (float32): every pixel is distinguishable."""
    n = 1
    for s in shape:
        n *= s
    return torch.arange(n, dtype=torch.float32).reshape(shape)


def _reference_crop(x: torch.Tensor, height: int, width: int):
    from ..models import center_crop

    try:
        return center_crop(x, height, width).clone()
    except ValueError as exc:
        return _Raised(str(exc))


def _crop_cases() -> list[Case]:
    cases = [
        ("(1, 1, 568, 568) -> 392 x 392, the paper's first skip", _numbered(1, 1, 568, 568), 392, 392),
        ("(2, 3, 9, 8) -> 4 x 5, odd differences", _numbered(2, 3, 9, 8), 4, 5),
        ("(1, 2, 64, 40) -> 56 x 20, height and width differ", _numbered(1, 2, 64, 40), 56, 20),
        ("(1, 1, 6, 6) -> 6 x 6, nothing to crop", _numbered(1, 1, 6, 6), 6, 6),
        ("(1, 1, 5, 7) -> 8 x 7, target larger than x: ValueError", _numbered(1, 1, 5, 7), 8, 7),
    ]
    return [Case(name, args=(x, h, w), expected=_reference_crop(x, h, w)) for name, x, h, w in cases]


def _window(x: torch.Tensor, top: int, left: int, height: int, width: int) -> Optional[torch.Tensor]:
    if top < 0 or left < 0 or top + height > x.shape[-2] or left + width > x.shape[-1]:
        return None
    return x[..., top:top + height, left:left + width]


def _equal(got, candidate: Optional[torch.Tensor]) -> bool:
    return (candidate is not None and isinstance(got, torch.Tensor)
            and tuple(got.shape) == tuple(candidate.shape) and torch.equal(got.detach().cpu().float(), candidate))


def _diagnose_crop(case: Case, got) -> Optional[str]:
    x, height, width = case.args
    if not isinstance(got, torch.Tensor):
        return None
    in_h, in_w = x.shape[-2:]
    if got.ndim != x.ndim or tuple(got.shape[:-2]) != tuple(x.shape[:-2]):
        return HINT_WRONG_DIMS
    got_h, got_w = got.shape[-2:]
    if got_h > in_h or got_w > in_w:
        return HINT_PADDED
    if isinstance(case.expected, _Raised):
        return HINT_TOO_LARGE
    if (got_h == in_h != height) or (got_w == in_w != width):  # a spatial dim was left whole
        return HINT_WRONG_DIMS
    top, left = (in_h - height) // 2, (in_w - width) // 2
    if height != width and (got_h, got_w) == (width, height):
        return HINT_SWAPPED
    swapped_top, swapped_left = (in_w - height) // 2, (in_h - width) // 2  # offsets from the wrong dims
    if (swapped_top, swapped_left) != (top, left) and _equal(got, _window(x, swapped_top, swapped_left, height, width)):
        return HINT_SWAPPED
    if (top or left) and _equal(got, _window(x, 0, 0, height, width)):
        return HINT_TOP_LEFT
    for dt in (-1, 0, 1):
        for dl in (-1, 0, 1):
            if (dt or dl) and _equal(got, _window(x, top + dt, left + dl, height, width)):
                return HINT_OFF_BY_ONE
    # x[..., d:H - d] with d = (H - height) // 2 keeps one pixel too many for odd differences
    if (got_h, got_w) != (height, width) and _equal(got, x[..., top:in_h - top, left:in_w - left]):
        return HINT_ONE_TOO_MANY
    return None


def check_center_crop(center_crop: Callable) -> None:
    """Check ``center_crop(x, height, width)`` on ``(N, C, H, W)`` tensors.

    Expected: ``x[..., top:top + height, left:left + width]`` with ``top = (H - height) // 2``
    and ``left = (W - width) // 2`` (an odd difference leaves the extra pixel at the
    bottom/right), and ``ValueError`` when ``height > H`` or ``width > W``.
    """
    _require_function(TASK_CROP, center_crop)
    run_check(TASK_CROP, _catching_value_error(center_crop), _crop_cases(),
              diagnose=_diagnose_crop, compare=_compare)
