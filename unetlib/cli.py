"""Command line: ``python -m unetlib train|predict|evaluate|synthetic|grade ...``.

Every sub-command is a thin layer over the Python API in :mod:`unetlib.train` (the notebooks
call the same functions). Bad input never produces a traceback: the problem is printed as
one line ``error: ...`` on stderr and the exit status is 2 (130 when training is
interrupted; the run can then be continued with ``--resume``).

Examples::

    python -m unetlib train --data synthetic --out runs/demo            # ~3 CPU minutes
    python -m unetlib train --out runs/demo --resume                    # after Ctrl-C / kill
    python -m unetlib predict --checkpoint runs/demo/best.pt --out masks img1.png img2.tif
    python -m unetlib evaluate --checkpoint runs/demo/best.pt --data synthetic
    python -m unetlib synthetic --out data/cells --n 8                  # a folder dataset
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is reported as a single ``error: ...`` line."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def _bool_flag(parser, name: str, help: str):
    parser.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction,
                        default=None, help=help)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m unetlib`` (all training flags default to None =
    "use the TrainConfig default", so ``--resume`` can tell what was given explicitly)."""
    from .train import LOSS_CHOICES_HELP, MASK_CHOICES

    parser = _Parser(prog="python -m unetlib", description="Train and use U-Nets (the U-Net course).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    # ---------------------------------------------------------------- train
    tr = sub.add_parser("train", help="train a U-Net (writes history.csv/json, best.pt, last.pt)",
                        description="Train a U-Net. Defaults reach foreground IoU >= 0.9 on synthetic cells "
                                    "in about 3 CPU minutes. With --data isbi2012 a few defaults change for the "
                                    "EM slices (unetlib.train.DATA_DEFAULTS: depth 3); any flag still overrides them.")
    tr.add_argument("--data", help="'synthetic' (default), 'isbi2012' (the paper's EM slices, downloaded once and "
                                   "verified; $UNETLIB_DATA_DIR/isbi2012 if present) or a folder with images/ and masks/")
    tr.add_argument("--out", help="run folder (default: runs/YYYYmmdd-HHMMSS)")
    tr.add_argument("--val-data", help="separate validation folder (default: hold out part of --data)")
    tr.add_argument("--val-fraction", type=float, help="fraction of folder images held out (default 0.2)")
    tr.add_argument("--masks", choices=MASK_CHOICES,
                    help="how folder masks are read: auto (default: binary 0/1 or 0/255, or instance ids; "
                         "refuses masks that may be class ids), binary, instances (one id per cell) or "
                         "classes (one class per value, 0 = background)")
    tr.add_argument("--epochs", type=int, help="number of epochs")
    tr.add_argument("--steps-per-epoch", type=int, help="optimiser steps per epoch")
    tr.add_argument("--batch-size", type=int, help="tiles per step")
    tr.add_argument("--tile", type=int, help="input tile size (must be valid for the depth/padding)")
    tr.add_argument("--base-channels", type=int, help="channels of the first level (paper: 64)")
    tr.add_argument("--depth", type=int, help="number of poolings (paper: 4)")
    tr.add_argument("--padding", choices=("valid", "same"), help="valid (paper) or same convolutions")
    tr.add_argument("--up-mode", choices=("transpose", "bilinear"), help="up-convolution or bilinear")
    _bool_flag(tr, "batch-norm", "BatchNorm after every 3x3 convolution")
    tr.add_argument("--dropout", type=float, help="dropout at the end of the contracting path")
    tr.add_argument("--lr", type=float, help="peak learning rate")
    tr.add_argument("--optimizer", choices=("adam", "sgd"), help="adam (default) or sgd (paper: momentum 0.99)")
    tr.add_argument("--momentum", type=float, help="SGD momentum")
    tr.add_argument("--weight-decay", type=float, help="L2 weight decay")
    tr.add_argument("--schedule", choices=("cosine", "onecycle", "constant"), help="learning-rate schedule")
    tr.add_argument("--loss", help=LOSS_CHOICES_HELP)
    tr.add_argument("--w0", type=float, help="weight-map border weight (paper: 10)")
    tr.add_argument("--sigma", type=float, help="weight-map border width in px (paper: 5)")
    _bool_flag(tr, "elastic", "the paper's elastic deformation of training tiles")
    tr.add_argument("--seed", type=int, help="random seed (same seed -> same run on CPU)")
    tr.add_argument("--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps")
    tr.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    _bool_flag(tr, "amp", "mixed precision (bf16/fp16); default: on where it is faster")
    _bool_flag(tr, "channels-last", "NHWC memory format; default: on for CPU and CUDA")
    tr.add_argument("--synthetic-images", type=int, help="number of synthetic training images")
    tr.add_argument("--synthetic-val-images", type=int, help="number of synthetic validation images")
    tr.add_argument("--synthetic-size", type=int, help="height/width of synthetic images")
    tr.add_argument("--grad-clip", type=float, help="clip the gradient norm (0 = off)")
    tr.add_argument("--select-by", choices=("val_iou", "val_rand_error"),
                    help="which epoch becomes best.pt: highest validation IoU (default) or lowest validation "
                         "Rand error (default for --data isbi2012)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    tr.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    # ---------------------------------------------------------------- predict
    pr = sub.add_parser("predict", help="segment images with a trained checkpoint (overlap-tile)",
                        description="Write one mask PNG per image (0/255 for two classes, class ids otherwise), "
                                    "same height and width as the image.")
    pr.add_argument("images", nargs="+", help="PNG/TIFF images")
    pr.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a training run")
    pr.add_argument("--out", required=True, help="folder for the masks (created); never one of the inputs")
    pr.add_argument("--overwrite", action="store_true", help="replace masks that already exist in --out")
    pr.add_argument("--tile", type=int, help="inference tile size (default: chosen from the network)")
    pr.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _bool_flag(pr, "amp", "mixed precision (default: on where it is faster)")

    # ---------------------------------------------------------------- evaluate
    ev = sub.add_parser("evaluate", help="score a checkpoint on a dataset; prints JSON",
                        description="Print IoU, Dice, pixel/Rand error and object counts as JSON on stdout.")
    ev.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a training run")
    ev.add_argument("--data", required=True,
                    help="folder with images/ and masks/, 'synthetic' (the run's held-out synthetic images) or "
                         "'isbi2012' (its held-out test slices 25-29, with the challenge's threshold-swept scores)")
    ev.add_argument("--tile", type=int, help="inference tile size (default: chosen from the network)")
    ev.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    ev.add_argument("--masks", choices=MASK_CHOICES, help="how the masks are read (default: as in training)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _bool_flag(ev, "amp", "mixed precision (default: on where it is faster)")

    # ---------------------------------------------------------------- synthetic
    sy = sub.add_parser("synthetic", help="write synthetic cells as a folder dataset (images/, masks/)")
    sy.add_argument("--out", required=True, help="dataset folder (images/ and masks/ are created)")
    sy.add_argument("--n", type=int, default=8, help="number of images")
    sy.add_argument("--size", type=int, default=256, help="height and width")
    sy.add_argument("--seed", type=int, default=0, help="random seed")

    # ---------------------------------------------------------------- grade
    from .grade.command import add_arguments as add_grade_arguments

    add_grade_arguments(sub.add_parser(
        "grade", help="grade a class's exercise notebooks: grades.csv, feedback, class report",
        description="Run each submitted exercise notebook in a fresh, limited kernel, grade its tasks with the "
                    "course's checks (hidden cases too) and write grades.csv, one feedback file per learner "
                    "and a class report of misconceptions. See docs/grading.md."))
    return parser


# ==================================================================================== commands
def _train(args) -> int:
    from .train import TrainConfig, fit, same_data

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    if "out" in given and not given["out"].strip():  # '' would silently mean "save nothing"
        raise ValueError("--out is empty; give the run folder to write to, e.g. --out runs/demo")
    if args.resume:
        if "out" not in given:
            raise ValueError("--resume needs --out RUN_DIR (the folder of the run to continue)")
        stored = _stored_config(Path(given["out"]))

        def differs(key, value) -> bool:
            if key in ("data", "val_data"):  # runs store absolute paths; ./data from elsewhere is fine
                return not same_data(value, stored.get(key))
            return stored.get(key) != value

        changed = [f"--{k.replace('_', '-')} {v} (run has {stored.get(k)})" for k, v in given.items()
                   if k not in ("out", "device", "num_workers") and differs(k, v)]
        if changed:
            raise ValueError(f"cannot change settings when resuming: {'; '.join(changed)}; "
                             "omit them, or start a new run with another --out")
    given.setdefault("out", time.strftime("runs/%Y%m%d-%H%M%S"))
    config = TrainConfig.for_data(**given)
    history = fit(config, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
    run_dir = history.run_dir
    if history.best_epoch is not None and history and "val_iou" in history[-1]:
        print(f"best {config.select_by} {history.best_metric:.4f} at epoch {history.best_epoch}; "
              f"total {history[-1]['elapsed'] / 60:.1f} min")
    print(f"run folder: {run_dir} (best.pt, last.pt, history.csv, history.json)")
    print(f"next: python -m unetlib predict --checkpoint {run_dir / 'best.pt'} --out {run_dir / 'masks'} IMAGE...")
    return 0


def _stored_config(run_dir: Path) -> dict:
    """The full config of the run in ``run_dir`` (defaults filled in for older runs)."""
    from .train import _load_train_checkpoint

    last = run_dir / "last.pt"
    if not last.is_file():
        raise FileNotFoundError(f"nothing to resume: {last} does not exist")
    return _load_train_checkpoint(last, needed=())[1].to_dict()


def _predict(args) -> int:
    import numpy as np
    from PIL import Image

    from .data import read_image
    from .train import load_model, predict, prepare_output_folder

    stems = [Path(p).stem for p in args.images]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"several inputs share the name {duplicates[0]!r}; their masks would overwrite each other")
    for path in args.images:  # check every input before the (slow) work starts
        if not Path(path).is_file():
            raise FileNotFoundError(f"image not found: {path}")
    model, config = load_model(args.checkpoint, args.device)
    out = prepare_output_folder(args.out, "--out")
    _refuse_to_overwrite(args.images, [out / f"{stem}.png" for stem in stems], args.overwrite)
    in_channels = model.in_channels
    for path, stem in zip(args.images, stems):
        image = read_image(path, color="gray" if in_channels == 1 else "keep")
        if image.shape[0] != in_channels:
            raise ValueError(f"{path} has {image.shape[0]} channel(s) but the model expects {in_channels}")
        labels = predict(model, image, tile_size=args.tile, batch_size=args.batch_size, amp=args.amp).numpy()
        if model.num_classes <= 2:
            mask = (labels > 0).astype(np.uint8) * 255  # 0/255: visible in any image viewer
        else:
            mask = labels.astype(np.uint8)  # class ids
        target = out / f"{stem}.png"
        tmp = out / f".{stem}.png.tmp"
        Image.fromarray(mask).save(tmp, format="PNG")
        tmp.replace(target)
        print(f"{target}  {mask.shape[0]}x{mask.shape[1]}  foreground {np.mean(labels > 0):.1%}")
    return 0


def _refuse_to_overwrite(images: Sequence[str], targets: Sequence[Path], overwrite: bool) -> None:
    """Predicted masks must never replace an input image, nor (without --overwrite) any file."""
    inputs = {Path(p).resolve() for p in images}
    for image, target in zip(images, targets):
        if target.resolve() in inputs:
            raise ValueError(f"the mask of {image} would be written to {target}, which is an input image; "
                             "choose another --out (masks are named NAME.png)")
    for image, target in zip(images, targets):
        if target.is_dir():
            raise ValueError(f"the mask of {image} would be written to {target}, which is a folder; "
                             "choose another --out")
        if (target.exists() or target.is_symlink()) and not overwrite:
            raise ValueError(f"{target} already exists and would be replaced by the mask of {image}; "
                             "choose another --out, or pass --overwrite to replace it")


def _evaluate(args) -> int:
    import numpy as np

    from .data import load_folder
    from .device import resolve_device, speed_settings
    from .train import _normalised_synthetic, _synthetic_val_seed, evaluate, load_model

    model, config = load_model(args.checkpoint, args.device)
    if args.data == "synthetic":
        seed = _synthetic_val_seed(config.seed)
        images = _normalised_synthetic(config.synthetic_val_images or 4, config.synthetic_size, seed)
        print(f"evaluating on {len(images)} held-out synthetic images (seed {seed})", file=sys.stderr)
    elif args.data == "isbi2012":
        from .data import isbi2012, isbi2012_split

        images = isbi2012_split(isbi2012())[2]
        print("evaluating on the 5 held-out ISBI 2012 test slices 25-29", file=sys.stderr)
    else:
        folder = Path(args.data)
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder not found: {folder} (expected {folder}/images and {folder}/masks)")
        images = load_folder(folder, color="gray" if model.in_channels == 1 else "keep",
                             mask_type=args.masks or config.masks, log=lambda line: print(line, file=sys.stderr))
    settings = speed_settings(resolve_device(args.device), amp=args.amp)
    probs = [] if args.data == "isbi2012" else None
    metrics = evaluate(model, images, tile_size=args.tile, batch_size=args.batch_size,
                       amp=settings.amp, channels_last=settings.channels_last, foreground_probs=probs)
    if args.data == "isbi2012":
        # Threshold sweeps of the P(cell) maps, as the challenge scored; not the argmax errors above.
        from .isbi_scoring import isbi_scores

        scores = isbi_scores(np.stack(probs), np.stack([item.instances > 0 for item in images]))
        scores.pop("per_threshold")
        metrics["isbi_challenge"] = scores
    print(json.dumps(metrics, indent=2))
    return 0


def _synthetic(args) -> int:
    import numpy as np
    import tifffile
    from PIL import Image

    from .data import make_synthetic_dataset

    if args.n < 1 or args.size < 16:
        raise ValueError(f"need --n >= 1 and --size >= 16, got --n {args.n} --size {args.size}")
    root = Path(args.out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for item in make_synthetic_dataset(args.n, args.size, seed=args.seed):
        pixels = np.clip(np.round(item.image[0] * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{item.name}.png")
        tifffile.imwrite(root / "masks" / f"{item.name}.tif", item.instances.astype(np.uint16))
    print(f"wrote {args.n} images to {root / 'images'} and instance masks to {root / 'masks'}")
    return 0


def _grade(args) -> int:
    from .grade.command import run_grade

    return run_grade(args)


_COMMANDS = {"train": _train, "predict": _predict, "evaluate": _evaluate, "synthetic": _synthetic,
             "grade": _grade}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    from .train import TrainingInterrupted

    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except TrainingInterrupted:
        out = getattr(args, "out", None)
        print(f"error: training interrupted; continue with: python -m unetlib train --out {out} --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError, MemoryError) as exc:
        # DatasetError is a ValueError; FileNotFoundError/PermissionError are OSErrors.
        # RuntimeError covers other torch failures.
        if _is_out_of_memory(exc):
            message = _out_of_memory_message(exc, args)
        else:
            message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA/MPS), the CPU allocator's RuntimeError, or numpy's MemoryError."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _asked_size(text: str) -> Optional[str]:
    """The allocation that failed, as the error message states it ("2.00 GiB"), if it does."""
    found = re.search(r"(?:tried to allocate|unable to allocate)\s+([\d.]+\s*[KMGTP]?i?B)\b", text, re.I)
    if found:
        return found.group(1)
    found = re.search(r"(?:tried to allocate|unable to allocate)\s+(\d+)\s*bytes", text, re.I)
    if found:
        return f"{int(found.group(1)) / 2**30:.2f} GiB"
    return None


def _out_of_memory_message(exc: BaseException, args) -> str:
    """One line: what ran out, how much was asked for, and which flags to lower."""

    def flag(name: str, value) -> str:
        return f"{name} (now {value})" if value is not None else name

    if args.command == "synthetic":
        settings = [flag("--size", args.size), flag("--n", args.n)]
    else:
        settings = [flag("--batch-size", args.batch_size), flag("--tile", args.tile)]
        if args.command == "train" and getattr(args, "data", None) in (None, "synthetic"):
            settings.append(flag("--synthetic-size", args.synthetic_size))
    asked = _asked_size(str(exc))
    asked = f" (asked for {asked})" if asked else ""
    return (f"out of memory during {args.command}{asked}; lower "
            f"{', '.join(settings[:-1])} or {settings[-1]} and try again")
