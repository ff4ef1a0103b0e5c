"""Checks of notebook 02: right answers pass, realistic wrong ones are named, stubs are told apart.

Every wrong implementation below is written the way a learner would write it, with exactly
one mistake, and the check must reject it with a CheckError naming that mistake.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unetlib.checks import CheckError, NotImplementedYet, check_center_crop, check_unet_trace, check_valid_sizes
from unetlib.checks import nb02_shapes
from unetlib.models import UNet
from unetlib.shapes import is_valid_input_size, unet_output_size


# --------------------------------------------------------------------------------------
# Task 1: the trace
# --------------------------------------------------------------------------------------
def trace_right(input_size, depth=4):
    sizes, size, skips = [input_size], input_size, []
    for _ in range(depth):
        for _ in range(2):
            if size < 3:
                raise ValueError("too small for a 3x3 convolution")
            size -= 2
            sizes.append(size)
        skips.append(size)
        if size % 2:
            raise ValueError(f"odd pool input {size}")
        size //= 2
        sizes.append(size)
    for _ in range(2):
        if size < 3:
            raise ValueError("too small")
        size -= 2
        sizes.append(size)
    for skip in reversed(skips):
        size *= 2
        sizes.append(size)
        for _ in range(2):
            if size < 3:
                raise ValueError("too small")
            size -= 2
            sizes.append(size)
    return sizes


def trace_removes_one_per_conv(input_size, depth=4):
    sizes, size = [input_size], input_size
    for _ in range(depth):
        size -= 1
        sizes.append(size)
        size -= 1
        sizes.append(size)
        size //= 2  # no odd check either: the conv mistake must still be named
        sizes.append(size)
    size -= 2
    sizes += [size + 1, size]
    for _ in range(depth):
        size *= 2
        sizes += [size, size - 1, size - 2]
        size -= 2
    return sizes


def trace_pools_first(input_size, depth=4):
    sizes, size = [input_size], input_size
    for _ in range(depth):
        if size % 2:
            raise ValueError("odd size before pooling")
        size //= 2
        sizes += [size, size - 2, size - 4]
        size -= 4
    sizes += [size - 2, size - 4]
    size -= 4
    for _ in range(depth):
        size *= 2
        sizes += [size, size - 2, size - 4]
        size -= 4
    return sizes


def trace_pads_decoder(input_size, depth=4):
    """The popular re-implementation: F.pad the upsampled map to the skip's size."""
    sizes, size, skips = [input_size], input_size, []
    for _ in range(depth):
        sizes += [size - 2, size - 4]
        size -= 4
        skips.append(size)
        if size % 2:
            raise ValueError("odd")
        size //= 2
        sizes.append(size)
    sizes += [size - 2, size - 4]
    size -= 4
    for skip in reversed(skips):
        size = max(2 * size, skip)  # padded up to the skip instead of cropping the skip
        sizes += [size, size - 2, size - 4]
        size -= 4
    return sizes


def trace_adds_on_up(input_size, depth=4):
    sizes, size = [input_size], input_size
    for _ in range(depth):
        sizes += [size - 2, size - 4]
        size -= 4
        if size % 2:
            raise ValueError("odd")
        size //= 2
        sizes.append(size)
    sizes += [size - 2, size - 4]
    size -= 4
    for _ in range(depth):
        size += 2  # "a 2x2 kernel adds 2"
        sizes += [size, size - 2, size - 4]
        size -= 4
    return sizes


def trace_never_raises(input_size, depth=4):
    """Right arithmetic, but odd pool inputs are floored silently."""
    sizes, size = [input_size], input_size
    for _ in range(depth):
        sizes += [size - 2, size - 4]
        size = (size - 4) // 2
        sizes.append(size)
    sizes += [size - 2, size - 4]
    size -= 4
    for _ in range(depth):
        sizes += [2 * size, 2 * size - 2, 2 * size - 4]
        size = 2 * size - 4
    return sizes


def trace_ignores_depth(input_size, depth=4):
    return trace_right(input_size)


def trace_forgets_input(input_size, depth=4):
    return trace_right(input_size, depth)[1:]


def test_trace_right_answer_passes(capsys):
    check_unet_trace(trace_right)
    assert "Task 1 unet_trace: all 6 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, case, hint",
    [
        (trace_removes_one_per_conv, "572, depth 4", "each 3x3 valid convolution removes 2 pixels, one per side (o = i - 3 + 1); you removed 1"),
        (trace_pools_first, "572, depth 4", "you halved before the convolutions"),
        (trace_pads_decoder, "572, depth 4", "you padded instead of cropping"),
        (trace_adds_on_up, "572, depth 4", "the up-convolution doubles the size"),
        (trace_never_raises, "570, depth 4", "Max-pool 2 gets the odd size 279"),
        (trace_ignores_depth, "60, depth 2", "you ignored the `depth` argument"),
        (trace_forgets_input, "572, depth 4", "start the list with the input size"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_trace_wrong_answers_are_named(wrong, case, hint):
    with pytest.raises(CheckError) as info:
        check_unet_trace(wrong)
    message = str(info.value)
    assert case in message and hint in message, message


def test_trace_pad_variant_ends_at_564_like_the_notebook_says():
    assert trace_pads_decoder(572)[-1] == 564


def test_trace_too_small_input_must_raise():
    def no_size_check(input_size, depth=4):
        if input_size == 570:  # passes the odd case, then forgets the decoder can run dry
            raise ValueError("odd")
        sizes, size = [input_size], input_size
        for _ in range(depth):
            sizes += [size - 2, size - 4, (size - 4) // 2]
            size = (size - 4) // 2
        sizes += [size - 2, size - 4]
        size -= 4
        for _ in range(depth):
            sizes += [2 * size, 2 * size - 2, 2 * size - 4]
            size = 2 * size - 4
        return sizes

    with pytest.raises(CheckError, match=r"(?s)case '172.*too few for a 3x3 convolution: raise ValueError"):
        check_unet_trace(no_size_check)


def test_trace_stub_and_wrong_type():
    def stub(input_size, depth=4):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="Task 1 unet_trace: not implemented yet"):
        check_unet_trace(stub)
    with pytest.raises(CheckError, match=r"expected a list of length 27 but got int \(388\)"):
        check_unet_trace(lambda input_size, depth=4: input_size - 184)
    with pytest.raises(CheckError, match="returned None: did you forget the `return`"):
        check_unet_trace(lambda input_size, depth=4: None)
    with pytest.raises(CheckError, match="Pass the function itself"):
        check_unet_trace(trace_right(572))


def test_trace_raising_on_a_valid_size_is_reported():
    def always_raises(input_size, depth=4):
        raise ValueError("I give up")

    with pytest.raises(CheckError, match="your function raised ValueError: I give up"):
        check_unet_trace(always_raises)


def test_trace_reference_matches_the_real_network():
    """The expected sizes equal those a real UNet produces, read with forward hooks."""
    for size, depth in [(188, 4), (60, 2)]:
        model = UNet(base_channels=2, depth=depth)
        seen = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[-1]))
                 for m in model.modules()
                 if isinstance(m, (nn.MaxPool2d, nn.ConvTranspose2d)) or (isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))]
        with torch.no_grad():
            model(torch.zeros(1, 1, size, size))
        for h in hooks:
            h.remove()
        assert nb02_shapes._reference_trace(size, depth) == [size] + seen


def test_walk_agrees_with_unetlib_shapes_on_which_sizes_are_valid():
    for depth in (1, 2, 3, 4):
        for size in range(1, 700):
            raised = isinstance(nb02_shapes._walk_answer(size, depth), nb02_shapes._Raised)
            assert raised != is_valid_input_size(size, depth), (size, depth)
            if not raised:
                assert nb02_shapes._walk(size, depth)[-1] == unet_output_size(size, depth)


# --------------------------------------------------------------------------------------
# Task 2: valid sizes
# --------------------------------------------------------------------------------------
def _simulate(size, depth):
    """Forward walk of one dimension; None if the size does not fit."""
    skips = []
    for _ in range(depth):
        size -= 4
        skips.append(size)
        if size < 1 or size % 2:
            return None
        size //= 2
    size -= 4
    for _ in range(depth):
        if size < 1:
            return None
        size = 2 * size - 4
    return size if size >= 1 else None


def valid_right(max_size, depth=4):
    return [s for s in range(1, max_size + 1) if _simulate(s, depth) is not None]


def valid_backwards(max_size, depth=4):
    """Work back from the bottleneck's output b: undo two convs (+4) and a pool (x2) per level."""
    sizes, b = [], 1
    while True:
        size = b
        for _ in range(depth):
            size = 2 * (size + 4)
        size += 4  # level 1's two convolutions
        if size > max_size:
            return sizes
        out = b
        for _ in range(depth):
            out = 2 * out - 4
        if out >= 1:
            sizes.append(size)
        b += 1


def valid_exclusive(max_size, depth=4):
    return [s for s in range(1, max_size) if _simulate(s, depth) is not None]


def valid_floors_odd_pools(max_size, depth=4):
    sizes = []
    for s in range(1, max_size + 1):
        size = s
        for _ in range(depth):
            size = (size - 4) // 2
        size -= 4
        for _ in range(depth):
            size = 2 * size - 4
        if size >= 1 and s > 4:
            sizes.append(s)
    return sizes


def valid_encoder_only(max_size, depth=4):
    """Checks the pools but never that the decoder keeps at least one pixel."""
    sizes = []
    for s in range(1, max_size + 1):
        size, ok = s, True
        for _ in range(depth):
            size -= 4
            if size < 2 or size % 2:
                ok = False
                break
            size //= 2
        if ok and size - 4 >= 1:
            sizes.append(s)
    return sizes


def valid_removes_one(max_size, depth=4):
    sizes = []
    for s in range(1, max_size + 1):
        size, ok = s - 2, True
        for _ in range(depth):
            if size < 1 or size % 2:
                ok = False
                break
            size = size // 2 - 2
        out = size
        for _ in range(depth):
            out = 2 * out - 2
        if ok and size >= 1 and out >= 1:
            sizes.append(s)
    return sizes


def test_valid_right_answers_pass(capsys):
    check_valid_sizes(valid_right)
    check_valid_sizes(valid_backwards)
    assert capsys.readouterr().out.count("Task 2 valid_sizes: all 5 cases passed") == 2


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (valid_exclusive, "max_size itself counts"),
        (valid_floors_odd_pools, "you included sizes where a pool input is odd (e.g. 189: max-pool 1 gets the odd size 185)"),
        (valid_encoder_only, "you included sizes that are too small (e.g. 172:"),
        (valid_removes_one, "each 3x3 valid convolution removes 2 pixels, one per side (o = i - 3 + 1); you removed 1"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_valid_wrong_answers_are_named(wrong, hint):
    with pytest.raises(CheckError) as info:
        check_valid_sizes(wrong)
    assert hint in str(info.value), str(info.value)


def test_valid_stub_and_wrong_type():
    def stub(max_size, depth=4):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="Task 2 valid_sizes: not implemented yet"):
        check_valid_sizes(stub)
    with pytest.raises(CheckError, match=r"expected a list of length 26 but got range"):
        check_valid_sizes(lambda max_size, depth=4: range(188, max_size + 1, 16))
    with pytest.raises(CheckError, match=r"item 0: expected the integer 188 but got '188'"):
        check_valid_sizes(lambda max_size, depth=4: [str(s) for s in valid_right(max_size, depth)])


# --------------------------------------------------------------------------------------
# Task 3: centre crop
# --------------------------------------------------------------------------------------
def crop_right(x, height, width):
    H, W = x.shape[-2:]
    if height > H or width > W:
        raise ValueError("target larger than x")
    top, left = (H - height) // 2, (W - width) // 2
    return x[:, :, top:top + height, left:left + width]


def crop_top_left(x, height, width):
    if height > x.shape[-2] or width > x.shape[-1]:
        raise ValueError("too large")
    return x[..., :height, :width]


def crop_rounds_up(x, height, width):
    H, W = x.shape[-2:]
    if height > H or width > W:
        raise ValueError("too large")
    top, left = (H - height + 1) // 2, (W - width + 1) // 2
    return x[..., top:top + height, left:left + width]


def crop_symmetric_slice(x, height, width):
    H, W = x.shape[-2:]
    if height > H or width > W:
        raise ValueError("too large")
    dh, dw = (H - height) // 2, (W - width) // 2
    return x[..., dh:H - dh, dw:W - dw]


def crop_swapped(x, height, width):
    H, W = x.shape[-2:]
    if height > H or width > W:
        raise ValueError("too large")
    top, left = (H - height) // 2, (W - width) // 2
    return x[..., left:left + width, top:top + height]


def crop_pads_when_too_small(x, height, width):
    H, W = x.shape[-2:]
    if height > H or width > W:  # "make it fit": pad the skip up instead of refusing
        return F.pad(x, (0, max(width - W, 0), 0, max(height - H, 0)))
    top, left = (H - height) // 2, (W - width) // 2
    return x[..., top:top + height, left:left + width]


def crop_channels_last(x, height, width):
    """Thinks the tensor is (N, H, W, C)."""
    _, H, W, _ = x.shape
    top, left = (H - height) // 2, (W - width) // 2
    return x[:, top:top + height, left:left + width, :]


def test_crop_right_answer_passes(capsys):
    check_center_crop(crop_right)
    assert "Task 3 center_crop: all 5 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, case, hint",
    [
        (crop_top_left, "the paper's first skip", "the crop is off-centre: you cropped from the top-left corner"),
        (crop_rounds_up, "odd differences", "off-by-one in the crop: your window is shifted by one pixel"),
        (crop_symmetric_slice, "odd differences", "keeps one pixel too many"),
        (crop_swapped, "odd differences", "you swapped height and width"),
        (crop_pads_when_too_small, "target larger than x", "you padded the skip instead of cropping it"),
        (crop_channels_last, "the paper's first skip", "crop exactly the last two dimensions"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_crop_wrong_answers_are_named(wrong, case, hint):
    with pytest.raises(CheckError) as info:
        check_center_crop(wrong)
    message = str(info.value)
    assert case in message and hint in message, message


def test_crop_that_does_not_refuse_a_larger_target_is_told_to_raise():
    def never_raises(x, height, width):
        top, left = max((x.shape[-2] - height) // 2, 0), max((x.shape[-1] - width) // 2, 0)
        return x[..., top:top + height, left:left + width]

    with pytest.raises(CheckError, match="(?s)expected a ValueError.*the target is larger than x"):
        check_center_crop(never_raises)


def test_crop_stub_and_wrong_type():
    def stub(x, height, width):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="Task 3 center_crop: not implemented yet"):
        check_center_crop(stub)
    with pytest.raises(CheckError, match=r"expected a tensor of shape \(1, 1, 392, 392\) but got tuple"):
        check_center_crop(lambda x, height, width: (height, width))


def test_crop_reference_is_an_exact_central_window():
    """The expected tensors (from unetlib.models.center_crop) equal an explicit index computation."""
    for case in nb02_shapes._crop_cases():
        x, height, width = case.args
        if isinstance(case.expected, nb02_shapes._Raised):
            assert height > x.shape[-2] or width > x.shape[-1]
            continue
        rows = torch.arange(height) + (x.shape[-2] - height) // 2
        cols = torch.arange(width) + (x.shape[-1] - width) // 2
        assert torch.equal(case.expected, x.index_select(-2, rows).index_select(-1, cols))
