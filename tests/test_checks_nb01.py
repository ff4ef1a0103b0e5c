"""The checks of exercise notebook 01: right answers pass, typical mistakes are named.

The wrong answers below are written the way a learner would write them (loops with one
bug each), not derived from the checker's own variants, so a test fails if a diagnosis
stops recognising a realistic mistake.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.functional import conv2d as imported_conv2d  # bound before any check runs

from unetlib.checks import (
    CheckError,
    NotImplementedYet,
    check_conv2d,
    check_conv_output_size,
    check_conv_transpose2d,
    check_conv_transpose_output_size,
    check_predict_shapes,
)
from unetlib.checks.nb01_convolution import __all__ as NB01_ALL


# ------------------------------------------------------------------ learner-style conv2d
def loop_conv2d(x, w, stride=1, padding=0, *, flip=False, use_stride=True, pad="both", reduce="sum", batch=False):
    """Hand-written conv2d (x (C_in, H, W), w (C_out, C_in, kh, kw)); each flag adds one mistake."""
    c_out, c_in, kh, kw = w.shape
    if flip:
        w = w.flip(-2, -1)
    s = stride if use_stride else 1
    sides = {"both": (padding,) * 4, "none": (0, 0, 0, 0), "top_left": (padding, 0, padding, 0)}[pad]
    xp = F.pad(x, sides)
    h_out, w_out = (xp.shape[1] - kh) // s + 1, (xp.shape[2] - kw) // s + 1
    out = torch.zeros(c_out, c_in, h_out, w_out) if reduce == "per_channel" else torch.zeros(c_out, h_out, w_out)
    for o in range(c_out):
        for i in range(h_out):
            for j in range(w_out):
                products = xp[:, i * s : i * s + kh, j * s : j * s + kw] * w[o]
                if reduce == "sum":
                    out[o, i, j] = products.sum()
                elif reduce == "mean":
                    out[o, i, j] = products.mean()
                elif reduce == "channel_mean":
                    out[o, i, j] = products.sum(dim=(1, 2)).mean()
                elif reduce == "first_channel":
                    out[o, i, j] = products[0].sum()
                elif reduce == "per_channel":
                    out[o, :, i, j] = products.sum(dim=(1, 2))
    return out[None] if batch else out


def unfold_conv2d(x, w, stride=1, padding=0):
    """A correct conv2d by another route (im2col with unfold + matrix product)."""
    c_out, c_in, kh, kw = w.shape
    columns = F.unfold(x[None], (kh, kw), padding=padding, stride=stride)[0]  # (C_in*kh*kw, L)
    h_out = (x.shape[1] + 2 * padding - kh) // stride + 1
    return (w.reshape(c_out, -1) @ columns).reshape(c_out, h_out, -1)


def test_nb01_module_exports_its_checks():
    assert {"check_conv2d", "check_conv_transpose2d", "check_conv_output_size", "check_conv_transpose_output_size"} <= set(NB01_ALL)


@pytest.mark.parametrize("implementation", [loop_conv2d, unfold_conv2d], ids=["loops", "unfold"])
def test_conv2d_correct_implementations_pass(implementation, capsys):
    check_conv2d(implementation)
    assert capsys.readouterr().out.strip() == "\u2705 Task 1 conv2d: all 5 cases passed."


@pytest.mark.parametrize(
    "mistake, message",
    [
        (dict(flip=True), r"you flipped the kernel: PyTorch's Conv2d computes cross-correlation"),
        (dict(use_stride=False), r"case 'stride 2' is wrong.*\n.*Likely mistake: stride ignored"),
        (dict(pad="none"), r"case 'padding 1' is wrong.*\n.*Likely mistake: padding ignored"),
        (dict(pad="top_left"), r"padding applied only on one side \(top/left\)"),
        (dict(reduce="per_channel"), r"channels not summed"),
        (dict(reduce="channel_mean"), r"channels averaged instead of summed"),
        (dict(reduce="mean"), r"you averaged the products"),
        (dict(reduce="first_channel"), r"only the first input channel was used"),
        (dict(batch=True), r"you returned a batch dimension"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_conv2d_mistakes_are_named(mistake, message):
    def learner(x, w, stride=1, padding=0):
        return loop_conv2d(x, w, stride, padding, **mistake)

    with pytest.raises(CheckError, match=message):
        check_conv2d(learner)


def test_conv2d_flip_is_reported_on_the_first_case_with_its_numbers():
    with pytest.raises(CheckError) as info:
        check_conv2d(lambda x, w, stride=1, padding=0: loop_conv2d(x, w, stride, padding, flip=True))
    message = str(info.value)
    assert message.startswith("Task 1 conv2d: case '1 input channel -> 2 output channels, 3x3 kernel, no padding' is wrong: values differ")
    assert "Likely mistake" in message


def test_conv2d_stub_is_not_implemented_yet():
    def conv2d(x, w, stride=1, padding=0):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="Task 1 conv2d: not implemented yet"):
        check_conv2d(conv2d)


def test_conv2d_wrong_type_and_shape_get_readable_messages():
    with pytest.raises(CheckError, match=r"expected a tensor of shape \(2, 3, 3\) but got list"):
        check_conv2d(lambda x, w, stride=1, padding=0: loop_conv2d(x, w, stride, padding).tolist())
    with pytest.raises(CheckError, match=r"expected shape \(2, 3, 3\) but got shape \(3, 3\)"):
        check_conv2d(lambda x, w, stride=1, padding=0: loop_conv2d(x, w, stride, padding)[0])


def test_conv2d_numpy_result_is_accepted_and_diagnosed():
    check_conv2d(lambda x, w, stride=1, padding=0: loop_conv2d(x, w, stride, padding).numpy())
    with pytest.raises(CheckError, match="you flipped the kernel"):
        check_conv2d(lambda x, w, stride=1, padding=0: loop_conv2d(x, w, stride, padding, flip=True).numpy())


def test_conv2d_crash_names_the_case_and_the_learner_line():
    def conv2d(x, w, stride=1, padding=0):
        c_in, h, width = x.shape
        return x.reshape(w.shape[0], h, width)  # wrong whenever C_in != C_out

    with pytest.raises(CheckError, match=r"case '1 input channel -> 2 output channels, 3x3 kernel, no padding' raised RuntimeError(.|\n)*return x.reshape"):
        check_conv2d(conv2d)


def _conv2d_with_a_layer(x, w, stride=1, padding=0):
    conv = torch.nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=stride, padding=padding, bias=False)
    with torch.no_grad():
        conv.weight.copy_(w)
        return conv(x[None])[0]


@pytest.mark.parametrize(
    "learner",
    [
        lambda x, w, stride=1, padding=0: F.conv2d(x[None], w, stride=stride, padding=padding)[0],
        lambda x, w, stride=1, padding=0: torch.nn.functional.conv2d(x, w, stride=stride, padding=padding),
        lambda x, w, stride=1, padding=0: torch.conv2d(x[None], w, None, stride, padding)[0],
        lambda x, w, stride=1, padding=0: imported_conv2d(x, w, stride=stride, padding=padding),
        _conv2d_with_a_layer,
    ],
    ids=["F.conv2d", "torch.nn.functional.conv2d", "torch.conv2d", "imported-before", "nn.Conv2d"],
)
def test_conv2d_refuses_torchs_own_convolution(learner):
    with pytest.raises(CheckError, match=r"is wrong: it was computed with torch's own F\.conv2d, not by hand\."
                                         r"\n.*Likely mistake: you called F\.conv2d .*build it by hand: loop over "
                                         r"the output pixels \(or use unfold\).*F\.conv2d comes afterwards"):
        check_conv2d(learner)


def test_conv2d_by_hand_check_watches_only_the_learner(capsys):
    # After a refused or crashing answer no watcher stays active, and a hand-written one passes.
    with pytest.raises(CheckError, match="not by hand"):
        check_conv2d(lambda x, w, stride=1, padding=0: F.conv2d(x, w, stride=stride, padding=padding))
    with pytest.raises(CheckError, match="raised ZeroDivisionError"):
        check_conv2d(lambda x, w, stride=1, padding=0: 1 / 0)
    assert torch._C._len_torch_function_stack() == 0
    check_conv2d(loop_conv2d)
    assert capsys.readouterr().out.strip() == "\u2705 Task 1 conv2d: all 5 cases passed."


# ------------------------------------------------------------------ learner-style transposed conv
def loop_conv_transpose2d(
    x, w, stride=1, padding=0, output_padding=0, *, flip=False, use_stride=True, use_output_padding=True,
    output_padding_as_zeros=False, pad="crop", reduce="sum", batch=False,
):
    """Hand-written scatter transposed conv (x (C_in, H, W), w (C_in, C_out, kh, kw)); flags add one mistake."""
    c_in, h, width = x.shape
    _, c_out, kh, kw = w.shape
    if flip:
        w = w.flip(-2, -1)
    s = stride if use_stride else 1
    extra = output_padding if (use_output_padding and not output_padding_as_zeros) else 0
    full = torch.zeros(c_out, (h - 1) * s + kh + extra, (width - 1) * s + kw + extra)
    for c in range(c_in):
        for i in range(h):
            for j in range(width):
                full[:, i * s : i * s + kh, j * s : j * s + kw] += x[c, i, j] * w[c]
    if reduce == "mean":
        full = full / c_in
    p = padding
    if pad == "crop":
        out = full[:, p : full.shape[1] - p, p : full.shape[2] - p]
    elif pad == "add":
        out = F.pad(full, (p, p, p, p))
    elif pad == "ignore":
        out = full
    elif pad == "crop_top_left":
        out = full[:, p:, p:]
    if output_padding_as_zeros:
        out = F.pad(out, (0, output_padding, 0, output_padding))
    return out[None] if batch else out


def test_conv_transpose2d_correct_implementation_passes(capsys):
    check_conv_transpose2d(loop_conv_transpose2d)
    assert capsys.readouterr().out.strip() == "\u2705 Task 2 conv_transpose2d: all 6 cases passed."


def conv2d_instead_of_transposed(x, w, stride=1, padding=0, output_padding=0):
    """A learner who slides the kernel as in a convolution (stride shrinks the output)."""
    return loop_conv2d(x, w.transpose(0, 1), stride, padding)


@pytest.mark.parametrize(
    "learner, message",
    [
        (dict(use_output_padding=False), r"case 'stride 2, padding 1, output_padding 1'(.|\n)*output_padding ignored"),
        (dict(output_padding_as_zeros=True), r"output_padding added as zeros"),
        (dict(flip=True), r"you flipped the kernel: in the scatter formulation"),
        (dict(use_stride=False), r"case 'stride 2' is wrong(.|\n)*stride ignored"),
        (dict(pad="add"), r"padding added instead of removed"),
        (dict(pad="ignore"), r"padding ignored: crop p rows/columns from every border"),
        (dict(pad="crop_top_left"), r"padding removed only at the top/left"),
        (dict(reduce="mean"), r"channels averaged instead of summed"),
        (dict(batch=True), r"you returned a batch dimension"),
        (conv2d_instead_of_transposed, r"stride treated as in a convolution \(downsampling\)"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)[:30]),
)
def test_conv_transpose2d_mistakes_are_named(learner, message):
    if isinstance(learner, dict):
        flags = learner

        def learner(x, w, stride=1, padding=0, output_padding=0):
            return loop_conv_transpose2d(x, w, stride, padding, output_padding, **flags)

    with pytest.raises(CheckError, match=message):
        check_conv_transpose2d(learner)


@pytest.mark.parametrize("channels_outer", [True, False], ids=["channel-loop-outside", "channels-summed-first"])
def test_conv_transpose2d_overwriting_stamps_is_named(channels_outer):
    def learner(x, w, stride=1, padding=0, output_padding=0):
        c_in, h, width = x.shape
        _, c_out, kh, kw = w.shape
        full = torch.zeros(c_out, (h - 1) * stride + kh + output_padding, (width - 1) * stride + kw + output_padding)
        for c in range(c_in) if channels_outer else [None]:
            for i in range(h):
                for j in range(width):
                    stamp = x[c, i, j] * w[c] if channels_outer else torch.einsum("c,cokl->okl", x[:, i, j], w)
                    full[:, i * stride : i * stride + kh, j * stride : j * stride + kw] = stamp  # bug: = not +=
        return full[:, padding : full.shape[1] - padding, padding : full.shape[2] - padding]

    with pytest.raises(CheckError, match=r"stamps overwritten \(`=`\) instead of added \(`\+=`\)"):
        check_conv_transpose2d(learner)


def test_conv_transpose2d_channels_kept_apart_is_named_once_there_are_channels():
    def learner(x, w, stride=1, padding=0, output_padding=0):
        per_channel = [loop_conv_transpose2d(x[c : c + 1], w[c : c + 1], stride, padding, output_padding) for c in range(x.shape[0])]
        return torch.stack(per_channel) if len(per_channel) > 1 else per_channel[0]  # one result per input channel

    with pytest.raises(CheckError, match=r"case '2 input channels -> 3 output channels, 3x2 kernel'(.|\n)*channels not summed"):
        check_conv_transpose2d(learner)


def _conv_transpose2d_with_a_layer(x, w, stride=1, padding=0, output_padding=0):
    layer = torch.nn.ConvTranspose2d(w.shape[0], w.shape[1], tuple(w.shape[2:]), stride=stride, padding=padding,
                                     output_padding=output_padding, bias=False)
    with torch.no_grad():
        layer.weight.copy_(w)
        return layer(x[None])[0]


def _conv_transpose2d_as_zero_stuffed_conv2d(x, w, stride=1, padding=0, output_padding=0):
    """The textbook equivalent: spread the input with zeros, pad k - 1 - p, convolve with the flipped kernel."""
    c_in, h, width = x.shape
    kh, kw = w.shape[2:]
    spread = torch.zeros(c_in, (h - 1) * stride + 1, (width - 1) * stride + 1)
    spread[:, ::stride, ::stride] = x
    spread = F.pad(spread, (kw - 1 - padding, kw - 1 - padding + output_padding,
                            kh - 1 - padding, kh - 1 - padding + output_padding))
    return F.conv2d(spread[None], w.transpose(0, 1).flip(-2, -1))[0]


@pytest.mark.parametrize(
    "learner, called",
    [
        (lambda x, w, stride=1, padding=0, output_padding=0: F.conv_transpose2d(
            x[None], w, stride=stride, padding=padding, output_padding=output_padding)[0], "F.conv_transpose2d"),
        (lambda x, w, stride=1, padding=0, output_padding=0: torch.conv_transpose2d(
            x, w, None, stride, padding, output_padding), "F.conv_transpose2d"),
        (_conv_transpose2d_with_a_layer, "F.conv_transpose2d"),
        (_conv_transpose2d_as_zero_stuffed_conv2d, "F.conv2d"),
    ],
    ids=["F.conv_transpose2d", "torch.conv_transpose2d", "nn.ConvTranspose2d", "zero-stuffed-F.conv2d"],
)
def test_conv_transpose2d_refuses_torchs_own_convolution(learner, called):
    with pytest.raises(CheckError, match=rf"computed with torch's own {called}, not by hand\.\n.*Likely mistake: "
                                         rf"you called {called} .*build it by hand: loop over the input pixels"
                                         r".*F\.conv_transpose2d comes afterwards"):
        check_conv_transpose2d(learner)


def test_conv_transpose2d_stub_and_wrong_type():
    def stub(x, w, stride=1, padding=0, output_padding=0):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="Task 2 conv_transpose2d: not implemented yet"):
        check_conv_transpose2d(stub)
    with pytest.raises(CheckError, match=r"expected a tensor of shape \(1, 5, 5\) but got float"):
        check_conv_transpose2d(lambda x, w, stride=1, padding=0, output_padding=0: float(loop_conv_transpose2d(x, w).sum()))


# ------------------------------------------------------------------ output sizes
def conv_size(size, kernel_size, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def test_conv_output_size_correct_passes(capsys):
    check_conv_output_size(conv_size)
    assert capsys.readouterr().out.strip() == "\u2705 Task 3 conv_output_size: all 6 cases passed."


def test_conv_output_size_agrees_with_the_course_library(capsys):
    from unetlib.shapes import conv_output_size

    check_conv_output_size(conv_output_size)
    assert "all 6 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "learner, message",
    [
        (lambda size, kernel_size, stride=1, padding=0, dilation=1: (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride,
         r"you forgot the \+1"),
        (lambda size, kernel_size, stride=1, padding=0, dilation=1: (size + 2 * stride - dilation * (kernel_size - 1) - 1) // padding + 1,
         r"stride and padding swapped"),
        (lambda size, kernel_size, stride=1, padding=0, dilation=1: (size + padding - dilation * (kernel_size - 1) - 1) // stride + 1,
         r"case '64 input, 3x3 kernel, padding 1 \('same'\)'(.|\n)*padding counted once"),
        (lambda size, kernel_size, stride=1, padding=0, dilation=1: math.ceil((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1,
         r"rounded up \(ceil or round\) instead of down"),
        (lambda size, kernel_size, stride=1, padding=0, dilation=1: round((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1,
         r"rounded up \(ceil or round\) instead of down"),
        (lambda size, kernel_size, stride=1, padding=0, dilation=1: (size + 2 * padding - kernel_size) // stride + 1,
         r"case '32 input, 3x3 kernel, dilation 2'(.|\n)*dilation ignored"),
        (lambda size, kernel_size, stride=1, padding=0, dilation=1: (size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride + 1,
         r"expected the integer 32 but got 32.5(.|\n)*true division"),
    ],
    ids=["plus-one", "swap", "p-once", "ceil", "round", "dilation", "true-division"],
)
def test_conv_output_size_mistakes_are_named(learner, message):
    with pytest.raises(CheckError, match=message):
        check_conv_output_size(learner)


def test_conv_output_size_stub_and_wrong_type():
    def stub(size, kernel_size, stride=1, padding=0, dilation=1):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="Task 3 conv_output_size: not implemented yet"):
        check_conv_output_size(stub)
    with pytest.raises(CheckError, match=r"expected the integer 32 but got '32'"):
        check_conv_output_size(lambda *args, **kwargs: str(conv_size(*args, **kwargs)))
    # an integer-valued float or a one-element tensor is fine: the number is right
    check_conv_output_size(lambda *args, **kwargs: float(conv_size(*args, **kwargs)))
    check_conv_output_size(lambda *args, **kwargs: torch.tensor(conv_size(*args, **kwargs)))


def transposed_size(size, kernel_size, stride=1, padding=0, output_padding=0, dilation=1):
    return (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1


def test_conv_transpose_output_size_correct_passes(capsys):
    check_conv_transpose_output_size(transposed_size)
    assert capsys.readouterr().out.strip() == "\u2705 Task 4 conv_transpose_output_size: all 6 cases passed."


def _transposed(formula):
    """Wrap a formula of (i, k, s, p, a, d) as a learner's function with the task's signature."""

    def learner(size, kernel_size, stride=1, padding=0, output_padding=0, dilation=1):
        return formula(size, kernel_size, stride, padding, output_padding, dilation)

    return learner


@pytest.mark.parametrize(
    "formula, message",
    [
        (lambda i, k, s, p, a, d: (i - 1) * s - 2 * p + d * (k - 1) + a, r"you forgot the \+1"),
        (lambda i, k, s, p, a, d: (i - 1) * s - 2 * p + d * (k - 1) + 1,
         r"case '32 input, 3x3 kernel, stride 2, padding 1, output_padding 1'(.|\n)*output_padding ignored"),
        (lambda i, k, s, p, a, d: (i + 2 * p - d * (k - 1) - 1) // s + 1, r"you used the convolution formula"),
        (lambda i, k, s, p, a, d: i * s - 2 * p + d * (k - 1) + a + 1, r"i\*s instead of \(i - 1\)\*s"),
        (lambda i, k, s, p, a, d: (i - 1) * s + 2 * p + d * (k - 1) + a + 1, r"padding added instead of removed"),
        (lambda i, k, s, p, a, d: (i - 1) * s - p + d * (k - 1) + a + 1, r"padding counted once"),
        (lambda i, k, s, p, a, d: (i - 1) * s - 2 * p + (k - 1) + a + 1, r"dilation ignored"),
    ],
    ids=["plus-one", "output-padding", "conv-formula", "i-times-s", "padding-added", "p-once", "dilation"],
)
def test_conv_transpose_output_size_mistakes_are_named(formula, message):
    with pytest.raises(CheckError, match=message):
        check_conv_transpose_output_size(_transposed(formula))


def test_conv_transpose_output_size_stub_and_wrong_type():
    def stub(size, kernel_size, stride=1, padding=0, output_padding=0, dilation=1):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        check_conv_transpose_output_size(stub)
    with pytest.raises(CheckError, match=r"expected the integer 5 but got \[5\]"):
        check_conv_transpose_output_size(lambda *args, **kwargs: [transposed_size(*args, **kwargs)])


# ------------------------------------------------------------------ predict the shapes
def predict_by_hand(size):
    a = conv_size(size, 3)
    b = conv_size(a, 3, stride=2, padding=1)
    c = conv_size(b, 2, stride=2)
    d = transposed_size(c, 2, stride=2)
    return (a, b, c, d, transposed_size(d, 3, stride=2, padding=1, output_padding=1))


def test_predict_shapes_correct_passes(capsys):
    check_predict_shapes(predict_by_hand)
    assert capsys.readouterr().out.strip() == "\u2705 Task 5 predict_shapes: all 4 cases passed."


def test_predict_shapes_names_the_first_wrong_layer():
    def forgot_output_padding(size):
        sizes = list(predict_by_hand(size))
        sizes[4] -= 1
        return tuple(sizes)

    with pytest.raises(CheckError, match=r"first wrong size is after layer 4 \(ConvTranspose2d"):
        check_predict_shapes(forgot_output_padding)

    def pool_rounded_up(size):
        a = conv_size(size, 3)
        b = conv_size(a, 3, stride=2, padding=1)
        c = math.ceil(b / 2)
        d = transposed_size(c, 2, stride=2)
        return (a, b, c, d, transposed_size(d, 3, stride=2, padding=1, output_padding=1))

    with pytest.raises(CheckError, match=r"first wrong size is after layer 2 \(MaxPool2d"):
        check_predict_shapes(pool_rounded_up)


def test_predict_shapes_wrong_length_and_stub():
    with pytest.raises(CheckError, match=r"expected 5 items but got 1(.|\n)*return a tuple of 5 ints"):
        check_predict_shapes(lambda size: (size,))

    def stub(size):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet):
        check_predict_shapes(stub)


def test_checks_leave_the_global_random_state_alone():
    # A check must not consume the learner's global generator (it would shift their seeded results).
    torch.manual_seed(123)
    check_conv2d(unfold_conv2d)
    check_conv_transpose2d(loop_conv_transpose2d)
    after_checks = torch.randn(3)
    torch.manual_seed(123)
    assert torch.equal(after_checks, torch.randn(3))
