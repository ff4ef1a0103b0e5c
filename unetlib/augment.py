"""Data augmentation for U-Net training: the paper's elastic deformation, flips, 90-degree rotations
and grey-value jitter.

Everything here is plain torch (``F.interpolate``, ``F.grid_sample``, ``F.conv2d``), so it runs on
any device and on whole batches, e.g. inside the training loop on the GPU.

Conventions used throughout
---------------------------
* A **displacement field** is a float tensor of shape ``(2, H, W)`` (one image) or ``(N, 2, H, W)``
  (a batch), measured in **pixels**. Channel 0 is ``dy`` (along rows), channel 1 is ``dx`` (along
  columns).
* Warping **pulls** values: ``output[..., y, x] = input[..., y + dy(y, x), x + dx(y, x)]``. So a
  constant field ``dy = 0, dx = +1`` moves the picture one pixel to the *left*.
* Positions outside the image are mirrored about the border pixel centres
  (``grid_sample(padding_mode="reflection", align_corners=True)``; scipy calls this ``"mirror"``),
  like the paper's overlap-tile strategy fills missing context.
* ``align_corners=True`` everywhere: pixel centre ``0`` maps to the normalised coordinate ``-1`` and
  pixel centre ``W - 1`` to ``+1``. With that choice a zero field maps every pixel centre onto
  itself, so a zero field is the identity (exactly for nearest, to float rounding for bicubic).

The paper's recipe (Ronneberger et al. 2015, Sec. 3.1): draw random displacements from
``N(0, std=10 px)`` on a coarse ``3 x 3`` grid, interpolate them bicubically to a smooth per-pixel
field, warp the image bicubically and the labels with nearest neighbour.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "interpolate_coarse_field",
    "random_displacement_field",
    "random_displacement_fields",
    "gaussian_blur",
    "simard_displacement_field",
    "simard_displacement_fields",
    "warp",
    "elastic_deform",
    "random_flip_rotate",
    "intensity_jitter",
    "ElasticAugment",
]

_IMAGE_MODES = ("bicubic", "bilinear", "nearest")
# float32 represents every integer up to 2**24 exactly; larger label ids need float64 to survive
# the round trip through grid_sample.
_FLOAT32_EXACT_INT = 2**24


# ----------------------------------------------------------------------------------------------
# small validation helpers
# ----------------------------------------------------------------------------------------------
def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r}).")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def _check_nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r}).")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    return float(value)


def _check_image_size(height, width) -> tuple[int, int]:
    # align_corners=True normalises by (size - 1), so a size of 1 has no well-defined coordinates.
    return _check_int("height", height, 2), _check_int("width", width, 2)


def _draw_device(generator: torch.Generator | None) -> torch.device:
    """Random numbers are drawn where the generator lives (CPU for the global RNG)."""
    return generator.device if generator is not None else torch.device("cpu")


def _check_tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
    return value


# ----------------------------------------------------------------------------------------------
# displacement fields
# ----------------------------------------------------------------------------------------------
def _bicubic_matrix(in_size: int, out_size: int, device, dtype) -> torch.Tensor:
    """(out_size, in_size) matrix M with ``M @ v == bicubic 1-D upsampling of v`` (align_corners).

    Interpolation is linear in its input, so upsampling the one-hot basis vectors once gives the
    weights for every field; this is what F.interpolate(mode="bicubic") computes, row by row.
    """
    basis = torch.eye(in_size, device=device, dtype=dtype).reshape(in_size, 1, in_size, 1)
    up = F.interpolate(basis, size=(out_size, 1), mode="bicubic", align_corners=True)
    return up.reshape(in_size, out_size).T


def interpolate_coarse_field(coarse: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Upsample coarse values (..., gh, gw) bicubically to a smooth map (..., height, width).

    Same result as ``F.interpolate(coarse, size=(height, width), mode="bicubic",
    align_corners=True)`` (Keys cubic kernel, a = -0.75), computed as two small matrix products
    because bicubic interpolation is separable: ``Wy @ coarse @ Wx.T`` (measured ~10x faster on
    a 2-core CPU for a batch of eight 512 x 512 fields). ``align_corners=True`` puts the coarse
    grid points on the image corners and edges: coarse point (i, j) sits at pixel
    ``(i * (height - 1) / (gh - 1), j * (width - 1) / (gw - 1))`` and the field passes exactly
    through the coarse value there.

    Args:
        coarse: float tensor (..., gh, gw), gh and gw >= 1.
        height, width: output size in pixels (>= 2).
    Returns:
        float tensor (..., height, width), same dtype and device as ``coarse``.
    """
    _check_tensor("coarse", coarse)
    if not coarse.is_floating_point():
        raise TypeError(f"coarse must be a floating-point tensor, got {coarse.dtype}.")
    if coarse.ndim < 2:
        raise ValueError(f"coarse must have shape (..., gh, gw), got {tuple(coarse.shape)}.")
    height, width = _check_image_size(height, width)
    gh, gw = coarse.shape[-2:]
    rows = _bicubic_matrix(gh, height, coarse.device, coarse.dtype)  # (H, gh)
    cols = _bicubic_matrix(gw, width, coarse.device, coarse.dtype)  # (W, gw)
    return rows @ (coarse @ cols.T)


def random_displacement_fields(
    n: int,
    height: int,
    width: int,
    grid_size: int = 3,
    std: float = 10.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A batch of the paper's smooth random displacement fields, one independent field per item.

    Coarse displacements ~ N(0, std) on a ``grid_size x grid_size`` grid (separately for dy and
    dx), upsampled bicubically with :func:`interpolate_coarse_field`.

    Args:
        n: number of fields.
        height, width: image size in pixels (>= 2).
        grid_size: coarse grid points per side (paper: 3).
        std: standard deviation of the coarse displacements in pixels (paper: 10).
        generator: torch.Generator for reproducibility (the tiny coarse grid is drawn on the
            generator's device, then moved to ``device``: same seed -> same field on any device;
            item i equals the i-th of n single-field calls with the same generator).
        device: where the field lives (default: the generator's device, else CPU).
        dtype: floating dtype of the field.
    Returns:
        float tensor (n, 2, height, width) in pixels, channel 0 = dy, channel 1 = dx.
    """
    _check_int("n", n, 1)
    height, width = _check_image_size(height, width)
    _check_int("grid_size", grid_size, 2)
    std = _check_nonnegative("std", std)
    draw_on = _draw_device(generator)
    # One small draw per item (not one big draw) so that item i of a batch is exactly the field
    # that the i-th single-item call with the same generator gives: torch's randn takes a
    # different code path for larger sizes, which would change the numbers.
    coarse = torch.cat([
        torch.randn((1, 2, grid_size, grid_size), generator=generator, device=draw_on)
        for _ in range(n)
    ])
    coarse = (coarse * std).to(device=device if device is not None else draw_on, dtype=dtype)
    return interpolate_coarse_field(coarse, height, width)


def random_displacement_field(
    height: int,
    width: int,
    grid_size: int = 3,
    std: float = 10.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One paper-style smooth random displacement field, float32 (2, height, width) in pixels.

    Channel 0 = dy, channel 1 = dx. Coarse ``grid_size x grid_size`` values ~ N(0, std) are
    interpolated bicubically (``F.interpolate(mode="bicubic", align_corners=True)``, so the grid
    points sit on the image corners and edges). Equals item 0 of
    ``random_displacement_fields(n, ...)`` with the same generator state, for any n.
    """
    return random_displacement_fields(1, height, width, grid_size, std, generator, device)[0]


def _symmetric_indices(size: int, pad: int, device) -> torch.Tensor:
    """Indices for padding by ``pad`` with half-sample symmetric reflection (d c b a | a b c d).

    This is scipy.ndimage's ``mode="reflect"``; unlike F.pad it works for any pad, even > size.
    """
    positions = torch.arange(-pad, size + pad, device=device) % (2 * size)
    return torch.where(positions < size, positions, 2 * size - 1 - positions)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian smoothing of the last two dims with a separable convolution, on any device.

    Matches ``scipy.ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=truncate)`` applied
    to each (H, W) slice: kernel radius ``int(truncate * sigma + 0.5)``, weights normalised to 1,
    borders reflected (d c b a | a b c d).

    Args:
        x: float tensor (..., H, W).
        sigma: standard deviation in pixels (> 0).
    Returns:
        float tensor, same shape/dtype/device as ``x``.
    """
    _check_tensor("x", x)
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}.")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., H, W), got {tuple(x.shape)}.")
    sigma = _check_nonnegative("sigma", sigma)
    if sigma == 0:
        raise ValueError("sigma must be > 0 (a zero-width Gaussian does not smooth anything).")
    radius = int(_check_nonnegative("truncate", truncate) * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(device=x.device, dtype=x.dtype)

    height, width = x.shape[-2:]
    planes = x.reshape(-1, 1, height, width)
    # One 1-D pass along rows, then one along columns: (2r + 1) * 2 multiply-adds per pixel
    # instead of (2r + 1) ** 2 for the full 2-D kernel.
    planes = planes.index_select(2, _symmetric_indices(height, radius, x.device))
    planes = F.conv2d(planes, kernel.reshape(1, 1, -1, 1))
    planes = planes.index_select(3, _symmetric_indices(width, radius, x.device))
    planes = F.conv2d(planes, kernel.reshape(1, 1, 1, -1))
    return planes.reshape(x.shape)


def simard_displacement_fields(
    n: int,
    height: int,
    width: int,
    alpha: float = 34.0,
    sigma: float = 4.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A batch of Simard et al. (2003) displacement fields, (n, 2, height, width) in pixels.

    Every pixel gets independent uniform(-1, 1) displacements; a Gaussian of width ``sigma``
    (:func:`gaussian_blur`, reflected borders) smooths them and ``alpha`` scales them. Because
    smoothing averages many independent values, the result is much smaller than ``alpha``
    (alpha=34, sigma=4 gives a per-pixel std of about 1.4 px). Channel 0 = dy, channel 1 = dx.
    The per-pixel noise is drawn on the generator's device (CPU by default), then moved.
    """
    _check_int("n", n, 1)
    height, width = _check_image_size(height, width)
    alpha = _check_nonnegative("alpha", alpha)
    draw_on = _draw_device(generator)
    noise = torch.rand((n, 2, height, width), generator=generator, device=draw_on) * 2 - 1
    noise = noise.to(device=device if device is not None else draw_on, dtype=dtype)
    return gaussian_blur(noise, sigma) * alpha


def simard_displacement_field(
    height: int,
    width: int,
    alpha: float = 34.0,
    sigma: float = 4.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One Simard et al. (2003) field, float32 (2, height, width) in pixels; see the batched form.

    Pass it to :func:`elastic_deform` as ``field=`` to compare with the paper's grid method.
    """
    return simard_displacement_fields(1, height, width, alpha, sigma, generator, device)[0]


# ----------------------------------------------------------------------------------------------
# warping
# ----------------------------------------------------------------------------------------------
def _sampling_grid(field: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Pixel displacements (N, 2, H, W) -> grid_sample grid (N, H, W, 2) of normalised (x, y)."""
    height, width = field.shape[-2:]
    field = field.to(dtype)
    # align_corners=True: pixel p of a size-S axis sits at 2 p / (S - 1) - 1, and a displacement
    # of d pixels moves it by d * 2 / (S - 1).
    x_scale, y_scale = 2.0 / (width - 1), 2.0 / (height - 1)
    x_identity = torch.arange(width, device=field.device, dtype=dtype) * x_scale - 1
    y_identity = torch.arange(height, device=field.device, dtype=dtype) * y_scale - 1
    y_identity = y_identity.reshape(height, 1)
    grid = torch.empty((field.shape[0], height, width, 2), device=field.device, dtype=dtype)
    # One fused pass per coordinate (identity + scale * displacement), written straight into
    # grid_sample's (x, y) layout: measured ~3x faster than separate add/mul/sub passes on a CPU.
    torch.add(x_identity, field[:, 1], alpha=x_scale, out=grid[..., 0])
    torch.add(y_identity, field[:, 0], alpha=y_scale, out=grid[..., 1])
    return grid


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half precision cannot address 512 pixels to a fraction of a pixel (11-bit mantissa), so
    # fp16/bf16 images are warped in float32 and cast back.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _sample(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """grid_sample for float (N, C, H, W) inputs of any float dtype, or integer ones (nearest)."""
    if x.is_floating_point():
        work = x.to(grid.dtype)
        out = F.grid_sample(work, grid, mode=mode, padding_mode="reflection", align_corners=True)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out.to(x.dtype)
    # Integer labels: nearest neighbour copies values (no arithmetic on them), so a float copy
    # carries them through exactly as long as the float type represents them exactly.
    if x.dtype in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16):
        needs_float64 = False
    elif x.dtype in (torch.int32, torch.int64) and x.numel() > 0:
        low, high = torch.aminmax(x)
        needs_float64 = max(-int(low), int(high)) > _FLOAT32_EXACT_INT
    else:
        needs_float64 = x.numel() > 0
    work = x.to(torch.float64 if needs_float64 else torch.float32)
    out = F.grid_sample(work, grid.to(work.dtype), mode="nearest", padding_mode="reflection",
                        align_corners=True)
    return out.to(x.dtype)


def _check_field(field, batch: int | None, height: int, width: int, device) -> torch.Tensor:
    """Validate a user field and return it as (N or 1, 2, H, W)."""
    _check_tensor("field", field)
    if not field.is_floating_point():
        raise TypeError(f"field must be a floating-point tensor (pixels), got {field.dtype}.")
    shared = field.ndim == 3 and tuple(field.shape) == (2, height, width)
    per_item = (field.ndim == 4 and batch is not None
                and tuple(field.shape) == (batch, 2, height, width))
    if not (shared or per_item):
        expected = f"(2, {height}, {width})"
        if batch is not None:
            expected += f" or ({batch}, 2, {height}, {width})"
        raise ValueError(
            f"field must have shape {expected} (dy, dx in pixels) to match the image, "
            f"got {tuple(field.shape)}."
        )
    if field.device != torch.device(device):
        raise ValueError(
            f"field is on {field.device} but the image is on {device}; move it with "
            f"field.to(image.device)."
        )
    return field.unsqueeze(0) if shared else field


def warp(tensor: torch.Tensor, field: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Warp a tensor with a displacement field: ``out[..., y, x] = tensor[..., y + dy, x + dx]``.

    To give extra maps (distance maps, ...) the *same* deformation as an image, draw the field
    once (:func:`random_displacement_field`), pass it to ``elastic_deform(..., field=field)`` and
    to ``warp(extra, field)``. (Weight maps can simply go through ``elastic_deform(weight=...)``.)

    Args:
        tensor: (C, H, W) or (N, C, H, W). Float (any float dtype) with ``mode`` "bilinear",
            "bicubic" or "nearest"; integer/bool tensors (labels) need ``mode="nearest"`` and keep
            their dtype and values exactly. A label map (H, W) is warped as ``warp(m[None], f,
            "nearest")[0]``.
        field: float (2, H, W) (shared by the batch) or (N, 2, H, W), pixels, (dy, dx).
        mode: "bilinear", "bicubic" or "nearest".
    Returns:
        tensor of the same shape, dtype and device. Borders are mirrored.
    """
    _check_tensor("tensor", tensor)
    if tensor.ndim not in (3, 4):
        raise ValueError(
            f"tensor must have shape (C, H, W) or (N, C, H, W), got {tuple(tensor.shape)}; "
            f"add a channel dimension to a (H, W) map with t[None]."
        )
    if mode not in _IMAGE_MODES:
        raise ValueError(f"mode must be one of {_IMAGE_MODES}, got {mode!r}.")
    if tensor.is_complex():
        raise TypeError("complex tensors are not supported; warp the real and imaginary parts.")
    if not tensor.is_floating_point() and mode != "nearest":
        raise TypeError(
            f"integer/bool tensors ({tensor.dtype}) hold labels and can only be warped with "
            f"mode='nearest' (interpolating labels invents new ones)."
        )
    batched = tensor.ndim == 4
    batch = tensor.shape[0] if batched else None
    height, width = _check_image_size(*tensor.shape[-2:])
    field = _check_field(field, batch, height, width, tensor.device)
    x = tensor if batched else tensor.unsqueeze(0)
    grid = _sampling_grid(field, _compute_dtype(tensor.dtype))
    grid = grid.expand(x.shape[0], -1, -1, -1)
    out = _sample(x, grid, mode)
    return out if batched else out[0]


def elastic_deform(
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    weight: torch.Tensor | None = None,
    field: torch.Tensor | None = None,
    grid_size: int = 3,
    std: float = 10.0,
    generator: torch.Generator | None = None,
    image_mode: str = "bicubic",
):
    """The paper's elastic deformation of an image and its labels (and optionally a weight map).

    One smooth random field per item (:func:`random_displacement_fields`) unless ``field`` is
    given; the image is resampled with ``image_mode`` (bicubic by default; note bicubic can
    overshoot the input range slightly), the mask with nearest neighbour (labels stay labels,
    dtype kept), the weight map bilinearly (no overshoot, stays >= 0). Borders are mirrored.
    ``output(y, x) = input(y + dy, x + dx)``.

    Args:
        image: float tensor (C, H, W) or (N, C, H, W) (any float dtype; channels_last is fine).
        mask: integer/bool tensor (H, W) or (N, H, W), or None.
        weight: float tensor (H, W) or (N, H, W), or None.
        field: optional float displacement field in pixels, (2, H, W) shared by all items or
            (N, 2, H, W); e.g. from :func:`random_displacement_field` or
            :func:`simard_displacement_field`. When given, ``grid_size``, ``std`` and
            ``generator`` are not used.
        grid_size, std: coarse grid size and displacement std in pixels (paper: 3 and 10).
        generator: torch.Generator; same generator state -> same deformation.
        image_mode: "bicubic", "bilinear" or "nearest".
    Returns:
        ``(image, mask)`` -- or ``(image, mask, weight)`` when ``weight`` is given -- with the
        input shapes, dtypes and device (mask None stays None).
    """
    _check_tensor("image", image)
    if not image.is_floating_point():
        raise TypeError(
            f"image must be a floating-point tensor, got {image.dtype}; convert it first, e.g. "
            f"image.float() / 255 for uint8 pictures."
        )
    if image.ndim not in (3, 4):
        raise ValueError(
            f"image must have shape (C, H, W) or (N, C, H, W), got {tuple(image.shape)}; "
            f"add a channel dimension to a grey (H, W) image with image[None]."
        )
    if image_mode not in _IMAGE_MODES:
        raise ValueError(f"image_mode must be one of {_IMAGE_MODES}, got {image_mode!r}.")
    batched = image.ndim == 4
    n = image.shape[0] if batched else 1
    height, width = _check_image_size(*image.shape[-2:])
    map_shape = (n, height, width) if batched else (height, width)
    map_layout = "(N, H, W)" if batched else "(H, W)"

    if mask is not None:
        _check_tensor("mask", mask)
        if mask.is_floating_point() or mask.is_complex():
            raise TypeError(
                f"mask must be an integer tensor of class/instance ids, got {mask.dtype}; "
                f"use mask.long() if it holds whole numbers (pass soft maps as weight=)."
            )
        if tuple(mask.shape) != map_shape:
            raise ValueError(
                f"mask must have shape {map_layout} = {map_shape} to match image "
                f"{tuple(image.shape)}, got {tuple(mask.shape)}. Deform before cropping the "
                f"targets to the network's output size."
            )
        if mask.device != image.device:
            raise ValueError(f"mask is on {mask.device} but image is on {image.device}.")
    if weight is not None:
        _check_tensor("weight", weight)
        if not weight.is_floating_point():
            raise TypeError(f"weight must be a floating-point tensor, got {weight.dtype}.")
        if tuple(weight.shape) != map_shape:
            raise ValueError(
                f"weight must have shape {map_layout} = {map_shape} to match image "
                f"{tuple(image.shape)}, got {tuple(weight.shape)}."
            )
        if weight.device != image.device:
            raise ValueError(f"weight is on {weight.device} but image is on {image.device}.")

    compute_dtype = _compute_dtype(image.dtype)
    if field is None:
        fields = random_displacement_fields(n, height, width, grid_size, std, generator,
                                            device=image.device, dtype=compute_dtype)
    else:
        fields = _check_field(field, n if batched else None, height, width, image.device)
    # One sampling grid serves the image, the mask and the weight map: the same deformation.
    grid = _sampling_grid(fields, compute_dtype).expand(n, -1, -1, -1)

    x = image if batched else image.unsqueeze(0)
    out_image = _sample(x, grid, image_mode)
    out_mask = None
    if mask is not None:
        out_mask = _sample(mask.reshape(n, 1, height, width), grid, "nearest").reshape(mask.shape)
    out_image = out_image if batched else out_image[0]
    if weight is None:
        return out_image, out_mask
    out_weight = _sample(weight.reshape(n, 1, height, width), grid, "bilinear")
    return out_image, out_mask, out_weight.reshape(weight.shape)


# ----------------------------------------------------------------------------------------------
# flips, rotations, grey values and the dataset hook
# ----------------------------------------------------------------------------------------------
def random_flip_rotate(
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
):
    """Random horizontal flip plus a random multiple of 90 degrees, the same for image and mask.

    Square images get one of the 8 symmetries of the square; non-square ones only 0/180 degrees
    (plus the flip), so the shape never changes and batches still stack.

    Args:
        image: tensor (..., H, W), e.g. (C, H, W).
        mask: tensor (..., H, W) with the same H, W, or None.
        generator: torch.Generator for reproducibility.
    Returns:
        (image, mask) with unchanged shapes and dtypes (one random choice for the whole input).
    """
    _check_tensor("image", image)
    if image.ndim < 2:
        raise ValueError(f"image must have shape (..., H, W), got {tuple(image.shape)}.")
    if mask is not None:
        _check_tensor("mask", mask)
        if mask.ndim < 2 or mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"mask must end in the image's (H, W) = {tuple(image.shape[-2:])}, "
                f"got {tuple(mask.shape)}."
            )
    draws = torch.randint(0, 4, (2,), generator=generator, device=_draw_device(generator)).tolist()
    square = image.shape[-1] == image.shape[-2]
    quarter_turns = draws[0] if square else 2 * (draws[0] % 2)
    flip = draws[1] % 2 == 1

    def apply(t: torch.Tensor) -> torch.Tensor:
        if flip:
            t = t.flip(-1)
        return torch.rot90(t, quarter_turns, dims=(-2, -1)) if quarter_turns else t

    return apply(image), (apply(mask) if mask is not None else None)


def intensity_jitter(
    image: torch.Tensor,
    generator: torch.Generator | None = None,
    brightness: float = 0.1,
    contrast: float = 0.1,
) -> torch.Tensor:
    """Random grey-value change per image: ``(image - mean) * c + mean + b``.

    ``c ~ U(1 - contrast, 1 + contrast)`` scales the contrast about the image mean,
    ``b ~ U(-brightness, brightness)`` shifts it (in the image's own units, e.g. 0.1 = 10 % of a
    [0, 1] range). No clipping: clamp afterwards if your images must stay in range.

    Args:
        image: float tensor (C, H, W) or (N, C, H, W); each item gets its own c and b.
    Returns:
        float tensor, same shape/dtype/device.
    """
    _check_tensor("image", image)
    if not image.is_floating_point():
        raise TypeError(f"image must be a floating-point tensor, got {image.dtype}.")
    if image.ndim not in (3, 4):
        raise ValueError(
            f"image must have shape (C, H, W) or (N, C, H, W), got {tuple(image.shape)}."
        )
    brightness = _check_nonnegative("brightness", brightness)
    contrast = _check_nonnegative("contrast", contrast)
    if contrast >= 1:
        raise ValueError(
            f"contrast must be < 1 (the factor 1 - contrast must stay > 0), got {contrast}."
        )
    x = image if image.ndim == 4 else image.unsqueeze(0)
    u = torch.rand((x.shape[0], 2, 1, 1, 1), generator=generator, device=_draw_device(generator))
    u = u.to(device=image.device, dtype=image.dtype) * 2 - 1  # uniform(-1, 1)
    scale = 1 + contrast * u[:, 0]
    shift = brightness * u[:, 1]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    out = (x - mean) * scale + mean + shift
    return out if image.ndim == 4 else out[0]


class ElasticAugment:
    """The paper's training augmentation as a dataset hook: flips/rotations, elastic, grey values.

    ``augment(image, instances, generator=None) -> (image, instances)`` with image a float
    (C, H, W) tensor and instances an integer (H, W) label map of the same H, W (call it before
    cropping targets to the network output). Steps, in order:

    1. ``random_flip_rotate`` (if ``flip_rotate``),
    2. ``elastic_deform`` with probability ``p`` (grid ``grid_size``, std ``std`` pixels),
    3. ``intensity_jitter`` (if ``brightness`` or ``contrast`` > 0) -- the image only.

    Same generator state -> same output. To deform whole batches on the GPU, call
    :func:`elastic_deform` directly.
    """

    def __init__(
        self,
        grid_size: int = 3,
        std: float = 10.0,
        p: float = 1.0,
        *,
        flip_rotate: bool = True,
        brightness: float = 0.1,
        contrast: float = 0.1,
        image_mode: str = "bicubic",
    ):
        self.grid_size = _check_int("grid_size", grid_size, 2)
        self.std = _check_nonnegative("std", std)
        p = _check_nonnegative("p", p)
        if p > 1:
            raise ValueError(f"p is a probability and must be in [0, 1], got {p}.")
        self.p = p
        self.flip_rotate = bool(flip_rotate)
        self.brightness = _check_nonnegative("brightness", brightness)
        self.contrast = _check_nonnegative("contrast", contrast)
        if self.contrast >= 1:
            raise ValueError(f"contrast must be < 1, got {self.contrast}.")
        if image_mode not in _IMAGE_MODES:
            raise ValueError(f"image_mode must be one of {_IMAGE_MODES}, got {image_mode!r}.")
        self.image_mode = image_mode

    def __call__(
        self,
        image: torch.Tensor,
        instances: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        """Augment one sample: image float (C, H, W), instances int (H, W) or None."""
        _check_tensor("image", image)
        if image.ndim != 3:
            raise ValueError(
                f"ElasticAugment works on one sample with image shape (C, H, W), got "
                f"{tuple(image.shape)}; for batches call elastic_deform directly."
            )
        if self.flip_rotate:
            image, instances = random_flip_rotate(image, instances, generator)
        if self.p > 0:
            coin = 0.0 if self.p >= 1 else float(
                torch.rand((), generator=generator, device=_draw_device(generator)))
            if coin < self.p:
                image, instances = elastic_deform(
                    image, instances, grid_size=self.grid_size, std=self.std,
                    generator=generator, image_mode=self.image_mode,
                )
        if self.brightness > 0 or self.contrast > 0:
            image = intensity_jitter(image, generator, self.brightness, self.contrast)
        return image, instances

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(grid_size={self.grid_size}, std={self.std}, p={self.p}, "
            f"flip_rotate={self.flip_rotate}, brightness={self.brightness}, "
            f"contrast={self.contrast}, image_mode={self.image_mode!r})"
        )
