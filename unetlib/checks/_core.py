"""The machinery behind every exercise check.

A check runs the learner's function on a few named cases and compares what comes back
with a reference. On failure it says *which* case failed, what was expected, what came
back and, where a known misconception explains the difference, names it. On success it
prints one line.

Errors are raised as :class:`CheckError` (or :class:`NotImplementedYet` for untouched
stubs). Both define ``_render_traceback_``, the hook IPython uses to display an
exception, so a learner sees the message alone instead of the checker's own traceback.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "Case",
    "CheckError",
    "NotImplementedYet",
    "run_check",
    "compare_values",
    "passed",
]


class CheckError(AssertionError):
    """A check found a wrong answer. The message says which case and why."""

    def _render_traceback_(self) -> list[str]:  # IPython display hook
        return ["\u274c " + line if i == 0 else line for i, line in enumerate(str(self).splitlines())]


class NotImplementedYet(NotImplementedError):
    """The learner's function still raises ``NotImplementedError`` (the exercise stub)."""

    def _render_traceback_(self) -> list[str]:
        return ["\u270b " + str(self)]


@dataclass
class Case:
    """One input for the learner's function and the answer a correct version gives.

    ``name`` is shown to the learner, so make it descriptive ("stride 2, padding 1").
    ``expected`` may be a tensor, array, number, tuple/list of those, or any value
    comparable with ``==``.
    """

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    expected: Any = None
    atol: float = 1e-5
    rtol: float = 1e-4


# A diagnosis looks at a failed case and the wrong answer and returns a hint such as
# "you padded the skip connection instead of cropping it", or None if nothing fits.
Diagnosis = Callable[[Case, Any], Optional[str]]


def passed(task: str, n_cases: int) -> None:
    """Print the one-line success message shared by every check."""
    print(f"\u2705 {task}: all {n_cases} cases passed.")


def _describe(value: Any) -> str:
    """A short, readable description of a value for error messages."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 16:
            return f"tensor of shape {tuple(value.shape)}: {value.detach().cpu().tolist()}"
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        if value.size <= 16:
            return f"array of shape {value.shape}: {value.tolist()}"
        return f"array of shape {value.shape}, dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def compare_values(got: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4) -> Optional[str]:
    """Return None when ``got`` matches ``expected``, else a sentence saying how it differs."""
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        exp = torch.as_tensor(expected)
        if isinstance(got, np.ndarray):
            got = torch.from_numpy(got)
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor of shape {tuple(exp.shape)} but got {type(got).__name__} ({_describe(got)})"
        if tuple(got.shape) != tuple(exp.shape):
            return f"expected shape {tuple(exp.shape)} but got shape {tuple(got.shape)}"
        g = got.detach().cpu().to(torch.float64)
        e = exp.detach().cpu().to(torch.float64)
        if not torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True):
            # NaN differences (a NaN on one side only) rank as the worst, so they are reported.
            mismatched = ~torch.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
            diff = torch.where(mismatched, (g - e).abs().nan_to_num(nan=float("inf")), torch.zeros_like(g))
            where = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
            return (
                f"values differ: largest difference {diff.max().item():.4g} at index {where} "
                f"(expected {e[where].item():.4g}, got {g[where].item():.4g})"
            )
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"expected a {type(expected).__name__} of length {len(expected)} but got {type(got).__name__} ({_describe(got)})"
        if len(got) != len(expected):
            return f"expected {len(expected)} items but got {len(got)}: {_describe(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = compare_values(g, e, atol, rtol)
            if problem:
                return f"item {i}: {problem}"
        return None
    if isinstance(expected, float):
        try:
            ok = abs(float(got) - expected) <= atol + rtol * abs(expected)
        except (TypeError, ValueError):
            return f"expected the number {expected:.6g} but got {_describe(got)}"
        return None if ok else f"expected {expected:.6g} but got {float(got):.6g}"
    if isinstance(expected, bool) or expected is None:
        return None if got is expected or got == expected else f"expected {expected!r} but got {_describe(got)}"
    if isinstance(expected, int):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        if not isinstance(got, (int, np.integer)) or isinstance(got, bool):
            return f"expected the integer {expected} but got {_describe(got)}"
        return None if int(got) == expected else f"expected {expected} but got {int(got)}"
    return None if got == expected else f"expected {_describe(expected)} but got {_describe(got)}"


def _learner_frame(exc: BaseException) -> str:
    """The last line of the learner's own code in a traceback (not the checker's, not torch's)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if "unetlib" not in f.filename and "site-packages" not in f.filename]
    if not mine:
        return ""
    f = mine[-1]
    return f"\n   at line {f.lineno}: {f.line}" if f.line else ""


def run_check(
    task: str,
    fn: Callable,
    cases: Sequence[Case] | Iterable[Case],
    diagnose: Optional[Diagnosis] = None,
    compare: Callable[[Any, Any, float, float], Optional[str]] = compare_values,
) -> None:
    """Run ``fn`` on every case; raise a readable :class:`CheckError` on the first failure.

    task:     the name shown to the learner, e.g. "Task 1.2 conv2d".
    fn:       the learner's function.
    cases:    the :class:`Case` list; each is called as ``fn(*case.args, **case.kwargs)``.
    diagnose: optional function ``(case, got) -> hint or None`` naming a misconception.
    """
    if not callable(fn):
        raise CheckError(f"{task}: expected a function but got {type(fn).__name__}. Pass the function itself, without calling it.")
    cases = list(cases)
    for case in cases:
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in case.args)
        try:
            got = fn(*args, **case.kwargs)
        except NotImplementedError:
            raise NotImplementedYet(
                f"{task}: not implemented yet. Replace the `raise NotImplementedError()` line with your code, then run this cell again."
            ) from None
        except Exception as exc:  # the learner's bug, reported in one readable block
            raise CheckError(
                f"{task}: case '{case.name}' raised {type(exc).__name__}: {exc}{_learner_frame(exc)}"
            ) from None
        problem = compare(got, case.expected, case.atol, case.rtol)
        if problem:
            message = f"{task}: case '{case.name}' is wrong: {problem}."
            hint = diagnose(case, got) if diagnose else None
            if hint:
                message += f"\n   Likely mistake: {hint}"
            raise CheckError(message)
    passed(task, len(cases))
