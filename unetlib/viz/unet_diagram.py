"""Draw the U: every feature map of a U-Net as a box labelled with its channels and size.

:func:`draw_unet` redraws the paper's Fig. 1 for any valid input size, depth and width,
from :func:`unetlib.shapes.unet_shape_trace` (so the numbers are computed, not typed in).
Boxes are feature maps: their height grows with the spatial size (square-root scale, so
the 28-pixel bottleneck stays visible), the channel count is written above each box and
the spatial size beside it. Arrows follow the paper's legend: 3x3 convolution + ReLU
(blue), 2x2 max-pool (red), 2x2 up-convolution (green), copy and crop (grey, labelled
with the crop), 1x1 convolution (teal). White boxes are the cropped copies of encoder maps.
"""
from __future__ import annotations

import math
from typing import Optional

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Rectangle

from ..shapes import ShapeStage, unet_shape_trace

__all__ = ["draw_unet"]

_COLOURS = {"conv": "tab:blue", "pool": "tab:red", "up": "tab:green", "crop": "0.45", "output": "teal"}
_BOX_WIDTH = 0.26
_STEP = 0.72          # horizontal distance between consecutive boxes of one level
_LEVEL_SHIFT = 0.45   # each level starts a little further right: the U's slope
_MAX_HEIGHT = 2.4     # height of the input box (data units)
_MIN_HEIGHT = 0.8     # every box is at least this tall, so the size written beside it fits below the arrow
_GAP = 0.9            # vertical gap between levels
_FONT_SIZE = 9.0      # every label (points), at the default figure width
_FIG_WIDTH = 10.5     # inches: shown about 1:1 in a notebook, so 9 pt stays 9 pt


def _height(size: int, input_size: int) -> float:
    return _MIN_HEIGHT + (_MAX_HEIGHT - _MIN_HEIGHT) * math.sqrt(size / input_size)


def _arrow(ax: Axes, start, end, kind: str, **kwargs) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, linewidth=1.3,
                                 color=_COLOURS[kind], shrinkA=0, shrinkB=0, **kwargs))


def _box(ax: Axes, x: float, y: float, stage_height: float, channels: int, size_label: str,
         filled: bool = True, show_channels: bool = True, fontsize: float = _FONT_SIZE) -> None:
    """A feature map centred at ``(x, y)``; channels above it, size to its left (rotated)."""
    ax.add_patch(Rectangle((x - _BOX_WIDTH / 2, y - stage_height / 2), _BOX_WIDTH, stage_height,
                           facecolor="#9ecae1" if filled else "white", edgecolor="0.2", linewidth=0.8))
    if show_channels:
        ax.text(x, y + stage_height / 2 + 0.08, str(channels), ha="center", va="bottom", fontsize=fontsize)
    ax.text(x - _BOX_WIDTH / 2 - 0.04, y - stage_height / 2, size_label, ha="right", va="bottom",
            rotation=90, fontsize=fontsize, color="0.25")


def _size_label(stage: ShapeStage) -> str:
    return f"{stage.height}²" if stage.height == stage.width else f"{stage.height}x{stage.width}"


def _per_side(crop: ShapeStage) -> str:
    top, left = crop.crop_per_side
    return str(top) if top == left else f"{top}/{left}"


def draw_unet(input_size=572, depth: int = 4, base_channels: int = 64, *, in_channels: int = 1,
              num_classes: int = 2, ax: Optional[Axes] = None, title: Optional[str] = None) -> Figure:
    """Draw a valid-padding U-Net with the channels and spatial size of every feature map.

    Args:
        input_size: a valid input size (int, or ``(H, W)``), e.g. 572; an invalid size raises
            the ValueError of :func:`unetlib.shapes.unet_shape_trace` (it names the nearest valid sizes).
        depth, base_channels, in_channels, num_classes: the network (defaults: the paper's).
        ax: draw into this Axes (a new figure 10.5 inches wide if None).
        title: figure title (default: says what is drawn).

    Returns:
        The matplotlib Figure (end the notebook cell with ``plt.show()``).
    """
    trace = unet_shape_trace(input_size, depth=depth, base_channels=base_channels,
                             in_channels=in_channels, num_classes=num_classes)
    by_name = {stage.name: stage for stage in trace}
    first = trace[0].height
    new_figure = ax is None
    if new_figure:
        fig, ax = plt.subplots(figsize=(_FIG_WIDTH, 0.62 * _FIG_WIDTH))
    else:
        fig = ax.figure

    # Vertical centre of each level (1 = top; depth + 1 = bottleneck).
    centres, y = {}, 0.0
    for level in range(1, depth + 2):
        size = by_name[f"enc{level}.conv1" if level <= depth else "bottleneck.conv1"].height
        if level > 1:
            y -= previous / 2 + _GAP + _height(size, first) / 2
        centres[level] = y
        previous = _height(size, first)

    def enc_x(level: int, k: int) -> float:  # k = 0: level input (input or pool output), 1, 2: convs
        return (level - 1) * (2 * _STEP + _LEVEL_SHIFT) + k * _STEP

    right_end = 2 * enc_x(depth + 1, 1)  # the U is symmetric around the bottleneck's middle box

    def dec_x(level: int, k: int) -> float:  # k = 0: concatenation, 1, 2: convs
        # the concatenation is two boxes wide, so the convolutions after it sit half a box further right
        return right_end - enc_x(level, 2 - k) + (_BOX_WIDTH / 2 if k else 0.0)

    def draw_level(names: list[str], xs: list[float], level: int, first_filled: bool = True) -> None:
        for i, (name, x) in enumerate(zip(names, xs)):
            stage = by_name[name]
            _box(ax, x, centres[level], _height(stage.height, first), stage.channels, _size_label(stage),
                 filled=first_filled or i > 0)

    def conv_arrows(xs: list[float], level: int) -> None:
        for a, b in zip(xs[:-1], xs[1:]):
            _arrow(ax, (a + _BOX_WIDTH / 2, centres[level]), (b - _BOX_WIDTH / 2, centres[level]), "conv")

    # Contracting path and bottleneck.
    for level in range(1, depth + 2):
        name = f"enc{level}" if level <= depth else "bottleneck"
        first_name = "input" if level == 1 else f"pool{level - 1}"
        names = [first_name, f"{name}.conv1", f"{name}.conv2"]
        xs = [enc_x(level, k) for k in range(3)]
        draw_level(names, xs, level)
        conv_arrows(xs, level)
        if level > 1:  # max-pool arrow from the previous level's last box
            top = centres[level - 1] - _height(by_name[f"enc{level - 1}.conv2"].height, first) / 2
            _arrow(ax, (enc_x(level - 1, 2), top - 0.05),
                   (xs[0] - _BOX_WIDTH / 2 - 0.03, centres[level] + _height(by_name[names[0]].height, first) / 2 - 0.15),
                   "pool")  # into the box's left side, below the channel count written above it

    # Expanding path: up-convolution, cropped copy + concatenation, two convolutions.
    for level in range(depth, 0, -1):
        xs = [dec_x(level, k) for k in range(3)]
        up, crop = by_name[f"up{level}"], by_name[f"crop{level}"]
        h = _height(up.height, first)
        # the concatenated map: white = cropped copy of the encoder map, blue = upsampled map
        x_copy, x_up = xs[0] - _BOX_WIDTH / 2, xs[0] + _BOX_WIDTH / 2
        _box(ax, x_copy, centres[level], h, crop.channels, _size_label(crop), filled=False, show_channels=False)
        _box(ax, x_up, centres[level], h, up.channels, "", show_channels=False)
        ax.text(xs[0], centres[level] + h / 2 + 0.08, str(crop.channels + up.channels), ha="center",
                va="bottom", fontsize=_FONT_SIZE)
        names = [f"dec{level}.conv1", f"dec{level}.conv2"]
        draw_level(names, xs[1:], level)
        conv_arrows([x_up] + xs[1:], level)
        below = centres[level + 1]
        start_x = enc_x(depth + 1, 2) if level == depth else dec_x(level + 1, 2)
        _arrow(ax, (start_x + _BOX_WIDTH / 2 + 0.02, below + _height(by_name[
            "bottleneck.conv2" if level == depth else f"dec{level + 1}.conv2"].height, first) / 2 + 0.05),
            (x_up, centres[level] - h / 2 - 0.05), "up")
        # copy and crop: from the encoder's last map to the white box
        encoder = by_name[f"enc{level}.conv2"]
        start = (enc_x(level, 2) + _BOX_WIDTH / 2 + 0.03, centres[level])
        end = (x_copy - _BOX_WIDTH / 2 - 0.03, centres[level])
        _arrow(ax, start, end, "crop", linestyle="--")
        ax.text((start[0] + end[0]) / 2, centres[level] - 0.07,
                f"copy & crop\n{_size_label(encoder)} → {_size_label(up)}\n({_per_side(crop)} px/side)",
                ha="center", va="top", fontsize=_FONT_SIZE, color="0.25")

    # Final 1x1 convolution.
    out = by_name["output"]
    x_last = dec_x(1, 2)
    x_out = x_last + _STEP
    _box(ax, x_out, centres[1], _height(out.height, first), out.channels, _size_label(out))
    _arrow(ax, (x_last + _BOX_WIDTH / 2, centres[1]), (x_out - _BOX_WIDTH / 2, centres[1]), "output")

    legend = [Line2D([], [], color=_COLOURS["conv"], lw=2, label="3x3 conv (valid) + ReLU: -2 px"),
              Line2D([], [], color=_COLOURS["pool"], lw=2, label="2x2 max-pool, stride 2: /2"),
              Line2D([], [], color=_COLOURS["up"], lw=2, label="2x2 up-conv, stride 2: x2"),
              Line2D([], [], color=_COLOURS["crop"], lw=2, ls="--", label="copy & centre-crop"),
              Line2D([], [], color=_COLOURS["output"], lw=2, label="1x1 conv")]
    ax.legend(handles=legend, loc="lower right", fontsize=10, frameon=False)
    bottom = centres[depth + 1] - _height(by_name["bottleneck.conv1"].height, first) / 2
    ax.set_xlim(-0.7, x_out + 0.5)
    ax.set_ylim(bottom - 0.6, _MAX_HEIGHT / 2 + 0.5)
    ax.set_aspect("equal")
    if new_figure:  # as tall as the drawing needs at this width, plus the title
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        fig.set_size_inches(_FIG_WIDTH, _FIG_WIDTH * (y1 - y0) / (x1 - x0) + 0.4)
    ax.axis("off")  # positions carry no units: sizes are written on the boxes
    if title is None:
        title = (f"U-Net, depth {depth}, {_size_label(trace[0])} input -> {_size_label(out)} output "
                 "(channels above each box, spatial size beside it)")
    ax.set_title(title, fontsize=12)
    return fig
