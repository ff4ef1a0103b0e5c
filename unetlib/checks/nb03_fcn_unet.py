"""Checks for notebook 03 (FCN vs U-Net): three ways of wiring a segmentation network.

* :func:`check_fc_to_conv`: a fully connected layer rewritten as a convolution.
* :func:`check_fuse_additive`: FCN's skip fusion (upsample the coarse scores 2x, add the skip scores).
* :func:`check_crop_and_concat`: U-Net's skip connection (crop the encoder map, concatenate).

Each check builds its cases freshly on every call (the learner's code may modify the
layers it is given), compares against an independent reference and, on a wrong answer,
tries the known wrong variants of the task one by one to name the misconception.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._core import Case, CheckError, run_check

__all__ = ["check_fc_to_conv", "check_fuse_additive", "check_crop_and_concat"]


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------
def _require_function(task: str, fn) -> None:
    """The same message run_check gives, needed where we wrap ``fn`` before run_check sees it."""
    if isinstance(fn, nn.Module):  # modules are callable, but a check needs the learner's function
        raise CheckError(
            f"{task}: expected a function but got {type(fn).__name__} (a module, probably the result of "
            "calling your function). Pass the function itself, without calling it."
        )
    if not callable(fn):
        raise CheckError(
            f"{task}: expected a function but got {type(fn).__name__}. "
            "Pass the function itself, without calling it."
        )


def _same(got, candidate: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """True when ``got`` is a tensor with ``candidate``'s shape and values."""
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(candidate.shape):
        return False
    return torch.allclose(got.detach().double(), candidate.detach().double(), atol=atol, rtol=rtol)


def _first_match(got, candidates: list[tuple[str, Callable[[], torch.Tensor]]]) -> Optional[str]:
    """The hint of the first wrong variant whose output equals ``got`` (lazily computed)."""
    for hint, make in candidates:
        try:
            candidate = make()
        except Exception:  # a variant that cannot even be computed for this case explains nothing
            continue
        if _same(got, candidate):
            return hint
    return None


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator)


def _crop(x: torch.Tensor, height: int, width: int, top: int, left: int) -> torch.Tensor:
    return x[..., top:top + height, left:left + width]


def _centre_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Central window; an odd difference leaves the extra row/column at the bottom/right."""
    return _crop(x, height, width, (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2)


# --------------------------------------------------------------------------------------
# Task 1: a fully connected layer becomes a convolution
# --------------------------------------------------------------------------------------
_FC_TASK = "Task 1 fc_to_conv"


def _sliding_fc(linear: nn.Linear, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Reference: apply ``linear`` to every k x k window of ``x`` (stride 1), no convolution involved.

    ``F.unfold`` lists each window as a column flattened in (C, kh, kw) order, which is
    exactly the order ``torch.flatten(features, 1)`` gives the classifier's FC layer.
    Returns ``(N, out_features, H - k + 1, W - k + 1)``.
    """
    n, _, h, w = x.shape
    columns = F.unfold(x, kernel_size)  # (N, C*k*k, L)
    scores = linear(columns.transpose(1, 2))  # (N, L, out)
    return scores.transpose(1, 2).reshape(n, linear.out_features, h - kernel_size + 1, w - kernel_size + 1)


def _conv_with(weight: torch.Tensor, bias: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, weight, bias)


def _fc_cases() -> list[Case]:
    """Fresh layers and inputs; args are (linear, in_channels, kernel_size, probe input)."""
    g = torch.Generator().manual_seed(3)
    specs = [
        # name, in_channels, kernel, out_features, probe (N, H, W)
        ("2 channels, 2x2 window, probe = one window", 2, 2, 3, (1, 2, 2)),
        ("3 channels, 3x3 window, probe 5x6 (several windows)", 3, 3, 4, (2, 5, 6)),
        ("4 channels, 7x7 window (VGG-style fc6), probe 9x9", 4, 7, 5, (1, 9, 9)),
    ]
    cases = []
    for name, c, k, out, (n, h, w) in specs:
        linear = nn.Linear(c * k * k, out)
        with torch.no_grad():
            linear.weight.copy_(_randn(g, out, c * k * k))
            linear.bias.copy_(_randn(g, out))
        x = _randn(g, n, c, h, w)
        with torch.no_grad():
            expected = _sliding_fc(linear, x, k)
        cases.append(Case(name, args=(linear, c, k, x), expected=expected, atol=1e-4, rtol=1e-4))
    return cases


def _validate_conv(conv, linear: nn.Linear, in_channels: int, kernel_size: int) -> None:
    """Readable errors for a returned module that cannot be right, before torch runs it."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(
            f"fc_to_conv must return an nn.Conv2d, but it returned {type(conv).__name__}. "
            "Create nn.Conv2d(in_channels, linear.out_features, kernel_size) and copy the "
            "FC weights (reshaped) and bias into it."
        )
    out_c, in_c, kh, kw = conv.weight.shape
    k = kernel_size
    if in_c != in_channels:
        if in_c == in_channels * k * k and (kh, kw) == (1, 1):
            raise ValueError(
                f"your Conv2d is 1x1 with {in_c} input channels. A 1x1 convolution replaces an FC "
                "layer only when its input is 1x1 (fc7, fc8). This FC layer reads a "
                f"{in_channels}-channel {k}x{k} window, so it becomes a {k}x{k} convolution with "
                f"{in_channels} input channels."
            )
        raise ValueError(
            f"your Conv2d takes {in_c} input channels but the feature map has {in_channels}."
        )
    if out_c != linear.out_features:
        raise ValueError(
            f"your Conv2d has {out_c} output channels but the FC layer has {linear.out_features} "
            "outputs: each FC output becomes one output channel."
        )
    if (kh, kw) != (k, k):
        raise ValueError(
            f"your Conv2d has a {kh}x{kw} kernel but the FC layer looked at a {k}x{k} window: "
            f"wrong kernel size (it must be {k}, the spatial size of the FC layer's input, "
            f"because {linear.in_features} = {in_channels} x {k} x {k})."
        )


def _fc_diagnosis(last: dict):
    def diagnose(case: Case, got) -> Optional[str]:
        linear, c, k, x = case.args
        conv = last.get("conv")
        if conv is not None:
            if tuple(conv.stride) != (1, 1):
                return (
                    f"your convolution has stride {tuple(conv.stride)}. On the feature map the window "
                    "moves one cell at a time (stride 1); the stride of 32 *pixels* comes from the "
                    "pooling layers before it."
                )
            if conv.padding not in ((0, 0), "valid"):
                return (
                    f"your convolution pads the input (padding={conv.padding}). The FC layer only ever "
                    "saw complete windows, so the convolution must not pad (padding=0)."
                )
            if tuple(conv.dilation) != (1, 1):
                return f"your convolution is dilated (dilation={conv.dilation}); the window is contiguous."
        w = linear.weight.detach()
        out = w.shape[0]
        b = linear.bias.detach()
        with torch.no_grad():
            candidates = [
                (
                    "the bias was not copied: the FC layer's bias must become the convolution's bias.",
                    lambda: _conv_with(w.reshape(out, c, k, k), None, x),
                ),
                (
                    "the weights were reshaped in channel-last order (out, k, k, C). torch.flatten on "
                    "an (N, C, H, W) map puts the channel first, so reshape to (out, C, k, k).",
                    lambda: _conv_with(w.reshape(out, k, k, c).permute(0, 3, 1, 2), b, x),
                ),
                (
                    "height and width are swapped in the kernel (you transposed the last two dims). "
                    "flatten order is (C, H, W): reshape to (out, C, k, k) without permuting.",
                    lambda: _conv_with(w.reshape(out, c, k, k).transpose(2, 3), b, x),
                ),
                (
                    "you reshaped the transposed weight matrix (linear.weight.T). nn.Linear stores its "
                    "weight as (out_features, in_features): reshape it directly to (out, C, k, k).",
                    lambda: _conv_with(w.t().reshape(out, c, k, k), b, x),
                ),
            ]
        hint = _first_match(got, candidates)
        if hint is None and conv is not None and isinstance(got, torch.Tensor) and got.shape == case.expected.shape:
            # Right weights, wrong bias (e.g. a freshly initialised one left in place)?
            nobias = _conv_with(w.reshape(out, c, k, k), None, x)
            offset = (got - nobias).detach()
            per_channel = offset.mean(dim=(0, 2, 3), keepdim=True)
            if torch.allclose(offset, per_channel.expand_as(offset), atol=1e-4):
                hint = "the bias was not copied: the FC layer's bias must become the convolution's bias."
        return hint

    return diagnose


def check_fc_to_conv(fc_to_conv: Callable) -> None:
    """Check ``fc_to_conv(linear, in_channels, kernel_size) -> nn.Conv2d``.

    Contract: ``linear`` (with a bias) reads a feature map of shape ``(N, in_channels, k, k)``
    flattened by ``torch.flatten(x, 1)``, so ``linear.in_features == in_channels * k * k``.
    The returned convolution (kernel ``k``, stride 1, no padding) applied to any
    ``(N, in_channels, H, W)`` map gives ``(N, out_features, H - k + 1, W - k + 1)``: the FC
    layer evaluated on every k x k window. The check applies your convolution to a probe
    map and compares with the FC layer applied window by window.
    """
    _require_function(_FC_TASK, fc_to_conv)
    last: dict = {}

    def apply_returned_conv(linear, in_channels, kernel_size, x):
        conv = fc_to_conv(linear, in_channels, kernel_size)
        _validate_conv(conv, linear, in_channels, kernel_size)
        last["conv"] = conv
        with torch.no_grad():
            return conv(x)

    run_check(_FC_TASK, apply_returned_conv, _fc_cases(), diagnose=_fc_diagnosis(last))


# --------------------------------------------------------------------------------------
# Task 2: FCN's additive skip fusion
# --------------------------------------------------------------------------------------
_FUSE_TASK = "Task 2 fuse_additive"


def _bilinear2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _fuse_reference(coarse, skip, upsample=None, skip_scale=1.0) -> torch.Tensor:
    up = (upsample or _bilinear2x)(coarse)
    return up + skip_scale * _centre_crop(skip, up.shape[-2], up.shape[-1])


def _fuse_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    cases = []

    def add(name, coarse_shape, skip_shape, upsample=None, skip_scale=None):
        coarse, skip = _randn(g, *coarse_shape), _randn(g, *skip_shape)
        kwargs = {}
        if upsample is not None:
            kwargs["upsample"] = upsample
        if skip_scale is not None:
            kwargs["skip_scale"] = skip_scale
        with torch.no_grad():
            expected = _fuse_reference(coarse, skip, upsample, 1.0 if skip_scale is None else skip_scale)
        cases.append(Case(name, args=(coarse, skip), kwargs=kwargs, expected=expected))

    add("2 classes, 3x3 scores + 6x6 skip, default bilinear", (1, 2, 3, 3), (1, 2, 6, 6))
    up_conv = nn.ConvTranspose2d(3, 3, kernel_size=4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up_conv.weight.copy_(_randn(g, 3, 3, 4, 4))
    add("batch 2, a given (learned) up-convolution", (2, 3, 4, 4), (2, 3, 8, 8), upsample=up_conv)
    # Odd differences (3 rows, 5 columns), so a crop offset rounded up instead of down fails.
    add("skip map larger than 2x, odd size difference (3 rows, 5 columns): centre-crop it",
        (1, 2, 4, 5), (1, 2, 11, 15))
    add("skip_scale=0.01", (1, 2, 3, 3), (1, 2, 6, 6), skip_scale=0.01)
    return cases


def _fuse_diagnosis(case: Case, got) -> Optional[str]:
    coarse, skip = case.args
    upsample = case.kwargs.get("upsample")
    scale = case.kwargs.get("skip_scale", 1.0)
    up_fn = upsample or _bilinear2x
    with torch.no_grad():
        up = up_fn(coarse)
        h, w = up.shape[-2:]
        skip_c = _centre_crop(skip, h, w)
        candidates = [
            (
                "you concatenated the scores along the channels. FCN *adds* the class scores "
                "(same classes, same positions), so the result keeps num_classes channels.",
                lambda: torch.cat([up, scale * skip_c], dim=1),
            ),
            (
                "you concatenated the scores along the channels. FCN *adds* the class scores "
                "(same classes, same positions), so the result keeps num_classes channels.",
                lambda: torch.cat([scale * skip_c, up], dim=1),
            ),
            (
                "you brought the skip scores down to the coarse size instead of upsampling the "
                "coarse scores 2x: the fused map must be at the finer (skip) resolution.",
                lambda: coarse + scale * F.interpolate(skip, size=coarse.shape[-2:], mode="bilinear", align_corners=False),
            ),
            (
                "you forgot skip_scale: multiply the (cropped) skip scores by skip_scale before adding.",
                lambda: up + _centre_crop(skip, h, w),
            ),
            (
                "the skip map was cropped from its top-left corner, so it is misaligned by a few "
                "pixels. Crop the centre: top = (H - h) // 2, left = (W - w) // 2.",
                lambda: up + scale * _crop(skip, h, w, 0, 0),
            ),
            (
                "you upsampled with nearest neighbour; the contract says bilinear "
                "(F.interpolate(..., scale_factor=2, mode='bilinear', align_corners=False)).",
                lambda: F.interpolate(coarse, scale_factor=2, mode="nearest") + scale * skip_c,
            ),
            (
                "you used align_corners=True; the contract says align_corners=False "
                "(pixel centres, the same geometry as a 2x up-convolution).",
                lambda: F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=True) + scale * skip_c,
            ),
        ]
        # Rounded up (math.ceil, d - d // 2) or half-to-even (round(d / 2)) in one or both axes.
        dy, dx = skip.shape[-2] - h, skip.shape[-1] - w
        for top in sorted({dy // 2, (dy + 1) // 2}):
            for left in sorted({dx // 2, (dx + 1) // 2}):
                if (top, left) != (dy // 2, dx // 2):
                    candidates.append((
                        "the crop offset rounds the wrong way for an odd difference. With a size "
                        "difference d the offset is d // 2, rounded down, so the extra row/column is "
                        f"left at the bottom/right: here top = {dy} // 2 = {dy // 2} and left = "
                        f"{dx} // 2 = {dx // 2}, but you cropped from ({top}, {left}).",
                        lambda top=top, left=left: up + scale * _crop(skip, h, w, top, left),
                    ))
        if upsample is not None:
            candidates.append((
                "you ignored the `upsample` argument: when a function/module is given (e.g. a learned "
                "up-convolution), use it instead of bilinear interpolation.",
                lambda: _bilinear2x(coarse) + scale * skip_c,
            ))
        hint = _first_match(got, candidates)
    if hint is None and isinstance(got, torch.Tensor) and got.shape == skip.shape and skip.shape[-2:] != up.shape[-2:]:
        hint = ("your result has the skip map's full size: crop the skip scores to the upsampled "
                "size (centre crop) instead of padding or resizing the upsampled scores.")
    return hint


def check_fuse_additive(fuse_additive: Callable) -> None:
    """Check ``fuse_additive(coarse_scores, skip_scores, upsample=None, skip_scale=1.0)``.

    Contract: ``coarse_scores`` ``(N, K, h, w)``; ``skip_scores`` ``(N, K, H, W)`` with
    ``H >= 2h, W >= 2w``. Upsample the coarse scores 2x with ``upsample`` (any callable,
    e.g. an ``nn.ConvTranspose2d``) or, when it is None, with
    ``F.interpolate(scale_factor=2, mode="bilinear", align_corners=False)``; centre-crop the
    skip scores to the upsampled size (top ``(H - 2h) // 2``, left ``(W - 2w) // 2``);
    return ``upsampled + skip_scale * cropped_skip``, shape ``(N, K, 2h, 2w)``.
    """
    _require_function(_FUSE_TASK, fuse_additive)
    run_check(_FUSE_TASK, fuse_additive, _fuse_cases(), diagnose=_fuse_diagnosis)


# --------------------------------------------------------------------------------------
# Task 3: U-Net's crop-and-concatenate skip connection
# --------------------------------------------------------------------------------------
_CONCAT_TASK = "Task 3 crop_and_concat"


def _concat_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    specs = [
        # name, decoder (N, C, h, w), encoder (N, C, H, W)
        ("one U-Net level: decoder 4x4, encoder 8x8, 3 channels each", (1, 3, 4, 4), (1, 3, 8, 8)),
        ("batch 2, rectangular maps", (2, 2, 5, 6), (2, 2, 9, 12)),
        ("padding='same' U-Net: sizes already equal", (1, 2, 4, 4), (1, 2, 4, 4)),
        ("different channel counts: decoder 2, encoder 3", (1, 2, 4, 4), (1, 3, 6, 6)),
        ("odd size difference: extra row/column at the bottom/right", (1, 1, 3, 3), (1, 1, 4, 5)),
    ]
    cases = []
    for name, dec_shape, enc_shape in specs:
        dec, enc = _randn(g, *dec_shape), _randn(g, *enc_shape)
        # Reference by explicit indexing, independent of any crop helper.
        top = (enc_shape[2] - dec_shape[2]) // 2
        left = (enc_shape[3] - dec_shape[3]) // 2
        window = enc[:, :, top:top + dec_shape[2], left:left + dec_shape[3]]
        expected = torch.empty(dec_shape[0], enc_shape[1] + dec_shape[1], dec_shape[2], dec_shape[3])
        expected[:, : enc_shape[1]] = window
        expected[:, enc_shape[1]:] = dec
        cases.append(Case(name, args=(dec, enc), expected=expected))
    return cases


def _concat_diagnosis(case: Case, got) -> Optional[str]:
    dec, enc = case.args
    h, w = dec.shape[-2:]
    H, W = enc.shape[-2:]
    enc_c = _centre_crop(enc, h, w)
    dy, dx = H - h, W - w

    def pad_decoder():
        left, top = dx // 2, dy // 2
        return F.pad(dec, (left, dx - left, top, dy - top))

    candidates = [
        (
            "you concatenated in the wrong order: the contract puts the (cropped) encoder features "
            "first, then the decoder features: torch.cat([encoder, decoder], dim=1).",
            lambda: torch.cat([dec, enc_c], dim=1),
        ),
        (
            "you concatenated along dim=0, which stacks more images into the batch. Feature maps "
            "are joined along the channel dimension: dim=1 of (N, C, H, W).",
            lambda: torch.cat([enc_c, dec], dim=0),
        ),
        (
            "you concatenated along dim=0, which stacks more images into the batch. Feature maps "
            "are joined along the channel dimension: dim=1 of (N, C, H, W).",
            lambda: torch.cat([dec, enc_c], dim=0),
        ),
        (
            "you concatenated along a spatial dimension. Feature maps are joined along the channel "
            "dimension: dim=1 of (N, C, H, W).",
            lambda: torch.cat([enc_c, dec], dim=-1),
        ),
        (
            "you added the maps instead of concatenating them. That is FCN's fusion; U-Net keeps "
            "both sets of features side by side: torch.cat([encoder, decoder], dim=1).",
            lambda: enc_c + dec,
        ),
        (
            "you padded the decoder map up to the encoder size instead of cropping the encoder map "
            "down to the decoder size. The encoder's border pixels have no decoder partner: crop them.",
            lambda: torch.cat([enc, pad_decoder()], dim=1),
        ),
        (
            "the encoder map was cropped from its top-left corner. Crop the centre so the two maps "
            "line up: top = (H - h) // 2, left = (W - w) // 2.",
            lambda: torch.cat([_crop(enc, h, w, 0, 0), dec], dim=1),
        ),
        (
            "your crop is off-centre by one pixel: for an odd difference round the offset down, "
            "top = (H - h) // 2 (the extra row/column goes at the bottom/right).",
            lambda: torch.cat([_crop(enc, h, w, (dy + 1) // 2, (dx + 1) // 2), dec], dim=1),
        ),
    ]
    hint = _first_match(got, candidates)
    if hint is None and isinstance(got, torch.Tensor) and got.ndim == 4 and tuple(got.shape[-2:]) == (H, W) and (H, W) != (h, w):
        hint = ("your result has the encoder's spatial size: crop the encoder map to the decoder size "
                "instead of enlarging the decoder map.")
    return hint


def check_crop_and_concat(crop_and_concat: Callable) -> None:
    """Check ``crop_and_concat(decoder_features, encoder_features) -> tensor``.

    Contract: decoder ``(N, Cd, h, w)``, encoder ``(N, Ce, H, W)`` with ``H >= h, W >= w``.
    Centre-crop the encoder map to ``h x w`` (top ``(H - h) // 2``, left ``(W - w) // 2``)
    and return ``torch.cat([cropped_encoder, decoder], dim=1)``: shape ``(N, Ce + Cd, h, w)``,
    encoder channels first (the order of unetlib.models.Up).
    """
    _require_function(_CONCAT_TASK, crop_and_concat)
    run_check(_CONCAT_TASK, crop_and_concat, _concat_cases(), diagnose=_concat_diagnosis)
