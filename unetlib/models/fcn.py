"""A small Fully Convolutional Network (Long, Shelhamer & Darrell, CVPR 2015), from scratch.

A VGG-style backbone (5 stages of 3x3 convs, each ending in a 2x2 max-pool: stride 32),
fc6/fc7 as convolutions, 1x1 score layers, and ``ConvTranspose2d`` upsampling initialised
to bilinear interpolation. The skips are **added** (class scores of pool4 / pool3 are summed
with the upsampled coarse scores), where U-Net **concatenates** feature maps.

* FCN-32s: score(fc7) --x32--> output
* FCN-16s: score(fc7) --x2--> + score(pool4) --x16--> output
* FCN-8s:  ... + score(pool4) --x2--> + score(pool3) --x8--> output

Sizes: every conv is padded ("same") so pool k is at exactly ``H / 2**k`` when H is a
multiple of 32, and each upsampling ``ConvTranspose2d(kernel 2f, stride f, padding f/2)``
multiplies the size by exactly f. Any other input size is zero-padded internally (top/left
``pad // 2``, the rest bottom/right) to the next multiple of 32 and the scores are cropped
back -- the same idea as the original FCN, which padded every input by 100 px and cropped.
So the output size always equals the input size; pixels near a padded border see zeros.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .unet import check_image_batch, init_paper_weights_

__all__ = ["FCN", "bilinear_kernel"]

#: Convolutions per backbone stage, as in VGG-16.
VGG_STAGE_CONVS = (2, 2, 3, 3, 3)


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> torch.Tensor:
    """``ConvTranspose2d`` weights that upsample each channel by bilinear interpolation.

    Returns a float32 tensor of shape ``(in_channels, out_channels, k, k)``: channel ``c``
    maps to channel ``c`` with the 2-D "tent" ``(1 - |x - centre| / f) (1 - |y - centre| / f)``,
    ``f = ceil(k / 2)``, other pairs are 0 (so ``in_channels`` must equal ``out_channels``).
    With ``k = 2f``, stride ``f`` and padding ``f // 2`` (f even), the transposed
    convolution equals ``F.interpolate(scale_factor=f, mode="bilinear", align_corners=False)``
    away from the border (it zero-pads where interpolate repeats the edge).
    """
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("kernel_size", kernel_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if in_channels != out_channels:
        raise ValueError("bilinear upsampling maps each channel to itself, so in_channels must "
                         f"equal out_channels, got {in_channels} and {out_channels}")
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float64) - centre).abs() / factor
    tent = torch.outer(taps, taps).to(torch.float32)
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size)
    for c in range(in_channels):
        weight[c, c] = tent
    return weight


def _upsampler(num_classes: int, factor: int) -> nn.ConvTranspose2d:
    """A learnable x``factor`` upsampling initialised to bilinear (exact size ``H * factor``)."""
    up = nn.ConvTranspose2d(num_classes, num_classes, kernel_size=2 * factor, stride=factor,
                            padding=factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(num_classes, num_classes, 2 * factor))
    return up


def _vgg_stage(in_channels: int, out_channels: int, n_convs: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1,
                                bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class FCN(nn.Module):
    """FCN-32s/16s/8s: ``(N, in_channels, H, W) -> (N, num_classes, H, W)`` class scores.

    Args:
        in_channels, num_classes: image channels and output classes (logits).
        variant: "32s", "16s" or "8s" (which pools feed additive skips, see module doc).
        base_channels: channels of stage 1; stages have ``base * (1, 2, 4, 8, 8)`` (VGG-16
            has base 64; 16 trains on a CPU).
        fc_channels: channels of fc6/fc7 (default ``16 * base_channels``; VGG: 4096).
        fc_kernel_size: fc6 kernel (7 as in VGG, padded so the size is kept).
        dropout: ``nn.Dropout`` after fc6 and fc7 (Long et al. used 0.5).
        batch_norm: BatchNorm after each backbone conv. Not in the original (which started
            from ImageNet VGG weights); trained from scratch on small data it makes the
            13-conv backbone fit several times faster.
        generator: optional ``torch.Generator`` for the initialisation.

    Initialisation: convs ~ N(0, 2/N) as in :func:`init_paper_weights_`, the score layers
    zero (as Long et al.), upsampling layers bilinear (:func:`bilinear_kernel`, learnable).
    Any input size works (internal zero padding to a multiple of 32, see module doc).
    """

    stride = 32  #: total downsampling of the backbone

    def __init__(self, in_channels: int = 1, num_classes: int = 2, variant: str = "8s",
                 base_channels: int = 16, *, fc_channels: Optional[int] = None, fc_kernel_size: int = 7,
                 dropout: float = 0.0, batch_norm: bool = False,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        if variant not in ("32s", "16s", "8s"):
            raise ValueError(f"variant must be '32s', '16s' or '8s', got {variant!r}")
        fc_channels = 16 * base_channels if fc_channels is None else fc_channels
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("base_channels", base_channels), ("fc_channels", fc_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(fc_kernel_size, int) or fc_kernel_size < 1 or fc_kernel_size % 2 == 0:
            raise ValueError(f"fc_kernel_size must be a positive odd int, got {fc_kernel_size!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.in_channels, self.num_classes, self.variant = in_channels, num_classes, variant
        self.base_channels = base_channels

        widths = [base_channels * m for m in (1, 2, 4, 8, 8)]
        stages, previous = [], in_channels
        for width, n_convs in zip(widths, VGG_STAGE_CONVS):
            stages.append(_vgg_stage(previous, width, n_convs, batch_norm))
            previous = width
        self.stage1, self.stage2, self.stage3, self.stage4, self.stage5 = stages
        self.fc = nn.Sequential(  # fc6 and fc7 of VGG, as convolutions
            nn.Conv2d(widths[4], fc_channels, fc_kernel_size, padding=fc_kernel_size // 2),
            nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        init_paper_weights_(self, generator)  # before the bilinear/zero inits below

        if variant == "32s":
            self.upscore = _upsampler(num_classes, 32)
        else:
            self.score_pool4 = nn.Conv2d(widths[3], num_classes, 1)
            self.upscore2 = _upsampler(num_classes, 2)
        if variant == "16s":
            self.upscore = _upsampler(num_classes, 16)
        if variant == "8s":
            self.score_pool3 = nn.Conv2d(widths[2], num_classes, 1)
            self.upscore_pool4 = _upsampler(num_classes, 2)
            self.upscore = _upsampler(num_classes, 8)
        for name in ("score_fr", "score_pool4", "score_pool3"):
            layer = getattr(self, name, None)
            if layer is not None:  # zero scores at the start: skips add nothing until trained
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def padded_size(self, size: int) -> int:
        """The multiple of 32 an input of ``size`` pixels is zero-padded to internally."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        return math.ceil(size / self.stride) * self.stride

    def output_size(self, input_size):
        """Output spatial size: always equal to ``input_size`` (int or ``(H, W)``)."""
        return input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` float -> ``(N, num_classes, H, W)`` scores (logits)."""
        check_image_batch(x, self.in_channels, "FCN")
        height, width = x.shape[-2], x.shape[-1]
        pad_h, pad_w = self.padded_size(height) - height, self.padded_size(width) - width
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        pool3 = self.stage3(self.stage2(self.stage1(x)))  # stride 8
        pool4 = self.stage4(pool3)                         # stride 16
        pool5 = self.stage5(pool4)                         # stride 32
        score = self.score_fr(self.fc(pool5))
        if self.variant in ("16s", "8s"):
            score = self.upscore2(score) + self.score_pool4(pool4)  # additive skip (stride 16)
        if self.variant == "8s":
            score = self.upscore_pool4(score) + self.score_pool3(pool3)  # stride 8
        score = self.upscore(score)
        return score[..., pad_h // 2:pad_h // 2 + height, pad_w // 2:pad_w // 2 + width]
