"""unetlib.shapes against the real thing: PyTorch layers and real U-Net modules."""
from __future__ import annotations

import functools
import threading

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from unetlib import shapes
from unetlib.models import UNet
from unetlib.models.blocks import DoubleConv, OutConv, Up
from unetlib.shapes import (
    conv_output_size,
    conv_transpose_output_size,
    MAX_SMALLEST_VALID_INPUT,
    check_depth,
    describe_valid_input_sizes,
    format_shape_trace,
    is_valid_input_size,
    nearest_valid_input_size,
    pool_output_size,
    receptive_field,
    unet_context,
    unet_output_size,
    unet_shape_trace,
    valid_input_sizes,
)

SETTINGS = settings(max_examples=200, deadline=None)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and on a busy 2-core machine much faster."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def torch_output_size(module: nn.Module, size: int):
    """Run ``module`` on a (1, 1, size, size) tensor: the output size, or None if torch refuses."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 1, size, size))
    except (RuntimeError, ValueError):
        return None
    if out.numel() == 0:
        return None
    assert out.shape[-1] == out.shape[-2]
    return out.shape[-1]


def ours(fn, *args, **kwargs):
    """Our size, or None if we raise ValueError (the documented refusal)."""
    try:
        return fn(*args, **kwargs)
    except ValueError:
        return None


# --------------------------------------------------------------------------- one layer vs PyTorch
@SETTINGS
@given(size=st.integers(1, 14), k=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 4),
       d=st.integers(1, 3))
@example(size=5, k=7, s=1, p=0, d=1)   # kernel larger than the input
@example(size=5, k=3, s=1, p=0, d=3)   # dilated kernel (7) larger than the input
def test_conv_output_size_matches_conv2d(size, k, s, p, d):
    expected = torch_output_size(nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d), size)
    assert ours(conv_output_size, size, k, s, p, d) == expected


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@SETTINGS
@given(size=st.integers(1, 14), k=st.integers(1, 6), d=st.integers(1, 3), mode=st.sampled_from(["same", "valid"]))
def test_conv_string_padding_matches_conv2d(size, k, d, mode):
    expected = torch_output_size(nn.Conv2d(1, 1, k, padding=mode, dilation=d), size)
    assert ours(conv_output_size, size, k, 1, mode, d) == expected


@SETTINGS
@given(size=st.integers(1, 14), k=st.integers(1, 6), s=st.one_of(st.none(), st.integers(1, 4)),
       p=st.integers(0, 3), d=st.integers(1, 3), ceil=st.booleans())
@example(size=5, k=3, s=3, p=1, d=1, ceil=True)  # last window would start in the padding: dropped
@example(size=3, k=3, s=1, p=2, d=1, ceil=False)  # padding more than half the kernel
@example(size=1, k=2, s=2, p=0, d=1, ceil=True)   # ceil mode rescues a too-small input
@example(size=1, k=2, s=2, p=0, d=1, ceil=False)  # ... floor mode does not
def test_pool_output_size_matches_maxpool2d(size, k, s, p, d, ceil):
    module = nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    assert ours(pool_output_size, size, k, s, p, d, ceil) == torch_output_size(module, size)


@SETTINGS
@given(size=st.integers(1, 10), k=st.integers(1, 5), s=st.integers(1, 4), p=st.integers(0, 5),
       op=st.integers(0, 3), d=st.integers(1, 3))
@example(size=3, k=2, s=1, p=0, op=1, d=1)  # output_padding not smaller than stride or dilation
@example(size=3, k=2, s=1, p=0, op=1, d=2)  # ... but smaller than the dilation: allowed
@example(size=1, k=1, s=1, p=1, op=0, d=1)  # padding eats the whole output
def test_conv_transpose_output_size_matches_convtranspose2d(size, k, s, p, op, d):
    try:
        module = nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, output_padding=op, dilation=d)
    except (RuntimeError, ValueError):
        module = None
    expected = None if module is None else torch_output_size(module, size)
    assert ours(conv_transpose_output_size, size, k, s, p, op, d) == expected


def test_pool_ceil_mode_drop_rule_is_exercised():
    # (5 + 2 - 3 + 2) // 3 + 1 = 3, but window 3 would start at 6 >= 5 + 1: PyTorch keeps 2.
    assert pool_output_size(5, 3, 3, 1, ceil_mode=True) == 2
    assert torch_output_size(nn.MaxPool2d(3, 3, 1, ceil_mode=True), 5) == 2


@pytest.mark.parametrize("call, match", [
    (lambda: conv_output_size(0, 3), "size must be >= 1"),
    (lambda: conv_output_size(-4, 3), "size must be >= 1"),
    (lambda: conv_output_size(5, 0), "kernel_size must be >= 1"),
    (lambda: conv_output_size(5, 3, stride=0), "stride must be >= 1"),
    (lambda: conv_output_size(5, 3, padding=-1), "padding must be >= 0"),
    (lambda: conv_output_size(5, 3, dilation=0), "dilation must be >= 1"),
    (lambda: conv_output_size(2, 3), "kernel spans 3 pixels"),
    (lambda: conv_output_size(5, 3, stride=2, padding="same"), "stride 1"),
    (lambda: conv_output_size(5, 3, padding="full"), "'valid' or 'same'"),
    (lambda: pool_output_size(5, 3, padding=2), "at most half the kernel"),
    (lambda: pool_output_size(1, 2), "output would be empty"),
    (lambda: pool_output_size(0, 2), "size must be >= 1"),
    (lambda: conv_transpose_output_size(3, 2, stride=2, output_padding=2), "smaller than either stride or dilation"),
    (lambda: conv_transpose_output_size(1, 1, padding=1), "output would be empty"),
    (lambda: conv_transpose_output_size(0, 2, stride=2), "size must be >= 1"),
])
def test_one_layer_rules_refuse_with_a_specific_message(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call", [
    lambda: conv_output_size(5.0, 3),
    lambda: conv_output_size(True, 3),
    lambda: pool_output_size(5, "2"),
    lambda: pool_output_size(5, 2, ceil_mode=1),
    lambda: conv_transpose_output_size(5, 2, stride=2.0),
])
def test_one_layer_rules_refuse_non_integers(call):
    with pytest.raises(TypeError):
        call()


# --------------------------------------------------------------------------- the paper's numbers
def test_paper_output_size_and_context():
    assert unet_output_size(572) == 388
    assert unet_output_size((572, 636)) == (388, 452)
    assert unet_context(4) == 184
    assert unet_output_size(560, padding="same") == 560


def test_fig1_sizes_and_crops():
    trace = unet_shape_trace(572)
    sizes = [st.height for st in trace if st.kind in ("input", "conv", "pool", "up", "output")]
    fig1 = [572, 570, 568, 284, 282, 280, 140, 138, 136, 68, 66, 64, 32, 30, 28,
            56, 54, 52, 104, 102, 100, 200, 198, 196, 392, 390, 388, 388]
    assert sizes == fig1
    crops = [(st.crop_from[0], st.height, st.crop_per_side[0]) for st in trace if st.kind == "crop"]
    assert crops == [(64, 56, 4), (136, 104, 16), (280, 200, 40), (568, 392, 88)]
    channels = [st.channels for st in trace if st.kind == "conv"]
    assert channels == [64] * 2 + [128] * 2 + [256] * 2 + [512] * 2 + [1024] * 2 + [512] * 2 + [256] * 2 + [128] * 2 + [64] * 2
    assert [st.channels for st in trace if st.kind == "concat"] == [1024, 512, 256, 128]
    # 23 convolutional layers: 18 3x3, 4 up-convolutions, one 1x1
    assert sum(st.kind == "conv" for st in trace) == 18
    assert sum(st.kind == "up" for st in trace) == 4
    assert sum(st.kind == "output" for st in trace) == 1


def test_paper_valid_sizes_are_188_plus_16k():
    assert valid_input_sizes() == list(range(188, 1025, 16))
    assert valid_input_sizes(padding="same") == list(range(16, 1025, 16))
    for size in valid_input_sizes():
        assert unet_output_size(size) == size - 184
    assert valid_input_sizes(min_size=500, max_size=600) == [508, 524, 540, 556, 572, 588]


def test_nearest_valid_input_size():
    assert nearest_valid_input_size(570) == (556, 572)
    assert nearest_valid_input_size(572) == (572, 572)
    assert nearest_valid_input_size(100) == (None, 188)
    assert nearest_valid_input_size(570, padding="same") == (560, 576)
    assert nearest_valid_input_size(45, depth=2) == (44, 48)
    assert is_valid_input_size(572) and not is_valid_input_size(570)
    assert not is_valid_input_size(0)


def test_invalid_size_errors_name_the_nearest_valid_sizes():
    with pytest.raises(ValueError, match="556 and 572"):
        unet_output_size(570)
    with pytest.raises(ValueError, match="pool2 gets an odd size 279"):
        unet_output_size(570)
    with pytest.raises(ValueError, match="Nearest valid size: 188\\. "):
        unet_output_size(150)
    with pytest.raises(ValueError, match="input width 570 .*556 and 572"):
        unet_output_size((572, 570))
    with pytest.raises(ValueError, match="560 and 576"):
        unet_shape_trace(570, padding="same")


@pytest.mark.parametrize("call, error, match", [
    (lambda: unet_output_size(572, depth=0), ValueError, "depth must be >= 1"),
    (lambda: unet_output_size(572, padding="full"), ValueError, "padding must be one of"),
    (lambda: unet_output_size(0), ValueError, "input_size must be >= 1"),
    (lambda: unet_output_size((572, 572, 3)), ValueError, r"\(height, width\) pair"),
    (lambda: unet_output_size(572.0), TypeError, "must be an integer"),
    (lambda: valid_input_sizes(min_size=10, max_size=5), ValueError, "max_size"),
    (lambda: receptive_field(up_mode="nearest"), ValueError, "up_mode must be one of"),
    (lambda: unet_shape_trace(572, base_channels=0), ValueError, "base_channels must be >= 1"),
])
def test_unet_helpers_check_their_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_format_shape_trace_lists_every_stage():
    trace = unet_shape_trace(572)
    text = format_shape_trace(trace)
    lines = text.splitlines()
    assert len(lines) == len(trace) + 2  # header + rule
    for stage, line in zip(trace, lines[2:]):
        assert line.startswith(stage.name)
        assert f"{stage.height:>8}{stage.width:>8}" in line
    assert "skip 568x568 -> 392x392 (88/88 px per side)" in text


# --------------------------------------------------------------------------- the trace vs real modules
def record_model_shapes(model: UNet, x: torch.Tensor):
    """Run ``model`` with hooks: (kind, C, H, W) in execution order, plus each Up's skip and concat."""
    events, skips, concats = [], [], []

    def record(kind):
        return lambda module, args, out: events.append((kind, *out.shape[1:]))

    for module in model.modules():
        if isinstance(module, DoubleConv):
            for layer in module.block:
                if isinstance(layer, nn.Conv2d):
                    layer.register_forward_hook(record("conv"))
        elif isinstance(module, nn.MaxPool2d):
            module.register_forward_hook(record("pool"))
        elif isinstance(module, Up):
            module.up.register_forward_hook(record("up"))
            module.register_forward_pre_hook(lambda m, args: skips.append(tuple(args[1].shape[1:])))
            module.conv.register_forward_pre_hook(lambda m, args: concats.append(tuple(args[0].shape[1:])))
        elif isinstance(module, OutConv):
            module.register_forward_hook(record("output"))
    with torch.no_grad():
        model(x)
    return events, skips, concats


def assert_trace_matches_model(model: UNet, height: int, width: int, device="cpu"):
    x = torch.zeros(1, model.in_channels, height, width, device=device)
    events, skips, concats = record_model_shapes(model, x)
    trace = unet_shape_trace((height, width), model.depth, model.padding, model.base_channels,
                             in_channels=model.in_channels, num_classes=model.num_classes)
    layers = [(st.kind, st.channels, st.height, st.width) for st in trace
              if st.kind in ("conv", "pool", "up", "output")]
    assert layers == events
    crop_rows = [st for st in trace if st.kind == "crop"]
    assert [(st.channels, *st.crop_from) for st in crop_rows] == skips
    for st, (c, h, w) in zip(crop_rows, skips):
        assert st.crop_per_side == ((h - st.height) // 2, (w - st.width) // 2)
    assert [(st.channels, st.height, st.width) for st in trace if st.kind == "concat"] == concats


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("up_mode", ["transpose", "bilinear"])
def test_trace_matches_real_modules(depth, padding, up_mode):
    sizes = valid_input_sizes(depth, padding, max_size=400)
    model = UNet(2, 3, base_channels=4, depth=depth, padding=padding, up_mode=up_mode)
    assert_trace_matches_model(model, sizes[1], sizes[3])  # rectangular: checks H and W apart


def test_paper_trace_matches_real_modules_on_meta_device():
    with torch.device("meta"):
        model = UNet()
    assert_trace_matches_model(model, 572, 572, device="meta")


# --------------------------------------------------------------------------- valid sizes vs real modules
def sizes_the_modules_accept(model: UNet, candidates, width: int) -> list[int]:
    """Heights the real layers take, with UNet's own size check switched off.

    Whatever refuses then is the layers themselves: Down's even-size check, a conv that gets
    fewer pixels than its kernel (torch RuntimeError) or a skip smaller than the upsampled map.
    """
    model.check_input_size = lambda height, width: None
    accepted = []
    for height in candidates:
        try:
            with torch.no_grad():
                out = model(torch.zeros(1, 1, height, width))
        except (RuntimeError, ValueError):
            continue
        if out.numel():
            accepted.append(height)
    return accepted


@pytest.mark.parametrize("depth, padding, max_size", [
    (1, "valid", 40), (2, "valid", 70), (3, "valid", 130), (2, "same", 40), (3, "same", 40)])
def test_valid_sizes_agree_with_the_real_modules(depth, padding, max_size):
    model = UNet(1, 1, base_channels=1, depth=depth, padding=padding)
    width = valid_input_sizes(depth, padding, max_size=max_size)[0]
    accepted = sizes_the_modules_accept(model, range(1, max_size + 1), width)
    assert accepted == valid_input_sizes(depth, padding, max_size=max_size)
    assert len(accepted) >= 2


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_valid_sizes_run_and_neighbours_raise(depth, padding):
    model = UNet(1, 2, base_channels=2, depth=depth, padding=padding)
    first, second = valid_input_sizes(depth, padding, max_size=400)[:2]
    for size in (first, second):
        out = model(torch.zeros(1, 1, size, size))
        assert out.shape == (1, 2, unet_output_size(size, depth, padding), unet_output_size(size, depth, padding))
        if padding == "valid":
            assert size - out.shape[-1] == unet_context(depth)
        else:
            assert out.shape[-1] == size
    for bad in (second - 1, second + 1):
        assert not is_valid_input_size(bad, depth, padding)
        with pytest.raises(ValueError, match=f"nearest valid sizes are .*{second}"):
            model(torch.zeros(1, 1, bad, second))


# --------------------------------------------------------------------------- receptive field
def linearised(model: nn.Module) -> nn.Module:
    """ReLU -> identity, max-pool -> average-pool, all parameters positive: then an input pixel
    influences an output pixel exactly when the architecture connects them (no cancellations,
    no dead ReLUs, no max-pool routing), so non-zero gradients trace the receptive field."""
    for name, child in model.named_children():
        if isinstance(child, nn.ReLU):
            setattr(model, name, nn.Identity())
        elif isinstance(child, nn.MaxPool2d):
            setattr(model, name, nn.AvgPool2d(2))
        else:
            linearised(child)
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(0.1)
    return model


def measured_receptive_field(depth: int, padding: str, up_mode: str) -> int:
    model = linearised(UNet(1, 1, base_channels=1, depth=depth, padding=padding, up_mode=up_mode))
    expected = receptive_field(depth, padding, up_mode)
    period = 2 ** depth
    # an input large enough that 2 periods of output pixels have their whole field inside
    size = nearest_valid_input_size(2 * expected + 4 * period, depth, padding)[1]
    x = torch.ones(1, 1, size, period, requires_grad=True)
    if padding == "valid":  # the width must be valid too
        x = torch.ones(1, 1, size, nearest_valid_input_size(1, depth, padding)[1], requires_grad=True)
    out = model(x)
    start = out.shape[-2] // 2 - period  # central output rows, far from the zero padding
    widths = []
    for row in range(start, start + 2 * period):
        (grad,) = torch.autograd.grad(out[0, 0, row].sum(), x, retain_graph=True)
        touched = grad[0, 0].abs().sum(dim=1).nonzero().flatten()
        widths.append(int(touched.max() - touched.min() + 1))
    return max(widths)


@pytest.mark.parametrize("depth, padding, up_mode", [
    (1, "valid", "transpose"), (2, "valid", "transpose"), (3, "valid", "transpose"),
    (4, "valid", "transpose"), (2, "same", "transpose"), (2, "same", "bilinear"), (3, "same", "bilinear")])
def test_receptive_field_matches_gradients_of_a_real_model(depth, padding, up_mode):
    assert measured_receptive_field(depth, padding, up_mode) == receptive_field(depth, padding, up_mode)


def test_receptive_field_of_the_paper_network():
    # 204, measured on a real depth-4 model by the gradient test above
    assert receptive_field(4) == 204
    assert receptive_field(4, "same") == receptive_field(4, "valid")
    assert receptive_field(4) > unet_context(4) + 1


@pytest.mark.parametrize("depth", range(1, 7))
def test_valid_sizes_are_periodic(depth):
    # the shape of the closed form (see shapes._valid_size_rule): smallest + 2**depth * k
    first = nearest_valid_input_size(1, depth)[1]
    assert first < 16 * 2 ** depth
    sizes = valid_input_sizes(depth, max_size=first + 5 * 2 ** depth)
    assert sizes == list(range(first, first + 5 * 2 ** depth + 1, 2 ** depth))
    assert unet_context(depth) == 12 * 2 ** depth - 8
    assert valid_input_sizes(depth, "same", max_size=4 * 2 ** depth) == [2 ** depth * k for k in range(1, 5)]


def test_shape_stage_fields_and_format_errors():
    stage = unet_shape_trace(572)[-1]
    assert (stage.name, stage.channels, stage.height, stage.width, stage.kind) == ("output", 2, 388, 388, "output")
    assert stage.shape == (2, 388, 388)
    assert unet_shape_trace(572, in_channels=3, num_classes=5)[0].shape == (3, 572, 572)
    with pytest.raises(TypeError, match="unet_shape_trace"):
        format_shape_trace([("input", 1, 572, 572)])


# --------------------------------------------------------------------------- closed form vs stepping
@functools.lru_cache(maxsize=None)
def stepped_valid_sizes(depth: int, padding: str, max_size: int) -> list[int]:
    """The slow, obviously right way: walk every candidate size through the layers."""
    return [s for s in range(1, max_size + 1) if shapes._invalid_reason(s, depth, padding) is None]


@pytest.mark.parametrize("depth", range(1, 6))
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_closed_form_valid_sizes_agree_with_stepping(depth, padding):
    smallest, step = shapes._valid_size_rule(depth, padding)
    max_size = smallest + 8 * step + 3
    stepped = stepped_valid_sizes(depth, padding, max_size)
    assert stepped[0] == smallest and step == 2 ** depth
    assert valid_input_sizes(depth, padding, max_size=max_size) == stepped
    assert [s for s in range(-3, max_size + 1) if is_valid_input_size(s, depth, padding)] == stepped


@settings(max_examples=300, deadline=None)
@given(depth=st.integers(1, 5), padding=st.sampled_from(["valid", "same"]), size=st.integers(-5, 1500),
       width=st.integers(0, 300))
def test_closed_form_nearest_and_ranges_agree_with_stepping(depth, padding, size, width):
    stepped = stepped_valid_sizes(depth, padding, 2000)  # covers size + width and the next valid size
    lower = max((s for s in stepped if s <= size), default=None)
    upper = min(s for s in stepped if s >= size)
    assert nearest_valid_input_size(size, depth, padding) == (lower, upper)
    if size >= 1:
        in_range = [s for s in stepped if size <= s <= size + width]
        assert valid_input_sizes(depth, padding, min_size=size, max_size=size + width) == in_range


def finishes_within(call, seconds: float = 5.0):
    """Run ``call`` in a thread; fail if it has not returned (or raised) after ``seconds``.

    Returns what it returned, or the exception it raised.
    """
    outcome = []

    def target():
        try:
            outcome.append(call())
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it hangs"
    return outcome[0]


@pytest.mark.parametrize("call, match", [
    (lambda: unet_output_size(572, depth=1000), r"depth=1000 is too deep .* at least 2\*\*1000 px"),
    (lambda: nearest_valid_input_size(600, depth=64), "depth=64 is too deep .* 221,360,928,884,514,619,388 px"),
    (lambda: is_valid_input_size(600, depth=17), "smallest valid input would be 1,572,860 px"),
    (lambda: valid_input_sizes(depth=20, padding="same"), "1,048,576 px.* Use depth <= 19"),
    (lambda: describe_valid_input_sizes(depth=10 ** 9), "Use depth <= 16"),
    (lambda: unet_shape_trace(572, depth=17), "depth=17 is too deep"),
    (lambda: unet_context(depth=40), "depth=40 is too deep"),
    (lambda: receptive_field(depth=30), "depth=30 is too deep"),
])
def test_absurd_depths_are_refused_at_once(call, match):
    outcome = finishes_within(call)
    assert isinstance(outcome, ValueError)
    with pytest.raises(ValueError, match=match):
        raise outcome


def test_the_deepest_allowed_networks_still_work_and_are_fast():
    assert finishes_within(lambda: nearest_valid_input_size(600, depth=16)) == (None, 786428)
    assert shapes._valid_size_rule(16, "valid") == (786428, 2 ** 16) <= (MAX_SMALLEST_VALID_INPUT, 0)
    assert finishes_within(lambda: unet_output_size(786428 + 2 ** 16, depth=16)) == 2 ** 16 + 4
    assert finishes_within(lambda: unet_context(16)) == 12 * 2 ** 16 - 8
    assert finishes_within(lambda: nearest_valid_input_size(600, depth=19, padding="same")) == (None, 2 ** 19)
    assert check_depth(16) == 16 and check_depth(19, "same") == 19


@pytest.mark.parametrize("call, error, match", [
    (lambda: check_depth(4.0), TypeError, "depth must be an integer"),
    (lambda: check_depth(0), ValueError, "depth must be >= 1"),
    (lambda: check_depth(4, "full"), ValueError, "padding must be one of"),
])
def test_check_depth_refuses_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
