"""The U-Net of Ronneberger, Fischer & Brox (MICCAI 2015), with the usual modern options.

With its defaults, ``UNet()`` is the paper's network: 23 convolutions (18 unpadded 3x3
with ReLU, 4 2x2 up-convolutions, one 1x1), 64 -> 1024 channels, 31,030,658 parameters,
``(N, 1, 572, 572) -> (N, 2, 388, 388)`` logits.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import nn

from .. import shapes
from .blocks import DoubleConv, Down, OutConv, Up

__all__ = ["UNet", "incoming_nodes", "init_paper_weights_", "check_image_batch"]


def check_image_batch(x, in_channels: int, model_name: str) -> None:
    """Raise TypeError/ValueError unless ``x`` is a floating ``(N, in_channels, H, W)`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model_name} expects a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        hint = ""
        if x.ndim == 3:
            hint = " If this is a single image (C, H, W), add a batch dimension with x.unsqueeze(0)."
        elif x.ndim == 2:
            hint = " If this is a single-channel image (H, W), use x[None, None] to make it (1, 1, H, W)."
        raise ValueError(f"{model_name} expects a 4-D batch (N, C, H, W), got a {x.ndim}-D tensor "
                         f"of shape {tuple(x.shape)}.{hint}")
    if x.shape[1] != in_channels:
        hint = ""
        if x.shape[-1] == in_channels:
            hint = " The last dim matches: is it (N, H, W, C)? Use x.permute(0, 3, 1, 2)."
        raise ValueError(f"{model_name} was built for {in_channels} input channel(s) but got "
                         f"{x.shape[1]} (input shape {tuple(x.shape)}).{hint}")
    if not (x.is_floating_point()):
        raise TypeError(f"{model_name} expects a floating-point tensor, got dtype {x.dtype}; "
                        "convert with x.float() (and scale 0..255 images to 0..1)")


def incoming_nodes(layer: nn.Module) -> int:
    """The number of inputs that feed ONE output value of a conv layer (the paper's N).

    * ``Conv2d``: ``C_in/groups * kH * kW`` (576 for a 3x3 conv on 64 channels).
    * ``ConvTranspose2d``: an output pixel receives from at most ``ceil(k/s)`` input pixels
      per dimension (the kernel taps that land on it), times ``C_in/groups`` channels. For
      the paper's 2x2 stride-2 up-convolution every output pixel is computed from exactly
      one input pixel, so ``N = C_in``.

    Note that PyTorch's ``kaiming_normal_`` on a ``ConvTranspose2d`` uses weight dim 1 as the
    fan-in, i.e. ``C_out * k * k`` (= 2 C_in for the up-convolution that halves the channels),
    and the convolution-style count ``C_in * k * k`` would give 4 C_in; neither is the
    number of incoming connections. We use the true count, which keeps the variance of the
    activations constant through the up-convolution (He et al.'s argument).
    """
    if isinstance(layer, nn.ConvTranspose2d):
        taps = 1
        for k, s, d in zip(layer.kernel_size, layer.stride, layer.dilation):
            # most kernel taps (positions m*d) that fall on the same output pixel (same m*d mod s)
            counts: dict[int, int] = {}
            for m in range(k):
                counts[(m * d) % s] = counts.get((m * d) % s, 0) + 1
            taps *= max(counts.values())
        return layer.in_channels // layer.groups * taps
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels // layer.groups * math.prod(layer.kernel_size)
    raise TypeError(f"incoming_nodes expects a Conv2d or ConvTranspose2d, got {type(layer).__name__}")


@torch.no_grad()
def init_paper_weights_(model: nn.Module, generator: Optional[torch.Generator] = None) -> nn.Module:
    """The paper's initialisation, in place: weights ~ N(0, 2/N), N = :func:`incoming_nodes`.

    Biases are set to 0, BatchNorm to weight 1 / bias 0. ``generator`` (a CPU
    ``torch.Generator``) makes it reproducible without touching the global seed.
    Returns ``model``.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            if module.weight.is_meta:  # shapes only (e.g. a quick size check): nothing to draw
                continue
            std = math.sqrt(2.0 / incoming_nodes(module))
            if generator is None:
                module.weight.normal_(0.0, std)
            else:  # draw on the generator's device, then copy (params may live elsewhere)
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator,
                                                device=generator.device) * std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
    return model


class UNet(nn.Module):
    """U-Net: ``(N, in_channels, H, W) -> (N, num_classes, H_out, W_out)`` logits.

    ``H_out = H - 184`` for the paper's depth 4 with ``padding="valid"`` (572 -> 388; in
    general :func:`unetlib.shapes.unet_output_size`), ``H_out = H`` with ``padding="same"``.
    ``num_classes=1`` gives a single logit per pixel (use a sigmoid / BCE-with-logits).

    Args:
        in_channels: image channels (1 for the paper's grey-value EM images).
        num_classes: output channels (logits). base_channels: channels of the first level
            (64 in the paper); level ``l`` has ``base_channels * 2**l``.
        depth: number of pooling steps (4 in the paper).
        padding: "valid" (unpadded 3x3 convs, the paper; only some input sizes are valid,
            see :meth:`check_input_size`) or "same" (padding 1; sizes must be multiples of
            ``2**depth``).
        up_mode: "transpose" (the paper's 2x2 up-convolution) or "bilinear" (bilinear
            upsampling + 1x1 conv halving the channels, see :class:`Up`).
        batch_norm: conv -> BatchNorm -> ReLU, and the 3x3 convs lose their bias.
        dropout: probability of element-wise ``nn.Dropout`` (like Caffe's Dropout layer) on
            the bottleneck output, "at the end of the contracting path" as in the paper.
            0 disables it.
        generator: optional ``torch.Generator`` for the initialisation.

    Initialisation: Gaussian with std ``sqrt(2/N)``, N the true number of incoming
    connections of one output value, also for the up-convolutions (N = C_in there; see
    :func:`incoming_nodes` for why this differs from ``kaiming_normal_``).

    The input size is checked *before* any layer runs: an invalid size raises ValueError
    naming the nearest valid sizes (e.g. 570 -> "556 and 572").

    Cost: the paper's network at 572 x 572 needs ~150 G multiply-adds per image (convolutions
    only); for a quick look at shapes build it on ``torch.device("meta")``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_channels: int = 64,
                 depth: int = 4, padding: str = "valid", up_mode: str = "transpose",
                 batch_norm: bool = False, dropout: float = 0.0, *,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("base_channels", base_channels), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if padding not in shapes.PADDINGS:
            raise ValueError(f"padding must be one of {shapes.PADDINGS}, got {padding!r}")
        if up_mode not in shapes.UP_MODES:
            raise ValueError(f"up_mode must be one of {shapes.UP_MODES}, got {up_mode!r}")
        shapes.check_depth(depth, padding)   # refuse before allocating 2**depth-wide layers
        if not isinstance(batch_norm, bool):
            raise TypeError(f"batch_norm must be a bool, got {batch_norm!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.base_channels, self.depth = base_channels, depth
        self.padding, self.up_mode = padding, up_mode
        self.batch_norm, self.dropout_rate = batch_norm, float(dropout)

        channels = [base_channels * 2 ** level for level in range(depth + 1)]  # 64 ... 1024
        self.inc = DoubleConv(in_channels, channels[0], padding, batch_norm)
        self.downs = nn.ModuleList(Down(channels[i], channels[i + 1], padding, batch_norm)
                                   for i in range(depth))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(Up(channels[i + 1], channels[i], up_mode, padding, batch_norm)
                                 for i in reversed(range(depth)))
        self.outc = OutConv(channels[0], num_classes)
        init_paper_weights_(self, generator)

    def output_size(self, input_size: Union[int, tuple[int, int]]):
        """Spatial output size for an input size (int or ``(H, W)``); ValueError if invalid."""
        return shapes.unet_output_size(input_size, self.depth, self.padding)

    def check_input_size(self, height: int, width: Optional[int] = None) -> None:
        """Raise ValueError (naming the nearest valid sizes) unless ``height x width`` is valid.

        ``width`` defaults to ``height`` (a square input).
        """
        width = height if width is None else width
        for what, size in (("height", height), ("width", width)):
            if not shapes.is_valid_input_size(size, self.depth, self.padding):
                lower, upper = shapes.nearest_valid_input_size(size, self.depth, self.padding)
                nearest = " and ".join(str(s) for s in (lower, upper) if s is not None)
                nearest = f"sizes are {nearest}" if lower and upper else f"size is {nearest}"
                rule = shapes.describe_valid_input_sizes(self.depth, self.padding)
                raise ValueError(
                    f"UNet(depth={self.depth}, padding={self.padding!r}) cannot take an input {what} "
                    f"of {size}: nearest valid {nearest}. Valid sizes are {rule}. Crop or "
                    "mirror-pad the image to a valid size (or use overlap-tile inference).")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` float -> ``(N, num_classes, H_out, W_out)`` logits."""
        check_image_batch(x, self.in_channels, "UNet")
        self.check_input_size(x.shape[-2], x.shape[-1])
        skips = []
        x = self.inc(x)
        for down in self.downs:
            skips.append(x)
            x = down(x)
        x = self.dropout(x)
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)
        return self.outc(x)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
                f"base_channels={self.base_channels}, depth={self.depth}, padding={self.padding!r}, "
                f"up_mode={self.up_mode!r}, batch_norm={self.batch_norm}, dropout={self.dropout_rate}")
