"""Notebook 03's checks accept a correct answer and name the usual mistakes.

Each correct implementation here is written independently of the checker's reference
(different ops: view/copy_ instead of unfold, slicing instead of a crop helper), and each
wrong one is a mistake a learner plausibly makes. A wrong answer must be rejected with a
CheckError whose message names the misconception.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unetlib.checks import CheckError, NotImplementedYet
from unetlib.checks import check_crop_and_concat, check_fc_to_conv, check_fuse_additive


# ------------------------------------------------------------------------------ fc_to_conv
def _fc_to_conv(linear, in_channels, kernel_size, *, weight_fn=None, bias=True, **conv_kwargs):
    """A correct fc_to_conv, or a wrong one when ``weight_fn``/``bias``/``conv_kwargs`` change it."""
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size, bias=bias, **conv_kwargs)
    out = linear.out_features
    weight = (weight_fn or (lambda w: w.view(out, in_channels, kernel_size, kernel_size)))(linear.weight.detach())
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias:
            conv.bias.copy_(linear.bias)
    return conv


def fc_to_conv_correct(linear, in_channels, kernel_size):
    return _fc_to_conv(linear, in_channels, kernel_size)


def test_fc_to_conv_accepts_a_correct_answer(capsys):
    check_fc_to_conv(fc_to_conv_correct)
    assert "Task 1 fc_to_conv: all 3 cases passed" in capsys.readouterr().out


def test_fc_to_conv_accepts_the_classic_weight_view_answer():
    def answer(linear, in_channels, kernel_size):
        conv = nn.Conv2d(in_channels, linear.out_features, kernel_size)
        conv.weight.data = linear.weight.data.view(conv.weight.shape).clone()
        conv.bias.data = linear.bias.data.clone()
        return conv

    check_fc_to_conv(answer)


@pytest.mark.parametrize(
    "wrong, misconception",
    [
        (
            lambda lin, c, k: _fc_to_conv(
                lin, c, k, weight_fn=lambda w: w.reshape(lin.out_features, k, k, c).permute(0, 3, 1, 2)
            ),
            "channel-last order",
        ),
        (
            lambda lin, c, k: _fc_to_conv(
                lin, c, k, weight_fn=lambda w: w.reshape(lin.out_features, c, k, k).transpose(2, 3)
            ),
            "height and width are swapped",
        ),
        (
            lambda lin, c, k: _fc_to_conv(lin, c, k, weight_fn=lambda w: w.t().reshape(lin.out_features, c, k, k)),
            "transposed weight matrix",
        ),
        (lambda lin, c, k: _fc_to_conv(lin, c, k, bias=False), "bias was not copied"),
        (lambda lin, c, k: _fc_to_conv(lin, c, k, stride=k), "stride"),
        (lambda lin, c, k: _fc_to_conv(lin, c, k, padding=k // 2), "must not pad"),
    ],
    ids=["channel_last", "hw_swapped", "weight_T", "no_bias", "stride_k", "padded"],
)
def test_fc_to_conv_names_the_mistake(wrong, misconception):
    with pytest.raises(CheckError, match=misconception):
        check_fc_to_conv(wrong)


def test_fc_to_conv_spots_a_fresh_bias_left_in_place():
    def forgot_bias(linear, in_channels, kernel_size):
        conv = nn.Conv2d(in_channels, linear.out_features, kernel_size)  # random bias stays
        with torch.no_grad():
            conv.weight.copy_(linear.weight.view_as(conv.weight))
        return conv

    torch.manual_seed(0)
    with pytest.raises(CheckError, match="bias was not copied"):
        check_fc_to_conv(forgot_bias)


def test_fc_to_conv_explains_the_1x1_misconception():
    def one_by_one(linear, in_channels, kernel_size):
        conv = nn.Conv2d(linear.in_features, linear.out_features, 1)
        with torch.no_grad():
            conv.weight.copy_(linear.weight.view_as(conv.weight))
            conv.bias.copy_(linear.bias)
        return conv

    with pytest.raises(CheckError, match=r"1x1 convolution replaces an FC layer only when its input is 1x1"):
        check_fc_to_conv(one_by_one)


def test_fc_to_conv_names_a_wrong_kernel_size():
    def kernel_too_small(linear, in_channels, kernel_size):
        return nn.Conv2d(in_channels, linear.out_features, kernel_size - 1)

    with pytest.raises(CheckError, match=r"wrong kernel size \(it must be 2"):
        check_fc_to_conv(kernel_too_small)


def test_fc_to_conv_rejects_a_returned_tensor_readably():
    def returns_weight(linear, in_channels, kernel_size):
        return linear.weight.view(linear.out_features, in_channels, kernel_size, kernel_size)

    with pytest.raises(CheckError, match=r"must return an nn\.Conv2d, but it returned Tensor"):
        check_fc_to_conv(returns_weight)


def test_fc_to_conv_stub_is_not_implemented_yet():
    def stub(linear, in_channels, kernel_size):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        check_fc_to_conv(stub)


def test_fc_to_conv_rejects_a_called_function():
    with pytest.raises(CheckError, match="expected a function but got Conv2d"):
        check_fc_to_conv(fc_to_conv_correct(nn.Linear(8, 2), 2, 2))


def test_fc_to_conv_check_does_not_trust_the_learner_with_its_layers():
    """A learner that scribbles on the given Linear must not poison the next run of the check."""

    def vandal(linear, in_channels, kernel_size):
        conv = fc_to_conv_correct(linear, in_channels, kernel_size)
        with torch.no_grad():
            linear.weight.zero_()
        return conv

    check_fc_to_conv(vandal)
    check_fc_to_conv(fc_to_conv_correct)


# ------------------------------------------------------------------------------ fuse_additive
def _bilinear(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def fuse_additive_correct(coarse_scores, skip_scores, upsample=None, skip_scale=1.0):
    up = upsample(coarse_scores) if upsample is not None else _bilinear(coarse_scores)
    h, w = up.shape[-2:]
    top = (skip_scores.shape[-2] - h) // 2
    left = (skip_scores.shape[-1] - w) // 2
    return up + skip_scale * skip_scores[:, :, top:top + h, left:left + w]


def test_fuse_additive_accepts_a_correct_answer(capsys):
    check_fuse_additive(fuse_additive_correct)
    assert "Task 2 fuse_additive: all 4 cases passed" in capsys.readouterr().out


def _fuse_wrong(transform):
    """A fuse_additive that does everything right except what ``transform`` changes."""

    def fuse(coarse_scores, skip_scores, upsample=None, skip_scale=1.0):
        return transform(coarse_scores, skip_scores, upsample, skip_scale)

    return fuse


def _crop_centre(x, h, w):
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


@pytest.mark.parametrize(
    "wrong, misconception",
    [
        (
            _fuse_wrong(lambda c, s, up, k: torch.cat([(up or _bilinear)(c), k * _crop_centre(s, 2 * c.shape[-2], 2 * c.shape[-1])], 1)),
            "concatenated the scores",
        ),
        (
            _fuse_wrong(lambda c, s, up, k: c + k * F.interpolate(s, size=c.shape[-2:], mode="bilinear", align_corners=False)),
            "instead of upsampling the coarse scores",
        ),
        (
            _fuse_wrong(lambda c, s, up, k: (up or _bilinear)(c) + s[..., : 2 * c.shape[-2], : 2 * c.shape[-1]]),
            "top-left corner",
        ),
        (
            _fuse_wrong(lambda c, s, up, k: F.interpolate(c, scale_factor=2) + k * _crop_centre(s, 2 * c.shape[-2], 2 * c.shape[-1])),
            "nearest neighbour",
        ),
        (
            _fuse_wrong(lambda c, s, up, k: _bilinear(c) + k * _crop_centre(s, 2 * c.shape[-2], 2 * c.shape[-1])),
            "ignored the `upsample` argument",
        ),
        (
            _fuse_wrong(lambda c, s, up, k: (up or _bilinear)(c) + _crop_centre(s, 2 * c.shape[-2], 2 * c.shape[-1])),
            "forgot skip_scale",
        ),
    ],
    ids=["concatenated", "downsampled_skip", "corner_crop", "nearest", "ignored_upsample", "no_scale"],
)
def test_fuse_additive_names_the_mistake(wrong, misconception):
    with pytest.raises(CheckError, match=misconception):
        check_fuse_additive(wrong)


@pytest.mark.parametrize(
    "offset",
    [lambda d: math.ceil(d / 2), lambda d: d - d // 2, lambda d: round(d / 2)],
    ids=["ceil", "d_minus_half", "round_half_even"],
)
def test_fuse_additive_names_a_crop_offset_rounded_the_wrong_way(offset):
    """Offsets that agree with d // 2 for even d but not for odd d (round() only on some axes)."""

    def fuse(coarse_scores, skip_scores, upsample=None, skip_scale=1.0):
        up = upsample(coarse_scores) if upsample is not None else _bilinear(coarse_scores)
        h, w = up.shape[-2:]
        top, left = offset(skip_scores.shape[-2] - h), offset(skip_scores.shape[-1] - w)
        return up + skip_scale * skip_scores[:, :, top:top + h, left:left + w]

    with pytest.raises(CheckError, match=r"odd size difference(.|\n)*rounds the wrong way for an odd difference"):
        check_fuse_additive(fuse)


def test_fuse_additive_not_upsampled_at_all_reports_the_learner_line():
    def no_upsampling(coarse_scores, skip_scores, upsample=None, skip_scale=1.0):
        return coarse_scores + skip_scale * skip_scores

    with pytest.raises(CheckError, match=r"raised RuntimeError.*\n.*return coarse_scores \+ skip_scale \* skip_scores"):
        check_fuse_additive(no_upsampling)


def test_fuse_additive_stub_is_not_implemented_yet():
    def stub(coarse_scores, skip_scores, upsample=None, skip_scale=1.0):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="Task 2 fuse_additive: not implemented yet"):
        check_fuse_additive(stub)


def test_fuse_additive_wrong_return_type_is_readable():
    def returns_numpy_list(coarse_scores, skip_scores, upsample=None, skip_scale=1.0):
        return fuse_additive_correct(coarse_scores, skip_scores, upsample, skip_scale).tolist()

    with pytest.raises(CheckError, match=r"expected a tensor of shape \(1, 2, 6, 6\) but got list"):
        check_fuse_additive(returns_numpy_list)


# ------------------------------------------------------------------------------ crop_and_concat
def crop_and_concat_correct(decoder_features, encoder_features):
    h, w = decoder_features.shape[-2:]
    H, W = encoder_features.shape[-2:]
    top, left = (H - h) // 2, (W - w) // 2
    return torch.cat([encoder_features[:, :, top:top + h, left:left + w], decoder_features], dim=1)


def test_crop_and_concat_accepts_a_correct_answer(capsys):
    check_crop_and_concat(crop_and_concat_correct)
    assert "Task 3 crop_and_concat: all 5 cases passed" in capsys.readouterr().out


def test_crop_and_concat_accepts_the_library_blocks_center_crop():
    from unetlib.models import center_crop

    check_crop_and_concat(lambda d, e: torch.cat([center_crop(e, d.shape[-2], d.shape[-1]), d], dim=1))


def _centre(e, d):
    return crop_and_concat_correct(d, e)[:, : e.shape[1]]


@pytest.mark.parametrize(
    "wrong, misconception",
    [
        (lambda d, e: torch.cat([d, _centre(e, d)], dim=1), "wrong order"),
        (lambda d, e: torch.cat([_centre(e, d), d], dim=0), "along dim=0"),
        (lambda d, e: _centre(e, d) + d, "added the maps instead of concatenating"),
        (
            lambda d, e: torch.cat(
                [e, F.pad(d, ((e.shape[-1] - d.shape[-1]) // 2, (e.shape[-1] - d.shape[-1] + 1) // 2,
                              (e.shape[-2] - d.shape[-2]) // 2, (e.shape[-2] - d.shape[-2] + 1) // 2))],
                dim=1,
            ),
            "padded the decoder map",
        ),
        (lambda d, e: torch.cat([e[:, :, : d.shape[-2], : d.shape[-1]], d], dim=1), "top-left corner"),
        (
            lambda d, e: torch.cat(
                [e[:, :, (e.shape[-2] - d.shape[-2] + 1) // 2:][:, :, : d.shape[-2], (e.shape[-1] - d.shape[-1] + 1) // 2:][..., : d.shape[-1]], d],
                dim=1,
            ),
            "off-centre by one pixel",
        ),
    ],
    ids=["decoder_first", "dim0", "added", "padded_decoder", "corner_crop", "rounded_up"],
)
def test_crop_and_concat_names_the_mistake(wrong, misconception):
    with pytest.raises(CheckError, match=misconception):
        check_crop_and_concat(wrong)


def test_crop_and_concat_stub_is_not_implemented_yet():
    def stub(decoder_features, encoder_features):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="Task 3 crop_and_concat: not implemented yet"):
        check_crop_and_concat(stub)


def test_crop_and_concat_wrong_return_type_is_readable():
    with pytest.raises(CheckError, match=r"expected a tensor of shape \(1, 6, 4, 4\) but got tuple"):
        check_crop_and_concat(lambda d, e: (_centre(e, d), d))


def test_crop_and_concat_rejects_a_non_function():
    with pytest.raises(CheckError, match="expected a function but got Tensor"):
        check_crop_and_concat(torch.zeros(1))
