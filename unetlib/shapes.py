"""Convolution arithmetic as code: how every layer of a U-Net changes the spatial size.

Three one-layer rules (they agree exactly with PyTorch, see ``tests/test_shapes.py``):

* :func:`conv_output_size`            ``o = floor((i + 2p - d(k-1) - 1) / s) + 1``  (``nn.Conv2d``)
* :func:`pool_output_size`            the same with ``s = k`` by default           (``nn.MaxPool2d``)
* :func:`conv_transpose_output_size`  ``o = (i-1)s - 2p + d(k-1) + output_padding + 1``
  (``nn.ConvTranspose2d``)

and, built only from those rules, the whole U-Net of Ronneberger et al. (2015):
:func:`unet_shape_trace` (the stage-by-stage table of Fig. 1), :func:`unet_output_size`
(572 -> 388), :func:`valid_input_sizes` (188 + 16k for depth 4: *derived* by walking the
layers with symbols, never hard-coded, see ``_valid_size_rule``), :func:`unet_context` (184)
and :func:`receptive_field`. :func:`check_depth` refuses depths no sane image fits.

Sizes are plain Python ints (one spatial dimension); the U-Net helpers also take a
``(height, width)`` pair where it makes sense.
"""
from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence, Union

__all__ = [
    "conv_output_size",
    "pool_output_size",
    "conv_transpose_output_size",
    "ShapeStage",
    "unet_shape_trace",
    "format_shape_trace",
    "unet_output_size",
    "is_valid_input_size",
    "valid_input_sizes",
    "nearest_valid_input_size",
    "describe_valid_input_sizes",
    "check_depth",
    "MAX_SMALLEST_VALID_INPUT",
    "unet_context",
    "receptive_field",
    "PADDINGS",
    "UP_MODES",
]

#: The two padding schemes the U-Net models support: "valid" = unpadded 3x3 convolutions
#: (the paper), "same" = 3x3 convolutions with padding 1 (size-preserving).
PADDINGS = ("valid", "same")
#: The two ways the models upsample: a 2x2 stride-2 transposed convolution (the paper's
#: "up-convolution") or bilinear upsampling followed by a 1x1 convolution.
UP_MODES = ("transpose", "bilinear")

Size2d = Union[int, Sequence[int]]


# --------------------------------------------------------------------------- argument checks
def _as_int(name: str, value, minimum: Optional[int] = None) -> int:
    """Return ``value`` as an int, or raise a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}")
    try:
        value = operator.index(value)  # accepts int and numpy integers, refuses 3.0 and "3"
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_padding_mode(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def _check_up_mode(up_mode: str) -> str:
    if up_mode not in UP_MODES:
        raise ValueError(f"up_mode must be one of {UP_MODES}, got {up_mode!r}")
    return up_mode


# --------------------------------------------------------------------------- one layer
def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: Union[int, str] = 0,
                     dilation: int = 1) -> int:
    """Output length of ``nn.Conv2d`` along one spatial dimension.

    ``o = floor((i + 2p - d(k-1) - 1) / s) + 1`` where ``d(k-1) + 1`` is the *effective*
    kernel size (a dilated kernel spans that many input pixels).

    Args:
        size: input length ``i >= 1``.
        kernel_size: ``k >= 1``.  stride: ``s >= 1``.  dilation: ``d >= 1``.
        padding: ``p >= 0`` zeros added on *each* side, or ``"valid"`` (= 0) or ``"same"``
            (output length = input length; PyTorch allows it only with stride 1).

    Returns:
        The output length ``o >= 1``.

    Raises:
        ValueError: the effective kernel is larger than the padded input (PyTorch refuses:
            "Kernel size can't be greater than actual input size"), ``padding="same"`` with
            stride > 1, or any argument out of range.

    Example: ``conv_output_size(572, 3) == 570`` (an unpadded 3x3 convolution eats one pixel
    per side).
    """
    size = _as_int("size", size, minimum=1)
    kernel_size = _as_int("kernel_size", kernel_size, minimum=1)
    stride = _as_int("stride", stride, minimum=1)
    dilation = _as_int("dilation", dilation, minimum=1)
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same":
            if stride != 1:
                raise ValueError("padding='same' keeps the size only for stride 1 "
                                 f"(PyTorch refuses it for strided convolutions), got stride={stride}")
            return size
        else:
            raise ValueError(f"padding must be an int >= 0, 'valid' or 'same', got {padding!r}")
    padding = _as_int("padding", padding, minimum=0)
    effective_kernel = dilation * (kernel_size - 1) + 1
    padded = size + 2 * padding
    if effective_kernel > padded:
        raise ValueError(
            f"the kernel spans {effective_kernel} pixels (dilation*(kernel_size-1)+1 = "
            f"{dilation}*({kernel_size}-1)+1) but the padded input has only {padded} "
            f"(size + 2*padding = {size} + 2*{padding}); use a smaller kernel or dilation, "
            "or more padding")
    return (padded - effective_kernel) // stride + 1


def pool_output_size(size: int, kernel_size: int, stride: Optional[int] = None, padding: int = 0,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of ``nn.MaxPool2d`` along one spatial dimension.

    ``o = floor((i + 2p - d(k-1) - 1 [+ s - 1 if ceil_mode]) / s) + 1``; the stride defaults
    to the kernel size (non-overlapping windows). With ``ceil_mode`` the last window may hang
    over the end, but PyTorch drops it if it would *start* beyond the input plus the left
    padding, i.e. if ``(o - 1) * s >= i + p`` then ``o -= 1``.

    Args:
        size: input length ``i >= 1``.  kernel_size: ``k >= 1``.
        stride: ``s >= 1`` or None (= ``kernel_size``).  dilation: ``d >= 1``.
        padding: ``0 <= p <= k // 2`` (implicit -inf padding on each side).
        ceil_mode: round the division up instead of down (see above).

    Returns:
        The output length ``o >= 1``.

    Raises:
        ValueError: padding larger than half the kernel (PyTorch: "pad should be smaller
            than or equal to half of kernel size"), an empty output (the window does not fit),
            or any argument out of range.

    Example: ``pool_output_size(568, 2) == 284`` (the paper's 2x2 max-pool, stride 2). Note
    that an odd length is silently floored (``pool_output_size(141, 2) == 70``): that is why
    the U-Net helpers insist that every pool input is even.
    """
    size = _as_int("size", size, minimum=1)
    kernel_size = _as_int("kernel_size", kernel_size, minimum=1)
    stride = kernel_size if stride is None else _as_int("stride", stride, minimum=1)
    padding = _as_int("padding", padding, minimum=0)
    dilation = _as_int("dilation", dilation, minimum=1)
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    if padding > kernel_size // 2:
        raise ValueError(f"pool padding must be at most half the kernel size (kernel_size // 2 = "
                         f"{kernel_size // 2}), got padding={padding}")
    effective_kernel = dilation * (kernel_size - 1) + 1
    numerator = size + 2 * padding - effective_kernel + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1  # Python's // rounds towards -inf, like PyTorch's div_rtn
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window would start in the right padding: PyTorch drops it
    if out < 1:
        raise ValueError(
            f"max-pool output would be empty: a window of {effective_kernel} pixels "
            f"(dilation*(kernel_size-1)+1) does not fit into {size} + 2*{padding} padded pixels "
            f"(computed output size {out}); use a smaller kernel or a larger input")
    return out


def conv_transpose_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0, dilation: int = 1) -> int:
    """Output length of ``nn.ConvTranspose2d`` along one spatial dimension.

    ``o = (i - 1) s - 2p + d(k - 1) + output_padding + 1``: every input pixel scatters a
    (dilated) kernel into the output at stride ``s``; ``padding`` then *removes* ``p`` pixels
    from each side and ``output_padding`` adds pixels on one side only (to pick between the
    several input sizes a strided convolution maps onto the same output size).

    Args:
        size: input length ``i >= 1``.  kernel_size: ``k >= 1``.  stride: ``s >= 1``.
        padding: ``p >= 0``.  dilation: ``d >= 1``.
        output_padding: ``0 <= a`` and ``a < s`` or ``a < d`` (PyTorch's rule).

    Returns:
        The output length ``o >= 1``.

    Raises:
        ValueError: ``output_padding`` not smaller than stride or dilation, an empty output
            (too much padding), or any argument out of range.

    Example: ``conv_transpose_output_size(28, 2, stride=2) == 56`` (the paper's 2x2
    up-convolution doubles the size).
    """
    size = _as_int("size", size, minimum=1)
    kernel_size = _as_int("kernel_size", kernel_size, minimum=1)
    stride = _as_int("stride", stride, minimum=1)
    padding = _as_int("padding", padding, minimum=0)
    output_padding = _as_int("output_padding", output_padding, minimum=0)
    dilation = _as_int("dilation", dilation, minimum=1)
    if not (output_padding < stride or output_padding < dilation):
        raise ValueError(f"output_padding must be smaller than either stride or dilation, got "
                         f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    out = (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if out < 1:
        raise ValueError(f"transposed-convolution output would be empty (computed size {out}): "
                         f"padding={padding} removes more than (size-1)*stride + dilation*(kernel_size-1)"
                         f" + output_padding + 1 = {out + 2 * padding} pixels")
    return out


# --------------------------------------------------------------------------- the U-Net walk
@dataclass(frozen=True)
class ShapeStage:
    """One row of a U-Net shape trace: the feature map *after* a stage.

    Attributes:
        name: e.g. ``"enc1.conv1"``, ``"pool1"``, ``"bottleneck.conv2"``, ``"up4"``,
            ``"crop4"``, ``"concat4"``, ``"dec4.conv1"``, ``"output"``.
        channels, height, width: the shape ``(C, H, W)`` of the feature map.
        kind: ``"input"``, ``"conv"``, ``"pool"``, ``"up"``, ``"crop"``, ``"concat"`` or
            ``"output"``.
        crop_from: for ``"crop"`` stages, the ``(H, W)`` of the encoder map before cropping.
        crop_per_side: for ``"crop"`` stages, pixels removed from the top (and bottom) and
            from the left (and right). If a difference were odd, the extra pixel would go at
            the bottom/right (``center_crop``); in these networks it is always even.
    """

    name: str
    channels: int
    height: int
    width: int
    kind: str
    crop_from: Optional[tuple[int, int]] = None
    crop_per_side: Optional[tuple[int, int]] = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)``: the feature map without the batch dimension."""
        return (self.channels, self.height, self.width)


class _InvalidSize(Exception):
    """Internal: the walk found a layer that cannot take this size (message = the reason)."""


def _unet_layers(depth: int) -> list[tuple[str, str, int]]:
    """The U-Net of this depth as ``(kind, name, level)`` steps, in forward order.

    Kinds: ``"conv"`` (3x3 convolution), ``"pool"`` (2x2 max-pool), ``"skip"`` (remember this
    map for the decoder), ``"up"`` (x2 up-convolution), ``"crop"`` (crop the remembered skip to
    the upsampled map and concatenate). This list is the single description of the network in
    this module: :func:`_walk_1d` walks it with numbers, :func:`_valid_size_rule` with symbols.
    """
    layers = []
    for level in range(1, depth + 2):  # level depth+1 is the bottleneck
        name = f"enc{level}" if level <= depth else "bottleneck"
        if level > 1:
            layers.append(("pool", f"pool{level - 1}", level - 1))
        layers += [("conv", f"{name}.conv1", level), ("conv", f"{name}.conv2", level)]
        if level <= depth:
            layers.append(("skip", name, level))
    for level in range(depth, 0, -1):
        layers += [("up", f"up{level}", level), ("crop", f"crop{level}", level),
                   ("conv", f"dec{level}.conv1", level), ("conv", f"dec{level}.conv2", level)]
    return layers


def _conv3x3(padding: str):
    """The one-layer rule of the U-Net's 3x3 convolution (``"same"`` pads 1 pixel per side)."""
    return functools.partial(conv_output_size, kernel_size=3, padding=0 if padding == "valid" else 1)


def _pool2x2(size: int) -> int:
    return pool_output_size(size, 2)


def _up2x2(size: int) -> int:
    return conv_transpose_output_size(size, 2, stride=2)  # bilinear x2 gives the same size


def _walk_1d(size: int, depth: int, padding: str) -> list[tuple[str, str, int, int, int]]:
    """Walk one spatial dimension through the U-Net, layer by layer.

    Returns rows ``(name, kind, level, size, crop_per_side)``; raises ``_InvalidSize`` with the
    reason at the first layer that cannot take its input. Together with
    :func:`_valid_size_rule` (the same walk done with symbols) this is the whole U-Net
    arithmetic of this module: the trace, valid sizes, context and receptive field derive
    from it.
    """
    conv = _conv3x3(padding)
    rows = [("input", "input", 0, size, 0)]
    skips = {}
    for kind, name, level in _unet_layers(depth):
        if kind == "conv":
            try:
                size = conv(size)
            except ValueError:
                raise _InvalidSize(f"{name} gets only {size} pixel(s), too few for a 3x3 convolution") from None
            rows.append((name, "conv", level, size, 0))
        elif kind == "pool":
            if size % 2:
                raise _InvalidSize(f"{name} gets an odd size {size} (a 2x2 max-pool needs "
                                   "an even size, or it silently drops a row/column)")
            size = _pool2x2(size)
            rows.append((name, "pool", level, size, 0))
        elif kind == "skip":
            skips[level] = size
        elif kind == "up":
            size = _up2x2(size)
            rows.append((name, "up", level, size, 0))
        elif kind == "crop":
            skip = skips[level]
            if skip < size:
                raise _InvalidSize(f"the skip of level {level} ({skip}) is smaller than the "
                                   f"upsampled map ({size}) and cannot be cropped to it")
            rows.append((name, "crop", level, size, (skip - size) // 2))
            rows.append((f"concat{level}", "concat", level, size, 0))
    rows.append(("output", "output", 0, size, 0))
    return rows


# --------------------------------------------------------------------------- valid sizes in closed form
def _affine(rule, first: int, step: int = 1) -> tuple[Fraction, Fraction]:
    """``(slope, intercept)`` such that ``rule(x) == slope * x + intercept`` for
    ``x = first, first + step, first + 2 step, ...``, read off two evaluations of ``rule``.

    Exact for the layers of a U-Net: a stride-1 convolution and a stride-2 up-convolution are
    affine in their input size, and a 2x2 max-pool is affine (it halves) on even sizes.
    """
    y0, y1 = rule(first), rule(first + step)
    slope = Fraction(y1 - y0, step)
    return slope, y0 - slope * first


def _smallest_accepted(rule) -> int:
    """The smallest input size a one-layer rule accepts (3 for an unpadded 3x3 conv)."""
    for size in range(1, 65):
        try:
            rule(size)
            return size
        except ValueError:
            continue
    raise ValueError(f"{rule} accepts no input size up to 64")  # not reached for U-Net layers


@functools.lru_cache(maxsize=None)
def _valid_size_rule(depth: int, padding: str) -> tuple[int, int]:
    """``(smallest, step)``: the valid input sizes are exactly ``smallest + step * k``, k >= 0.

    Derived by walking :func:`_unet_layers` with *symbols*: the input is ``step * k + offset``
    for an unknown integer ``k`` (at first ``1 * k + 0``: any size), and every feature map is
    then an affine function ``a * k + b`` of ``k``:

    * a 3x3 conv maps ``a k + b`` to ``a k + b - 2`` (valid) or ``a k + b`` (same), and needs
      its input to be at least 3 (valid) or 1 (same) pixels: a lower bound on ``k``;
    * a 2x2 max-pool needs an *even* size. While ``a`` is odd, that fixes the parity of ``k``:
      ``k = 2 k' + r``, which doubles ``step`` (so ``step`` ends as ``2**depth``) and fixes one
      more bit of ``offset``; then it halves the map;
    * an up-convolution doubles the map; a crop needs the skip to be at least as large as the
      upsampled map (here the difference does not depend on ``k``: it is the crop).

    The smallest valid input is the smallest size of the form ``step * k + offset`` above
    every lower bound. Cost: a few operations per layer, whatever the depth.
    """
    conv = _conv3x3(padding)
    layer_rules = {"conv": conv, "pool": _pool2x2, "up": _up2x2}
    smallest_in = {kind: _smallest_accepted(rule) for kind, rule in layer_rules.items()}
    affine = {"conv": _affine(conv, smallest_in["conv"]), "up": _affine(_up2x2, smallest_in["up"]),
              "pool": _affine(_pool2x2, 2, step=2)}  # a pool is applied to even sizes only

    step, offset = 1, 0  # input size = step * k + offset
    a, b = Fraction(1), Fraction(0)  # current size = a * k + b
    lowest = 1  # every valid input is >= lowest
    skips = {}

    def need(a: Fraction, b: Fraction, minimum: int) -> None:
        """Record the constraint ``a * k + b >= minimum`` as a lower bound on the input."""
        nonlocal lowest
        if a == 0:  # the same for every input: it holds always or never
            if b < minimum:
                raise ValueError(f"no input size fits a depth-{depth} U-Net with padding={padding!r}")
            return
        k_min = math.ceil((minimum - b) / a)  # a > 0: every layer grows with the input
        lowest = max(lowest, step * k_min + offset)

    for kind, _, level in _unet_layers(depth):
        if kind == "pool":
            need(a, b, smallest_in["pool"])
            if a % 2 == 1:  # a k + b is even only for k of one parity r: k = 2 k' + r
                r = int(b % 2)
                step, offset = 2 * step, offset + step * r
                a, b = 2 * a, a * r + b
                skips = {lvl: (2 * sa, sa * r + sb) for lvl, (sa, sb) in skips.items()}
            elif b % 2 == 1:  # even slope, odd intercept: never even
                raise ValueError(f"no input size fits a depth-{depth} U-Net with padding={padding!r}")
        if kind in affine:
            if kind == "conv":
                need(a, b, smallest_in["conv"])
            slope, intercept = affine[kind]
            a, b = slope * a, slope * b + intercept
        elif kind == "skip":
            skips[level] = (a, b)
        elif kind == "crop":
            skip_a, skip_b = skips[level]
            need(skip_a - a, skip_b - b, 0)  # skip - upsampled >= 0
    smallest = offset + step * math.ceil(Fraction(lowest - offset, step))
    return smallest, step


#: The U-Net helpers refuse a depth whose smallest valid input would be larger than this
#: (depth 17 with valid padding, depth 20 with same padding): such a network cannot be
#: trained or even stored, and is almost always a typo.
MAX_SMALLEST_VALID_INPUT = 1_000_000
_DEEPEST_SYMBOLIC_WALK = 64  # beyond this, 2**depth alone is far above the limit


@functools.lru_cache(maxsize=None)
def _deepest_allowed(padding: str) -> int:
    depth = 1
    while _valid_size_rule(depth + 1, padding)[0] <= MAX_SMALLEST_VALID_INPUT:
        depth += 1
    return depth


def check_depth(depth: int, padding: str = "valid") -> int:
    """Return ``depth`` as an int, or raise a clear error if no sane input fits it.

    A depth-``d`` U-Net halves the size ``d`` times, so its smallest valid input grows like
    ``2**d`` (188 for depth 4, 1,572,860 for depth 17). Depths whose smallest valid input is
    above :data:`MAX_SMALLEST_VALID_INPUT` are refused, with that size in the message.

    Raises:
        TypeError: ``depth`` is not an integer.
        ValueError: ``depth < 1``, an unknown ``padding``, or a depth that is too deep.
    """
    depth = _as_int("depth", depth, minimum=1)
    _check_padding_mode(padding)
    deepest = _deepest_allowed(padding)
    if depth <= deepest:
        return depth
    if depth > _DEEPEST_SYMBOLIC_WALK:  # don't build the layer list of an absurd network
        needs = f"at least 2**{depth} px"
    else:
        needs = f"{_valid_size_rule(depth, padding)[0]:,} px"
    raise ValueError(
        f"depth={depth} is too deep for a U-Net with padding={padding!r}: each of its {depth} "
        f"max-pools halves the size, so its smallest valid input would be {needs}, above the "
        f"limit of {MAX_SMALLEST_VALID_INPUT:,} px. Use depth <= {deepest} (the paper uses 4).")


def _pair(input_size: Size2d, name: str = "input_size") -> tuple[int, int]:
    if isinstance(input_size, (tuple, list)):
        if len(input_size) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {input_size!r}")
        return _as_int(f"{name}[0]", input_size[0], 1), _as_int(f"{name}[1]", input_size[1], 1)
    size = _as_int(name, input_size, minimum=1)
    return size, size


def _invalid_reason(size: int, depth: int, padding: str) -> Optional[str]:
    """None if ``size`` walks through the network, else the reason it does not."""
    try:
        _walk_1d(size, depth, padding)
    except _InvalidSize as exc:
        return str(exc)
    return None


def is_valid_input_size(size: int, depth: int = 4, padding: str = "valid") -> bool:
    """True if a U-Net of this depth/padding can take a ``size x size`` input.

    Valid means: every 3x3 convolution gets at least 3 (padded) pixels, every 2x2 max-pool
    gets an *even* size (so the skip and the upsampled map line up), and the output is
    non-empty. For the paper's network (depth 4, valid) this is 188 + 16k; see
    :func:`_valid_size_rule` for how that rule is derived from the layers.
    """
    size = _as_int("size", size)
    depth = check_depth(depth, padding)
    smallest, step = _valid_size_rule(depth, padding)
    return size >= smallest and (size - smallest) % step == 0


def _first_valid_at_or_above(size: int, depth: int, padding: str) -> int:
    smallest, step = _valid_size_rule(depth, padding)
    if size <= smallest:
        return smallest
    return smallest + step * -((smallest - size) // step)  # -(x // y) rounds x / y up


def valid_input_sizes(depth: int = 4, padding: str = "valid", min_size: int = 1,
                      max_size: int = 1024) -> list[int]:
    """All valid input sizes in ``[min_size, max_size]``.

    For depth 4 with valid padding: ``[188, 204, 220, ...]`` (188 + 16k); with same padding:
    the multiples of ``2**depth``.
    """
    depth = check_depth(depth, padding)
    min_size = _as_int("min_size", min_size, minimum=1)
    max_size = _as_int("max_size", max_size, minimum=1)
    if max_size < min_size:
        raise ValueError(f"max_size ({max_size}) must be >= min_size ({min_size})")
    step = _valid_size_rule(depth, padding)[1]
    return list(range(_first_valid_at_or_above(min_size, depth, padding), max_size + 1, step))


def nearest_valid_input_size(size: int, depth: int = 4, padding: str = "valid"
                             ) -> tuple[Optional[int], Optional[int]]:
    """The valid sizes ``(lower, upper)`` closest to ``size``: ``lower <= size <= upper``.

    Both equal ``size`` when it is valid; ``lower`` is None when no smaller size is valid.
    Example: ``nearest_valid_input_size(570) == (556, 572)``.
    """
    size = _as_int("size", size)
    depth = check_depth(depth, padding)
    smallest, step = _valid_size_rule(depth, padding)
    lower = smallest + step * ((size - smallest) // step) if size >= smallest else None
    return lower, _first_valid_at_or_above(max(size, 1), depth, padding)


@functools.lru_cache(maxsize=None)
def describe_valid_input_sizes(depth: int = 4, padding: str = "valid") -> str:
    """A one-line rule for the valid sizes, derived from the walk, e.g. ``"188 + 16k"``."""
    depth = check_depth(depth, padding)
    first, period = _valid_size_rule(depth, padding)
    if padding == "same":
        return f"multiples of {period} ({first}, {first + period}, ...)"
    context = first - unet_output_size(first, depth, padding)
    return f"{first} + {period}k, k = 0, 1, 2, ... (output = input - {context})"


def _size_error(size: int, depth: int, padding: str, what: str = "input size") -> ValueError:
    lower, upper = nearest_valid_input_size(size, depth, padding)
    nearest = " and ".join(str(s) for s in (lower, upper) if s is not None)
    nearest = f"sizes: {nearest}" if lower and upper else f"size: {nearest}"
    reason = _invalid_reason(size, depth, padding)
    return ValueError(
        f"{what} {size} is not valid for a depth-{depth} U-Net with padding={padding!r}: {reason}. "
        f"Nearest valid {nearest}. Valid sizes are {describe_valid_input_sizes(depth, padding)}; "
        "crop or mirror-pad the image to one of them (unetlib.shapes.valid_input_sizes lists them).")


def unet_output_size(input_size: Size2d, depth: int = 4, padding: str = "valid"):
    """Spatial output size of the U-Net for an input size (int, or a ``(H, W)`` pair).

    Valid padding: ``output = input - context`` (572 -> 388 for depth 4, context 184);
    same padding: ``output = input``.

    Raises:
        ValueError: the input size is not valid; the message names the nearest valid sizes.
    """
    depth = check_depth(depth, padding)
    pair = isinstance(input_size, (tuple, list))
    height, width = _pair(input_size)
    outputs = []
    for what, size in (("height", height), ("width", width))[: 2 if pair else 1]:
        if _invalid_reason(size, depth, padding) is not None:
            raise _size_error(size, depth, padding, what=f"input {what}" if pair else "input size")
        outputs.append(_walk_1d(size, depth, padding)[-1][3])
    return tuple(outputs) if pair else outputs[0]


def unet_shape_trace(input_size: Size2d, depth: int = 4, padding: str = "valid", base_channels: int = 64,
                     *, in_channels: int = 1, num_classes: int = 2) -> list[ShapeStage]:
    """The U-Net stage by stage: the ``(C, H, W)`` after every layer, and each skip's crop.

    Channels: ``in_channels`` at the input, ``base_channels * 2**(level-1)`` at encoder level
    ``level`` (64, 128, 256, 512, 1024 for the paper), halved by each up-convolution, doubled
    again by the concatenation, ``num_classes`` at the output.

    For the paper's network and a 572 input the sizes are those of Fig. 1:
    572 -> 570 -> 568 -> 284 -> 282 -> 280 -> ... -> 32 -> 30 -> 28 -> 56 (crop 64 -> 56,
    4 px per side) -> 54 -> 52 -> 104 (crop 136 -> 104) -> ... -> 392 (crop 568 -> 392, 88 px
    per side) -> 390 -> 388.

    Raises:
        ValueError: the size is not valid (message names the nearest valid sizes).
    """
    depth = check_depth(depth, padding)
    base_channels = _as_int("base_channels", base_channels, minimum=1)
    in_channels = _as_int("in_channels", in_channels, minimum=1)
    num_classes = _as_int("num_classes", num_classes, minimum=1)
    height, width = _pair(input_size)
    unet_output_size((height, width), depth, padding)  # raises the documented error
    rows_h = _walk_1d(height, depth, padding)
    rows_w = _walk_1d(width, depth, padding)
    encoder_sizes = {}
    trace = []
    for (name, kind, level, h, crop_h), (_, _, _, w, crop_w) in zip(rows_h, rows_w):
        if kind == "input":
            channels = in_channels
        elif kind == "output":
            channels = num_classes
        elif kind == "concat":  # skip (C) + upsampled map (C)
            channels = 2 * base_channels * 2 ** (level - 1)
        else:  # conv, pool, up (the up-conv halves 2C to C), crop (the skip keeps its C)
            channels = base_channels * 2 ** (level - 1)
        if kind == "conv" and name.endswith("conv2") and name.startswith(("enc", "bottleneck")):
            encoder_sizes[level] = (h, w)
        if kind == "crop":
            trace.append(ShapeStage(name, channels, h, w, kind, crop_from=encoder_sizes[level],
                                    crop_per_side=(crop_h, crop_w)))
        else:
            trace.append(ShapeStage(name, channels, h, w, kind))
    return trace


def format_shape_trace(trace: Sequence[ShapeStage]) -> str:
    """Render a shape trace as a fixed-width text table (one row per stage) for notebooks.

    Columns: stage name, channels, height, width, and for crop stages a note such as
    ``skip 568x568 -> 392x392 (88/88 px per side)``. ``print()`` the returned string.
    """
    trace = list(trace)
    if not all(isinstance(st, ShapeStage) for st in trace):
        raise TypeError("format_shape_trace expects the list returned by unet_shape_trace")
    lines = [f"{'stage':<18}{'channels':>9}{'height':>8}{'width':>8}   note",
             "-" * 60]
    for st in trace:
        note = ""
        if st.kind == "crop":
            note = (f"skip {st.crop_from[0]}x{st.crop_from[1]} -> {st.height}x{st.width} "
                    f"({st.crop_per_side[0]}/{st.crop_per_side[1]} px per side)")
        lines.append(f"{st.name:<18}{st.channels:>9}{st.height:>8}{st.width:>8}   {note}".rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- context & receptive field
def unet_context(depth: int = 4, padding: str = "valid") -> int:
    """Pixels lost between input and output, ``input - output`` (184 for the paper's depth 4).

    With valid padding every layer changes the size by a constant (-2 per 3x3 conv) or a
    factor (/2 pool, x2 up-conv), and the pools see even sizes only, so ``input - output``
    is the same for every valid input: this function measures it at the smallest valid
    input. It is ``92`` px of context on each side for depth 4. Same padding loses nothing (0).
    """
    depth = check_depth(depth, padding)
    smallest = _valid_size_rule(depth, padding)[0]
    return smallest - unet_output_size(smallest, depth, padding)


def _input_interval(depth: int, padding: str, up_mode: str, crops: dict, out_pos: int) -> tuple[int, int]:
    """Input pixels ``[lo, hi]`` that can influence output pixel ``out_pos`` (exact, 1-D).

    Walks the network backwards and maps an index interval through each layer:
    3x3 conv with padding p: ``[lo - p, hi - p + 2]``; 2x2/2 max-pool: ``[2 lo, 2 hi + 1]``;
    2x2/2 transposed conv (output ``o`` comes from input ``o // 2`` only):
    ``[lo // 2, hi // 2]``; bilinear x2 (align_corners=False, output ``o`` reads inputs
    ``(o-1)//2`` and ``(o+1)//2``) + 1x1 conv: ``[(lo-1) // 2, (hi+1) // 2]``;
    crop of c px per side: ``[lo + c, hi + c]``; concatenation: the union (hull) of both
    branches. Image borders are ignored (theoretical receptive field).
    """
    p = 0 if padding == "valid" else 1

    def convs(lo, hi, n=2):
        for _ in range(n):
            lo, hi = lo - p, hi - p + 2
        return lo, hi

    def encoder(level, lo, hi):  # output of encoder level `level` (depth+1 = bottleneck) -> input
        for lvl in range(level, 0, -1):
            lo, hi = convs(lo, hi)
            if lvl > 1:
                lo, hi = 2 * lo, 2 * hi + 1
        return lo, hi

    def decoder(level, lo, hi):  # output of decoder level `level` -> input
        if level == depth + 1:
            return encoder(depth + 1, lo, hi)
        lo, hi = convs(lo, hi)
        skip_lo, skip_hi = encoder(level, lo + crops[level], hi + crops[level])
        if up_mode == "transpose":
            up_lo, up_hi = lo // 2, hi // 2
        else:
            up_lo, up_hi = (lo - 1) // 2, (hi + 1) // 2
        deep_lo, deep_hi = decoder(level + 1, up_lo, up_hi)
        return min(skip_lo, deep_lo), max(skip_hi, deep_hi)

    return decoder(1, out_pos, out_pos)  # the final 1x1 conv maps [o, o] to [o, o]


def receptive_field(depth: int = 4, padding: str = "valid", up_mode: str = "transpose") -> int:
    """Theoretical receptive field of one output pixel, in input pixels (one dimension).

    Computed exactly: the interval of input pixels that can influence an output pixel is
    walked back through every layer, including the up-convolutions and both branches of each
    concatenation (see ``_input_interval``), and the widest interval over all output
    positions is returned (because of the 2x2 pools, output pixels in one block of
    ``2**depth`` see differently aligned windows). Padding shifts the window but does not
    change its width, so "same" gives the same number as "valid".

    For the paper's network this is 204 px (depth 4, transposed convolutions; 236 with
    bilinear upsampling, whose 2-tap interpolation widens every decoder step).
    ``tests/test_shapes.py`` confirms these numbers independently: it linearises a real
    model (ReLU -> identity, max-pool -> average-pool, all weights positive) and measures
    which input pixels get a non-zero gradient from one output pixel.

    Compare the classic recurrence ``r <- r + (k-1) j, j <- j s`` with ``j <- j / 2`` at each
    2x2 up-convolution (which adds nothing to ``r``): 1 -> 5 -> 6 -> 14 -> 16 -> 32 -> 36 ->
    68 -> 76 -> 140 (bottleneck) -> 172 -> 188 -> 196 -> 200. From depth 3 on it falls 4 px
    short, because a fractional jump pretends every decoder pixel sees the same alignment,
    while pixels in different positions of a ``2**depth`` block reach further left or right.

    Both are *larger* than ``unet_context() + 1 = 185``: the context is what a whole tile
    loses at its border, while the receptive field of one pixel is the union of the windows
    of its pooled and upsampled ancestors, which are aligned differently for neighbours.
    For valid padding with bilinear upsampling, output pixels close to a tile border reach
    less far (the upsampling repeats edge values); the number here ignores borders.
    """
    depth = check_depth(depth, padding)
    _check_up_mode(up_mode)
    # A valid size whose output holds at least two full periods of output positions.
    size = nearest_valid_input_size(1, depth, padding)[1]
    while unet_output_size(size, depth, padding) < 2 ** (depth + 1):
        size = nearest_valid_input_size(size + 1, depth, padding)[1]
    crops = {level: crop for (_, kind, level, _, crop) in _walk_1d(size, depth, padding) if kind == "crop"}
    widths = []
    for out_pos in range(2 ** (depth + 1)):
        lo, hi = _input_interval(depth, padding, up_mode, crops, out_pos)
        widths.append(hi - lo + 1)
    return max(widths)
