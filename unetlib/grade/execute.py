"""Run one submitted notebook in a fresh, limited kernel and grade its tasks there.

What happens to one submission:

1. The notebook is read; the learner's check calls (``check_conv2d(conv2d)`` lines) are
   replaced by ``pass``: they would only repeat, untrusted, what the grader does itself.
2. Its code cells run one by one in a new kernel (nbclient), with ``UNETLIB_BUDGET=quick`` so
   training cells are short, a per-cell time limit, a per-notebook time limit, the resource
   limits of :mod:`unetlib.grade.limits`, and a cap on how much output is kept. A cell that
   raises is noted and the next cell runs (``allow_errors``); a cell past its time limit is
   interrupted (KeyboardInterrupt) and the next cell runs.
3. If the kernel dies (``os._exit``, a crash, the CPU limit), or a cell goes on after it was
   interrupted (it catches KeyboardInterrupt), the notebook is run again in a new kernel
   without that cell (at most :data:`MAX_KERNEL_STARTS` kernels).
4. A grading cell of the grader's own (:mod:`unetlib.grade.kernel_side`) takes each task's
   function from the kernel's namespace and runs the course's check on it, hidden cases too.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .kernel import kernel_environment, kernel_preexec, notebook_client
from .limits import KernelLimits
from .registry import Exercise

__all__ = ["RunSettings", "run_submission", "strip_check_calls", "MAX_KERNEL_STARTS"]

#: Kernels one submission may use: the first, plus restarts after the kernel died.
MAX_KERNEL_STARTS = 3
# A learner's check call alone on its line, with its indentation (kept, so `pass` fits the block).
_CHECK_LINE = re.compile(r"^([ \t]*)check_\w+\(.*\)[ \t;]*$", re.M)


@dataclass(frozen=True)
class RunSettings:
    """How one submission is run; times in seconds.

    cell_timeout:     longest a learner's cell may run before it is interrupted.
    notebook_timeout: longest all the learner's cells together may run.
    case_timeout:     longest one call of a learner's function may take during grading.
    grading_timeout:  longest the grading cell may run (all tasks, visible and hidden cases).
    hidden:           also run hidden cases (False for ``grade --self``).
    limits:           the kernel's resource limits.
    threads:          torch/OpenMP threads of each kernel (1 when kernels run side by side).
    output_kb:        output kept per cell; the rest is dropped (a learner may print gigabytes).
    """

    cell_timeout: float = 120.0
    notebook_timeout: float = 900.0
    case_timeout: float = 30.0
    grading_timeout: float = 600.0
    hidden: bool = True
    limits: KernelLimits = field(default_factory=KernelLimits)
    threads: int = 1
    output_kb: int = 64


def strip_check_calls(source: str) -> str:
    """``source`` with every line that is a bare ``check_*(...)`` call replaced by ``pass``."""
    return _CHECK_LINE.sub(lambda m: f"{m.group(1)}pass", source)


def _cell_name(index: int, cell) -> str:
    """``cell 5 (`import sys`)``: its 1-based position (markdown cells count) and first line, to find it by."""
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    first = first if len(first) <= 40 else first[:37] + "..."
    return f"cell {index + 1} (`{first}`)" if first else f"cell {index + 1}"


def _cell_problem(index: int, cell, seconds: float, limit: float) -> Optional[str]:
    """One line on what went wrong in a cell, or None."""
    for output in cell.get("outputs", []):
        if output.get("output_type") != "error":
            continue
        name, value = output.get("ename", "Error"), str(output.get("evalue", ""))
        if name == "KeyboardInterrupt" and seconds >= limit - 1:
            return f"{_cell_name(index, cell)} ran longer than {limit:g} s and was stopped"
        if name == "SystemExit":
            return f"{_cell_name(index, cell)} called sys.exit() (or exit()/quit()); the cells after it still ran"
        value = value if len(value) <= 160 else value[:157] + "..."
        return f"{_cell_name(index, cell)} raised {name}: {value}"
    return None


def _responds(client, notebook, seconds: int = 10) -> bool:
    """True when the kernel runs an empty cell within ``seconds`` (after a cell was interrupted)."""
    from nbclient.exceptions import DeadKernelError
    from nbformat.v4 import new_code_cell

    probe = new_code_cell("pass")
    notebook.cells.append(probe)
    saved, client.timeout = client.timeout, seconds
    started = time.monotonic()
    try:
        client.execute_cell(probe, len(notebook.cells) - 1)
    except DeadKernelError:
        return False
    finally:
        notebook.cells.pop()
        client.timeout = saved
    return time.monotonic() - started < seconds - 0.5


def _grading_source(tasks: list[dict], hidden: bool, result_path: str) -> str:
    return ("import importlib as __grader_importlib\n"
            "__grader = __grader_importlib.reload(__grader_importlib.import_module('unetlib.grade.kernel_side'))\n"
            f"__grader.grade_into_file(globals(), {tasks!r}, {hidden!r}, {result_path!r})\n")


def _run_once(notebook, tasks: list, settings: RunSettings, skip: set, workdir: str,
              deadline: float) -> dict:
    """One kernel's run: the cells (except ``skip``), then the grading cell for ``tasks`` (Task list).

    Returns ``{"died_at": index of the cell that killed or hung the kernel, or None, "stuck": whether
    it hung, "grading_died": whether the kernel died while grading, "problems": [...],
    "tasks": [...] or None}``.
    """
    from nbclient.exceptions import DeadKernelError
    from nbformat.v4 import new_code_cell

    client = notebook_client(notebook, settings, workdir)
    problems, result_path = [], os.path.join(workdir, "grader-result.json")
    if os.path.exists(result_path):
        os.remove(result_path)
    client.reset_execution_trackers()
    with client.setup_kernel(env=kernel_environment(settings), cwd=workdir,
                             preexec_fn=kernel_preexec(settings) if os.name == "posix" else None):
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code" or index in skip or not cell.source.strip():
                continue
            remaining = deadline - time.monotonic()
            if remaining < 1:
                problems.append(f"the notebook ran out of its {settings.notebook_timeout:g} s; "
                                f"cells {index + 1} and later were not run")
                break
            limit = min(settings.cell_timeout, remaining)
            client.timeout = max(1, int(limit))
            cell.outputs = []
            started = time.monotonic()
            try:
                client.execute_cell(cell, index)
            except DeadKernelError:
                return {"died_at": index, "stuck": False, "grading_died": False, "problems": problems, "tasks": None}
            elapsed = time.monotonic() - started
            if elapsed >= client.timeout - 0.5 and not _responds(client, notebook):
                # The interrupt did not stop the cell (it catches KeyboardInterrupt, or is stuck in C).
                return {"died_at": index, "stuck": True, "grading_died": False, "problems": problems, "tasks": None}
            problem = _cell_problem(index, cell, elapsed, client.timeout)
            if problem:
                problems.append(problem)
        grading_died = False
        wanted = [{"function": task.function, "check": task.check} for task in tasks]
        grading = new_code_cell(_grading_source(wanted, settings.hidden, result_path))
        client.timeout = max(1, int(settings.grading_timeout))
        notebook.cells.append(grading)  # nbclient stores a cell's outputs in the notebook by index
        try:
            client.execute_cell(grading, len(notebook.cells) - 1)
        except DeadKernelError:
            grading_died = True
        finally:
            notebook.cells.pop()
        error = next((o for o in grading.get("outputs", []) if o.get("output_type") == "error"), None)
        if error and not os.path.exists(result_path):
            problems.append(f"grading could not run: {error.get('ename')}: {error.get('evalue')}")
    graded = None
    if os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as handle:
            graded = json.load(handle)
    return {"died_at": None, "stuck": False, "grading_died": grading_died, "problems": problems, "tasks": graded}


def run_submission(path: Path, exercise: Exercise, settings: RunSettings) -> dict:
    """Execute and grade one notebook; never raises for anything the learner did.

    Returns ``{"status": str, "problems": [str], "tasks": [per-task dicts from the kernel, or None],
    "seconds": float}``; status is "graded", "unreadable" (not a notebook) or "not graded" (no
    grading result came back, e.g. the kernel kept dying).
    """
    import nbformat

    started = time.monotonic()
    try:
        notebook = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # noqa: BLE001 - not JSON, not a notebook, unreadable file
        return {"status": "unreadable", "problems": [f"not a readable notebook: {type(exc).__name__}: {exc}"],
                "tasks": None, "seconds": round(time.monotonic() - started, 2)}
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = strip_check_calls(cell.source)
    workdir = tempfile.mkdtemp(prefix="unetlib-grade-")
    deadline = started + settings.notebook_timeout
    restarts, skip, problems, graded = [], set(), [], None
    remaining = list(exercise.tasks)
    try:
        for _ in range(MAX_KERNEL_STARTS):
            outcome = _run_once(notebook, remaining, settings, skip, workdir, deadline)
            problems = outcome["problems"]  # the last run's: an earlier run's cells ran again
            if outcome["died_at"] is not None:
                skip.add(outcome["died_at"])
                cell = _cell_name(outcome["died_at"], notebook.cells[outcome["died_at"]])
                restarts.append(f"{cell} ran longer than {settings.cell_timeout:g} s and did not stop when "
                                "interrupted; the notebook was run again without it" if outcome["stuck"] else
                                f"{cell} ended the kernel (os._exit, a crash, or the CPU-time limit); the "
                                "notebook was run again without it")
                continue
            if outcome["tasks"] is not None:
                graded = (graded or []) + outcome["tasks"]
            done = len(outcome["tasks"] or [])
            if not (outcome["grading_died"] and 0 < done < len(remaining)):
                break
            # A function killed the kernel while being checked: its task keeps that note (the
            # kernel side wrote it first); the tasks after it are checked in a new kernel.
            restarts.append(f"the kernel died while `{remaining[done - 1].function}` was being checked; "
                            "the tasks after it were checked in a new kernel")
            remaining = remaining[done:]
        else:
            restarts.append(f"the kernel died {MAX_KERNEL_STARTS} times; gave up")
    except Exception as exc:  # noqa: BLE001 - e.g. the kernel would not start: report, do not crash the class
        problems.append(f"the notebook could not be run: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"status": "graded" if graded is not None else "not graded", "problems": restarts + problems,
            "tasks": graded, "seconds": round(time.monotonic() - started, 2)}
