"""Checks of notebook 04: right answers pass, realistic wrong ones are named, stubs are told apart.

Every wrong implementation below is written the way a learner would write it, with exactly
one mistake, and the check must reject it with a CheckError naming that mistake. The right
implementations include independent ones (scipy's map_coordinates), not only copies of the
library's grid_sample call.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from unetlib.checks import CheckError, NotImplementedYet, check_displacement_field, check_warp_image, check_warp_mask
from unetlib.checks import nb04_elastic as nb04


# --------------------------------------------------------------------------------------
# Task 1: displacement field
# --------------------------------------------------------------------------------------
def field_right(coarse, height, width):
    return F.interpolate(coarse[None], size=(height, width), mode="bicubic", align_corners=True)[0]


def field_right_separable(coarse, height, width):
    # Bicubic is separable: upsample the one-hot basis once per axis, then two matrix products.
    def weights(n_in, n_out):
        eye = torch.eye(n_in).reshape(n_in, 1, n_in, 1)
        return F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=True).reshape(n_in, n_out).T

    g_h, g_w = coarse.shape[-2:]
    return weights(g_h, height) @ coarse @ weights(g_w, width).T


def field_bilinear(coarse, height, width):
    return F.interpolate(coarse[None], size=(height, width), mode="bilinear", align_corners=True)[0]


def field_align_false(coarse, height, width):
    return F.interpolate(coarse[None], size=(height, width), mode="bicubic")[0]  # default align_corners=False


def field_swapped(coarse, height, width):
    def up(plane):
        return F.interpolate(plane[None, None], size=(height, width), mode="bicubic", align_corners=True)[0, 0]

    dy, dx = coarse
    return torch.stack([up(dx), up(dy)])  # (x, y) order, as grid_sample wants it: but this is the field


def field_normalised(coarse, height, width):
    up = F.interpolate(coarse[None], size=(height, width), mode="bicubic", align_corners=True)[0]
    return torch.stack([up[0] * 2 / (height - 1), up[1] * 2 / (width - 1)])


def field_keeps_batch(coarse, height, width):
    return F.interpolate(coarse[None], size=(height, width), mode="bicubic", align_corners=True)


def field_scipy(coarse, height, width):
    g = coarse.shape[-1]
    return torch.from_numpy(ndimage.zoom(coarse.numpy(), (1, height / g, width / g), order=3))


def test_field_right_passes(capsys):
    check_displacement_field(field_right)
    check_displacement_field(field_right_separable)
    assert "all 4 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (field_bilinear, nb04.HINT_BILINEAR_FIELD),
        (field_align_false, nb04.HINT_ALIGN_FALSE),
        (field_swapped, nb04.HINT_SWAPPED_CHANNELS),
        (field_normalised, nb04.HINT_NORMALISED_FIELD),
        (field_keeps_batch, nb04.HINT_BATCH_DIM),
        (field_scipy, nb04.HINT_SCIPY_SPLINE),
    ],
    ids=lambda v: getattr(v, "__name__", "hint"),
)
def test_field_wrong_is_named(wrong, hint):
    with pytest.raises(CheckError) as info:
        check_displacement_field(wrong)
    message = str(info.value)
    assert "Task 1 displacement_field" in message and "Likely mistake" in message
    assert hint in message


def test_field_stub_and_wrong_types():
    def stub(coarse, height, width):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        check_displacement_field(stub)
    with pytest.raises(CheckError, match="expected a tensor of shape \\(2, 9, 9\\) but got list"):
        check_displacement_field(lambda c, h, w: field_right(c, h, w).tolist())
    with pytest.raises(CheckError, match="expected a function"):
        check_displacement_field(field_right(torch.zeros(2, 3, 3), 9, 9))


def test_field_reports_the_learners_own_error():
    def typo(coarse, height, width):
        return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)  # 3-D input

    with pytest.raises(CheckError, match="raised (ValueError|NotImplementedError|RuntimeError)"):
        check_displacement_field(typo)


# --------------------------------------------------------------------------------------
# Task 2: warp a mask
# --------------------------------------------------------------------------------------
def _grid(field, height, width, scale_x=None, scale_y=None, sign=1.0):
    sx = 2 / (width - 1) if scale_x is None else scale_x
    sy = 2 / (height - 1) if scale_y is None else scale_y
    gx = torch.linspace(-1, 1, width)[None, :] + sign * field[1] * sx
    gy = torch.linspace(-1, 1, height)[:, None] + sign * field[0] * sy
    return torch.stack([gx, gy], dim=-1)[None]  # (1, H, W, 2) in grid_sample's (x, y) order


def _sample(mask, grid, mode="nearest", padding_mode="reflection", align_corners=True):
    return F.grid_sample(mask[None, None].float(), grid, mode=mode, padding_mode=padding_mode,
                         align_corners=align_corners)[0, 0]


def mask_right(mask, field):
    h, w = mask.shape
    return _sample(mask, _grid(field, h, w)).round().long()


def mask_right_scipy(mask, field):
    # Independent: scipy's map_coordinates with order 0 and mirror borders (about the pixel centres).
    h, w = mask.shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = [yy + field[0].numpy(), xx + field[1].numpy()]
    return torch.from_numpy(ndimage.map_coordinates(mask.numpy(), coords, order=0, mode="mirror")).long()


def mask_pushed(mask, field):
    h, w = mask.shape
    return _sample(mask, _grid(field, h, w, sign=-1.0)).round().long()


def mask_swapped(mask, field):
    h, w = mask.shape
    return _sample(mask, _grid(field.flip(0), h, w)).round().long()


def mask_forgot_scale(mask, field):
    h, w = mask.shape
    return _sample(mask, _grid(field, h, w, scale_x=1.0, scale_y=1.0)).round().long()


def mask_grid_yx(mask, field):
    h, w = mask.shape
    grid = _grid(field, h, w).flip(-1)  # (y, x) in the last dimension: the "natural" order, wrong for grid_sample
    return _sample(mask, grid).round().long()


def mask_border(mask, field):
    h, w = mask.shape
    return _sample(mask, _grid(field, h, w), padding_mode="border").round().long()


def mask_zero_padding(mask, field):
    h, w = mask.shape
    return _sample(mask, _grid(field, h, w), padding_mode="zeros").round().long()


def mask_default_align(mask, field):
    h, w = mask.shape
    # Grid built for align_corners=True, but grid_sample runs with False (its default; spelled out
    # here only to keep torch's warning out of the test log).
    return F.grid_sample(mask[None, None].float(), _grid(field, h, w), mode="nearest",
                         padding_mode="reflection", align_corners=False)[0, 0].round().long()


def mask_bilinear(mask, field):
    h, w = mask.shape
    return _sample(mask, _grid(field, h, w), mode="bilinear")


def mask_bilinear_rounded(mask, field):
    h, w = mask.shape
    return _sample(mask, _grid(field, h, w), mode="bilinear").round().long()


def mask_float(mask, field):
    h, w = mask.shape
    return _sample(mask, _grid(field, h, w))  # right labels, but float32


def test_mask_right_passes(capsys):
    check_warp_mask(mask_right)
    check_warp_mask(mask_right_scipy)
    assert capsys.readouterr().out.count("all 5 cases passed") == 2


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (mask_pushed, nb04.HINT_PUSHED),
        (mask_swapped, nb04.HINT_SWAPPED_WARP),
        (mask_forgot_scale, nb04.HINT_UNSCALED),
        (mask_grid_yx, nb04.HINT_GRID_YX),
        (mask_zero_padding, nb04.HINT_ZEROS),
        (mask_border, nb04.HINT_BORDER),
        (mask_default_align, nb04.HINT_ALIGN_MISMATCH),
        (mask_bilinear, nb04.HINT_MASK_BILINEAR),
        (mask_bilinear_rounded, nb04.HINT_MASK_BILINEAR),
        (mask_float, nb04.HINT_MASK_DTYPE),
    ],
    ids=lambda v: getattr(v, "__name__", "hint"),
)
def test_mask_wrong_is_named(wrong, hint):
    with pytest.raises(CheckError) as info:
        check_warp_mask(wrong)
    message = str(info.value)
    assert "Task 2 warp_mask" in message and "Likely mistake" in message
    assert hint in message


def test_mask_float_output_is_refused_even_with_right_values():
    with pytest.raises(CheckError, match="expected an int64 label map but got dtype torch.float32"):
        check_warp_mask(mask_float)


def test_mask_stub_and_wrong_types():
    def stub(mask, field):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="Task 2 warp_mask: not implemented yet"):
        check_warp_mask(stub)
    with pytest.raises(CheckError, match="expected a tensor of shape \\(12, 12\\) but got NoneType"):
        check_warp_mask(lambda mask, field: None)
    with pytest.raises(CheckError, match="expected shape \\(12, 12\\) but got shape \\(1, 1, 12, 12\\)"):
        check_warp_mask(lambda mask, field: mask_right(mask, field)[None, None])


def test_mask_cases_avoid_half_pixel_ties():
    # Nearest neighbour at exactly x.5 depends on rounding details; the cases must not test that.
    for case in nb04._warp_cases(lambda h, w, s: nb04._label_mask(h, w, s), "nearest", atol=0.0):
        field = case.args[1]
        frac = field - field.floor()
        assert ((frac - 0.5).abs() > 0.01).all(), case.name


def test_label_mask_has_ids_two_and_four_side_by_side():
    mask = nb04._label_mask(12, 12, 1)  # the mask of the first case
    assert mask[0, 0] == 2 and mask[0, 4] == 4  # blocks of 4 px: bilinear between them gives 3


# --------------------------------------------------------------------------------------
# Task 3: warp an image bicubically
# --------------------------------------------------------------------------------------
def image_right(image, field):
    c, h, w = image.shape
    return F.grid_sample(image[None], _grid(field, h, w), mode="bicubic", padding_mode="reflection",
                         align_corners=True)[0]


def image_bilinear(image, field):
    c, h, w = image.shape
    return F.grid_sample(image[None], _grid(field, h, w), mode="bilinear", padding_mode="reflection",
                         align_corners=True)[0]


def image_pushed(image, field):
    c, h, w = image.shape
    return F.grid_sample(image[None], _grid(field, h, w, sign=-1.0), mode="bicubic",
                         padding_mode="reflection", align_corners=True)[0]


def image_zero_padding(image, field):
    c, h, w = image.shape
    return F.grid_sample(image[None], _grid(field, h, w), mode="bicubic", align_corners=True)[0]


def image_half_scale(image, field):
    c, h, w = image.shape
    return F.grid_sample(image[None], _grid(field, h, w, 1 / (w - 1), 1 / (h - 1)), mode="bicubic",
                         padding_mode="reflection", align_corners=True)[0]


def test_image_right_passes(capsys):
    check_warp_image(image_right)
    assert "all 5 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (image_bilinear, nb04.HINT_IMAGE_BILINEAR),
        (image_pushed, nb04.HINT_PUSHED),
        (image_zero_padding, nb04.HINT_ZEROS),
        (image_half_scale, nb04.HINT_HALF_SCALE),
    ],
    ids=lambda v: getattr(v, "__name__", "hint"),
)
def test_image_wrong_is_named(wrong, hint):
    with pytest.raises(CheckError) as info:
        check_warp_image(wrong)
    message = str(info.value)
    assert "Task 3 warp_image" in message and "Likely mistake" in message
    assert hint in message


def test_image_stub_and_wrong_types():
    def stub(image, field):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet):
        check_warp_image(stub)
    with pytest.raises(CheckError, match="expected a tensor of shape \\(2, 12, 12\\) but got list"):
        check_warp_image(lambda image, field: image_right(image, field).tolist())


def test_checks_are_exported():
    assert set(nb04.__all__) == {"check_displacement_field", "check_warp_mask", "check_warp_image"}
