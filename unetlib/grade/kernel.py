"""Starting a grading kernel: this interpreter's own ipykernel, with a private folder, the quick
training budget, resource limits, and a client that keeps only so much of a cell's output.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # only for the annotations: execute imports this module
    from .execute import RunSettings

__all__ = ["kernel_preexec", "kernel_environment", "notebook_client"]


def kernel_preexec(settings: "RunSettings") -> Callable[[], None]:
    """What the kernel's process does before it becomes the kernel (POSIX; see ``preexec_fn``).

    * SIGINT back to its default: a grader started in the background (``cmd &``, nohup, cron)
      passes SIGINT on as *ignored*, and then the interrupt that stops a cell past its time limit
      would do nothing at all.
    * Linux: die with the grader (PR_SET_PDEATHSIG), so a killed grader leaves no endless
      learner loop running.
    * the resource limits of :class:`~unetlib.grade.limits.KernelLimits`.
    """
    apply_limits = settings.limits.preexec()

    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if sys.platform.startswith("linux"):
            try:
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
            except (OSError, AttributeError):
                pass
        if apply_limits is not None:
            apply_limits()

    return preexec


def kernel_environment(settings: "RunSettings") -> dict:
    env = dict(os.environ)
    threads = str(max(1, settings.threads))
    env.update({
        "UNETLIB_BUDGET": "quick",                       # training cells: the short budget
        "UNETLIB_CHECK_TIMEOUT": f"{settings.case_timeout:g}",
        "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
        "MPLBACKEND": "Agg",                             # figures render off-screen
        "TQDM_DISABLE": "1",                             # progress bars would only fill the output
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    })
    env.pop("UNETLIB_STRICT_CLAIMS", None)  # a lesson claim that misses is the learner's note, not a crash
    return env


def notebook_client(notebook, settings: "RunSettings", workdir: str):
    """An nbclient NotebookClient for this interpreter's own kernel, keeping at most output_kb per cell."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from nbclient import NotebookClient
    from nbformat.v4 import new_output

    class ThisInterpreter(KernelSpecManager):
        """Always the kernel of the Python running the grader (not another environment's "python3")."""

        def get_kernel_spec(self, kernel_name):
            from ipykernel.kernelspec import get_kernel_dict

            return KernelSpec(resource_dir=workdir, **get_kernel_dict())

    limit = settings.output_kb * 1024

    class CappedOutputClient(NotebookClient):
        kept: dict = {}

        def output(self, outs, msg, display_id, cell_index):
            content = msg.get("content", {})
            if msg["msg_type"] == "error":  # always kept: it says what went wrong
                content["traceback"] = content.get("traceback", [])[-20:]
                return super().output(outs, msg, display_id, cell_index)
            size = len(str(content.get("text", ""))) + sum(len(str(v)) for v in content.get("data", {}).values())
            used = self.kept.get(cell_index, 0)
            self.kept[cell_index] = used + size
            if used + size > limit:
                if used <= limit:
                    outs.append(new_output("stream", name="stderr",
                                           text=f"[grader: output past {settings.output_kb} KB dropped]\n"))
                return None
            return super().output(outs, msg, display_id, cell_index)

    from jupyter_client.manager import AsyncKernelManager

    # error_on_timeout: after a time-out and the interrupt, go on at once (without it nbclient
    # waits for the cell again, forever if the learner's code ignores the interrupt).
    client = CappedOutputClient(notebook, timeout=int(settings.cell_timeout), allow_errors=True,
                                interrupt_on_timeout=True, kernel_name="python3", record_timing=False,
                                error_on_timeout={"ename": "CellTimeoutError", "evalue": "time limit reached",
                                                  "traceback": []})
    client.kept = {}
    # On POSIX the kernel talks over Unix sockets in the private work folder, not TCP ports that
    # any local user could connect to (and run code in the learner's kernel).
    transport = {"transport": "ipc", "ip": os.path.join(workdir, "kernel")} if os.name == "posix" else {}
    client.km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreter(), **transport)
    return client
