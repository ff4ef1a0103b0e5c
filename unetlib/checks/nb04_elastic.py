"""Checks for notebook 04 (elastic deformation): the coarse-grid field and the two warps.

Each ``check_*`` runs the learner's function on a few named cases and compares the result
with :mod:`unetlib.augment`. When an answer is wrong, the diagnosis recomputes what each
common misconception would return and names the one that matches.

Contracts (also stated in the exercise notebook), following :mod:`unetlib.augment`:

* ``displacement_field(coarse, height, width) -> field``: coarse float (2, g, g) in pixels
  (channel 0 = dy, channel 1 = dx); returns float (2, height, width), the bicubic upsampling
  ``F.interpolate(..., mode="bicubic", align_corners=True)`` of the coarse grid, still in pixels.
* ``warp_mask(mask, field) -> warped``: mask int64 (H, W) of label ids, field float (2, H, W)
  in pixels; returns int64 (H, W) with ``warped[y, x] = mask[y + dy, x + dx]`` (values pulled
  from the displaced position), nearest neighbour, positions outside the image mirrored about
  the border pixel centres.
* ``warp_image(image, field) -> warped``: image float (C, H, W); the same warp, bicubic.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..augment import warp
from ._core import Case, compare_values, run_check

__all__ = ["check_displacement_field", "check_warp_mask", "check_warp_image"]

# The hint texts double as the tests' expectations: keep each one short and specific.
HINT_BILINEAR_FIELD = (
    "this is *bilinear* upsampling (straight lines between grid points); the paper interpolates "
    "the coarse grid bicubically: mode=\"bicubic\"."
)
HINT_NEAREST_FIELD = "this is nearest-neighbour upsampling (blocks of constant displacement); use mode=\"bicubic\"."
HINT_ALIGN_FALSE = (
    "you used align_corners=False; with align_corners=True the coarse points sit exactly on the "
    "image corners and edges (pass align_corners=True to F.interpolate)."
)
HINT_SWAPPED_CHANNELS = "dy and dx are swapped: channel 0 must be dy (rows), channel 1 dx (columns)."
HINT_NORMALISED_FIELD = (
    "you converted the field to normalised [-1, 1] units; the field must stay in pixels "
    "(convert only when you build the grid for grid_sample)."
)
HINT_SCALED_BY_STD = "you multiplied by the std again; the coarse values are already displacements in pixels."
HINT_BATCH_DIM = "you returned the batch dimension too: F.interpolate works on (N, C, H, W); index [0] at the end."
HINT_SCIPY_SPLINE = (
    "scipy's zoom(order=3) is a cubic *B-spline*, a different cubic than torch's bicubic (Keys, a = -0.75); "
    "use F.interpolate(mode=\"bicubic\", align_corners=True)."
)

HINT_PUSHED = (
    "the sign convention is reversed: you pushed pixels to (y + dy, x + dx) instead of pulling "
    "output[y, x] = input[y + dy, x + dx] (add the displacement to the sampling grid, do not subtract it)."
)
HINT_SWAPPED_WARP = (
    "dx and dy are swapped: field[0] is dy (rows) and field[1] is dx (columns); grid_sample wants "
    "grid[..., 0] = x and grid[..., 1] = y."
)
HINT_GRID_YX = (
    "the last dimension of the sampling grid is in (y, x) order; grid_sample reads grid[..., 0] as x "
    "(columns) and grid[..., 1] as y (rows)."
)
HINT_UNSCALED = (
    "the displacement was added in pixels to normalised coordinates: forgot to scale by 2 / (W - 1) "
    "(x) and 2 / (H - 1) (y) to convert pixels to grid_sample's [-1, 1] units."
)
HINT_HALF_SCALE = (
    "the pixel-to-normalised scale is off by a factor of 2: [-1, 1] spans W - 1 pixels, so one pixel "
    "is 2 / (W - 1), not 1 / (W - 1)."
)
HINT_SCALES_SWAPPED = "x and y scales are swapped: scale dx by 2 / (W - 1) (width) and dy by 2 / (H - 1) (height)."
HINT_ALIGN_MISMATCH = (
    "a zero field would not be the identity: the grid was built for align_corners=True (pixel 0 at -1, "
    "pixel W-1 at +1) but grid_sample ran with align_corners=False, its default. Pass align_corners=True."
)
HINT_ALIGN_FALSE_WARP = (
    "with align_corners=False the reflection happens at the pixel *edges* instead of the border pixel "
    "centres; use align_corners=True everywhere (grid and grid_sample)."
)
HINT_ZEROS = (
    "positions outside the image became 0: zero padding instead of reflection at the borders "
    "(padding_mode=\"reflection\")."
)
HINT_BORDER = (
    "positions outside the image were clamped to the border (padding_mode=\"border\") instead of "
    "mirrored (padding_mode=\"reflection\")."
)
HINT_MASK_BILINEAR = (
    "the mask was interpolated bilinearly: between two cells with ids 2 and 4 this invents 3, a different "
    "cell (non-integer or new label values). Labels need mode=\"nearest\"."
)
HINT_MASK_DTYPE = (
    "the labels are right but the dtype changed (e.g. to float32, grid_sample's output); return int64 "
    "labels like the input: .round().long()."
)
HINT_IMAGE_BILINEAR = "this is a *bilinear* warp; the paper warps images bicubically: mode=\"bicubic\"."
HINT_IMAGE_NEAREST = "this is a nearest-neighbour warp; images are warped bicubically: mode=\"bicubic\"."


# ======================================================================================
# helpers
# ======================================================================================
def _close(got: Any, value: Optional[torch.Tensor], atol: float = 1e-4, rtol: float = 1e-4) -> bool:
    """True when ``got`` is a tensor with ``value``'s shape and (nearly) its values."""
    if value is None or not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(value.shape):
        return False
    g = got.detach().cpu().to(torch.float64)
    v = value.detach().cpu().to(torch.float64)
    return bool(torch.allclose(g, v, atol=atol, rtol=rtol))


def _first_match(got: Any, candidates: list[tuple[str, Callable[[], torch.Tensor]]], atol: float = 1e-4) -> Optional[str]:
    """The hint of the first misconception whose (lazily computed) answer equals ``got``."""
    for hint, compute in candidates:
        try:
            value = compute()
        except Exception:  # a misconception that cannot run on this case does not match
            continue
        if _close(got, value, atol=atol):
            return hint
    return None


def _grid_variant(
    x: torch.Tensor,
    field: torch.Tensor,
    mode: str,
    *,
    sign: float = 1.0,
    swap_channels: bool = False,
    grid_yx: bool = False,
    x_scale: Optional[float] = None,
    y_scale: Optional[float] = None,
    padding_mode: str = "reflection",
    grid_align: bool = True,
    sample_align: bool = True,
) -> torch.Tensor:
    """What a by-hand grid_sample warp of float ``x`` (C, H, W) gives with one knob turned.

    The correct warp is the default: pull (sign +1), channel 0 = dy, grid in (x, y) order,
    scales 2 / (size - 1), reflection, align_corners=True for both the grid and grid_sample.
    """
    height, width = x.shape[-2:]
    # float32, as a learner's code would run: at (rare) exact half-pixel ties nearest-neighbour
    # rounding then goes the same way as theirs.
    dtype = torch.float32
    field = field.to(dtype)
    dy, dx = (field[1], field[0]) if swap_channels else (field[0], field[1])
    if grid_align:
        xs = torch.linspace(-1, 1, width, dtype=dtype)
        ys = torch.linspace(-1, 1, height, dtype=dtype)
        sx = 2 / (width - 1) if x_scale is None else x_scale
        sy = 2 / (height - 1) if y_scale is None else y_scale
    else:  # pixel centres at (2 p + 1) / S - 1, one pixel = 2 / S
        xs = (2 * torch.arange(width, dtype=dtype) + 1) / width - 1
        ys = (2 * torch.arange(height, dtype=dtype) + 1) / height - 1
        sx = 2 / width if x_scale is None else x_scale
        sy = 2 / height if y_scale is None else y_scale
    gx = xs[None, :] + sign * sx * dx
    gy = ys[:, None] + sign * sy * dy
    grid = torch.stack((gy, gx) if grid_yx else (gx, gy), dim=-1)[None]
    out = F.grid_sample(x[None].to(dtype), grid, mode=mode, padding_mode=padding_mode,
                        align_corners=sample_align)
    return out[0]


def _warp_candidates(x: torch.Tensor, field: torch.Tensor, mode: str) -> list[tuple[str, Callable[[], torch.Tensor]]]:
    """Misconceptions shared by the mask and the image warp, as (hint, lazy answer) pairs."""
    height, width = x.shape[-2:]

    def variant(**kwargs):
        return lambda: _grid_variant(x, field, mode, **kwargs)

    return [
        (HINT_PUSHED, variant(sign=-1.0)),
        (HINT_SWAPPED_WARP, variant(swap_channels=True)),
        (HINT_GRID_YX, variant(grid_yx=True)),
        (HINT_UNSCALED, variant(x_scale=1.0, y_scale=1.0)),
        (HINT_HALF_SCALE, variant(x_scale=1 / (width - 1), y_scale=1 / (height - 1))),
        (HINT_SCALES_SWAPPED, variant(x_scale=2 / (height - 1), y_scale=2 / (width - 1))),
        (HINT_ZEROS, variant(padding_mode="zeros")),
        (HINT_BORDER, variant(padding_mode="border")),
        (HINT_ALIGN_MISMATCH, variant(sample_align=False)),
        (HINT_ALIGN_FALSE_WARP, variant(grid_align=False, sample_align=False)),
    ]


# ======================================================================================
# Task 1: the coarse-grid displacement field
# ======================================================================================
def _reference_field(coarse: torch.Tensor, height: int, width: int, mode: str = "bicubic",
                     align_corners: Optional[bool] = True) -> torch.Tensor:
    kwargs = {} if mode == "nearest" else {"align_corners": align_corners}
    return F.interpolate(coarse[None].to(torch.float64), size=(height, width), mode=mode, **kwargs)[0]


def _scipy_spline_field(coarse: torch.Tensor, height: int, width: int) -> torch.Tensor:
    from scipy import ndimage

    g_h, g_w = coarse.shape[-2:]
    zoomed = ndimage.zoom(coarse.double().numpy(), (1, height / g_h, width / g_w), order=3)
    return torch.from_numpy(zoomed)


def _field_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(404)
    specs = [
        ("3x3 grid, 9 x 9 image", 3, 9, 9),
        ("3x3 grid, non-square 12 x 17 image", 3, 12, 17),
        ("4x4 grid, 20 x 20 image", 4, 20, 20),
        ("3x3 grid, std 10 px, 64 x 48 image", 3, 64, 48),
    ]
    cases = []
    for name, g, height, width in specs:
        coarse = torch.randn((2, g, g), generator=gen) * (10.0 if "std 10" in name else 3.0)
        expected = _reference_field(coarse, height, width).to(torch.float32)
        cases.append(Case(name, (coarse, height, width), expected=expected, atol=1e-4, rtol=1e-4))
    return cases


def _diagnose_field(case: Case, got: Any) -> Optional[str]:
    coarse, height, width = case.args
    expected = case.expected.to(torch.float64)
    if isinstance(got, torch.Tensor) and got.ndim == 4 and got.shape[0] == 1 and _close(got[0], expected):
        return HINT_BATCH_DIM
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (height, width, 2):
        return "the channels are last: return shape (2, height, width), channel 0 = dy, channel 1 = dx."
    scale = torch.tensor([2 / (height - 1), 2 / (width - 1)], dtype=torch.float64)[:, None, None]
    candidates = [
        (HINT_BILINEAR_FIELD, lambda: _reference_field(coarse, height, width, "bilinear")),
        (HINT_NEAREST_FIELD, lambda: _reference_field(coarse, height, width, "nearest")),
        (HINT_ALIGN_FALSE, lambda: _reference_field(coarse, height, width, "bicubic", False)),
        (HINT_ALIGN_FALSE, lambda: _reference_field(coarse, height, width, "bilinear", False)),
        (HINT_SWAPPED_CHANNELS, lambda: expected.flip(0)),
        (HINT_NORMALISED_FIELD, lambda: expected * scale),
        (HINT_SCALED_BY_STD, lambda: expected * 10),
        (HINT_SCIPY_SPLINE, lambda: _scipy_spline_field(coarse, height, width)),
    ]
    return _first_match(got, candidates)


def check_displacement_field(fn: Callable) -> None:
    """Check ``displacement_field(coarse (2, g, g), height, width) -> (2, height, width)``."""
    run_check("Task 1 displacement_field", fn, _field_cases(), diagnose=_diagnose_field)


# ======================================================================================
# Task 2: warping a label mask
# ======================================================================================
def _label_mask(height: int, width: int, seed: int) -> torch.Tensor:
    """int64 (H, W) blocks of instance ids 0..7 in shuffled order, so neighbours often differ by >= 2."""
    gen = torch.Generator().manual_seed(seed)
    block = 4
    coarse = torch.randint(0, 8, ((height + block - 1) // block, (width + block - 1) // block), generator=gen)
    coarse[0, 0], coarse[0, 1], coarse[1, 0] = 2, 4, 7  # make sure a "2 next to 4" border exists
    return coarse.repeat_interleave(block, 0).repeat_interleave(block, 1)[:height, :width].contiguous()


def _safe_field(field: torch.Tensor) -> torch.Tensor:
    """Nudge displacements off exact half pixels, where nearest neighbour rounding is a coin toss."""
    frac = field - field.floor()
    near_half = (frac - 0.5).abs() < 0.02
    return torch.where(near_half, field + 0.05, field)


def _smooth_field(height: int, width: int, std: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn((1, 2, 3, 3), generator=gen) * std
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0]
    return _safe_field(field)


def _warp_cases(make_input: Callable[[int, int, int], torch.Tensor], mode: str, atol: float) -> list[Case]:
    specs = []
    shift = torch.zeros(2, 12, 12)
    shift[1] = 2.2  # dx = +2.2 px: output(y, x) = input(y, x + 2.2), the picture moves LEFT
    specs.append(("constant dx = +2.2 px (reaches past the right border)", make_input(12, 12, 1), shift))
    specs.append(("zero field (must be the identity)", make_input(12, 12, 2), torch.zeros(2, 12, 12)))
    shift = torch.zeros(2, 14, 10)
    shift[0] = -3.3  # dy = -3.3 px: rows are pulled from above, the picture moves DOWN
    specs.append(("constant dy = -3.3 px, non-square 14 x 10", make_input(14, 10, 3), shift))
    specs.append(("smooth random field (std 3 px), 24 x 20", make_input(24, 20, 4), _smooth_field(24, 20, 3.0, 4)))
    specs.append(("smooth random field (std 6 px), 16 x 28", make_input(16, 28, 5), _smooth_field(16, 28, 6.0, 5)))
    cases = []
    for name, x, field in specs:
        batched = x if x.ndim == 3 else x[None]
        expected = warp(batched, field, mode=mode)
        expected = expected if x.ndim == 3 else expected[0]
        cases.append(Case(name, (x, field), expected=expected, atol=atol, rtol=0.0 if mode == "nearest" else 1e-4))
    return cases


def _compare_mask(got: Any, expected: Any, atol: float, rtol: float) -> Optional[str]:
    """Labels must come back as int64 with exactly the expected values."""
    if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(expected.shape) and got.dtype != torch.int64:
        return f"expected an int64 label map but got dtype {got.dtype}"
    return compare_values(got, expected, atol=0.0, rtol=0.0)


def _diagnose_mask(case: Case, got: Any) -> Optional[str]:
    mask, field = case.args
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(mask.shape):
        return None
    values = got.detach().to(torch.float64)
    if got.is_floating_point() and not torch.equal(values, values.round()):
        return HINT_MASK_BILINEAR
    if got.dtype != torch.int64 and torch.equal(values.round().long(), case.expected):
        return HINT_MASK_DTYPE
    as_float = mask[None].to(torch.float32)
    bilinear = lambda: _grid_variant(as_float, field, "bilinear")[0]  # noqa: E731
    hint = _first_match(got, [
        (HINT_MASK_BILINEAR, lambda: bilinear().round()),
        (HINT_MASK_BILINEAR, lambda: bilinear().floor()),
        (HINT_MASK_BILINEAR, bilinear),
    ], atol=1e-6)
    if hint:
        return hint
    candidates = [(h, (lambda c=c: c()[0])) for h, c in _warp_candidates(as_float, field, "nearest")]
    hint = _first_match(got, candidates, atol=1e-6)
    if hint:
        return hint
    new_labels = set(torch.unique(got.detach().round().long()).tolist()) - set(torch.unique(mask).tolist())
    if new_labels:
        return (f"label values {sorted(new_labels)[:5]} do not occur in the input mask: labels were "
                f"interpolated (or shifted by arithmetic) instead of copied with nearest neighbour.")
    return None


def check_warp_mask(fn: Callable) -> None:
    """Check ``warp_mask(mask int64 (H, W), field (2, H, W)) -> int64 (H, W)`` (nearest, reflection)."""
    cases = _warp_cases(lambda h, w, seed: _label_mask(h, w, seed), "nearest", atol=0.0)
    run_check("Task 2 warp_mask", fn, cases, diagnose=_diagnose_mask, compare=_compare_mask)


# ======================================================================================
# Task 3: warping an image bicubically
# ======================================================================================
def _test_image(height: int, width: int, seed: int) -> torch.Tensor:
    """float32 (2, H, W): a smooth random pattern plus a ramp, two channels."""
    gen = torch.Generator().manual_seed(100 + seed)
    coarse = torch.rand((1, 2, 4, 4), generator=gen)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)[0]
    ramp = torch.linspace(0, 1, width)[None, None, :].expand(2, height, width)
    return (0.6 * smooth + 0.4 * ramp + 0.05 * torch.rand((2, height, width), generator=gen)).contiguous()


def _diagnose_image(case: Case, got: Any) -> Optional[str]:
    image, field = case.args
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(image.shape):
        if isinstance(got, torch.Tensor) and got.ndim == 4 and tuple(got.shape[1:]) == tuple(image.shape):
            return HINT_BATCH_DIM
        return None
    candidates = [
        (HINT_IMAGE_BILINEAR, lambda: _grid_variant(image, field, "bilinear")),
        (HINT_IMAGE_NEAREST, lambda: _grid_variant(image, field, "nearest")),
    ] + _warp_candidates(image, field, "bicubic")
    return _first_match(got, candidates, atol=1e-4)


def check_warp_image(fn: Callable) -> None:
    """Check ``warp_image(image float (C, H, W), field (2, H, W)) -> float (C, H, W)`` (bicubic, reflection)."""
    cases = _warp_cases(_test_image, "bicubic", atol=1e-4)
    run_check("Task 3 warp_image", fn, cases, diagnose=_diagnose_image)
