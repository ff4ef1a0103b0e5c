"""Training, evaluation and prediction: the one code path behind notebooks and the CLI.

Quick start (notebook)::

    from unetlib.train import TrainConfig, fit, evaluate, load_model
    history = fit(TrainConfig(epochs=2, steps_per_epoch=50))     # synthetic cells
    history[-1]["val_iou"], history.model                        # last epoch, trained net

``python -m unetlib train ...`` builds a :class:`TrainConfig` from its flags and calls
:func:`fit` - nothing else - so what a notebook shows is what the CLI does.

Defaults (``TrainConfig()`` = ``python -m unetlib train``) are tuned for a 2-core CPU: a
depth-2 U-Net with 16 base channels and BatchNorm, valid padding, 140 px tiles (100 px
output), batch 8, 6 epochs x 50 steps of Adam (lr 2e-3, warm-up + cosine), loss
"wce+dice". On the synthetic cells this reaches a held-out foreground IoU above 0.9 after
about 150 steps. The paper's network is ``depth=4, base_channels=64, batch_norm=False``.

Design choices (and why):

* **Data.** ``config.data`` is ``"synthetic"`` (cells from :mod:`unetlib.data.synthetic`) or
  a folder ``DIR/images`` + ``DIR/masks``. Without ``val_data`` a part is held out: 20 % of
  the folder's images, or, for synthetic data, a *separate seeded set* of images. Every
  synthetic image is percentile-normalised like images read from files, so a model trained
  on synthetic data sees the same value range when it later predicts PNG files.
* **Tiles.** Training uses random input tiles of ``config.tile`` px whose label tile is the
  network's output size (:class:`unetlib.data.TileDataset`, item ``i`` of epoch ``e`` is a
  pure function of ``(seed, e, i)``). Validation runs overlap-tile inference on whole images
  (:func:`unetlib.tiling.predict_tiled`), exactly as prediction does.
* **Optimiser.** Adam (default, lr 2e-3) converges in a few hundred steps, which the course
  needs on a CPU. The paper used SGD with momentum 0.99 and a batch of one large tile
  (``optimizer="sgd"``, try lr 1e-2). **LR schedule:** linear warm-up over the first 5 %
  of steps, then cosine decay to 1 % of the peak ("cosine", default), "onecycle" or
  "constant".
* **Speed.** :func:`unetlib.device.speed_settings`: bf16 autocast + channels_last on CPUs
  with native bf16 and on CUDA (fp16 + GradScaler on GPUs without bf16), pinned memory and
  ``cudnn.benchmark`` on CUDA, one torch thread per physical core on CPU.
* **Checkpoints.** ``last.pt`` after every epoch (and when interrupted), ``best.pt`` when the
  validation foreground IoU improves; plain dicts written atomically and loaded with
  ``weights_only=True`` (:mod:`unetlib.checkpoint`). Resuming restores model, optimiser,
  scheduler, scaler, RNG states and the position inside the epoch, so a resumed run ends
  with the same weights as an uninterrupted one (on CPU with the same seed).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import (capture_rng_state, load_checkpoint, remove_stale_temp_files, restore_rng_state,
                         save_checkpoint)
from .device import SpeedSettings, autocast_context, resolve_device, set_cpu_threads, speed_settings
from .tiling import predict_tiled
from .utils import seed_everything

__all__ = [
    "TrainConfig",
    "History",
    "TrainingInterrupted",
    "fit",
    "train_step",
    "evaluate",
    "predict",
    "build_model",
    "load_model",
    "load_sources",
    "default_tile",
    "prepare_output_folder",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "unetlib-train-v1"
PADDINGS = ("valid", "same")
# ``--data`` names that are datasets, not folders.
NAMED_DATASETS = ("synthetic", "isbi2012")
UP_MODES = ("transpose", "bilinear")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
MASK_CHOICES = ("auto", "binary", "instances", "classes")
#: What picks best.pt: the highest validation foreground IoU, or the lowest validation Rand error
#: (the ISBI challenge's ranking: it notices merged and split cells that IoU hardly sees).
SELECT_BY = ("val_iou", "val_rand_error")
LOSS_CHOICES_HELP = ("loss: ce, wce (paper weight map), dice, focal or a sum such as wce+dice "
                     "(default wce+dice)")


# =====================================================================================
# Configuration
# =====================================================================================
#: Defaults per named dataset, over TrainConfig's own (used by TrainConfig.for_data and the CLI).
#: isbi2012: the EM membranes need more context than the synthetic cells, so depth 3 (receptive
#: field 100 px instead of 44); and best.pt is the epoch with the lowest validation Rand error,
#: because the epoch with the best IoU often merges more cells (one run, test slices 25-29:
#: Rand error 0.101 at the best-IoU epoch, 0.076 at the last; depth 2 gave 0.139).
DATA_DEFAULTS: dict[str, dict] = {
    "isbi2012": dict(depth=3, select_by="val_rand_error"),
}
@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in every checkpoint as a dict).

    Data: ``data`` = "synthetic", "isbi2012" (the paper's EM slices 0-24; 25-29 stay
    held out for testing) or a folder with ``images/`` and ``masks/`` (stored as an
    absolute path by :func:`fit`); ``val_data`` a second folder (or "synthetic") for
    validation; otherwise ``val_fraction`` of the folder's images (at least one) or
    ``synthetic_val_images`` fresh synthetic images are held out. ``masks`` says how folder
    masks are read: "auto" (binary or instance ids; refuses masks that may be class ids),
    "binary", "instances" or "classes" (one output class per mask value).
    Model: a :class:`unetlib.models.UNet` with ``base_channels``, ``depth``, ``padding``,
    ``up_mode``, ``batch_norm``, ``dropout``; ``tile`` is the input tile size (None = a
    default for the depth/padding, see :func:`default_tile`).
    Optimisation: ``epochs`` x ``steps_per_epoch`` steps of ``batch_size`` tiles, ``lr``,
    ``optimizer`` ("adam"/"sgd"), ``schedule`` ("cosine"/"onecycle"/"constant"), ``loss``
    (see :func:`unetlib.losses.make_loss`; "wce+dice" = paper weight-map CE + soft Dice),
    ``w0``/``sigma`` of the weight map, ``elastic`` deformation.
    Speed: ``device`` ("auto"/"cpu"/"cuda"/"mps"), ``amp``/``channels_last`` (None = auto),
    ``num_workers`` (None = 0 on CPU, 4 on CUDA).
    """

    data: str = "synthetic"
    out: Optional[str] = None
    val_data: Optional[str] = None
    epochs: int = 6
    steps_per_epoch: int = 50
    batch_size: int = 8
    tile: Optional[int] = None
    base_channels: int = 16
    depth: int = 2
    padding: str = "valid"
    up_mode: str = "transpose"
    batch_norm: bool = True
    dropout: float = 0.0
    lr: float = 2e-3
    optimizer: str = "adam"
    momentum: float = 0.99
    weight_decay: float = 0.0
    schedule: str = "cosine"
    loss: str = "wce+dice"
    w0: float = 10.0
    sigma: float = 5.0
    elastic: bool = False
    seed: int = 0
    device: str = "auto"
    num_workers: Optional[int] = None
    amp: Optional[bool] = None
    channels_last: Optional[bool] = None
    val_fraction: float = 0.2
    synthetic_images: int = 24
    synthetic_val_images: int = 4
    synthetic_size: int = 256
    grad_clip: float = 0.0
    eval_batch_size: int = 4
    masks: str = "auto"
    select_by: str = "val_iou"

    def validate(self) -> "TrainConfig":
        """Raise ValueError/TypeError naming the first bad field; return self."""

        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")

        for name in ("epochs", "steps_per_epoch", "batch_size", "base_channels", "depth",
                     "synthetic_images", "eval_batch_size"):
            positive_int(name)
        positive_int("seed", 0)
        positive_int("synthetic_val_images", 0)
        positive_int("synthetic_size", 16)
        if self.num_workers is not None:
            positive_int("num_workers", 0)
        for name, choices in (("padding", PADDINGS), ("up_mode", UP_MODES),
                              ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("masks", MASK_CHOICES),
                              ("select_by", SELECT_BY)):
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        from .shapes import check_depth

        try:
            check_depth(self.depth, self.padding)   # before any size search or layer is built
        except ValueError as error:
            raise ValueError(f"--depth {self.depth}: {error}") from None
        for name in ("lr", "sigma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}")
        for name in ("weight_decay", "w0", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a number >= 0, got {value!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"--momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction!r}")
        if not isinstance(self.data, str) or not self.data:
            raise ValueError("--data must be 'synthetic' or a folder with images/ and masks/")
        if self.out is not None and not str(self.out).strip():
            raise ValueError("--out is empty; give the run folder to write to, e.g. --out runs/demo")
        from .losses import make_loss

        make_loss(self.loss)  # raises ValueError listing the valid names
        resolve_device(self.device)  # raises ValueError for unknown/unavailable devices
        tile = self.resolved_tile()
        from .shapes import is_valid_input_size, nearest_valid_input_size, unet_output_size

        if not is_valid_input_size(tile, self.depth, self.padding):
            lower, upper = nearest_valid_input_size(tile, self.depth, self.padding)
            nearest = " and ".join(str(s) for s in (lower, upper) if s is not None)
            raise ValueError(
                f"--tile {tile} is not a valid input size for a depth-{self.depth} {self.padding} U-Net; "
                f"nearest valid sizes are {nearest}"
            )
        if self.data == "isbi2012" and unet_output_size(tile, self.depth, self.padding) > 512:
            raise ValueError(f"--tile {tile} predicts {unet_output_size(tile, self.depth, self.padding)} px, more "
                             "than the 512 px ISBI 2012 slices; use a smaller --tile")
        if self.data == "synthetic" and unet_output_size(tile, self.depth, self.padding) > self.synthetic_size:
            raise ValueError(
                f"--tile {tile} predicts {unet_output_size(tile, self.depth, self.padding)} px, more than the "
                f"{self.synthetic_size} px synthetic images; use a smaller --tile"
            )
        return self

    def resolved_tile(self) -> int:
        """``tile`` or the default for this depth/padding (:func:`default_tile`)."""
        return int(self.tile) if self.tile is not None else default_tile(self.depth, self.padding)

    def to_dict(self) -> dict:
        """Plain dict of the fields (what checkpoints store)."""
        return asdict(self)

    @classmethod
    def for_data(cls, data: str = "synthetic", **settings) -> "TrainConfig":
        """The config ``python -m unetlib train --data DATA`` starts from: the defaults tuned
        for ``data`` (:data:`DATA_DEFAULTS`, e.g. deeper for the EM slices), then ``settings``."""
        return cls(data=data, **{**DATA_DEFAULTS.get(data, {}), **settings})

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**values)


def default_tile(depth: int, padding: str = "valid") -> int:
    """Default training tile: the smallest valid input whose output is >= 100 px (valid
    padding: 140 -> 100 for depth 2, 188 -> 100 for depth 3, 284 -> 100 for depth 4) or
    128 px (same padding).

    Tiles are cheap to train on the CPU yet large enough for a few whole cells (~32 px).
    """
    from .shapes import nearest_valid_input_size, unet_output_size

    if padding == "same":
        return nearest_valid_input_size(128, depth, padding)[1]
    size = nearest_valid_input_size(1, depth, padding)[1]
    while unet_output_size(size, depth, padding) < 100:
        size = nearest_valid_input_size(size + 1, depth, padding)[1]
    return size


# =====================================================================================
# Run folders and checkpoints
# =====================================================================================
def prepare_output_folder(path, flag: str = "--out") -> Path:
    """Create the folder ``path`` (with parents) and make sure files can be written there.

    Raises ValueError saying what is wrong with ``flag`` and what to do (empty, an existing
    file, a parent that is a file, no permission, read-only disk) instead of a bare OSError.
    """
    if path is None or not str(path).strip():
        raise ValueError(f"{flag} is empty; give the folder to write to, e.g. {flag} runs/demo")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {folder} is an existing file, not a folder; give a folder path "
                         f"(it is created if missing), or move the file away")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder.parent)
        raise ValueError(f"{flag} {folder}: cannot create this folder because {blocker} is a file, not a "
                         f"folder; choose another {flag}") from None
    except OSError as exc:  # permission denied, operation not permitted, read-only file system
        raise ValueError(f"{flag} {folder}: cannot create this folder ({exc.strerror or type(exc).__name__}); "
                         f"choose a {flag} folder you can write to, or fix the permissions") from None
    try:  # a folder can exist and still refuse new files
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {folder}: cannot write files into this folder ({exc.strerror or type(exc).__name__}); "
                         f"choose a {flag} folder you can write to, or fix the permissions") from None
    return folder


def _absolute_data(spec: Optional[str]) -> Optional[str]:
    """A data folder as an absolute path ("synthetic" and None unchanged), so a run can be
    resumed or evaluated from any working directory."""
    if not isinstance(spec, str) or spec in ("", *NAMED_DATASETS):
        return spec
    return str(Path(spec).expanduser().resolve())


def same_data(a: Optional[str], b: Optional[str]) -> bool:
    """Whether two ``--data`` values name the same thing (paths compared once resolved)."""
    return _absolute_data(a) == _absolute_data(b)


_RESUME_KEYS = ("model", "model_args", "optimizer", "scheduler", "rng", "history", "epoch", "step_in_epoch",
                "global_step", "epoch_progress", "best_metric", "best_epoch")


def _load_train_checkpoint(path, needed: Sequence[str] = ("model", "model_args")) -> tuple[dict, TrainConfig]:
    """Load a checkpoint written by :func:`fit` and its config; ValueError naming the file if it
    is not one (wrong format, missing entries, a config unetlib cannot read)."""
    state = load_checkpoint(path) if not isinstance(path, dict) else path
    where = "checkpoint" if isinstance(path, dict) else str(path)
    usual = "use best.pt or last.pt written by `python -m unetlib train` (or unetlib.train.fit)"
    if state.get("format") != CHECKPOINT_FORMAT:
        bare = bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())
        hint = (" (it looks like a bare model state_dict: build the network yourself and call "
                "load_state_dict)") if bare else ""
        raise ValueError(f"{where} is not a unetlib training checkpoint (no '{CHECKPOINT_FORMAT}' marker)"
                         f"{hint}; {usual}")
    missing = [key for key in ("config", *needed) if key not in state]
    if missing:
        raise ValueError(f"{where} is not a complete unetlib training checkpoint: it has no "
                         f"{', '.join(repr(k) for k in missing)} entry; {usual}")
    try:
        config = TrainConfig.from_dict(dict(state["config"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: its stored 'config' is not a unetlib TrainConfig ({exc}); {usual}") from None
    return state, config


# =====================================================================================
# History and interruption
# =====================================================================================
class History(list):
    """Per-epoch records (a list of plain dicts) plus the trained model.

    Each record: ``epoch`` (1-based), ``step`` (optimiser steps so far), ``loss`` (mean
    training loss of the epoch), ``val_loss``, ``val_iou`` and ``val_dice`` (foreground IoU /
    Dice on the held-out images), ``lr`` (at the end of the epoch), ``time`` (seconds for
    the epoch, validation included), ``elapsed`` (seconds since the run started).
    Attributes: ``model`` (in eval mode), ``config``, ``run_dir`` (Path or None),
    ``best_epoch``, ``best_metric``.
    """

    model: Optional[nn.Module] = None
    config: Optional[TrainConfig] = None
    run_dir: Optional[Path] = None
    best_epoch: Optional[int] = None
    best_metric: Optional[float] = None

    def column(self, key: str) -> list:
        """One value per epoch, e.g. ``history.column("val_iou")``."""
        return [record.get(key) for record in self]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped early (Ctrl-C, SIGTERM or a callback); ``last.pt`` holds the state."""


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a checkpoint is never taken
    in the middle of an optimiser update. Only installed in the main thread."""

    def __init__(self):
        self.signal_name: Optional[str] = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # pragma: no cover - unusual embedding
                    pass
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


# =====================================================================================
# Data
# =====================================================================================
def _normalised_synthetic(n: int, size: int, seed: int) -> list:
    from .data import make_synthetic_dataset, normalize_percentile

    items = make_synthetic_dataset(n, size, seed=seed)
    for item in items:
        item.image = normalize_percentile(item.image)  # same normalisation as files on disk
    return items


def _synthetic_val_seed(seed: int) -> int:
    return seed + 1_000_003  # a different stream: validation images never appear in training


def _isbi2012_sources(config: TrainConfig, log: Callable[[str], None]) -> tuple[list, list]:
    """Slices 0-24 of ISBI 2012 for training and validation, as contiguous blocks: neighbouring
    sections show the same cells, so a random split would validate on near-copies."""
    from .data import DatasetError, isbi2012, isbi2012_split

    if config.val_data is not None:
        raise DatasetError("--data isbi2012 holds out its own validation slices; omit --val-data")
    n_val = 0 if config.val_fraction == 0 else min(24, max(1, round(config.val_fraction * 25)))
    train, val, _test = isbi2012_split(isbi2012(), val_slices=n_val)
    log(f"ISBI 2012: training on slices 0-{len(train) - 1}, validation "
        f"{f'slices {len(train)}-24' if val else 'none'}; slices 25-29 are the test set "
        "(python -m unetlib evaluate --data isbi2012)")
    return train, val


def load_sources(config: TrainConfig, log: Callable[[str], None] = print) -> tuple[list, list]:
    """Training and validation images (lists of :class:`unetlib.data.LabeledImage`).

    Prints one line saying where the validation images come from.
    """
    from .data import DatasetError, load_folder, split_holdout

    if config.data == "isbi2012":
        return _isbi2012_sources(config, log)

    def load(spec: str) -> list:
        if spec == "synthetic":
            return _normalised_synthetic(config.synthetic_images, config.synthetic_size, config.seed)
        path = Path(spec)
        if not path.exists():
            raise DatasetError(f"data folder not found: {path} (expected {path}/images and {path}/masks, or 'synthetic')")
        if not path.is_dir():
            raise DatasetError(f"--data {path} is a file; pass a folder with images/ and masks/ inside")
        return load_folder(path, color="gray", mask_type=config.masks, log=log)

    train = load(config.data)
    if config.val_data is not None:
        if config.val_data == "synthetic":
            val = _normalised_synthetic(config.synthetic_val_images or 4, config.synthetic_size,
                                        _synthetic_val_seed(config.seed))
        else:
            val = load(config.val_data)
        log(f"validation: {len(val)} image(s) from {config.val_data}")
    elif config.data == "synthetic":
        val = []
        if config.synthetic_val_images > 0:
            val = _normalised_synthetic(config.synthetic_val_images, config.synthetic_size,
                                        _synthetic_val_seed(config.seed))
        log(f"validation: {len(val)} separate synthetic image(s) (seed {_synthetic_val_seed(config.seed)}), "
            f"{len(train)} for training")
    elif config.val_fraction > 0:
        if len(train) < 2:
            raise DatasetError(
                f"{config.data} holds {len(train)} image; need at least 2 to hold one out for validation "
                "(or pass --val-data DIR, or --val-fraction 0)"
            )
        train, val = split_holdout(train, config.val_fraction, seed=config.seed)
        log(f"validation: holding out {len(val)} of {len(train) + len(val)} images "
            f"({config.val_fraction:.0%}, seed {config.seed}): {', '.join(v.name for v in val)}")
    else:
        val = []
        log("validation: none (--val-fraction 0); best.pt follows the training loss")
    return train, val


def _num_classes(*source_lists) -> int:
    """Output classes the data needs: 2 (background, cell) unless class masks have more."""
    counts = [getattr(item, "num_classes", 2) for sources in source_lists
              if not isinstance(sources, Dataset) for item in (sources or [])]
    return max([2, *counts])


def _check_images_fit_tile(sources, tile: int, out_size: int, config: Optional["TrainConfig"]) -> None:
    """Refuse training images smaller than the label tile, naming a --tile that works.

    ``config`` describes the U-Net (None for a network passed to fit(): then no size is named).
    """
    from .data import DatasetError, LabeledImage

    if not sources or not all(isinstance(s, LabeledImage) for s in sources):
        return  # TileDataset explains what it needs
    small = min(sources, key=lambda s: min(s.shape))
    side = min(small.shape)
    if side >= out_size:
        return
    hint = "use a smaller --tile, or larger images"
    if config is not None:
        from .shapes import nearest_valid_input_size, unet_output_size

        lost = tile - out_size  # the context a valid U-Net needs (0 for same padding)
        fitting = nearest_valid_input_size(side + lost, config.depth, config.padding)[0]
        if fitting is not None and unet_output_size(fitting, config.depth, config.padding) <= side:
            hint = (f"use --tile {fitting} or smaller (its label tile is "
                    f"{unet_output_size(fitting, config.depth, config.padding)} px), or larger images")
        else:
            smallest = nearest_valid_input_size(1, config.depth, config.padding)[1]
            hint = (f"even the smallest tile ({smallest}) predicts "
                    f"{unet_output_size(smallest, config.depth, config.padding)} px: use a smaller --depth, "
                    "or larger images")
    raise DatasetError(f"{small.name}: image is {small.shape[0]}x{small.shape[1]} px, smaller than the "
                       f"{out_size} px label tile of --tile {tile}; {hint}")


def _whole_images(dataset) -> Iterable[dict]:
    """Items {"image", "mask", optional "weight"/"instances"} from LabeledImages or datasets."""
    from .data import LabeledImage

    for index in range(len(dataset)):
        item = dataset[index]
        if isinstance(item, LabeledImage):
            yield {"image": torch.from_numpy(item.image), "mask": torch.from_numpy(item.mask),
                   "instances": torch.from_numpy(item.instances), "name": item.name}
        elif isinstance(item, dict) and "image" in item and "mask" in item:
            yield item
        else:
            raise TypeError(
                "evaluate() needs LabeledImage objects or dict items with 'image' (C, H, W) and "
                f"'mask' (H, W); got {type(item).__name__}"
            )


# =====================================================================================
# Model and optimisation pieces
# =====================================================================================
def build_model(config: TrainConfig, in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """The :class:`unetlib.models.UNet` a config describes, initialised from ``config.seed``."""
    from .models import UNet

    generator = torch.Generator().manual_seed(config.seed)
    return UNet(in_channels, num_classes, base_channels=config.base_channels, depth=config.depth,
                padding=config.padding, up_mode=config.up_mode, batch_norm=config.batch_norm,
                dropout=config.dropout, generator=generator)


def _make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


class _WarmupCosine:
    """lr factor: linear warm-up over 5 % of the steps, then cosine from 1 to 0.01.

    A small callable class (not a lambda) so the schedule is explicit and picklable."""

    def __init__(self, total_steps: int):
        self.total = max(1, total_steps)
        self.warmup = max(1, round(0.05 * self.total))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def _make_scheduler(config: TrainConfig, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    total = config.epochs * config.steps_per_epoch
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                                   pct_start=0.25)
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _WarmupCosine(total))


def _default_workers(config: TrainConfig, device: torch.device) -> int:
    if config.num_workers is not None:
        return int(config.num_workers)
    return min(4, os.cpu_count() or 1) if device.type == "cuda" else 0


# =====================================================================================
# Evaluation and prediction
# =====================================================================================
def evaluate(
    model: nn.Module,
    dataset,
    *,
    tile_size: Optional[int] = None,
    batch_size: int = 4,
    device: "str | torch.device | None" = None,
    amp: bool = False,
    channels_last: bool = False,
    loss_fn: Optional[Callable] = None,
    foreground_probs: Optional[list] = None,
) -> dict:
    """Segment every whole image of ``dataset`` with overlap-tile inference and score it.

    Args:
        model: a segmentation network (e.g. UNet); left in its original train/eval mode.
        dataset: list of :class:`unetlib.data.LabeledImage`, a
            :class:`unetlib.data.WholeImageDataset`, or any sequence of dicts with
            ``"image"`` float (C, H, W) and ``"mask"`` int64 (H, W) (optional ``"instances"``
            int32 (H, W) for object metrics and ``"weight"`` float32 (H, W) for the loss).
        tile_size, batch_size, device, amp, channels_last: passed to :func:`predict_tiled`.
        loss_fn: optional ``loss(logits, target, weight)``; adds ``"loss"`` (mean over images).
        foreground_probs: optional list; each image's P(foreground) map, float32 numpy (H, W),
            is appended to it (for threshold sweeps, without a second inference pass).

    Returns:
        JSON-ready dict: everything :func:`unetlib.metrics.segmentation_metrics` reports
        (``foreground_iou``, ``foreground_dice``, ``mean_iou``, ``pixel_error``, object
        counts, ...), computed over all pixels of all images, plus ``n_images`` and
        ``loss`` (if ``loss_fn``).
    """
    from .metrics import segmentation_metrics

    preds, masks, instances, losses, shapes = [], [], [], [], set()
    for item in _whole_images(dataset):
        image = item["image"]
        mask = torch.as_tensor(item["mask"]).long()
        logits = predict_tiled(model, image, tile_size, batch_size=batch_size, device=device, amp=amp,
                               output="logits", channels_last=channels_last)
        if loss_fn is not None:
            weight = item.get("weight")
            if weight is None and "instances" in item:
                from .weights import weight_map

                weight = weight_map(np.asarray(item["instances"]))
            weight = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)[None]
            losses.append(float(loss_fn(logits[None].float(), mask[None], weight)))
        num_classes = logits.shape[0]
        pred = (logits[0] > 0).long() if num_classes == 1 else logits.argmax(0)
        if foreground_probs is not None:
            probs = torch.sigmoid(logits[0]) if num_classes == 1 else torch.softmax(logits.float(), 0)[1]
            foreground_probs.append(probs.float().numpy())
        preds.append(pred.numpy())
        masks.append(mask.numpy())
        if "instances" in item:
            instances.append(np.asarray(item["instances"]))
        shapes.add(tuple(pred.shape))
    if not preds:
        raise ValueError("evaluate() got an empty dataset")
    use_instances = len(instances) == len(preds)
    if len(shapes) == 1:  # one call over a (N, H, W) stack
        result = segmentation_metrics(np.stack(preds), np.stack(masks), num_classes=max(2, num_classes),
                                      target_instances=np.stack(instances) if use_instances else None)
    else:  # different sizes: pixel metrics over all pixels, object counts summed
        result = _metrics_over_sizes(preds, masks, instances if use_instances else None, max(2, num_classes))
    result["n_images"] = len(preds)
    if losses:
        result["loss"] = float(np.mean(losses))
    return result


def _metrics_over_sizes(preds, masks, instances, num_classes) -> dict:
    """segmentation_metrics for images of different sizes (no stacking possible)."""
    from .metrics import segmentation_metrics

    flat = segmentation_metrics(np.concatenate([p.ravel() for p in preds])[None],
                                np.concatenate([m.ravel() for m in masks])[None], num_classes=num_classes)
    per_image = [
        segmentation_metrics(p[None], m[None], num_classes=num_classes,
                             target_instances=None if instances is None else instances[i][None])
        for i, (p, m) in enumerate(zip(preds, masks))
    ]
    result = {k: flat[k] for k in ("pixel_error", "iou_per_class", "mean_iou", "foreground_iou",
                                    "dice_per_class", "mean_dice", "foreground_dice")}
    rand = [r["rand_error"] for r in per_image if r["rand_error"] is not None]
    result["rand_error"] = float(np.mean(rand)) if rand else None
    for key in ("n_true", "n_pred", "tp", "fp", "fn", "merges", "splits"):
        result[key] = int(sum(r[key] for r in per_image))
    tp, n_pred, n_true = result["tp"], result["n_pred"], result["n_true"]
    result["precision"] = tp / n_pred if n_pred else None
    result["recall"] = tp / n_true if n_true else None
    result["f1"] = 2 * tp / (n_pred + n_true) if (n_pred + n_true) else None
    return result


def load_model(checkpoint: "str | os.PathLike | dict", device: "str | torch.device" = "cpu"
               ) -> tuple[nn.Module, TrainConfig]:
    """Rebuild the U-Net stored in a checkpoint (``best.pt``/``last.pt``), in eval mode.

    Returns ``(model, config)``. Raises FileNotFoundError / ValueError for a missing or
    foreign file.
    """
    state, config = _load_train_checkpoint(checkpoint)
    where = "checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    if state.get("model_class", "UNet") != "UNet":
        raise ValueError(f"{where} holds a {state['model_class']}, not a UNet; build that model yourself "
                         "and load_state_dict(state['model'])")
    try:
        model = build_model(config, **dict(state["model_args"]))
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{where}: its weights do not fit the network its config describes ({first}); "
                         "was the file edited or written by another program?") from None
    return model.to(resolve_device(device)).eval(), config


def predict(
    model: "nn.Module | str | os.PathLike",
    image,
    *,
    tile_size: Optional[int] = None,
    output: str = "labels",
    device: "str | torch.device | None" = None,
    batch_size: int = 4,
    amp: Optional[bool] = None,
) -> torch.Tensor:
    """Segment one image (C, H, W) or (H, W) of any size; a model or a checkpoint path.

    Returns uint8 class ids (H, W) by default (``output="probs"`` gives float32 (K, H, W)).
    ``tile_size=None`` lets :func:`unetlib.tiling.plan_tiles` choose (for a valid-padding
    U-Net every tile size gives the same result). ``amp=None`` = the device's fast default
    (bf16 on CPUs/GPUs that support it).
    """
    if not isinstance(model, nn.Module):
        model, _ = load_model(model, "cpu" if device is None else device)
    run_device = resolve_device(device) if device is not None else next(model.parameters()).device
    settings = speed_settings(run_device, amp=amp)
    return predict_tiled(model, image, tile_size, batch_size=batch_size, device=run_device,
                         amp=settings.amp, output=output, channels_last=settings.channels_last)


# =====================================================================================
# Training
# =====================================================================================
def _write_history(run_dir: Path, history: list) -> None:
    keys = []
    for record in history:
        keys += [k for k in record if k not in keys]
    tmp = run_dir / ".history.csv.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, run_dir / "history.csv")
    tmp = run_dir / ".history.json.tmp"
    tmp.write_text(json.dumps(list(history), indent=1))
    os.replace(tmp, run_dir / "history.json")


def _train_state(model, optimizer, scheduler, scaler, config, model_args, epoch, step_in_epoch,
                 global_step, progress, history, best_metric, best_epoch) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "torch_version": str(torch.__version__),
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "model_args": dict(model_args),
        "model_class": type(model).__name__,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,  # epochs completed
        "step_in_epoch": step_in_epoch,  # steps done in the unfinished epoch (0 = boundary)
        "global_step": global_step,
        "epoch_progress": dict(progress),
        "config": config.to_dict(),
        "rng": capture_rng_state(),
        "history": [dict(r) for r in history],
        "best_metric": best_metric,
        "best_epoch": best_epoch,
    }


def _prepare_batch(batch: dict, settings: SpeedSettings):
    device = settings.device
    non_blocking = settings.pin_memory
    images = batch["image"].to(device, non_blocking=non_blocking)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    masks = batch["mask"].to(device, non_blocking=non_blocking)
    weights = batch["weight"].to(device, non_blocking=non_blocking) if "weight" in batch else None
    return images, masks, weights


def train_step(
    model: nn.Module,
    batch: dict,
    loss_fn: Callable,
    optimizer: torch.optim.Optimizer,
    settings: SpeedSettings,
    *,
    scaler: Optional["torch.amp.GradScaler"] = None,
    scheduler=None,
    grad_clip: float = 0.0,
) -> torch.Tensor:
    """One optimisation step on ``batch`` (the engine's hot loop; :func:`fit` calls it).

    ``batch``: dict with ``"image"`` float32 (N, C, H, W), ``"mask"`` int64 (N, H_out, W_out)
    and optionally ``"weight"`` float32 (N, H_out, W_out). The forward pass runs under
    autocast (``settings.amp_dtype``) on a channels_last batch if ``settings.channels_last``;
    the loss is computed in float32. Returns the detached scalar loss.
    Raises FloatingPointError when the loss is NaN/inf (before the weights are touched).
    """
    images, masks, weights = _prepare_batch(batch, settings)
    with autocast_context(settings):
        logits = model(images)
    loss = loss_fn(logits.float(), masks, weights)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss.item()}; lower --lr, or try --no-amp")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:  # fp16: scale the loss so small gradients do not underflow
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def fit(
    config: Optional[TrainConfig] = None,
    *,
    model: Optional[nn.Module] = None,
    train_data=None,
    val_data=None,
    callback: Optional[Callable[[dict], Any]] = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> History:
    """Train a U-Net as ``config`` says and return the per-epoch :class:`History`.

    Args:
        config: a :class:`TrainConfig` (default: ``TrainConfig()``, synthetic cells).
        model: train this network instead of building one from the config (must map
            ``config.tile`` inputs to ``model.output_size(config.tile)`` outputs).
        train_data, val_data: lists of :class:`unetlib.data.LabeledImage` that replace
            ``config.data`` / the held-out images; ``train_data`` may also be a torch Dataset
            yielding the data-sample dicts (with ``set_epoch`` for fresh tiles per epoch).
        callback: called as ``callback(info)`` after every step with
            ``{"event": "step", "epoch", "step", "loss", "lr"}`` and after every epoch with
            ``{"event": "epoch", **record}``. Raising KeyboardInterrupt stops training cleanly
            (checkpoint written if ``config.out``; :class:`TrainingInterrupted` is raised).
        progress: show a tqdm bar per epoch (in a notebook or on a terminal; not in a log file).
        resume: continue the run in ``config.out`` from its ``last.pt``; the stored config is
            used (fields given in ``config`` must match it, except device/num_workers).
        overwrite: allow starting a new run in an ``out`` folder that already has one.
        log: where the one-line messages go (``print`` by default).

    Returns:
        :class:`History` (list of per-epoch dicts) with ``.model`` (eval mode) attached.
        With ``config.out`` the run folder holds ``history.csv``, ``history.json``,
        ``last.pt``, ``best.pt`` and ``config.json``.
    """
    from .data import TileDataset
    from .losses import make_loss

    config = dataclasses.replace(config) if config is not None else TrainConfig()
    if config.out is not None and not str(config.out).strip():  # '' must not mean "save nothing"
        raise ValueError("--out is empty; give the run folder to write to, e.g. --out runs/demo")
    run_dir = Path(config.out) if config.out is not None else None
    state = None
    if resume:
        if run_dir is None:
            raise ValueError("resume needs an output folder (--out RUN_DIR) that holds last.pt")
        ckpt = run_dir / "last.pt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"nothing to resume: {ckpt} does not exist")
        state, stored = _load_train_checkpoint(ckpt, needed=_RESUME_KEYS)
        config = dataclasses.replace(stored, out=config.out, device=config.device,
                                     num_workers=config.num_workers)
    else:
        if run_dir is not None and (run_dir / "last.pt").exists() and not overwrite:
            raise ValueError(f"{run_dir} already holds a run (last.pt); use --resume to continue it "
                             "or choose another --out")
        # Absolute, so --resume and evaluate work from any working directory.
        config.data, config.val_data = _absolute_data(config.data), _absolute_data(config.val_data)
    config.validate()
    if run_dir is not None:
        prepare_output_folder(run_dir)  # before the (slow) data loading, with a clear message
        stale = remove_stale_temp_files(run_dir)  # left by a run killed while saving
        if stale:
            log(f"removed {len(stale)} stale checkpoint temp file(s) from {run_dir}: "
                f"{', '.join(p.name for p in stale)}")

    device = resolve_device(config.device)
    settings = speed_settings(device, amp=config.amp, channels_last=config.channels_last)
    if device.type == "cpu":
        set_cpu_threads()
    seed_everything(config.seed)
    log(f"device: {settings.describe()}, {torch.get_num_threads()} CPU thread(s), torch {torch.__version__}")

    # ---- data
    if train_data is None:
        sources_train, sources_val = load_sources(config, log)
    else:
        sources_train, sources_val = train_data, []
    if val_data is not None:
        sources_val = val_data
    if train_data is not None or val_data is not None:
        log(f"validation: {len(sources_val)} image(s) passed to fit()")

    # ---- model
    tile = config.resolved_tile()
    if isinstance(sources_train, Dataset):
        in_channels = int(sources_train[0]["image"].shape[0])
    else:
        if len(sources_train) == 0:
            raise ValueError("no training images")
        in_channels = int(sources_train[0].image.shape[0])
    model_args = {"in_channels": in_channels, "num_classes": _num_classes(sources_train, sources_val)}
    built_here = model is None
    if model is None:
        model = build_model(config, **model_args)
    elif hasattr(model, "in_channels"):
        model_args = {"in_channels": int(model.in_channels), "num_classes": int(getattr(model, "num_classes", 2))}
    out_size = model.output_size(tile) if hasattr(model, "output_size") else tile
    model.to(device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)

    if isinstance(sources_train, Dataset):
        train_set = sources_train
    else:
        _check_images_fit_tile(sources_train, tile, out_size, config if built_here else None)
        augment = None
        if config.elastic:
            from .augment import ElasticAugment

            augment = ElasticAugment(flip_rotate=False)  # the dataset already flips/rotates
        train_set = TileDataset(sources_train, input_size=tile, output_size=out_size,
                                samples_per_epoch=config.steps_per_epoch * config.batch_size,
                                seed=config.seed, augment=augment, w0=config.w0, sigma=config.sigma)
    val_items = None
    if sources_val:
        from .data import WholeImageDataset

        val_items = WholeImageDataset(sources_val, w0=config.w0, sigma=config.sigma)

    loss_fn = make_loss(config.loss)
    optimizer = _make_optimizer(config, model)
    scheduler = _make_scheduler(config, optimizer)
    scaler = torch.amp.GradScaler(device.type) if settings.use_grad_scaler else None

    history = History()
    start_epoch, skip_steps, global_step = 0, 0, 0
    progress_state = {"loss_sum": 0.0, "count": 0, "time": 0.0}
    best_metric, best_epoch = None, None
    elapsed_before = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        history.extend(state["history"])
        start_epoch, skip_steps = int(state["epoch"]), int(state["step_in_epoch"])
        global_step = int(state["global_step"])
        progress_state = dict(state["epoch_progress"])
        best_metric, best_epoch = state["best_metric"], state["best_epoch"]
        elapsed_before = history[-1]["elapsed"] if history else 0.0
        elapsed_before += progress_state.get("time", 0.0)
        log(f"resuming {run_dir} at epoch {start_epoch + 1}, step {skip_steps} of {config.steps_per_epoch}")
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))

    workers = _default_workers(config, device)
    run_start = time.perf_counter() - elapsed_before

    def checkpoint(epoch_done: int, step_in_epoch: int) -> dict:
        return _train_state(model, optimizer, scheduler, scaler, config, model_args, epoch_done,
                            step_in_epoch, global_step, progress_state, history, best_metric, best_epoch)

    with _StopFlag() as stop:
        for epoch in range(start_epoch, config.epochs):
            epoch_start = time.perf_counter() - (progress_state["time"] if skip_steps else 0.0)
            if not skip_steps:
                progress_state = {"loss_sum": 0.0, "count": 0, "time": 0.0}
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            # Items are a pure function of (seed, epoch, index): resuming mid-epoch just skips
            # the indices already used; no shuffling needed (the dataset draws random tiles).
            indices = range(skip_steps * config.batch_size, len(train_set))
            loader = DataLoader(
                torch.utils.data.Subset(train_set, indices), batch_size=config.batch_size, shuffle=False,
                num_workers=workers, pin_memory=settings.pin_memory, drop_last=False,
                generator=torch.Generator().manual_seed(config.seed + epoch),
            )
            model.train()
            bar = None
            if progress:
                from tqdm.auto import tqdm

                # disable=None: no bar when stderr is not a terminal (a log file would fill up with
                # the bar's carriage-return redraws); the per-epoch line is printed either way.
                bar = tqdm(total=config.steps_per_epoch, initial=skip_steps, disable=None,
                           desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", leave=False)
            step_in_epoch = skip_steps
            skip_steps = 0
            try:
                for batch in loader:
                    if step_in_epoch >= config.steps_per_epoch:
                        break
                    try:
                        loss = train_step(model, batch, loss_fn, optimizer, settings, scaler=scaler,
                                          scheduler=scheduler, grad_clip=config.grad_clip)
                    except FloatingPointError as exc:
                        raise FloatingPointError(f"epoch {epoch + 1}, step {step_in_epoch + 1}: {exc}") from None
                    step_in_epoch += 1
                    global_step += 1
                    loss_value = float(loss.detach())
                    progress_state["loss_sum"] += loss_value
                    progress_state["count"] += 1
                    progress_state["time"] = time.perf_counter() - epoch_start
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss_value:.4f}")
                    if callback is not None:
                        callback({"event": "step", "epoch": epoch + 1, "step": global_step,
                                  "loss": loss_value, "lr": optimizer.param_groups[0]["lr"]})
                    if stop.signal_name is not None:
                        raise KeyboardInterrupt(stop.signal_name)
            except KeyboardInterrupt as exc:
                if bar is not None:
                    bar.close()
                if run_dir is not None and step_in_epoch < config.steps_per_epoch:
                    save_checkpoint(checkpoint(epoch, step_in_epoch), run_dir / "last.pt")
                    log(f"interrupted at epoch {epoch + 1}, step {step_in_epoch}; state saved to "
                        f"{run_dir / 'last.pt'} (continue with --resume)")
                raise TrainingInterrupted(str(exc) or "interrupted") from None
            if bar is not None:
                bar.close()

            # ---- end of epoch: validate, record, checkpoint
            record = {
                "epoch": epoch + 1,
                "step": global_step,
                "loss": progress_state["loss_sum"] / max(1, progress_state["count"]),
            }
            if val_items is not None:
                metrics = evaluate(model, val_items, batch_size=config.eval_batch_size,
                                   amp=settings.amp, channels_last=settings.channels_last, loss_fn=loss_fn)
                record.update(val_loss=metrics["loss"], val_iou=metrics["foreground_iou"],
                              val_dice=metrics["foreground_dice"], val_rand_error=metrics["rand_error"])
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["time"] = time.perf_counter() - epoch_start
            record["elapsed"] = time.perf_counter() - run_start
            history.append(record)
            metric, lower_is_better = _selection_metric(record, config.select_by)
            improved = metric is not None and (
                best_metric is None or (metric < best_metric if lower_is_better else metric > best_metric))
            if improved:
                best_metric, best_epoch = float(metric), epoch + 1
            progress_state = {"loss_sum": 0.0, "count": 0, "time": 0.0}
            log(_format_record(record, config.epochs))
            if run_dir is not None:
                state_now = checkpoint(epoch + 1, 0)
                save_checkpoint(state_now, run_dir / "last.pt")
                if improved:
                    save_checkpoint(state_now, run_dir / "best.pt")
                _write_history(run_dir, history)
            if callback is not None:
                try:
                    callback({"event": "epoch", **record})
                except KeyboardInterrupt as exc:
                    raise TrainingInterrupted(str(exc) or "interrupted") from None
            if stop.signal_name is not None:
                raise TrainingInterrupted(stop.signal_name)

    model.eval()
    history.model = model
    history.config = config
    history.run_dir = run_dir
    history.best_epoch, history.best_metric = best_epoch, best_metric
    return history


def _selection_metric(record: dict, select_by: str) -> tuple[Optional[float], bool]:
    """(value, lower_is_better) that decides whether this epoch's model becomes best.pt."""
    if select_by == "val_rand_error" and record.get("val_rand_error") is not None:
        return record["val_rand_error"], True
    return record.get("val_iou", -record["loss"]), False


def _format_record(record: dict, epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}"]
    if "val_loss" in record:
        iou = record["val_iou"]
        dice = record["val_dice"]
        parts += [f"val_loss {record['val_loss']:.4f}",
                  f"val_iou {iou:.4f}" if iou is not None else "val_iou n/a",
                  f"val_dice {dice:.4f}" if dice is not None else "val_dice n/a"]
        if record.get("val_rand_error") is not None:
            parts.append(f"val_rand {record['val_rand_error']:.4f}")
    parts += [f"lr {record['lr']:.2e}", f"{record['time']:.1f}s"]
    return " | ".join(parts)
