"""The machinery behind every exercise check.

A check runs the learner's function on a few named cases and compares what comes back
with a reference. On failure it says *which* case failed, what was expected, what came
back and, where a known misconception explains the difference, names it. On success it
prints one line.

Errors are raised as :class:`CheckError` (or :class:`NotImplementedYet` for untouched
stubs). Both define ``_render_traceback_``, the hook IPython uses to display an
exception, so a learner sees the message alone instead of the checker's own traceback.

Each call of the learner's function gets a time limit (60 s unless ``run_check(...,
timeout=)`` or the environment variable ``UNETLIB_CHECK_TIMEOUT`` says otherwise; 0 means
no limit), so an endless loop is reported instead of hanging the notebook. The limit uses
``SIGALRM``, so it applies only where that exists (Linux, macOS; not Windows) and only in
the main thread (where Jupyter runs cells); elsewhere the function runs without a limit.
A ``sys.exit()`` in the learner's function is reported as a failed check; a
``KeyboardInterrupt`` (the notebook's stop button) is never caught.
"""
from __future__ import annotations

import math
import numbers
import os
import signal
import threading
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
    "DEFAULT_TIMEOUT",
    "TIMEOUT_ENV",
]

#: Seconds one call of the learner's function may take before the check gives up on it.
DEFAULT_TIMEOUT = 60.0
#: The environment variable that overrides :data:`DEFAULT_TIMEOUT` (seconds, 0 = no limit).
TIMEOUT_ENV = "UNETLIB_CHECK_TIMEOUT"


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


def _has_values(tensor: torch.Tensor) -> bool:
    """False for tensors whose numbers cannot be read like an ordinary tensor's."""
    return not (tensor.is_meta or tensor.layout != torch.strided or tensor.is_quantized
                or getattr(tensor, "is_nested", False))


def _describe(value: Any) -> str:
    """A short, readable description of a value for error messages."""
    if isinstance(value, torch.Tensor):
        where = "" if value.device.type == "cpu" else f" on device '{value.device}'"
        if value.numel() <= 16 and _has_values(value):
            return f"tensor of shape {tuple(value.shape)}{where}: {value.detach().cpu().tolist()}"
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}{where}"
    if isinstance(value, np.ndarray):
        if value.size <= 16:
            return f"array of shape {value.shape}: {value.tolist()}"
        return f"array of shape {value.shape}, dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _is_complex(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_complex()
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "c"
    return isinstance(value, complex)  # also numpy's complex scalars


def _expected_kind(expected: Any) -> str:
    """What a right answer looks like, for messages: "a tensor of shape (2, 3)", "the integer 4"."""
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        kind = "a complex" if _is_complex(expected) else "a real-valued"
        return f"{kind} tensor of shape {tuple(expected.shape)}"
    if isinstance(expected, bool) or expected is None:
        return repr(expected)
    if isinstance(expected, numbers.Integral):
        return f"the integer {expected}"
    if isinstance(expected, numbers.Real):
        return f"the number {float(expected):.6g}"
    return _describe(expected)


def _unusable(got: Any, expected: Any) -> Optional[str]:
    """A sentence if ``got`` is a kind of value no comparison can use (or would silently
    misread), else None. Looks into tuples and lists where a tuple or list is expected.

    Caught here: tensors without readable values (meta device, sparse, quantized, nested),
    numpy arrays of non-numbers (dtype object, strings), and complex numbers where real
    ones are expected (converting them would drop the imaginary part: a false pass).
    """
    if isinstance(expected, (tuple, list)):
        if isinstance(got, (tuple, list)) and len(got) == len(expected):
            for i, (item, expected_item) in enumerate(zip(got, expected)):
                problem = _unusable(item, expected_item)
                if problem:
                    return f"item {i}: {problem}"
        return None  # a wrong container or length: the comparison says so
    wanted = _expected_kind(expected)
    complex_ok = _is_complex(expected)
    if isinstance(got, torch.Tensor):
        if got.is_meta:
            return (f"expected {wanted} but got a tensor on the 'meta' device ({_describe(got)}): it has "
                    "a shape but no values. Create your result from the inputs, or with "
                    "device=x.device, not on device='meta'")
        if not _has_values(got):
            kind = "quantized" if got.is_quantized else "nested" if getattr(got, "is_nested", False) else str(got.layout)
            return (f"expected {wanted} but got a {kind} tensor ({_describe(got)}); return an ordinary "
                    "dense tensor (e.g. result.to_dense() or result.dequantize())")
    if isinstance(got, np.ndarray) and got.dtype.kind not in "biufc":
        return (f"expected {wanted} but got a numpy array of dtype {got.dtype} ({_describe(got)}): its "
                "items are not numbers. Return a numeric tensor or array (look for None or a string "
                "among its items)")
    if _is_complex(got) and not complex_ok:
        what = f"a complex {type(got).__name__} of dtype {got.dtype}" if hasattr(got, "dtype") else f"the complex number {got!r}"
        return (f"expected {wanted} but got {what}: comparing it would drop the imaginary part. If "
                "your result is meant to be real (e.g. after an FFT), return result.real")
    return None


def compare_values(got: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4) -> Optional[str]:
    """Return None when ``got`` matches ``expected``, else a sentence saying how it differs."""
    if not isinstance(expected, (tuple, list)):  # tuples and lists: checked item by item below
        problem = _unusable(got, expected)
        if problem:
            return problem
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        exp = torch.as_tensor(expected)
        if isinstance(got, np.ndarray):
            got = torch.from_numpy(got)
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor of shape {tuple(exp.shape)} but got {type(got).__name__} ({_describe(got)})"
        if tuple(got.shape) != tuple(exp.shape):
            return f"expected shape {tuple(exp.shape)} but got shape {tuple(got.shape)}"
        # complex only when the answer is complex: _unusable refused complex answers to real ones
        dtype = torch.complex128 if exp.is_complex() else torch.float64
        g = got.detach().cpu().to(dtype)
        e = exp.detach().cpu().to(dtype)
        if not torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True):
            # NaN differences (a NaN on one side only) rank as the worst, so they are reported.
            mismatched = ~torch.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
            distance = (g - e).abs().nan_to_num(nan=float("inf"))
            diff = torch.where(mismatched, distance, torch.zeros_like(distance))
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
    if isinstance(got, (torch.Tensor, np.ndarray)) and not isinstance(expected, numbers.Number):
        # `tensor == expected` would compare element by element: not a yes/no answer
        return f"expected {_describe(expected)} but got {_describe(got)}"
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


class _TimedOut(BaseException):
    """Raised inside the learner's function when its time is up.

    A BaseException, like KeyboardInterrupt, so that an ``except Exception:`` in the
    learner's code does not swallow it.
    """


def _resolve_timeout(timeout: Optional[float]) -> float:
    """Seconds per call: ``timeout``, else ``$UNETLIB_CHECK_TIMEOUT``, else 60. 0 = no limit."""
    source = "timeout"
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV, "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        source = f"the environment variable {TIMEOUT_ENV}"
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"{source} must be a number of seconds (0 = no limit), got {text!r}") from None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{source} must be a number of seconds (0 = no limit), got {timeout!r}")
    if not math.isfinite(timeout) or timeout < 0:
        raise ValueError(f"{source} must be a finite number of seconds >= 0 (0 = no limit), got {timeout!r}")
    return float(timeout)


def _can_use_alarm() -> bool:
    """SIGALRM works only where it exists, in the main thread, and if nobody else's alarm is set."""
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0)


def _call_with_time_limit(fn: Callable, args: tuple, kwargs: dict, seconds: float) -> Any:
    """``fn(*args, **kwargs)``, interrupted by :class:`_TimedOut` after ``seconds`` (0: never).

    Where the alarm cannot be used (see :func:`_can_use_alarm`) the call has no limit. The
    timer is disarmed and the previous SIGALRM handler restored however the call ends.
    A single long operation in C (one huge matrix product) finishes before Python can
    interrupt it; a Python loop is interrupted at once.
    """
    if seconds == 0 or not _can_use_alarm():
        return fn(*args, **kwargs)
    fired = []

    def on_alarm(signum, frame):
        if not fired:  # raise once, inside whatever code is running now: the learner's
            fired.append(True)
            raise _TimedOut()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:  # a separate finally, so the handler is restored even if the alarm fires late
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)


def _learner_call(task: str, case: Case, fn: Callable, args: tuple, seconds: float) -> Any:
    """Call the learner's function on one case; turn every way it can fail into a message."""
    try:
        return _call_with_time_limit(fn, args, case.kwargs, seconds)
    except NotImplementedError:
        raise NotImplementedYet(
            f"{task}: not implemented yet. Replace the `raise NotImplementedError()` line with your code, then run this cell again."
        ) from None
    except _TimedOut as exc:
        raise CheckError(
            f"{task}: your function did not return within {seconds:g} s on case '{case.name}'. Look for a "
            f"loop that never ends (a `while` whose condition never becomes False).{_learner_frame(exc)}\n"
            f"   If it is just slow, allow more time: set the environment variable {TIMEOUT_ENV} "
            "(seconds, 0 = no limit)."
        ) from None
    except SystemExit as exc:  # sys.exit(), exit() and quit() would end the notebook's cell
        call = "sys.exit()" if exc.code is None else f"sys.exit({exc.code!r})"
        raise CheckError(
            f"{task}: case '{case.name}': your function called {call} (or exit()/quit()), "
            "which stops the whole cell instead of returning. Use `return` to give back your answer "
            f"(and `raise ValueError(...)` for bad input).{_learner_frame(exc)}"
        ) from None
    except Exception as exc:  # the learner's bug, reported in one readable block
        raise CheckError(
            f"{task}: case '{case.name}' raised {type(exc).__name__}: {exc}{_learner_frame(exc)}"
        ) from None
    # KeyboardInterrupt is not caught: the learner pressed stop, and the notebook should stop.


def run_check(
    task: str,
    fn: Callable,
    cases: Sequence[Case] | Iterable[Case],
    diagnose: Optional[Diagnosis] = None,
    compare: Callable[[Any, Any, float, float], Optional[str]] = compare_values,
    *,
    timeout: Optional[float] = None,
) -> None:
    """Run ``fn`` on every case; raise a readable :class:`CheckError` on the first failure.

    task:     the name shown to the learner, e.g. "Task 1.2 conv2d".
    fn:       the learner's function.
    cases:    the :class:`Case` list; each is called as ``fn(*case.args, **case.kwargs)``.
    diagnose: optional function ``(case, got) -> hint or None`` naming a misconception.
    compare:  ``(got, expected, atol, rtol) -> problem or None``; :func:`compare_values` by default.
    timeout:  seconds each call of ``fn`` may take (0 = no limit); default
              ``$UNETLIB_CHECK_TIMEOUT`` or 60. Needs SIGALRM and the main thread, see above.
    """
    seconds = _resolve_timeout(timeout)
    if not callable(fn):
        raise CheckError(f"{task}: expected a function but got {type(fn).__name__}. Pass the function itself, without calling it.")
    cases = list(cases)
    for case in cases:
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in case.args)
        got = _learner_call(task, case, fn, args, seconds)
        # Odd values (meta tensors, object arrays, complex numbers) are refused before any
        # comparison or diagnosis sees them: those would crash on them or misread them.
        problem = _unusable(got, case.expected)
        if not problem:
            try:
                problem = compare(got, case.expected, case.atol, case.rtol)
            except Exception as exc:  # a value of a kind the comparison does not know
                problem = (f"expected {_expected_kind(case.expected)} but got {type(got).__name__} "
                           f"({_describe(got)}), which cannot be compared with it "
                           f"({type(exc).__name__}: {exc})")
        if problem:
            message = f"{task}: case '{case.name}' is wrong: {problem}."
            hint = _hint(diagnose, case, got, seconds)
            if hint:
                message += f"\n   Likely mistake: {hint}"
            raise CheckError(message)
    passed(task, len(cases))


def _hint(diagnose: Optional[Diagnosis], case: Case, got: Any, seconds: float) -> Optional[str]:
    """The diagnosis for a wrong answer, or None if there is none or it cannot look at ``got``.

    A diagnosis may call the learner's function again, so it gets the same time limit; if it
    fails, the learner still gets the message about the wrong value, just without a hint.
    """
    if diagnose is None:
        return None
    try:
        return _call_with_time_limit(diagnose, (case, got), {}, seconds)
    except (Exception, SystemExit, _TimedOut):
        return None
