"""The U-Net's building blocks, one small module each: DoubleConv, Down, Up, OutConv.

Tensors are ``(N, C, H, W)`` of any floating dtype (float32, or bfloat16/float16 under
autocast) and any memory format (contiguous or ``torch.channels_last``).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["center_crop", "DoubleConv", "Down", "Up", "OutConv"]


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Cut the central ``height x width`` window out of ``x`` of shape ``(..., H, W)``.

    Removes ``(H - height) // 2`` rows at the top and the rest at the bottom (same for the
    columns), so an odd difference puts the extra pixel at the bottom/right. Returns a view
    of shape ``(..., height, width)``, same dtype and device.

    This is the paper's "copy and crop": the encoder map is larger than the upsampled
    decoder map because unpadded convolutions lost border pixels on the way down and up.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"center_crop expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"center_crop needs a tensor with at least 2 dims (..., H, W), got shape {tuple(x.shape)}")
    if isinstance(height, bool) or isinstance(width, bool) or not isinstance(height, int) or not isinstance(width, int):
        raise TypeError(f"height and width must be ints, got {height!r} and {width!r}")
    in_h, in_w = x.shape[-2], x.shape[-1]
    if height < 1 or width < 1:
        raise ValueError(f"crop size must be positive, got {height}x{width}")
    if height > in_h or width > in_w:
        raise ValueError(f"cannot center-crop a {in_h}x{in_w} map to a larger {height}x{width}: "
                         "the target must fit inside the input (is the skip connection smaller "
                         "than the upsampled map? then the input size is not valid)")
    top = (in_h - height) // 2
    left = (in_w - width) // 2
    return x[..., top:top + height, left:left + width]


def _conv3x3(in_channels: int, out_channels: int, padding: str, batch_norm: bool) -> list[nn.Module]:
    """3x3 conv (unpadded for "valid", padding 1 for "same") -> [BatchNorm] -> ReLU."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3,
                     padding=0 if padding == "valid" else 1,
                     bias=not batch_norm)  # BN's own shift makes a conv bias redundant
    layers: list[nn.Module] = [conv]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


class DoubleConv(nn.Module):
    """Two 3x3 convolutions, each followed by [BatchNorm and] ReLU.

    ``(N, in_channels, H, W) -> (N, out_channels, H - 4, W - 4)`` with ``padding="valid"``
    (the paper), ``(N, out_channels, H, W)`` with ``padding="same"``.
    """

    def __init__(self, in_channels: int, out_channels: int, padding: str = "valid",
                 batch_norm: bool = False):
        super().__init__()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.block = nn.Sequential(*_conv3x3(in_channels, out_channels, padding, batch_norm),
                                   *_conv3x3(out_channels, out_channels, padding, batch_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Down(nn.Module):
    """One step down the contracting path: 2x2 max-pool (stride 2), then a DoubleConv.

    ``(N, in_channels, H, W) -> (N, out_channels, H/2 - 4, W/2 - 4)`` (valid padding).
    H and W must be even: an odd size would silently lose a row/column in the pool and the
    skip connection would no longer line up with the decoder.
    """

    def __init__(self, in_channels: int, out_channels: int, padding: str = "valid",
                 batch_norm: bool = False):
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels, padding, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        if height % 2 or width % 2:
            raise ValueError(f"Down got a {height}x{width} map: the 2x2 max-pool needs even sizes "
                             "(choose an input size from unetlib.shapes.valid_input_sizes)")
        return self.conv(self.pool(x))


class Up(nn.Module):
    """One step up the expanding path: upsample x2, crop the skip, concatenate, DoubleConv.

    ``x``: ``(N, in_channels, h, w)`` from below; ``skip``: ``(N, in_channels // 2, H, W)``
    from the encoder with ``H >= 2h``. Returns ``(N, out_channels, 2h - 4, 2w - 4)`` (valid).

    ``up_mode="transpose"``: the paper's 2x2 up-convolution (``ConvTranspose2d``, stride 2)
    halving the channels. ``up_mode="bilinear"``: ``Upsample(scale_factor=2, bilinear,
    align_corners=False)`` then a 1x1 convolution halving the channels (no learned
    upsampling, so no checkerboard artefacts; same output size).
    """

    def __init__(self, in_channels: int, out_channels: int, up_mode: str = "transpose",
                 padding: str = "valid", batch_norm: bool = False):
        super().__init__()
        if in_channels % 2:
            raise ValueError(f"Up halves the channels, so in_channels must be even, got {in_channels}")
        half = in_channels // 2
        if up_mode == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, half, kernel_size=2, stride=2)
        elif up_mode == "bilinear":
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(in_channels, half, kernel_size=1))
        else:
            raise ValueError(f"up_mode must be 'transpose' or 'bilinear', got {up_mode!r}")
        self.conv = DoubleConv(2 * half, out_channels, padding, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        skip = center_crop(skip, x.shape[-2], x.shape[-1])
        x = torch.cat([skip, x], dim=1)
        return self.conv(x)


class OutConv(nn.Module):
    """The final 1x1 convolution: ``(N, in_channels, H, W) -> (N, num_classes, H, W)`` logits."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
