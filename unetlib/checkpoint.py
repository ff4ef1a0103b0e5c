"""Saving and loading training checkpoints safely.

Two rules make a checkpoint trustworthy:

1. **Atomic writes.** The file is written to a temporary name in the same folder and
   then renamed with ``os.replace``. A run killed mid-save leaves the previous checkpoint
   intact instead of a truncated file.
2. **Safe loading.** ``torch.load(..., weights_only=True)`` only rebuilds tensors and
   plain Python containers/numbers/strings, never arbitrary objects, so loading a file
   cannot run code. Everything we store is therefore a plain dict: model and optimiser
   state dicts, the config as a dict, RNG states as tensors, the history as a list of
   dicts of floats.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "remove_stale_temp_files", "capture_rng_state",
           "restore_rng_state"]

# save_checkpoint writes ".NAME.XXXXXXXX.tmp" (tempfile.mkstemp's 8 random characters) next to
# NAME; a run killed during the write leaves that file behind.
_TMP_SUFFIX = ".tmp"


def _temp_prefix(name: str) -> str:
    return f".{name}."


def _is_temp_file_of(filename: str, name: str) -> bool:
    pattern = re.escape(_temp_prefix(name)) + r"[a-z0-9_]{8}" + re.escape(_TMP_SUFFIX)
    return re.fullmatch(pattern, filename) is not None


def save_checkpoint(state: dict, path: "str | os.PathLike") -> Path:
    """Write ``state`` (a dict of tensors / plain values) to ``path`` atomically.

    The parent folder is created if needed. Returns the path written.
    """
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise
    return path


def remove_stale_temp_files(folder: "str | os.PathLike", names=("last.pt", "best.pt")) -> list:
    """Delete the temporary files that :func:`save_checkpoint` left in ``folder`` when it was
    killed mid-write (``.last.pt.XXXXXXXX.tmp``); only that exact pattern, only for ``names``.

    Returns the paths removed (an empty list if there were none or the folder is missing).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and not entry.is_symlink() and any(_is_temp_file_of(entry.name, n) for n in names):
            entry.unlink()
            removed.append(entry)
    return removed


def load_checkpoint(path: "str | os.PathLike", map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises FileNotFoundError if ``path`` does not exist and ValueError if it is not a
    readable checkpoint (the message names the file). A file that holds Python objects
    besides plain data (a pickle that could run code) is refused, never loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text suggests weights_only=False, i.e. running the file's code: never show it.
        text = str(exc)
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if unsafe:
            raise ValueError(
                f"{path} is not a plain weights checkpoint: it holds Python objects (it references "
                f"{unsafe.group(1)}) that could run code when loaded, so it was not loaded and must not be. "
                "Use a best.pt/last.pt written by unetlib, or ask whoever made the file for one saved as "
                "plain tensors."
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n|$)", text)
        detail = detail.group(1).strip() if detail and detail.group(1).strip() else "unexpected content"
        raise ValueError(f"{path} is not a readable unetlib checkpoint (not a PyTorch file, or damaged: "
                         f"{detail})") from None
    except Exception as exc:  # truncated zip, not a torch file at all
        raise ValueError(f"{path} is not a readable unetlib checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a unetlib checkpoint (expected a dict, found {type(state).__name__})")
    return state


def capture_rng_state() -> dict:
    """Snapshot every random generator a training run uses, as weights_only-safe values.

    Keys: ``torch`` (uint8 tensor), ``cuda`` (list of uint8 tensors, may be empty),
    ``numpy`` (dict with the MT19937 key as an int64 tensor plus position/gauss fields),
    ``python`` (uint32-valued int64 tensor of ``random.getstate()``'s 625 words plus version).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "words": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def restore_rng_state(state: dict) -> None:
    """Restore generators saved by :func:`capture_rng_state` (the inverse operation)."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in state["cuda"]])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(w) for w in py["words"].tolist()), py["gauss_next"]))
