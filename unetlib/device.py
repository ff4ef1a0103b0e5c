"""Choosing a device and the speed settings that go with it.

``resolve_device("auto")`` picks CUDA, then Apple's MPS, then the CPU.
``speed_settings(device)`` decides, once, how fast code should run there:

* CUDA: bf16 autocast when the GPU supports it (else fp16 with a GradScaler), channels_last
  memory format, pinned host memory for the DataLoader, ``cudnn.benchmark``.
* CPU: channels_last (oneDNN's convolutions are faster in NHWC) and bf16 autocast *only*
  when the processor has native bf16 units (AVX512-BF16/AMX); elsewhere bf16 is emulated
  and slower than float32. The torch thread count is set to the number of physical cores.
* MPS: float32, channels_last off (not reliably faster there).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Optional

import torch

from .utils import cpu_supports_bf16, physical_cpu_count

__all__ = ["resolve_device", "SpeedSettings", "speed_settings", "autocast_context", "set_cpu_threads"]

_DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: "str | torch.device | None" = "auto") -> torch.device:
    """Turn ``"auto"|"cpu"|"cuda"|"cuda:N"|"mps"`` (or a torch.device) into a torch.device.

    ``"auto"`` (or None) means CUDA if available, then MPS, then CPU. Asking for a device
    that is not available raises ValueError instead of failing later inside torch.
    """
    if device is None:
        device = "auto"
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    name = device.strip().lower()
    kind = name.split(":")[0]
    if kind not in _DEVICE_CHOICES:
        raise ValueError(f"unknown device {device!r}; use one of {', '.join(_DEVICE_CHOICES)}")
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_ok else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu or auto")
    if kind == "mps" and not mps_ok:
        raise ValueError("device 'mps' was requested but MPS is not available; use --device cpu or auto")
    return torch.device(name)


@dataclass(frozen=True)
class SpeedSettings:
    """How to run fast on one device.

    ``amp_dtype`` is the autocast dtype (torch.bfloat16 / torch.float16) or None for float32;
    ``use_grad_scaler`` is True only for fp16 (bf16 has float32's exponent range, so no
    loss scaling is needed); ``channels_last`` selects NHWC memory format;
    ``pin_memory`` pins DataLoader batches for faster host->GPU copies.
    """

    device: torch.device
    amp_dtype: Optional[torch.dtype]
    use_grad_scaler: bool
    channels_last: bool
    pin_memory: bool

    @property
    def amp(self) -> bool:
        return self.amp_dtype is not None

    def describe(self) -> str:
        precision = "float32" if self.amp_dtype is None else f"{str(self.amp_dtype).replace('torch.', '')} autocast"
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"{self.device.type}, {precision}, {layout}"


def speed_settings(
    device: torch.device, amp: Optional[bool] = None, channels_last: Optional[bool] = None
) -> SpeedSettings:
    """The fast defaults for ``device``; ``amp``/``channels_last`` = None means "auto".

    ``amp=True`` on a CPU without native bf16 is honoured (bf16 autocast, slow but allowed);
    ``amp=None`` enables it only where it is a speed-up.
    """
    device = torch.device(device)
    amp_dtype: Optional[torch.dtype] = None
    scaler = False
    if device.type == "cuda":
        if amp is None or amp:
            if torch.cuda.is_bf16_supported():
                amp_dtype = torch.bfloat16
            else:
                amp_dtype, scaler = torch.float16, True
        torch.backends.cudnn.benchmark = True
        default_cl = True
    elif device.type == "cpu":
        if amp or (amp is None and cpu_supports_bf16()):
            amp_dtype = torch.bfloat16
        default_cl = True
    else:  # mps: keep float32, NCHW
        default_cl = False
    return SpeedSettings(
        device=device,
        amp_dtype=amp_dtype,
        use_grad_scaler=scaler,
        channels_last=default_cl if channels_last is None else bool(channels_last),
        pin_memory=device.type == "cuda",
    )


def autocast_context(settings: SpeedSettings):
    """``torch.autocast`` for the settings, or a no-op context when running in float32."""
    if settings.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=settings.device.type, dtype=settings.amp_dtype)


def set_cpu_threads(num_threads: Optional[int] = None) -> int:
    """Set torch's intra-op thread count and return it.

    The default is the physical core count, because hyper-threads share one core's vector
    units and more threads than cores usually slows convolutions down. An ``OMP_NUM_THREADS``
    set in the environment wins over that default: it is how a user, a job scheduler or a
    parallel test run (two notebooks on two cores) says how many cores this process may use,
    and OpenMP threads that outnumber the cores spin and slow everything down many times.
    """
    if num_threads is None:
        requested = os.environ.get("OMP_NUM_THREADS", "").strip()
        num_threads = int(requested) if requested.isdigit() and int(requested) > 0 else physical_cpu_count()
    n = int(num_threads)
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
