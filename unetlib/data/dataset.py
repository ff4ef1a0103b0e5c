"""Torch datasets that cut training tiles the way the paper's overlap-tile strategy does.

With *valid* padding a U-Net returns a smaller map than it is given (572 in,
388 out).  So each training item is an input tile plus the smaller, centred
label tile that the network's output covers.  The label tile can sit anywhere
on the image, including its borders: the image is mirror-padded by the
missing context, as the paper does at inference time.

Items follow the project's data sample contract::

    {"image": float32 (C, H_in, W_in), "mask": int64 (H_out, W_out),
     "weight": float32 (H_out, W_out), "instances": int32 (H_out, W_out)}

Weight maps: without an ``augment`` hook the paper weight map is computed once
per source image (in ``__init__``) and cropped with the labels.  With a hook
(elastic deformation) the instance labels move, so the weight map is
recomputed on the deformed label crop (with enough surrounding context that it
equals the full-image map up to ``1e-6``).

Randomness: item ``index`` in epoch ``epoch`` uses
``np.random.default_rng([seed, epoch, index])``, so results do not depend on
the DataLoader worker count or order.  Call ``set_epoch(e)`` each epoch to get
new tiles.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..weights import balanced_class_weights, weight_map
from .io import DatasetError, LabeledImage, instances_to_classes

__all__ = [
    "TileDataset",
    "GridTileDataset",
    "WholeImageDataset",
    "split_holdout",
    "resolve_output_size",
]

Size = Union[int, tuple[int, int]]


def _pair(size: Size, name: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an int or (height, width), got {size!r}.") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be positive, got {size!r}.")
    return h, w


def resolve_output_size(input_size: Size, output_size: Optional[Size] = None, depth: int = 4,
                        padding: str = "valid") -> tuple[int, int]:
    """Label-tile size (H_out, W_out) for an input tile size.

    Uses ``output_size`` when given (e.g. ``model.output_size(h)``), otherwise
    ``unetlib.shapes.unet_output_size(input, depth, padding)``.
    """
    ih, iw = _pair(input_size, "input_size")
    if output_size is not None:
        oh, ow = _pair(output_size, "output_size")
    else:
        try:
            from ..shapes import unet_output_size
        except ImportError as exc:  # pragma: no cover - only while shapes.py is missing
            raise ImportError(
                "unetlib.shapes is not available; pass output_size=model.output_size(input_size)."
            ) from exc
        # Raises a ValueError naming the nearest valid sizes if the tile does not fit the U-Net.
        oh, ow = unet_output_size((ih, iw), depth=depth, padding=padding)
    if oh > ih or ow > iw:
        raise ValueError(f"output_size {oh}x{ow} is larger than input_size {ih}x{iw}.")
    if (ih - oh) % 2 or (iw - ow) % 2:
        raise ValueError(
            f"input_size {ih}x{iw} and output_size {oh}x{ow} differ by an odd number of pixels; "
            "the label tile must be centred in the input tile."
        )
    return oh, ow


def _check_sources(sources: Sequence[LabeledImage]) -> list[LabeledImage]:
    sources = list(sources)
    if not sources:
        raise DatasetError("the dataset has no images; check the folder or the holdout split.")
    for s in sources:
        if not isinstance(s, LabeledImage):
            raise TypeError(
                f"sources must be LabeledImage objects (from load_folder, load_isbi_stacks or "
                f"make_synthetic_dataset), got {type(s).__name__}."
            )
    channels = {s.image.shape[0] for s in sources}
    if len(channels) > 1:
        raise DatasetError(f"images have different channel counts {sorted(channels)}; load them with color='gray'.")
    return sources


def _to_item(image, instances, weight, instance_classes=None) -> dict:
    instances = np.ascontiguousarray(instances)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
        # class 1 = cell for binary masks; class masks map each instance to its class
        "mask": torch.from_numpy(instances_to_classes(instances, instance_classes)),
        "weight": torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)),
        "instances": torch.from_numpy(instances.astype(np.int32)),
    }


class _TileBase(Dataset):
    def __init__(self, sources, input_size, output_size, depth, padding, w0, sigma, class_weights):
        self.sources = _check_sources(sources)
        self.input_size = _pair(input_size, "input_size")
        self.output_size = resolve_output_size(input_size, output_size, depth, padding)
        self.context = ((self.input_size[0] - self.output_size[0]) // 2,
                        (self.input_size[1] - self.output_size[1]) // 2)
        self.weight_kwargs = dict(w0=w0, sigma=sigma, class_weights=class_weights)
        oh, ow = self.output_size
        for s in self.sources:
            if s.shape[0] < oh or s.shape[1] < ow:
                raise DatasetError(
                    f"{s.name}: image is {s.shape[0]}x{s.shape[1]} but the label tile is {oh}x{ow}; "
                    "use a smaller input_size or larger images."
                )
        self._weights: Optional[list[np.ndarray]] = None
        self._padded: Optional[list[np.ndarray]] = None

    @property
    def in_channels(self) -> int:
        """Number of image channels C."""
        return self.sources[0].image.shape[0]

    def weights(self) -> list[np.ndarray]:
        """Cached full-image weight maps, one float32 (H, W) per source."""
        if self._weights is None:
            self._weights = [weight_map(s.instances, **self.weight_kwargs) for s in self.sources]
        return self._weights

    def _padded_images(self) -> list[np.ndarray]:
        if self._padded is None:
            cy, cx = self.context
            self._padded = [
                np.pad(s.image, ((0, 0), (cy, cy), (cx, cx)), mode="reflect") if (cy or cx) else s.image
                for s in self.sources
            ]
        return self._padded

    def _crop(self, source_index: int, y0: int, x0: int):
        """Input tile whose centred label tile starts at (y0, x0) in image coordinates."""
        (ih, iw), (oh, ow) = self.input_size, self.output_size
        src = self.sources[source_index]
        image = self._padded_images()[source_index][:, y0 : y0 + ih, x0 : x0 + iw]
        instances = src.instances[y0 : y0 + oh, x0 : x0 + ow]
        weight = self.weights()[source_index][y0 : y0 + oh, x0 : x0 + ow]
        return image, instances, weight


class TileDataset(_TileBase):
    """Random training tiles with flips, 90-degree rotations and an optional deformation hook.

    Args:
        sources: list of :class:`LabeledImage`.
        input_size: input tile size, int or (H_in, W_in).
        output_size: label tile size (e.g. ``model.output_size(H_in)``); by
            default from ``unetlib.shapes.unet_output_size(input_size, depth, padding)``.
        depth, padding: used only to derive ``output_size``.
        samples_per_epoch: dataset length; default = tiles needed to cover every
            image once (sum of ceil(H/H_out) * ceil(W/W_out)).
        seed: base seed; item ``i`` of epoch ``e`` is a pure function of (seed, e, i).
        flips, rotations: random horizontal/vertical flips and 90-degree turns
            (rotations only for square tiles).
        augment: optional ``f(image, instances) -> (image, instances)`` applied
            before cropping to a region = input tile + ``augment_margin`` on each
            side; ``image`` is a float32 tensor (C, h, w), ``instances`` an int64
            tensor (h, w).  If ``f`` accepts a ``generator`` keyword it gets a
            seeded ``torch.Generator``.  The weight map is recomputed afterwards.
        augment_margin: extra pixels around the input tile handed to ``augment``
            so that the deformation can pull in content from outside the tile.
        w0, sigma, class_weights: weight map parameters (see :func:`unetlib.weights.weight_map`).

    Items: ``{"image": float32 (C, H_in, W_in), "mask": int64 (H_out, W_out),
    "weight": float32 (H_out, W_out), "instances": int32 (H_out, W_out)}``.
    """

    def __init__(
        self,
        sources: Sequence[LabeledImage],
        input_size: Size,
        output_size: Optional[Size] = None,
        *,
        depth: int = 4,
        padding: str = "valid",
        samples_per_epoch: Optional[int] = None,
        seed: int = 0,
        flips: bool = True,
        rotations: bool = True,
        augment: Optional[Callable] = None,
        augment_margin: int = 32,
        w0: float = 10.0,
        sigma: float = 5.0,
        class_weights="balanced",
    ):
        super().__init__(sources, input_size, output_size, depth, padding, w0, sigma, class_weights)
        oh, ow = self.output_size
        if samples_per_epoch is None:
            samples_per_epoch = sum(math.ceil(s.shape[0] / oh) * math.ceil(s.shape[1] / ow) for s in self.sources)
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}.")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be callable f(image, instances) -> (image, instances), got {augment!r}.")
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self.epoch = 0
        self.flips = flips
        self.rotations = rotations and self.input_size[0] == self.input_size[1]
        self.augment = augment
        self.augment_margin = int(augment_margin)
        self._augment_takes_generator = _accepts_generator(augment)
        # Border-term reach: beyond it the weight map is exact to 1e-6, so a crop this much
        # larger than the label tile gives the same weights as the whole image.
        self._weight_context = int(math.ceil(sigma * math.sqrt(2 * math.log(max(w0, 1e-6) / 1e-6)))) + 1
        self._padded_instances: Optional[list[np.ndarray]] = None
        if augment is None:
            # Compute once here, so forked DataLoader workers share them instead of each redoing it.
            self.weights()
            self._padded_images()

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch; tiles of different epochs differ, the same epoch repeats exactly."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> np.random.Generator:
        """The numpy Generator used for item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items.")
        rng = self.generator(index)
        # Pick an image with probability proportional to its area, then a label-tile position.
        areas = np.array([s.shape[0] * s.shape[1] for s in self.sources], dtype=np.float64)
        k = int(rng.choice(len(self.sources), p=areas / areas.sum()))
        (oh, ow), (h, w) = self.output_size, self.sources[k].shape
        y0 = int(rng.integers(0, h - oh + 1))
        x0 = int(rng.integers(0, w - ow + 1))
        if self.augment is None:
            image, instances, weight = self._crop(k, y0, x0)
        else:
            image, instances, weight = self._crop_augmented(k, y0, x0, rng)
        image, instances, weight = self._flip_rotate(rng, image, instances, weight)
        return _to_item(image, instances, weight, self.sources[k].instance_classes)

    def _flip_rotate(self, rng, image, instances, weight):
        if self.flips:
            if rng.random() < 0.5:
                image, instances, weight = image[..., ::-1], instances[..., ::-1], weight[..., ::-1]
            if rng.random() < 0.5:
                image, instances, weight = image[..., ::-1, :], instances[::-1], weight[::-1]
        if self.rotations:
            turns = int(rng.integers(0, 4))
            if turns:
                image = np.rot90(image, turns, axes=(-2, -1))
                instances, weight = np.rot90(instances, turns), np.rot90(weight, turns)
        return image, instances, weight

    def _crop_augmented(self, k: int, y0: int, x0: int, rng: np.random.Generator):
        (ih, iw), (oh, ow) = self.input_size, self.output_size
        cy, cx = self.context
        m = self.augment_margin
        if self._padded_instances is None:
            # Pad image and labels identically (mirror), by context + margin, once per source.
            self._padded_instances = []
            self._padded_aug_images = []
            for s in self.sources:
                self._padded_aug_images.append(
                    np.pad(s.image, ((0, 0), (cy + m, cy + m), (cx + m, cx + m)), mode="reflect"))
                self._padded_instances.append(
                    np.pad(s.instances, ((cy + m, cy + m), (cx + m, cx + m)), mode="reflect"))
        # Region = input tile + margin; in padded coordinates it starts at (y0, x0).
        image = torch.from_numpy(np.ascontiguousarray(
            self._padded_aug_images[k][:, y0 : y0 + ih + 2 * m, x0 : x0 + iw + 2 * m]))
        instances = torch.from_numpy(
            self._padded_instances[k][y0 : y0 + ih + 2 * m, x0 : x0 + iw + 2 * m].astype(np.int64))
        if self._augment_takes_generator:
            g = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
            out = self.augment(image, instances, generator=g)
        else:
            out = self.augment(image, instances)
        try:
            image_t, instances_t = out
        except (TypeError, ValueError):
            raise TypeError("augment must return a pair (image, instances).") from None
        image_a = _numpy(image_t).astype(np.float32, copy=False)
        instances_a = _numpy(instances_t)
        if image_a.shape != image.shape or instances_a.shape != instances.shape:
            raise ValueError(
                f"augment changed the shapes: image {tuple(image.shape)} -> {image_a.shape}, instances "
                f"{tuple(instances.shape)} -> {instances_a.shape}; it must keep them."
            )
        image_tile = image_a[:, m : m + ih, m : m + iw]
        # Weight map on the deformed labels with enough context around the label tile.
        ry, rx = min(m + cy, self._weight_context), min(m + cx, self._weight_context)
        ly, lx = m + cy, m + cx  # label tile start inside the region
        region = instances_a[ly - ry : ly + oh + ry, lx - rx : lx + ow + rx].astype(np.int64)
        kwargs = dict(self.weight_kwargs, class_weights=self._source_class_weights(k))
        weight = weight_map(region, **kwargs)[ry : ry + oh, rx : rx + ow]
        instances_tile = region[ry : ry + oh, rx : rx + ow]
        return image_tile, instances_tile, weight


    def _source_class_weights(self, k: int):
        """Class weights of the whole source image, so tiles do not re-balance on their own crop."""
        cw = self.weight_kwargs["class_weights"]
        if cw != "balanced":
            return cw
        return balanced_class_weights(self.sources[k].instances > 0)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _accepts_generator(fn) -> bool:
    if fn is None:
        return False
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class GridTileDataset(_TileBase):
    """Deterministic tiles whose label tiles cover every image (validation with tile-sized inputs).

    Label tiles are laid on a regular grid with stride ``output_size``; the last
    row/column is shifted inwards to end at the image border (so they overlap
    there).  No augmentation.  Same item format and arguments as
    :class:`TileDataset`; each item also has ``"source"`` (int index) and
    ``"position"`` (int64 tensor [y0, x0] of the label tile).
    """

    def __init__(self, sources, input_size, output_size=None, *, depth=4, padding="valid",
                 w0=10.0, sigma=5.0, class_weights="balanced"):
        super().__init__(sources, input_size, output_size, depth, padding, w0, sigma, class_weights)
        oh, ow = self.output_size
        self.positions = []
        for k, s in enumerate(self.sources):
            for y0 in _grid(s.shape[0], oh):
                for x0 in _grid(s.shape[1], ow):
                    self.positions.append((k, y0, x0))
        self.weights()
        self._padded_images()

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> dict:
        k, y0, x0 = self.positions[index]
        item = _to_item(*self._crop(k, y0, x0), self.sources[k].instance_classes)
        item["source"] = k
        item["position"] = torch.tensor([y0, x0], dtype=torch.int64)
        return item


def _grid(length: int, tile: int) -> list[int]:
    starts = list(range(0, length - tile + 1, tile))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


class WholeImageDataset(Dataset):
    """Whole images for evaluation (no tiling, no augmentation).

    Items: ``{"image": float32 (C, H, W), "mask": int64 (H, W), "weight":
    float32 (H, W), "instances": int32 (H, W), "name": str}``.  Images of
    different sizes cannot be stacked, so use ``batch_size=1``.  A valid-padding
    model needs overlap-tile inference (mirror padding + tiles) to predict the
    whole (H, W) map.
    """

    def __init__(self, sources: Sequence[LabeledImage], *, w0=10.0, sigma=5.0, class_weights="balanced"):
        self.sources = _check_sources(sources)
        self.weight_kwargs = dict(w0=w0, sigma=sigma, class_weights=class_weights)
        self._weights = [weight_map(s.instances, **self.weight_kwargs) for s in self.sources]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        s = self.sources[index]
        item = _to_item(s.image, s.instances, self._weights[index], s.instance_classes)
        item["name"] = s.name
        return item


def split_holdout(items: Sequence, fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split ``items`` into (train, holdout) lists at random, reproducibly.

    The holdout gets ``round(fraction * n)`` items, but at least 1 and at most
    ``n - 1`` (both sides are non-empty).  Order within each part follows the
    original order.
    """
    items = list(items)
    n = len(items)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1 (exclusive), got {fraction}.")
    if n < 2:
        raise ValueError(
            f"need at least 2 items to hold some out, got {n}. Provide a separate validation set "
            "or more images (tiles of one image overlap, so splitting them would leak)."
        )
    n_val = min(max(int(round(fraction * n)), 1), n - 1)
    chosen = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    train = [x for i, x in enumerate(items) if i not in chosen]
    holdout = [x for i, x in enumerate(items) if i in chosen]
    return train, holdout
