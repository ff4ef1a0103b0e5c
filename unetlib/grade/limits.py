"""Resource limits for a grading kernel (POSIX ``resource`` limits; nothing on Windows).

The limits are set in the kernel's process between fork and exec (``preexec_fn``), so they
bind the learner's code and whatever it starts, not the grader:

* memory: ``RLIMIT_DATA``, the heap and anonymous memory a process may map. Past it an
  allocation fails (``MemoryError``, or torch's "can't allocate memory"), the cell raises and
  grading goes on. ``RLIMIT_AS`` would be the classic choice, but PyTorch reserves several GiB
  of address space at import and would not even start under a realistic limit.
* CPU time: ``RLIMIT_CPU`` seconds of CPU for the whole kernel; past it the kernel is killed
  (SIGXCPU), which the grader reports as a dead kernel.
* files: ``RLIMIT_FSIZE``, the largest file the kernel may write (a loop writing to disk
  stops at it instead of filling the disk).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["KernelLimits", "limits_supported"]


def limits_supported() -> bool:
    """True where the ``resource`` module exists (Linux, macOS)."""
    try:
        import resource  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class KernelLimits:
    """Limits for one grading kernel; 0 = no limit.

    memory_mb:   megabytes of data memory (RLIMIT_DATA).
    cpu_seconds: seconds of CPU time (RLIMIT_CPU).
    file_mb:     megabytes of the largest file the kernel may write (RLIMIT_FSIZE).
    """

    memory_mb: int = 4096
    cpu_seconds: int = 600
    file_mb: int = 512

    def preexec(self) -> Optional[Callable[[], None]]:
        """A function for ``subprocess.Popen(preexec_fn=...)`` that applies the limits, or None
        when there is nothing to apply (no ``resource`` module, or every limit 0)."""
        if not limits_supported() or not (self.memory_mb or self.cpu_seconds or self.file_mb):
            return None
        wanted = []
        import resource

        if self.memory_mb:
            wanted.append((resource.RLIMIT_DATA, self.memory_mb * 2**20))
        if self.cpu_seconds:
            wanted.append((resource.RLIMIT_CPU, self.cpu_seconds))
        if self.file_mb:
            wanted.append((resource.RLIMIT_FSIZE, self.file_mb * 2**20))

        def apply() -> None:
            for which, value in wanted:
                soft, hard = resource.getrlimit(which)
                # Never above an existing hard limit: that would fail, and the stricter one holds anyway.
                if hard != resource.RLIM_INFINITY:
                    value = min(value, hard)
                try:
                    resource.setrlimit(which, (value, hard))
                except (ValueError, OSError):  # a platform without this limit: run without it
                    pass

        return apply
