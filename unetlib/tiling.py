"""Overlap-tile inference: segment an image of any size with bounded memory.

The idea (Ronneberger et al. 2015, Fig. 2): a valid-padding U-Net maps a 572x572 input tile
to a 388x388 output; the 92 px lost on each side are the *context* the network needs.
To segment a large image we

1. mirror-pad the image so border pixels get context too (``reflect_indices``);
2. cut input tiles whose **outputs abut exactly** (``tile_grid``);
3. run the tiles in small batches and write each output into a preallocated result.

Only one mini-batch of tiles is ever in memory, so an 8192x8192 image costs no more
activation memory than a 572x572 one.

Two details make the result *identical* to running the network on the whole (mirror-padded)
image at once, not just seam-free to the eye:

* **Pooling alignment.** Each 2x2 max-pool groups pixels in pairs. A tile that starts at an
  odd pixel groups them differently from a tile that starts at an even one. After ``depth``
  poolings, tiles must start at multiples of ``2**depth`` (16 for depth 4) to group pixels
  the same way. So the stride between tiles is the output size rounded *down* to a multiple
  of ``2**depth``: a 572 tile gives 388 output pixels, and we keep the central 384 of them
  (outputs of neighbouring tiles overlap by 4 px; we keep each pixel exactly once).
* **Same-padding networks** (output size == input size) zero-pad inside every convolution.
  Pixels near a tile's edge therefore see zeros instead of their real neighbours, which
  shows up as seams. We keep only the centre of each tile and throw away a ``margin`` on
  every side; with the default margin (half the valid context rounded up to ``2**depth``,
  96 px for depth 4) the kept pixels never see a tile edge, so no seams appear.

* **Bilinear upsampling** (``up_mode="bilinear"``) clamps at the border of every upsampled
  map, so the outermost ``2**depth - 1`` output pixels of a tile differ from a whole-image
  prediction (measured). For such nets the tiler also discards a margin of ``2**depth`` px,
  and the result is exact again. The paper's transposed convolutions need no margin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .device import autocast_context, resolve_device, speed_settings

__all__ = ["TilePlan", "tile_grid", "reflect_indices", "plan_tiles", "predict_tiled", "mirror_pad"]

_OUTPUTS = ("probs", "logits", "labels")


# --------------------------------------------------------------------------------------
# Small, separately testable pieces
# --------------------------------------------------------------------------------------
def tile_grid(height: int, width: int, out_tile: int, stride: Optional[int] = None) -> List[Tuple[int, int]]:
    """Origins (y, x) of the output tiles that cover a ``height`` x ``width`` image.

    Tiles are ``out_tile`` pixels wide and placed every ``stride`` pixels (default: ``out_tile``,
    so they abut exactly). The last row/column of tiles may stick out past the image; the part
    outside is simply not written. Row-major order: ``[(0, 0), (0, stride), ...]``.
    """
    for name, value in (("height", height), ("width", width), ("out_tile", out_tile)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    stride = out_tile if stride is None else stride
    if not isinstance(stride, (int, np.integer)) or not 1 <= stride <= out_tile:
        raise ValueError(f"stride must be an int in [1, out_tile={out_tile}], got {stride!r} (a larger stride leaves gaps)")
    return [(y, x) for y in range(0, height, stride) for x in range(0, width, stride)]


def reflect_indices(start: int, stop: int, size: int) -> torch.Tensor:
    """Source pixel for each coordinate in ``[start, stop)`` of an image ``size`` pixels long.

    Coordinates outside ``[0, size)`` are mirrored at the border without repeating the edge
    pixel (like ``numpy.pad(mode="reflect")``), as often as needed: a pad wider than the image
    reflects back and forth. Returns an int64 tensor of length ``stop - start``.

    >>> reflect_indices(-2, 5, 3).tolist()
    [2, 1, 0, 1, 2, 1, 0]
    """
    coords = torch.arange(start, stop, dtype=torch.int64)
    if size == 1:
        return torch.zeros_like(coords)
    period = 2 * (size - 1)  # 0,1,..,size-1,size-2,..,1 then it repeats
    coords = coords.remainder(period)
    return torch.where(coords < size, coords, period - coords)


def mirror_pad(image: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Mirror-pad the last two dims of ``image`` (..., H, W) by any amount (repeated reflection).

    Unlike ``torch.nn.functional.pad(mode="reflect")`` the pads may exceed the image size.
    """
    height, width = image.shape[-2:]
    rows = reflect_indices(-top, height + bottom, height).to(image.device)
    cols = reflect_indices(-left, width + right, width).to(image.device)
    return image.index_select(-2, rows).index_select(-1, cols)


@dataclass(frozen=True)
class TilePlan:
    """How a network is tiled.

    tile_size : input tile height/width fed to the network.
    out_size  : output height/width the network returns for one tile.
    keep_start: first output pixel (in the tile's output) that is kept.
    stride    : kept pixels per tile = distance between tiles (multiple of ``align``).
    lead      : image pixels between a tile's input origin and its first kept pixel
                (= context of a valid net + keep_start); the image is mirror-padded by this.
    align     : total down-sampling factor (``2**depth``); tile origins are multiples of it.
    """

    tile_size: int
    out_size: int
    keep_start: int
    stride: int
    lead: int
    align: int


# --------------------------------------------------------------------------------------
# Reading what we need from a model
# --------------------------------------------------------------------------------------
def _model_depth(model: nn.Module) -> Optional[int]:
    depth = getattr(model, "depth", None)
    return int(depth) if isinstance(depth, (int, np.integer)) else None


def _model_align(model: nn.Module) -> int:
    for attr in ("downsampling_factor", "output_stride", "stride"):
        value = getattr(model, attr, None)
        if isinstance(value, (int, np.integer)) and value >= 1:
            return int(value)
    depth = _model_depth(model)
    return 2**depth if depth is not None else 32  # FCN-style backbones pool 5 times


def _model_output_size(model: nn.Module, size: int) -> int:
    if hasattr(model, "output_size"):
        return int(model.output_size(size))
    return size  # a model without the method is assumed to keep the size (same padding)


def _model_context(model: nn.Module) -> Optional[int]:
    """Pixels a valid U-Net of this depth loses (184 for depth 4), whatever its padding."""
    depth = _model_depth(model)
    if depth is None:
        return None
    try:
        from .shapes import unet_context

        return int(unet_context(depth))
    except ImportError:
        # Each level loses 4 px in two 3x3 convs on the way down and up, scaled by 2**level:
        # 4*(2**d - 1) down + 4*2**d at the bottom + 4*(2**d - 1) up = 12*2**d - 8.
        return 12 * 2**depth - 8


def _default_margin(model: nn.Module, align: int) -> int:
    """Same-padding nets: discard this many px per tile side so kept pixels never see a tile
    edge. A pixel depends on about half the valid context on each side (92 px for depth 4);
    +1 and rounding up to ``align`` cover the pooling phase (96 px for depth 4)."""
    half_context = (_model_context(model) or 2 * align) / 2 + 1
    return math.ceil(half_context / align) * align


def _lost_pixels(model: nn.Module) -> int:
    """Input minus output size of one tile: the full context of a valid net, 0 for same."""
    for size in range(512, 1024):
        if _is_valid_tile(model, size):
            return size - _model_output_size(model, size)
    raise ValueError("could not find any valid input size between 512 and 1023 for this model")


def _valid_tile_sizes(model: nn.Module, lo: int, hi: int) -> List[int]:
    return [s for s in range(lo, hi + 1) if _is_valid_tile(model, s)]


def _is_valid_tile(model: nn.Module, size: int) -> bool:
    try:
        if hasattr(model, "check_input_size"):
            model.check_input_size(size, size)
        out = _model_output_size(model, size)
    except ValueError:
        return False
    return out >= 1


def plan_tiles(
    model: nn.Module,
    tile_size: Optional[int] = None,
    image_size: Optional[Tuple[int, int]] = None,
    margin: Optional[int] = None,
) -> TilePlan:
    """Decide tile size, stride and padding for ``model`` (see the module docstring).

    ``tile_size=None`` picks a default: for a valid net the smallest valid tile whose output is
    at least twice the context (556 -> 372 for depth 4), for a same net 512; in both cases no
    larger than needed to cover ``image_size`` (H, W) with one tile. ``margin`` is the number
    of output pixels discarded on each side of a tile (default: none for a valid net with
    transposed convolutions, ``2**depth`` with bilinear upsampling, about half the valid
    context for a same-padding net; rounded up to a multiple of ``2**depth``).
    A given ``tile_size`` larger than needed to cover ``image_size`` with one tile is lowered
    to the smallest valid tile that still does (a huge tile on a small image would only
    allocate a huge, mostly mirrored, buffer; for valid padding the result is the same).
    Raises ValueError when ``tile_size`` is not a valid input size for the model.
    """
    align = _model_align(model)
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
            raise ValueError(f"margin must be a non-negative int, got {margin!r}")
        margin = math.ceil(margin / align) * align  # keeps tile origins on the pooling grid
    if tile_size is None:
        context = _lost_pixels(model)
        if context > 0:  # valid padding
            need = max(2 * context, 1)
            if image_size is not None:
                need = min(need, max(image_size) + align)
            candidates = _valid_tile_sizes(model, context + 1, context + need + 4 * align)
            tile_size = next((s for s in candidates if _model_output_size(model, s) >= need), candidates[-1])
        else:
            default_margin = _default_margin(model, align) if margin is None else margin
            tile_size = 512
            if image_size is not None:
                tile_size = min(tile_size, math.ceil((max(image_size) + 2 * default_margin) / align) * align)
            tile_size = max(tile_size, 2 * default_margin + align)
    else:
        plan = _plan_for(model, tile_size, margin, align)
        if image_size is not None and plan.stride >= max(image_size):
            plan = _smallest_covering_plan(model, plan, max(image_size), margin, align)
        return plan
    return _plan_for(model, tile_size, margin, align)


def _smallest_covering_plan(model: nn.Module, plan: TilePlan, need: int, margin: Optional[int], align: int
                            ) -> TilePlan:
    """The plan with the smallest tile whose kept block (stride) still covers ``need`` px."""
    if plan.out_size == plan.tile_size and margin is None:
        # same padding: keep the margin the big tile had, so the kept pixels stay as far from
        # a tile edge (a smaller tile would otherwise shrink its default margin)
        margin = min(_default_margin(model, align), ((plan.tile_size - align) // 2 // align) * align)
    # stride <= output <= tile, so no tile below `need` can do; the search ends within about
    # one context + 2 alignments above it.
    for size in range(max(1, need), plan.tile_size):
        if not _is_valid_tile(model, size):
            continue
        try:
            candidate = _plan_for(model, size, margin, align)
        except ValueError:  # too small for the alignment or the margin
            continue
        if candidate.stride >= need:
            return candidate
    return plan


def _plan_for(model: nn.Module, tile_size, margin: Optional[int], align: int) -> TilePlan:
    """The :class:`TilePlan` for one given tile size (margin already rounded to ``align``)."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")
    tile_size = int(tile_size)
    if hasattr(model, "check_input_size"):
        model.check_input_size(tile_size, tile_size)  # raises ValueError naming valid sizes
    out_size = _model_output_size(model, tile_size)
    if out_size < 1:
        raise ValueError(f"tile_size {tile_size} is too small for this model (output would be {out_size} px)")

    if out_size < tile_size:  # valid padding: every output pixel has full context
        if margin is None:  # bilinear upsampling clamps at tile borders: 2**depth - 1 px differ
            margin = align if getattr(model, "up_mode", "transpose") == "bilinear" else 0
        context_half = (tile_size - out_size) // 2
        stride = ((out_size - 2 * margin) // align) * align
        if stride < 1:
            raise ValueError(
                f"tile_size {tile_size} gives only {out_size} output px, too few for the pooling "
                f"alignment {align} (and margin {margin}); use a larger tile"
            )
        keep_start = margin + (out_size - 2 * margin - stride) // 2
        lead = context_half + keep_start
    else:  # same padding: discard a margin on every side
        if margin is None:  # shrink the default margin if the tile is too small for it
            margin = min(_default_margin(model, align), ((tile_size - align) // 2 // align) * align)
        if margin < 0 or tile_size - 2 * margin < align:
            raise ValueError(
                f"margin {margin} leaves fewer than {align} px of a {tile_size} px tile; "
                f"use a larger tile_size or a smaller margin"
            )
        stride = ((tile_size - 2 * margin) // align) * align
        keep_start = (tile_size - stride) // 2
        keep_start -= keep_start % align  # tile origins must stay multiples of align
        lead = keep_start
    return TilePlan(tile_size=tile_size, out_size=out_size, keep_start=keep_start, stride=stride, lead=lead, align=align)


# --------------------------------------------------------------------------------------
# The tiled prediction itself
# --------------------------------------------------------------------------------------
def _as_chw(image) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if image.dtype == object:
            raise TypeError("image must be a numeric array")
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor or numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3:
        raise ValueError(
            f"image must have shape (C, H, W) or (H, W), got {tuple(image.shape)}; "
            "for a batch, call predict_tiled once per image"
        )
    if image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ValueError(f"image is empty: shape {tuple(image.shape)}")
    if image.is_complex() or image.dtype == torch.bool:
        raise TypeError(f"image dtype {image.dtype} is not supported; pass a real-valued image")
    return image


def _convert_logits(logits: torch.Tensor, output: str) -> torch.Tensor:
    """(N, K, h, w) logits -> probs/logits (N, K, h, w) or uint8 labels (N, h, w)."""
    num_classes = logits.shape[1]
    if output == "logits":
        return logits
    if output == "probs":
        return torch.sigmoid(logits) if num_classes == 1 else torch.softmax(logits, dim=1)
    if num_classes == 1:
        labels = logits[:, 0] > 0  # sigmoid(logit) > 0.5
    elif num_classes == 2:
        labels = logits[:, 1] > logits[:, 0]  # = argmax (ties -> 0), much cheaper than argmax
    else:
        labels = logits.argmax(dim=1)
    return labels.to(torch.uint8)


@torch.no_grad()
def predict_tiled(
    model: nn.Module,
    image,
    tile_size: Optional[int] = None,
    batch_size: int = 4,
    device: "str | torch.device | None" = None,
    amp: bool = False,
    output: str = "probs",
    margin: Optional[int] = None,
    channels_last: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Segment ``image`` of any size with overlap-tile inference.

    Args:
        model: a segmentation net mapping (N, C, T, T) to (N, K, T_out, T_out) logits, e.g.
            ``unetlib.models.UNet`` (valid or same padding) or ``FCN``.
        image: (C, H, W) or (H, W) tensor/array, already normalised like the training data.
        tile_size: input tile size (see :func:`plan_tiles` for the default).
        batch_size: tiles per forward pass; peak memory grows with it, not with the image.
        device: where to run; None = the model's device.
        amp: bf16 (CPU/new GPUs) or fp16 autocast for speed; results differ slightly.
        output: ``"probs"`` -> float32 (K, H, W) softmax probabilities (sigmoid for K=1);
            ``"logits"`` -> float32 (K, H, W) raw scores (float64 for a float64 model); ``"labels"`` -> uint8 (H, W) class ids
            (argmax, or probability > 0.5 for K=1), 1 byte per pixel for huge images.
        margin: output pixels discarded at each tile side (see :func:`plan_tiles`).
        channels_last: run tiles in NHWC memory format (faster on CPU with oneDNN).
        progress: show a tqdm bar over tile batches.

    Returns:
        A CPU tensor with exactly the input's height and width (see ``output``).
    """
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    image = _as_chw(image)
    channels, height, width = image.shape
    expected_channels = getattr(model, "in_channels", None)
    if isinstance(expected_channels, int) and expected_channels != channels:
        raise ValueError(
            f"image has {channels} channel(s) but the model expects {expected_channels}; "
            "pass (C, H, W) with the right C (a grey image may be (H, W))"
        )
    plan = plan_tiles(model, tile_size, (height, width), margin)

    param = next(model.parameters(), None)
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    else:
        device = resolve_device(device)
        model.to(device)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    autocast = autocast_context(speed_settings(device, amp=bool(amp)))

    origins = tile_grid(height, width, plan.stride, plan.stride)
    result: Optional[torch.Tensor] = None  # allocated once we know the number of classes
    was_training = model.training
    model.eval()
    try:
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(origins), desc="tiles", unit="tile")
        for first in range(0, len(origins), batch_size):
            batch_origins = origins[first : first + batch_size]
            tiles = []
            for y, x in batch_origins:
                # Input tile: starts `lead` px before the first kept output pixel.
                rows = reflect_indices(y - plan.lead, y - plan.lead + plan.tile_size, height)
                cols = reflect_indices(x - plan.lead, x - plan.lead + plan.tile_size, width)
                tiles.append(image.index_select(1, rows).index_select(2, cols))
            batch = torch.stack(tiles).to(device=device, dtype=dtype, non_blocking=True)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = model(batch)
            if logits.shape[-2:] != (plan.out_size, plan.out_size):
                raise ValueError(
                    f"model returned {tuple(logits.shape[-2:])} for a {plan.tile_size} tile, "
                    f"expected {plan.out_size}; does its output_size() match its forward()?"
                )
            # Keep only the central `stride` x `stride` block of every tile's output.
            k, n = plan.keep_start, plan.stride
            kept = logits[:, :, k : k + n, k : k + n]
            if kept.dtype != torch.float64:
                kept = kept.float()  # bf16/fp16 under autocast; float64 models stay exact
            kept = _convert_logits(kept, output).cpu()
            if result is None:  # now we know the number of classes and the dtype
                shape = (height, width) if output == "labels" else (kept.shape[1], height, width)
                result = torch.empty(shape, dtype=kept.dtype)
            for (y, x), piece in zip(batch_origins, kept):
                h, w = min(n, height - y), min(n, width - x)  # edge tiles stick out of the image
                result[..., y : y + h, x : x + w] = piece[..., :h, :w]
            if bar is not None:
                bar.update(len(batch_origins))
        if bar is not None:
            bar.close()
    finally:
        model.train(was_training)
    return result
