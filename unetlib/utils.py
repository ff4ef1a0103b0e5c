"""Small helpers every part of the course uses: seeding and an environment banner.

``seed_everything(seed)`` makes a run repeatable (Python, NumPy and PyTorch generators);
``environment_banner()`` returns a few lines that say where the code is running, so a
notebook or a training log records the hardware its numbers came from.
"""
from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

__all__ = ["seed_everything", "environment_banner", "physical_cpu_count", "cpu_supports_bf16"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy's global generator and PyTorch (CPU and all GPUs).

    Returns a fresh ``torch.Generator`` seeded with ``seed`` for code that prefers an
    explicit generator over the global one. ``seed`` must be a non-negative int.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy only accepts 32-bit seeds
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def physical_cpu_count() -> int:
    """Number of physical CPU cores this process may use (hyper-threads counted once).

    Falls back to the logical count when the topology cannot be read (non-Linux).
    """
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        logical = os.cpu_count() or 1
    cores = set()
    try:
        for cpu in (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(logical)):
            base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
            with open(f"{base}/core_id") as f_core, open(f"{base}/physical_package_id") as f_pkg:
                cores.add((f_pkg.read().strip(), f_core.read().strip()))
    except OSError:
        return max(1, logical)
    return max(1, min(logical, len(cores) or logical))


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bfloat16 math (AVX512-BF16 or AMX) that oneDNN uses.

    On such CPUs bf16 autocast makes convolutions roughly twice as fast; elsewhere it is
    emulated and *slower* than float32, so callers should check before enabling it.
    Setting the environment variable ``UNETLIB_CPU_BF16=0`` answers False anyway: the
    float32 path of a CPU without bf16, for comparisons and for timing such a machine.
    """
    if os.environ.get("UNETLIB_CPU_BF16", "").strip() == "0":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def environment_banner() -> str:
    """A few human-readable lines describing the runtime, for logs and notebooks.

    Lines: the device ``auto`` would choose, the GPU name and memory (if any), the
    PyTorch version, CPU threads in use, and whether bf16 is supported on CPU/GPU.
    """
    if torch.cuda.is_available():
        device = "cuda"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu"
    lines = [f"device      : {device}"]
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        lines.append(f"gpu         : {props.name}, {props.total_memory / 2**30:.1f} GiB")
    lines.append(f"torch       : {torch.__version__} (python {platform.python_version()})")
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = "unknown"
    lines.append(
        f"cpu threads : {torch.get_num_threads()} torch threads, "
        f"{physical_cpu_count()} physical cores, {capability}"
    )
    bf16 = f"cpu {'yes' if cpu_supports_bf16() else 'no'}"
    if device == "cuda":
        bf16 += f", cuda {'yes' if _cuda_bf16() else 'no'}"
    lines.append(f"bf16        : {bf16}")
    return "\n".join(lines)
