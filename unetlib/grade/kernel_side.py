"""The part of grading that runs *inside* the learner's kernel, after their notebook ran.

The grader never trusts the learner's check cells (they may be deleted, edited or never run).
Instead it executes one cell of its own that imports this module afresh and calls
:func:`grade_into_file` with the kernel's namespace: each task's function is taken from there
and the course's check runs on it, case by case, visible cases and then hidden ones
(:mod:`unetlib.grade.hidden`). The result is written as JSON to a file, not printed, so
whatever the learner's functions print cannot corrupt it.

Unlike :func:`unetlib.checks.run_check`, which stops at the first failing case (what a learner
wants while working), grading runs every case, for partial credit, and keeps the first
failure's message: exactly the text the check prints in JupyterLab, misconception included.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import json
import sys
import time
import types
from typing import Callable, Optional

__all__ = ["grade_into_file", "grade_task", "find_function", "misconception", "LIKELY_MISTAKE"]

#: The words after which a check's message names the misconception.
LIKELY_MISTAKE = "Likely mistake: "
_PRINT_LIMIT = 20_000  # characters of the learner's printing kept per check run (then dropped)


class _CappedText(io.StringIO):
    """A stdout for the checks that keeps only the first characters (a learner may print a lot)."""

    def write(self, text: str) -> int:
        if self.tell() < _PRINT_LIMIT:
            super().write(text[: _PRINT_LIMIT - self.tell()])
        return len(text)


class _Tally:
    """What one check run found: cases passed, cases run, the first failure's message, the task label."""

    def __init__(self) -> None:
        self.passed = 0
        self.total = 0
        self.message: Optional[str] = None
        self.label: Optional[str] = None


def _recording_run_check(core: types.ModuleType, tally: _Tally) -> Callable:
    """A stand-in for ``run_check`` that runs every case and records the results in ``tally``.

    Built from the check machinery's own pieces (``_learner_call``, ``_unusable``, ``_hint``),
    so a failure reads exactly as the learner's check would print it. After a case runs out of
    time the remaining cases of that check are counted as failed without running them (each
    would cost the whole time limit again).
    """

    def run_check(task, fn, cases, diagnose=None, compare=core.compare_values, *, timeout=None):
        seconds = core._resolve_timeout(timeout)
        tally.label = tally.label or task
        if not callable(fn):
            raise core.CheckError(f"{task}: expected a function but got {type(fn).__name__}.")
        cases = list(cases)
        timed_out = False
        for case in cases:
            tally.total += 1
            if timed_out:
                continue
            args = tuple(a.clone() if hasattr(a, "clone") else a for a in case.args)
            try:
                got = core._learner_call(task, case, fn, args, seconds)
            except core.CheckError as exc:  # raised, exited or ran out of time on this case
                tally.message = tally.message or str(exc)
                timed_out = "did not return within" in str(exc)
                continue
            problem = core._unusable(got, case.expected)
            if not problem:
                try:
                    problem = compare(got, case.expected, case.atol, case.rtol)
                except Exception as exc:  # a value the comparison does not know
                    problem = f"got {type(got).__name__}, which cannot be compared ({type(exc).__name__}: {exc})"
            if not problem:
                tally.passed += 1
                continue
            if tally.message is None:  # the diagnosis may be slow: only for the first failure
                message = f"{task}: case '{case.name}' is wrong: {problem}."
                hint = core._hint(diagnose, case, got, seconds)
                tally.message = message + (f"\n   {LIKELY_MISTAKE}{hint}" if hint else "")
        if tally.message:
            raise core.CheckError(tally.message)

    return run_check


def _run_check_recorded(check: Callable, fn: Callable, replacements: dict) -> dict:
    """Run ``check(fn)`` once with a recording ``run_check`` (and ``replacements`` for hidden cases)."""
    from ..checks import _core
    from .hidden import patched

    module = sys.modules[check.__module__]
    tally = _Tally()
    outcome = "passed"
    with patched(module, {"run_check": _recording_run_check(_core, tally), **replacements}):
        try:
            with contextlib.redirect_stdout(_CappedText()), contextlib.redirect_stderr(_CappedText()):
                check(fn)
        except _core.NotImplementedYet:
            outcome = "not_attempted"
        except _core.CheckError as exc:  # also checks that refuse an answer before any case
            outcome = "failed"
            tally.message = tally.message or str(exc)
        except BaseException as exc:  # noqa: BLE001 - the learner's code may raise anything
            if isinstance(exc, KeyboardInterrupt):
                raise
            outcome = "failed"
            tally.message = tally.message or f"the check could not run on your answer: {type(exc).__name__}: {exc}"
    if outcome == "passed" and tally.total == 0:
        tally.total = tally.passed = 1  # a check without cases: one yes/no
    return {"outcome": outcome, "passed": tally.passed, "total": tally.total,
            "message": tally.message, "label": tally.label}


def find_function(namespace: dict, name: str) -> tuple[Optional[Callable], Optional[str]]:
    """The learner's function ``name``, or the one they evidently renamed it to.

    Returns ``(function or None, note or None)``. A renamed function is accepted when exactly one
    function the learner defined (in ``__main__``) has a close name (``count_pair`` for
    ``count_pairs``), and the note says so.
    """
    value = namespace.get(name)
    if callable(value):
        return value, None
    own = [key for key, item in namespace.items()
           if callable(item) and getattr(item, "__module__", None) == "__main__" and not key.startswith("_")]
    close = difflib.get_close_matches(name, own, n=2, cutoff=0.75)
    if len(close) == 1:
        return namespace[close[0]], f"graded your `{close[0]}`: the task asks for a function named `{name}`"
    if value is not None:
        return None, f"`{name}` is a {type(value).__name__}, not a function"
    found = f" (your notebook defines: {', '.join(sorted(own)[:8])})" if own else ""
    return None, f"no function named `{name}` in your notebook{found}"


def grade_task(namespace: dict, task: dict, hidden: bool) -> dict:
    """Grade one task: ``task`` is ``{"function", "check"}``; returns a JSON-ready result dict."""
    started = time.perf_counter()
    result = {"function": task["function"], "check": task["check"], "note": None,
              "visible": None, "hidden": None}
    fn, note = find_function(namespace, task["function"])
    result["note"] = note
    if fn is None:
        result["status"] = "missing"
        return result
    checks = importlib.import_module("unetlib.checks")
    check = getattr(checks, task["check"])
    result["visible"] = _run_check_recorded(check, fn, {})
    if hidden and result["visible"]["outcome"] != "not_attempted":
        from .hidden import VARIANTS

        module = sys.modules[check.__module__]
        replacements = [variant(module) for variant in VARIANTS.get(task["check"], [])]
        runs = [_run_check_recorded(check, fn, patch) for patch in replacements if patch is not None]
        if runs:
            result["hidden"] = {"passed": sum(r["passed"] for r in runs), "total": sum(r["total"] for r in runs),
                                "message": next((r["message"] for r in runs if r["message"]), None)}
    result["status"] = result["visible"]["outcome"]
    if result["status"] == "passed" and result["hidden"] and result["hidden"]["passed"] < result["hidden"]["total"]:
        result["status"] = "failed"
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _fresh_checks() -> None:
    """Re-import the check machinery, so a learner's cell that patched it changes nothing."""
    for name in sorted(n for n in sys.modules if n.startswith("unetlib.checks")):
        del sys.modules[name]
    importlib.import_module("unetlib.checks")


def grade_into_file(namespace: dict, tasks: list[dict], hidden: bool, path: str) -> None:
    """Grade every task against ``namespace`` (the kernel's globals) and write the results to ``path``.

    tasks:  ``[{"function": "count_pairs", "check": "check_count_pairs"}, ...]``.
    hidden: also run the hidden cases (the instructor's grading; not ``grade --self``).
    path:   where the JSON list of per-task results is written.
    """
    _fresh_checks()
    results = []
    for task in tasks:
        # Written first, replaced when the task is done: if the learner's function kills the
        # kernel, the file still says which task did it (and keeps the earlier tasks' results).
        _write(path, results + [{"function": task["function"], "check": task["check"], "status": "error",
                                 "note": "the kernel stopped while this function was being checked (it called "
                                         "os._exit(), crashed, or ran past the grading time limit)", "visible": None, "hidden": None}])
        try:
            results.append(grade_task(namespace, task, hidden))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - never lose the other tasks' results
            results.append({"function": task["function"], "check": task["check"], "status": "error",
                            "note": f"grading failed: {type(exc).__name__}: {exc}", "visible": None, "hidden": None})
        _write(path, results)  # after each task: a later hang or crash keeps these


def _write(path: str, results: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(results, handle)


def misconception(message: Optional[str]) -> Optional[str]:
    """The misconception a check's message names (the text after "Likely mistake: "), or None."""
    if not message or LIKELY_MISTAKE not in message:
        return None
    return message.split(LIKELY_MISTAKE, 1)[1].strip()
