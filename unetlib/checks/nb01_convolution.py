"""Checks for notebook 01 (convolution vs transposed convolution, exercises).

Every check compares the learner's function with PyTorch itself (``F.conv2d``,
``F.conv_transpose2d``, or the shape PyTorch produces for a layer), never with a second
copy of a formula. So tasks 1 and 2 refuse an answer that called those functions itself. When a case fails, a ``diagnose`` function recomputes the answers the
typical misconceptions would give (kernel flipped, stride ignored, ``2p`` written as
``p``, ...) and names the one that matches what came back.

Tasks (names as printed):

- ``check_conv2d(conv2d)``: ``conv2d(x, w, stride=1, padding=0)``,
  x float (C_in, H, W), w float (C_out, C_in, kh, kw) -> (C_out, H_out, W_out).
- ``check_conv_transpose2d(conv_transpose2d)``:
  ``conv_transpose2d(x, w, stride=1, padding=0, output_padding=0)``,
  x float (C_in, H, W), w float (C_in, C_out, kh, kw) -> (C_out, H_out, W_out).
- ``check_conv_output_size(conv_output_size)``:
  ``conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1) -> int``.
- ``check_conv_transpose_output_size(conv_transpose_output_size)``:
  ``conv_transpose_output_size(size, kernel_size, stride=1, padding=0, output_padding=0, dilation=1) -> int``.
- ``check_predict_shapes(predict_shapes)``: ``predict_shapes(size) -> tuple[int, ...]``,
  the spatial size after each layer of :func:`predict_shapes_network`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ._core import Case, compare_values, run_check

__all__ = [
    "check_conv2d",
    "check_conv_transpose2d",
    "check_conv_output_size",
    "check_conv_transpose_output_size",
    "check_predict_shapes",
    "predict_shapes_network",
]

TASK_CONV2D = "Task 1 conv2d"
TASK_CONV_TRANSPOSE2D = "Task 2 conv_transpose2d"
TASK_CONV_OUTPUT_SIZE = "Task 3 conv_output_size"
TASK_CONV_TRANSPOSE_OUTPUT_SIZE = "Task 4 conv_transpose_output_size"
TASK_PREDICT_SHAPES = "Task 5 predict_shapes"

# Seed for the random test tensors: the same cases every run, so messages are repeatable.
_SEED = 2015


# ----------------------------------------------------------------------------------------
# Helpers shared by the diagnoses
# ----------------------------------------------------------------------------------------
def _same_tensor(got: Any, candidate: Optional[torch.Tensor], case: Case) -> bool:
    """True when ``got`` is a tensor (or array) equal, within the case tolerance, to ``candidate``."""
    if isinstance(got, np.ndarray):
        got = torch.from_numpy(got)
    if candidate is None or not isinstance(got, torch.Tensor):
        return False
    if tuple(got.shape) != tuple(candidate.shape):
        return False
    g = got.detach().cpu().to(torch.float64)
    c = candidate.detach().cpu().to(torch.float64)
    return bool(torch.allclose(g, c, atol=case.atol, rtol=case.rtol))


# A variant is a function case -> the answer one misconception gives for that case, or None
# when the misconception makes no difference there (e.g. "output_padding ignored" when it is 0).
Variant = Callable[[Case], Any]


def _make_diagnose(cases: list[Case], variants: list[tuple[str, Variant]], same: Callable) -> Callable[[Case, Any], Optional[str]]:
    """Build a ``diagnose(case, got)`` that names the first misconception explaining ``got``.

    A misconception qualifies when its answer for the failing case equals ``got`` AND it
    gives the right answer on every earlier case (the learner passed those, so a mistake
    that would have failed them cannot be theirs). A variant that raises on the failing
    case cannot explain the answer; one that raises on an earlier case would have crashed
    there, so it is ruled out too.
    """

    def consistent_before(compute: Variant, index: int) -> bool:
        for earlier in cases[:index]:
            try:
                answer = compute(earlier)
            except Exception:  # the learner's code would have crashed on this case
                return False
            if answer is not None and not same(answer, earlier.expected, earlier):
                return False
        return True

    def diagnose(case: Case, got: Any) -> Optional[str]:
        index = next((i for i, c in enumerate(cases) if c is case), len(cases))
        for hint, compute in variants:
            try:
                candidate = compute(case)
            except Exception:  # this misconception cannot even be computed here
                continue
            if candidate is not None and same(got, candidate, case) and consistent_before(compute, index):
                return hint
        return None

    return diagnose


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard normal float32 tensor of ``shape`` drawn from ``generator``."""
    return torch.randn(*shape, generator=generator, dtype=torch.float32)


# ----------------------------------------------------------------------------------------
# Tasks 1 and 2 must be done by hand: spot torch's own convolutions
# ----------------------------------------------------------------------------------------
# torch functions that compute a convolution: F.conv2d is torch.conv2d, nn.Conv2d calls it,
# and torch.convolution / torch.ops.aten.* are the routes below it.
_TORCH_CONVOLUTIONS = frozenset({
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "convolution", "_convolution",
})


class _ConvolutionSpy(TorchFunctionMode):
    """While active, records which of torch's convolutions get called, by any route.

    A torch function mode sees every torch call, also through a name imported earlier
    (``from torch.nn.functional import conv2d``) or an ``nn.Conv2d`` layer, which patching
    ``F.conv2d`` would miss. It only records: the learner's code runs unchanged.
    """

    def __init__(self):
        super().__init__()
        self.called: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "").split(".")[0]  # aten ops: "conv2d.default"
        if name in _TORCH_CONVOLUTIONS and name not in self.called:
            self.called.append(name)
        return func(*args, **(kwargs or {}))


def _check_by_hand(task: str, fn: Callable, cases: list[Case], diagnose: Callable, *, reference: str, layer: str,
                   how: str) -> None:
    """run_check, failing any case whose answer came from torch's convolutions instead of by hand.

    reference: the torch function the check compares with; layer: the nn layer that calls
    it; how: how to build it by hand.
    Only the learner's call is watched, so the check's own references and diagnoses can
    use F.conv2d freely.
    """
    called: list[str] = []

    def watched(*args, **kwargs):
        called.clear()
        with _ConvolutionSpy() as spy:
            try:
                return fn(*args, **kwargs)
            finally:
                called.extend(spy.called)

    def compare(got, expected, atol, rtol):
        if called:
            return f"it was computed with torch's own {_torch_name(called[0])}, not by hand"
        return compare_values(got, expected, atol, rtol)

    def diagnose_by_hand(case: Case, got: Any) -> Optional[str]:
        if called:
            return (f"you called {_torch_name(called[0])} (directly, or through a layer such as {layer}). "
                    f"The task is to build it by hand: {how}. {reference} comes afterwards: the check "
                    "uses it to test your answer.")
        return diagnose(case, got)

    # Not callable: hand it over unwrapped, so run_check says so in its usual words.
    run_check(task, watched if callable(fn) else fn, cases, diagnose=diagnose_by_hand, compare=compare)


def _torch_name(name: str) -> str:
    """How a learner most likely wrote it: F.conv2d, not torch.conv2d."""
    return f"F.{name}" if name.startswith("conv") else f"torch.{name}"


# ----------------------------------------------------------------------------------------
# Task 1: conv2d by hand
# ----------------------------------------------------------------------------------------
def _ref_conv2d(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """PyTorch's answer for an unbatched x (C_in, H, W) and w (C_out, C_in, kh, kw)."""
    return F.conv2d(x[None], w, stride=stride, padding=padding)[0]


def _conv2d_cases() -> list[Case]:
    g = torch.Generator().manual_seed(_SEED)
    specs = [
        # name, (C_in, H, W), (C_out, kh, kw), stride, padding
        ("1 input channel -> 2 output channels, 3x3 kernel, no padding", (1, 5, 5), (2, 3, 3), 1, 0),
        ("3 input channels -> 2 output channels", (3, 6, 7), (2, 3, 3), 1, 0),
        ("stride 2", (2, 7, 7), (3, 3, 3), 2, 0),
        ("padding 1", (2, 5, 6), (2, 3, 3), 1, 1),
        ("stride 2, padding 2, 5x3 kernel", (2, 9, 8), (3, 5, 3), 2, 2),
    ]
    cases = []
    for name, (c_in, h, w_), (c_out, kh, kw), stride, padding in specs:
        x = _randn(g, c_in, h, w_)
        w = _randn(g, c_out, c_in, kh, kw)
        cases.append(
            Case(name, args=(x, w), kwargs={"stride": stride, "padding": padding}, expected=_ref_conv2d(x, w, stride, padding))
        )
    return cases


def _conv2d_parts(case: Case):
    x, w = case.args
    return x, w, case.kwargs["stride"], case.kwargs["padding"]


def _conv2d_pad_one_side(case: Case, before: bool) -> Optional[torch.Tensor]:
    x, w, s, p = _conv2d_parts(case)
    if not p:
        return None
    sides = (p, 0, p, 0) if before else (0, p, 0, p)  # F.pad order: (left, right, top, bottom)
    return F.conv2d(F.pad(x, sides)[None], w, stride=s)[0]


def _conv2d_channels_kept_apart(case: Case) -> torch.Tensor:
    """out[o, c] = x[c] correlated with w[o, c], not summed over c: (C_out, C_in, H_out, W_out)."""
    x, w, s, p = _conv2d_parts(case)
    c_out, c_in, kh, kw = w.shape
    kernels = w.transpose(0, 1).reshape(c_in * c_out, 1, kh, kw)
    out = F.conv2d(x[None], kernels, stride=s, padding=p, groups=c_in)[0]
    return out.reshape(c_in, c_out, *out.shape[-2:]).transpose(0, 1)


_CONV2D_VARIANTS: list[tuple[str, Variant]] = [
    (
        "you flipped the kernel: PyTorch's Conv2d computes cross-correlation, "
        "out[o, i, j] = sum over c, a, b of x[c, i*s + a, j*s + b] * w[o, c, a, b] (no flip).",
        lambda case: _ref_conv2d(*case.args[:1], case.args[1].flip(-2, -1), **case.kwargs),
    ),
    (
        "stride ignored: with stride s the window moves s pixels between neighbouring outputs, "
        "so output pixel (i, j) starts at input (i*s, j*s) and the output is about s times smaller.",
        lambda case: _ref_conv2d(*case.args, stride=1, padding=case.kwargs["padding"]),
    ),
    (
        "padding ignored: pad the input with `padding` rows/columns of zeros on every side "
        "before sliding the kernel (e.g. torch.nn.functional.pad(x, (p, p, p, p))).",
        lambda case: _ref_conv2d(*case.args, stride=case.kwargs["stride"], padding=0),
    ),
    (
        "padding applied only on one side (top/left): the zeros go on BOTH sides, "
        "which is why the size formula has 2p.",
        lambda case: _conv2d_pad_one_side(case, before=True),
    ),
    (
        "padding applied only on one side (bottom/right): the zeros go on BOTH sides, "
        "which is why the size formula has 2p.",
        lambda case: _conv2d_pad_one_side(case, before=False),
    ),
    (
        "channels not summed: each output channel is the SUM over all input channels "
        "of (input channel correlated with its own kernel slice w[o, c]); you kept one result per input channel.",
        _conv2d_channels_kept_apart,
    ),
    (
        "channels averaged instead of summed: an output pixel is the plain sum of all "
        "C_in * kh * kw products, not their mean over input channels.",
        lambda case: _ref_conv2d(*case.args, **case.kwargs) / case.args[0].shape[0],
    ),
    (
        "you averaged the products: an output pixel is the plain sum of all C_in * kh * kw "
        "products, not their mean.",
        lambda case: _ref_conv2d(*case.args, **case.kwargs) / case.args[1][0].numel(),
    ),
    (
        "only the first input channel was used: sum over ALL input channels c of x[c] correlated with w[o, c].",
        lambda case: _ref_conv2d(case.args[0][:1], case.args[1][:, :1], **case.kwargs),
    ),
    (
        "you returned a batch dimension: x is a single image (C_in, H, W), "
        "so return (C_out, H_out, W_out); drop the leading 1 (e.g. out[0]).",
        lambda case: _ref_conv2d(*case.args, **case.kwargs)[None],
    ),
]


def check_conv2d(conv2d: Callable) -> None:
    """Check a hand-written ``conv2d(x, w, stride=1, padding=0)`` against ``F.conv2d``.

    x: float (C_in, H, W); w: float (C_out, C_in, kh, kw); returns (C_out, H_out, W_out).
    Prints one success line or raises CheckError naming the failing case and, where it
    can, the misconception (kernel flipped, stride or padding ignored, padding on one side,
    channels not summed or averaged, a batch dimension returned). An answer computed with
    torch's own convolution (F.conv2d, nn.Conv2d, ...) is refused: the task is to do it by hand.
    """
    cases = _conv2d_cases()
    _check_by_hand(TASK_CONV2D, conv2d, cases, _make_diagnose(cases, _CONV2D_VARIANTS, _same_tensor),
                   reference="F.conv2d", layer="nn.Conv2d",
                   how="loop over the output pixels (or use unfold) and sum window * kernel products")


# ----------------------------------------------------------------------------------------
# Task 2: transposed convolution by hand
# ----------------------------------------------------------------------------------------
def _ref_conv_transpose2d(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: int = 0, output_padding: int = 0) -> torch.Tensor:
    """PyTorch's answer for an unbatched x (C_in, H, W) and w (C_in, C_out, kh, kw)."""
    return F.conv_transpose2d(x[None], w, stride=stride, padding=padding, output_padding=output_padding)[0]


def _conv_transpose2d_cases() -> list[Case]:
    g = torch.Generator().manual_seed(_SEED + 1)
    specs = [
        # name, (C_in, H, W), (C_out, kh, kw), stride, padding, output_padding
        ("1 channel, 3x3 kernel, stride 1", (1, 3, 3), (1, 3, 3), 1, 0, 0),
        ("2 input channels -> 3 output channels, 3x2 kernel", (2, 3, 4), (3, 3, 2), 1, 0, 0),
        ("stride 2", (2, 3, 3), (2, 3, 3), 2, 0, 0),
        ("stride 2, padding 1", (1, 4, 3), (2, 3, 3), 2, 1, 0),
        ("stride 2, padding 1, output_padding 1", (2, 3, 4), (1, 3, 3), 2, 1, 1),
        ("stride 3, 4x4 kernel, padding 1, output_padding 2", (1, 2, 3), (2, 4, 4), 3, 1, 2),
    ]
    cases = []
    for name, (c_in, h, w_), (c_out, kh, kw), stride, padding, output_padding in specs:
        x = _randn(g, c_in, h, w_)
        w = _randn(g, c_in, c_out, kh, kw)
        kwargs = {"stride": stride, "padding": padding, "output_padding": output_padding}
        cases.append(Case(name, args=(x, w), kwargs=kwargs, expected=_ref_conv_transpose2d(x, w, **kwargs)))
    return cases


def _transposed_parts(case: Case):
    x, w = case.args
    return x, w, case.kwargs["stride"], case.kwargs["padding"], case.kwargs["output_padding"]


def _full_transposed(case: Case) -> torch.Tensor:
    """The uncropped scatter result, (C_out, (H-1)s + kh, (W-1)s + kw)."""
    x, w, s, _, _ = _transposed_parts(case)
    return F.conv_transpose2d(x[None], w, stride=s)[0]


def _transposed_variant_output_padding_as_zeros(case: Case) -> Optional[torch.Tensor]:
    x, w, s, p, op = _transposed_parts(case)
    return F.pad(_ref_conv_transpose2d(x, w, s, p, 0), (0, op, 0, op)) if op else None


def _transposed_variant_padding_added(case: Case) -> Optional[torch.Tensor]:
    _, _, _, p, op = _transposed_parts(case)
    return F.pad(_full_transposed(case), (p, p + op, p, p + op)) if p else None


def _transposed_variant_padding_ignored(case: Case) -> Optional[torch.Tensor]:
    _, _, _, p, op = _transposed_parts(case)
    return F.pad(_full_transposed(case), (0, op, 0, op)) if p else None


def _transposed_variant_crop_top_left(case: Case) -> Optional[torch.Tensor]:
    _, _, _, p, op = _transposed_parts(case)
    return F.pad(_full_transposed(case), (0, op, 0, op))[:, p:, p:] if p else None


def _transposed_variant_channels_apart(case: Case) -> Optional[torch.Tensor]:
    x, w, s, p, op = _transposed_parts(case)
    if x.shape[0] == 1:
        return None  # nothing to sum: indistinguishable from a batch dimension
    return torch.stack([_ref_conv_transpose2d(x[c : c + 1], w[c : c + 1], s, p, op) for c in range(x.shape[0])])


def _transposed_variant_assigned(case: Case, channels_inside: bool) -> torch.Tensor:
    """Stamps written with `=` instead of `+=`: where stamps overlap, the last one wins.

    channels_inside: the stamp of a pixel is summed over input channels first (one write per
    pixel); otherwise every (channel, pixel) writes its own stamp, channels in the outer loop.
    """
    x, w, s, p, op = _transposed_parts(case)
    c_in, h, width = x.shape
    _, c_out, kh, kw = w.shape
    full = torch.zeros(c_out, (h - 1) * s + kh + op, (width - 1) * s + kw + op, dtype=torch.float64)
    x, w = x.double(), w.double()
    for c in [None] if channels_inside else range(c_in):
        for i in range(h):
            for j in range(width):
                stamp = (x[:, i, j, None, None, None] * w).sum(0) if channels_inside else x[c, i, j] * w[c]
                full[:, i * s : i * s + kh, j * s : j * s + kw] = stamp
    return full[:, p : full.shape[1] - p, p : full.shape[2] - p]


_CONV_TRANSPOSE2D_VARIANTS: list[tuple[str, Variant]] = [
    (
        "output_padding ignored: it adds `output_padding` extra rows/columns at the bottom/right "
        "of the output (taken from the uncropped scatter result: crop p at the top/left but only "
        "p - output_padding at the bottom/right).",
        lambda case: _ref_conv_transpose2d(*case.args, case.kwargs["stride"], case.kwargs["padding"], 0)
        if case.kwargs["output_padding"]
        else None,
    ),
    (
        "output_padding added as zeros: the extra bottom/right rows/columns are not zeros, they "
        "are the part of the scatter result that padding would otherwise crop away. "
        "Crop p at the top/left and only p - output_padding at the bottom/right.",
        _transposed_variant_output_padding_as_zeros,
    ),
    (
        "you flipped the kernel: in the scatter formulation input pixel (i, j) adds "
        "x[c, i, j] * w[c, o, a, b] to output (i*s + a, j*s + b), with no flip. "
        "(If you wrote it as a convolution of the zero-inserted, padded input, THAT convolution "
        "needs the flipped kernel.)",
        lambda case: _ref_conv_transpose2d(case.args[0], case.args[1].flip(-2, -1), **case.kwargs),
    ),
    (
        "stride ignored: input pixel (i, j) is stamped at output (i*s, j*s), so the stamps are "
        "s pixels apart and the output is about s times larger than the input.",
        lambda case: _ref_conv_transpose2d(*case.args, 1, case.kwargs["padding"], 0) if case.kwargs["stride"] > 1 else None,
    ),
    (
        "padding added instead of removed: in a transposed convolution `padding` CROPS p "
        "rows/columns from every border of the full scatter result (it undoes a convolution's "
        "padding), so the output shrinks by 2p.",
        _transposed_variant_padding_added,
    ),
    (
        "padding ignored: crop p rows/columns from every border of the full scatter result "
        "(and keep output_padding extra rows/columns at the bottom/right).",
        _transposed_variant_padding_ignored,
    ),
    (
        "padding removed only at the top/left: crop p from EVERY border (2p in total), "
        "minus output_padding at the bottom/right.",
        _transposed_variant_crop_top_left,
    ),
    (
        "stamps overwritten (`=`) instead of added (`+=`): where the stamps of neighbouring input "
        "pixels overlap, the output is the SUM of all of them.",
        lambda case: _transposed_variant_assigned(case, channels_inside=True),
    ),
    (
        "stamps overwritten (`=`) instead of added (`+=`): the stamps of all input channels and of "
        "overlapping neighbours must add up in the output.",
        lambda case: _transposed_variant_assigned(case, channels_inside=False),
    ),
    (
        "channels not summed: each output channel is the SUM of the stamps from all input "
        "channels (x[c] stamped with w[c, o]).",
        _transposed_variant_channels_apart,
    ),
    (
        "channels averaged instead of summed: add the stamps from all input channels, "
        "do not divide by C_in.",
        lambda case: _ref_conv_transpose2d(*case.args, **case.kwargs) / case.args[0].shape[0],
    ),
    (
        "in_channels and out_channels swapped: PyTorch lays out a transposed-convolution weight "
        "as (C_in, C_out, kh, kw), the other way round from Conv2d's (C_out, C_in, kh, kw).",
        lambda case: _ref_conv_transpose2d(case.args[0], case.args[1].transpose(0, 1), **case.kwargs),
    ),
    (
        "you returned a batch dimension: x is a single image (C_in, H, W), "
        "so return (C_out, H_out, W_out); drop the leading 1 (e.g. out[0]).",
        lambda case: _ref_conv_transpose2d(*case.args, **case.kwargs)[None],
    ),
]

_STRIDE_AS_IN_CONV = (
    "stride treated as in a convolution (downsampling): your output has the size a Conv2d would "
    "give. A transposed convolution upsamples: H_out = (H - 1)*s - 2p + (k - 1) + output_padding + 1."
)


def _diagnose_conv_transpose2d(cases: list[Case]) -> Callable[[Case, Any], Optional[str]]:
    """The variant diagnosis, plus a shape-only test for 'you computed a convolution instead'."""
    by_value = _make_diagnose(cases, _CONV_TRANSPOSE2D_VARIANTS, _same_tensor)

    def diagnose(case: Case, got: Any) -> Optional[str]:
        hint = by_value(case, got)
        if hint is None and isinstance(got, torch.Tensor) and got.dim() == 3:
            x, w, s, p, _ = _transposed_parts(case)
            conv_shape = (w.shape[1], (x.shape[1] + 2 * p - w.shape[2]) // s + 1, (x.shape[2] + 2 * p - w.shape[3]) // s + 1)
            if tuple(got.shape) == conv_shape:
                hint = _STRIDE_AS_IN_CONV
        return hint

    return diagnose


def check_conv_transpose2d(conv_transpose2d: Callable) -> None:
    """Check ``conv_transpose2d(x, w, stride=1, padding=0, output_padding=0)`` against PyTorch.

    x: float (C_in, H, W); w: float (C_in, C_out, kh, kw) (PyTorch's ConvTranspose2d layout);
    returns (C_out, H_out, W_out). Prints one success line or raises CheckError naming the
    failing case and the likely misconception (output_padding ignored or zero-filled, kernel
    flipped, stride ignored or used as in a convolution, padding added/ignored/one-sided,
    channels not summed, weight layout swapped, a batch dimension returned). An answer computed
    with torch's own convolutions (F.conv_transpose2d, F.conv2d, nn layers) is refused.
    """
    cases = _conv_transpose2d_cases()
    _check_by_hand(TASK_CONV_TRANSPOSE2D, conv_transpose2d, cases, _diagnose_conv_transpose2d(cases),
                   reference="F.conv_transpose2d", layer="nn.ConvTranspose2d",
                   how="loop over the input pixels and add each one's stamp x[:, i, j] * w into the output, "
                       "then crop the padding")


# ----------------------------------------------------------------------------------------
# Tasks 3 and 4: output sizes
# ----------------------------------------------------------------------------------------
def _torch_conv_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """The output size PyTorch's conv2d produces (computed on the shape-only 'meta' device)."""
    x = torch.empty(1, 1, size, 1, device="meta")
    w = torch.empty(1, 1, kernel_size, 1, device="meta")
    return int(F.conv2d(x, w, stride=(stride, 1), padding=(padding, 0), dilation=(dilation, 1)).shape[2])


def _torch_conv_transpose_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1) -> int:
    """The output size PyTorch's conv_transpose2d produces (on the 'meta' device)."""
    x = torch.empty(1, 1, size, 1, device="meta")
    w = torch.empty(1, 1, kernel_size, 1, device="meta")
    out = F.conv_transpose2d(
        x, w, stride=(stride, 1), padding=(padding, 0), output_padding=(output_padding, 0), dilation=(dilation, 1)
    )
    return int(out.shape[2])


def _same_number(got: Any, candidate: Any, case: Case) -> bool:
    """True when ``got`` is a real number equal to ``candidate`` (bools excluded)."""
    if candidate is None or isinstance(got, bool):
        return False
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    try:
        return math.isclose(float(got), float(candidate), abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def _conv_size_cases() -> list[Case]:
    specs = [
        # name, size, kernel, stride, padding, dilation. The first case has stride != padding,
        # both non-zero, so that swapping them gives a wrong number rather than a crash.
        ("64 input, 3x3 kernel, stride 2, padding 1", 64, 3, 2, 1, 1),
        ("572 input, 3x3 kernel, no padding (U-Net's first conv)", 572, 3, 1, 0, 1),
        ("64 input, 3x3 kernel, padding 1 ('same')", 64, 3, 1, 1, 1),
        ("7 input, 2x2 kernel, stride 2 (odd input)", 7, 2, 2, 0, 1),
        ("32 input, 3x3 kernel, dilation 2", 32, 3, 1, 0, 2),
        ("100 input, 5x5 kernel, stride 3, padding 2, dilation 2", 100, 5, 3, 2, 2),
    ]
    return [
        Case(name, args=(i, k), kwargs={"stride": s, "padding": p, "dilation": d}, expected=_torch_conv_size(i, k, s, p, d))
        for name, i, k, s, p, d in specs
    ]


def _size_params(case: Case) -> dict:
    """size, kernel and every keyword of a size case as one dict (i, k, s, p, d, a)."""
    i, k = case.args
    kw = case.kwargs
    return {"i": i, "k": k, "s": kw["stride"], "p": kw["padding"], "d": kw["dilation"], "a": kw.get("output_padding", 0)}


def _size_variant(formula: Callable[..., Any]) -> Variant:
    return lambda case: formula(**_size_params(case))


_CONV_SIZE_VARIANTS: list[tuple[str, Variant]] = [
    (
        "you forgot the +1: a kernel that fits exactly once still gives one output pixel, so o = floor(...) + 1.",
        _size_variant(lambda i, k, s, p, d, a: (i + 2 * p - d * (k - 1) - 1) // s),
    ),
    (
        "stride and padding swapped: o = floor((i + 2*padding - d*(k - 1) - 1) / stride) + 1.",
        _size_variant(lambda i, k, s, p, d, a: (i + 2 * s - d * (k - 1) - 1) // p + 1),
    ),
    (
        "padding counted once: zeros are added on BOTH sides, so the input grows by 2p, not p.",
        _size_variant(lambda i, k, s, p, d, a: (i + p - d * (k - 1) - 1) // s + 1),
    ),
    (
        "rounded up (ceil or round) instead of down: a window that would stick out past the "
        "(padded) input is dropped, so use floor, i.e. `//`.",
        _size_variant(lambda i, k, s, p, d, a: -(-(i + 2 * p - d * (k - 1) - 1) // s) + 1),
    ),
    (
        "dilation ignored: a dilated kernel spans d*(k - 1) + 1 pixels, so subtract d*(k - 1) (not k - 1).",
        _size_variant(lambda i, k, s, p, d, a: (i + 2 * p - k) // s + 1),
    ),
    (
        "dilated span wrong: a kernel with dilation d spans d*(k - 1) + 1 pixels, not d*k.",
        _size_variant(lambda i, k, s, p, d, a: (i + 2 * p - d * k) // s + 1),
    ),
]

_TRUE_DIVISION = "you used true division `/`, which gives a float: sizes are whole pixels and the kernel fits floor(...) times, so use `//`."


def _diagnose_conv_output_size(cases: list[Case]) -> Callable[[Case, Any], Optional[str]]:
    by_value = _make_diagnose(cases, _CONV_SIZE_VARIANTS, _same_number)

    def diagnose(case: Case, got: Any) -> Optional[str]:
        q = _size_params(case)
        exact = (q["i"] + 2 * q["p"] - q["d"] * (q["k"] - 1) - 1) / q["s"] + 1
        if isinstance(got, float) and not got.is_integer() and math.isclose(got, exact):
            return _TRUE_DIVISION
        return by_value(case, got)

    return diagnose


def check_conv_output_size(conv_output_size: Callable) -> None:
    """Check ``conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1) -> int``.

    The expected sizes are the ones PyTorch's conv2d produces. On failure names the
    misconception: +1 forgotten, stride/padding swapped, 2p counted as p, ceil or round
    instead of floor, true division, dilation ignored or spanning d*k.
    """
    cases = _conv_size_cases()
    run_check(TASK_CONV_OUTPUT_SIZE, conv_output_size, cases, diagnose=_diagnose_conv_output_size(cases))


def _conv_transpose_size_cases() -> list[Case]:
    specs = [
        # name, size, kernel, stride, padding, output_padding, dilation
        ("3 input, 3x3 kernel, stride 1", 3, 3, 1, 0, 0, 1),
        ("28 input, 2x2 kernel, stride 2 (U-Net's up-convolution)", 28, 2, 2, 0, 0, 1),
        ("32 input, 3x3 kernel, stride 2, padding 1", 32, 3, 2, 1, 0, 1),
        ("32 input, 3x3 kernel, stride 2, padding 1, output_padding 1", 32, 3, 2, 1, 1, 1),
        ("10 input, 3x3 kernel, dilation 2", 10, 3, 1, 0, 0, 2),
        ("7 input, 4x4 kernel, stride 3, padding 1, output_padding 2", 7, 4, 3, 1, 2, 1),
    ]
    return [
        Case(
            name,
            args=(i, k),
            kwargs={"stride": s, "padding": p, "output_padding": op, "dilation": d},
            expected=_torch_conv_transpose_size(i, k, s, p, op, d),
        )
        for name, i, k, s, p, op, d in specs
    ]


_CONV_TRANSPOSE_SIZE_VARIANTS: list[tuple[str, Variant]] = [
    (
        "you forgot the +1: o = (i - 1)*s - 2p + d*(k - 1) + output_padding + 1.",
        _size_variant(lambda i, k, s, p, d, a: (i - 1) * s - 2 * p + d * (k - 1) + a),
    ),
    (
        "output_padding ignored: it adds output_padding pixels at the end (it picks which of the "
        "input sizes that a stride-s convolution maps to the same size gets restored).",
        _size_variant(lambda i, k, s, p, d, a: (i - 1) * s - 2 * p + d * (k - 1) + 1),
    ),
    (
        "you used the convolution formula: a transposed convolution goes the other way, "
        "o = (i - 1)*s - 2p + d*(k - 1) + output_padding + 1 (the stride multiplies, it does not divide).",
        _size_variant(lambda i, k, s, p, d, a: (i + 2 * p - d * (k - 1) - 1) // s + 1),
    ),
    (
        "i*s instead of (i - 1)*s: i input pixels placed s apart span (i - 1)*s + 1 positions, not i*s.",
        _size_variant(lambda i, k, s, p, d, a: i * s - 2 * p + d * (k - 1) + a + 1),
    ),
    (
        "padding added instead of removed: in a transposed convolution padding crops p pixels "
        "from each side, 2p in total.",
        _size_variant(lambda i, k, s, p, d, a: (i - 1) * s + 2 * p + d * (k - 1) + a + 1),
    ),
    (
        "padding counted once: it crops p pixels from BOTH sides, 2p in total.",
        _size_variant(lambda i, k, s, p, d, a: (i - 1) * s - p + d * (k - 1) + a + 1),
    ),
    (
        "dilation ignored: a dilated kernel spans d*(k - 1) + 1 pixels, so add d*(k - 1), not k - 1.",
        _size_variant(lambda i, k, s, p, d, a: (i - 1) * s - 2 * p + (k - 1) + a + 1),
    ),
]


def check_conv_transpose_output_size(conv_transpose_output_size: Callable) -> None:
    """Check ``conv_transpose_output_size(size, kernel_size, stride=1, padding=0, output_padding=0, dilation=1)``.

    The expected sizes are the ones PyTorch's conv_transpose2d produces. On failure names
    the misconception: +1 forgotten, output_padding ignored, the convolution formula used,
    i*s instead of (i-1)*s, padding added or counted once, dilation ignored.
    """
    cases = _conv_transpose_size_cases()
    diagnose = _make_diagnose(cases, _CONV_TRANSPOSE_SIZE_VARIANTS, _same_number)
    run_check(TASK_CONV_TRANSPOSE_OUTPUT_SIZE, conv_transpose_output_size, cases, diagnose=diagnose)


# ----------------------------------------------------------------------------------------
# Task 5: predict the shapes of a small network
# ----------------------------------------------------------------------------------------
def predict_shapes_network() -> nn.Sequential:
    """The small encoder-decoder of Task 5 (1 input channel; weights irrelevant, only shapes).

    Input (N, 1, H, W) float32 -> output (N, 1, H', W'); see ``check_predict_shapes``.
    """
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3),  # valid 3x3 conv
        nn.Conv2d(4, 4, kernel_size=3, stride=2, padding=1),  # strided conv
        nn.MaxPool2d(kernel_size=2),  # 2x2 pool, stride 2
        nn.ConvTranspose2d(4, 4, kernel_size=2, stride=2),  # U-Net style up-convolution
        nn.ConvTranspose2d(4, 1, kernel_size=3, stride=2, padding=1, output_padding=1),
    )


def _layer_sizes(size: int) -> tuple[int, ...]:
    """Run the Task-5 network on a (1, 1, size, size) meta tensor; spatial size after each layer."""
    x = torch.empty(1, 1, size, size, device="meta")
    sizes = []
    for layer in predict_shapes_network().to("meta"):
        x = layer(x)
        sizes.append(int(x.shape[-1]))
    return tuple(sizes)


def _predict_shapes_cases() -> list[Case]:
    return [Case(f"input {size}x{size}", args=(size,), expected=_layer_sizes(size)) for size in (32, 33, 45, 64)]


def _diagnose_predict_shapes(case: Case, got: Any) -> Optional[str]:
    """Point at the first layer whose predicted size is wrong."""
    n = len(case.expected)
    if not isinstance(got, (tuple, list)) or len(got) != n:
        return f"return a tuple of {n} ints: the height (= width) after each of the {n} layers, in order."
    layers = list(predict_shapes_network())
    for index, (g, e) in enumerate(zip(got, case.expected)):
        if not _same_number(g, e, case):
            before = case.args[0] if index == 0 else case.expected[index - 1]
            return f"the first wrong size is after layer {index} ({layers[index]}), which turns {before} into {e}."
    return None


def check_predict_shapes(predict_shapes: Callable) -> None:
    """Check ``predict_shapes(size) -> tuple[int, ...]`` against the sizes PyTorch produces.

    ``size`` is the height (= width) of the input of :func:`predict_shapes_network`;
    the answer is the size after each of its 5 layers. On failure names the first wrong layer.
    """
    run_check(TASK_PREDICT_SHAPES, predict_shapes, _predict_shapes_cases(), diagnose=_diagnose_predict_shapes)
