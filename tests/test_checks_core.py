"""The check machinery every exercise uses: messages a learner can act on."""
import signal
import sys
import threading
import time

import numpy as np
import pytest
import torch

from unetlib.checks import Case, CheckError, NotImplementedYet, compare_values, run_check


def _double(x):
    return 2 * x


CASES = [
    Case("a small vector", args=(torch.tensor([1.0, 2.0]),), expected=torch.tensor([2.0, 4.0])),
    Case("an integer", args=(3,), expected=6),
]


def test_success_prints_one_line(capsys):
    run_check("Task 0", _double, CASES)
    out = capsys.readouterr().out
    assert out.strip() == "\u2705 Task 0: all 2 cases passed."


def test_wrong_value_names_the_case_and_the_difference():
    with pytest.raises(CheckError, match=r"case 'a small vector' is wrong: values differ.*at index \(1,\) \(expected 4, got 3\)"):
        run_check("Task 0", lambda x: x + 1, CASES)


def test_wrong_shape_is_reported_as_a_shape():
    with pytest.raises(CheckError, match=r"expected shape \(2,\) but got shape \(1, 2\)"):
        run_check("Task 0", lambda x: (2 * x).unsqueeze(0), CASES[:1])


def test_wrong_type_is_reported_as_a_type():
    with pytest.raises(CheckError, match=r"expected a tensor of shape \(2,\) but got list"):
        run_check("Task 0", lambda x: [2.0, 4.0], CASES[:1])


def test_stub_raises_not_implemented_yet():
    def stub(x):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        run_check("Task 0", stub, CASES)


def test_learner_exception_is_summarised_with_the_learner_line():
    def buggy(x):
        return x.reshape(5)

    with pytest.raises(CheckError) as info:
        run_check("Task 0", buggy, CASES)
    message = str(info.value)
    assert "case 'a small vector' raised RuntimeError" in message
    assert "return x.reshape(5)" in message


def test_diagnosis_names_the_misconception():
    def diagnose(case, got):
        return "you added instead of multiplying" if torch.is_tensor(got) and torch.equal(got, case.args[0] + 2) else None

    with pytest.raises(CheckError, match="Likely mistake: you added instead of multiplying"):
        run_check("Task 0", lambda x: x + 2, CASES[:1], diagnose=diagnose)


def test_passing_a_call_result_instead_of_the_function_is_explained():
    with pytest.raises(CheckError, match="Pass the function itself"):
        run_check("Task 0", _double(torch.ones(2)), CASES)


def test_errors_render_without_the_checkers_traceback():
    lines = CheckError("Task 0: case 'x' is wrong.\n   Likely mistake: y").__class__._render_traceback_(
        CheckError("Task 0: case 'x' is wrong.\n   Likely mistake: y")
    )
    assert lines[0].startswith("\u274c Task 0") and len(lines) == 2
    assert NotImplementedYet("Task 0: not implemented yet.")._render_traceback_() == ["\u270b Task 0: not implemented yet."]


def test_learner_cannot_mutate_the_check_inputs():
    def in_place(x):
        if torch.is_tensor(x):
            x.mul_(2)
            return x
        return 2 * x

    run_check("Task 0", in_place, CASES)  # would fail on a second use if inputs were shared
    run_check("Task 0", in_place, CASES)


def test_nan_on_one_side_is_reported_not_crashed():
    case = Case("empty class", args=(0,), expected=torch.tensor([0.5, float("nan")]))
    with pytest.raises(CheckError, match=r"at index \(1,\) \(expected nan, got 1\)"):
        run_check("Task 0", lambda x: torch.tensor([0.5, 1.0]), [case])
    run_check("Task 0", lambda x: torch.tensor([0.5, float("nan")]), [case])  # NaN where NaN is expected passes


# ------------------------------------------------------------------ odd return values
REAL = [Case("a small vector", args=(torch.tensor([1.0, 2.0]),), expected=torch.tensor([2.0, 4.0]))]


@pytest.mark.parametrize("answer, match", [
    (lambda x: (2 * x).to(torch.complex64), r"complex Tensor of dtype torch\.complex64.*return result\.real"),
    (lambda x: (2 * x).numpy().astype(np.complex128), r"complex ndarray of dtype complex128"),
])
def test_complex_answers_to_real_questions_are_refused(answer, match):
    # torch.allclose on a float64 copy drops the imaginary part: these were false passes
    with pytest.raises(CheckError, match=match):
        run_check("Task 0", answer, REAL)
    pair = [Case("a pair", args=REAL[0].args, expected=(torch.tensor([2.0, 4.0]), 1.0))]
    with pytest.raises(CheckError, match=r"item 1: expected the number 1 but got the complex number \(1\+0j\)"):
        run_check("Task 0", lambda x: (2 * x, 1 + 0j), pair)


def test_complex_scalars_do_not_pass_for_real_numbers():
    # float() of a numpy complex drops the imaginary part: this was a false pass
    case = Case("a number", args=(1.5,), expected=3.0)
    for answer in (lambda x: np.complex128(2 * x + 5j), lambda x: complex(2 * x, 0), lambda x: torch.tensor(2 * x + 0j)):
        with pytest.raises(CheckError, match="complex"):
            run_check("Task 0", answer, [case])


def test_complex_answers_to_complex_questions_are_compared():
    expected = torch.tensor([1 + 2j, 3 - 1j])
    assert compare_values(expected.clone(), expected) is None
    assert "values differ" in compare_values(expected.conj(), expected)


@pytest.mark.parametrize("answer, match", [
    (lambda x: torch.empty(2, device="meta"), r"tensor on the 'meta' device .*shape \(2,\).*no values"),
    (lambda x: np.array([1, None], dtype=object), r"numpy array of dtype object .*not numbers"),
    (lambda x: np.array(["2", "4"]), r"numpy array of dtype <U1"),
    (lambda x: (2 * x).to_sparse(), r"torch\.sparse_coo tensor .*to_dense"),
])
def test_odd_tensors_and_arrays_are_reported_not_crashed(answer, match):
    with pytest.raises(CheckError, match=r"case 'a small vector' is wrong: expected a real-valued tensor of shape \(2,\)"):
        run_check("Task 0", answer, REAL)
    with pytest.raises(CheckError, match=match):
        run_check("Task 0", answer, REAL)


def test_odd_values_for_numbers_and_tuples_are_reported():
    with pytest.raises(CheckError, match=r"expected the integer 6 but got a tensor on the 'meta' device"):
        run_check("Task 0", lambda x: torch.tensor(6, device="meta"), CASES[1:])
    pair = [Case("a pair", args=(1,), expected=(torch.zeros(2), 3))]
    with pytest.raises(CheckError, match=r"item 0: expected a real-valued tensor of shape \(2,\) but got a tensor on the 'meta'"):
        run_check("Task 0", lambda x: (torch.empty(2, device="meta"), 3), pair)
    # an array where a string is expected: `array == "valid"` is not a yes/no answer
    with pytest.raises(CheckError, match=r"expected 'valid' but got array of shape \(2,\)"):
        run_check("Task 0", lambda x: np.array([1, 2]), [Case("a mode", args=(1,), expected="valid")])


def test_a_comparison_or_diagnosis_that_cannot_handle_the_answer_still_gives_a_message():
    def fragile_compare(got, expected, atol, rtol):
        return None if got.shape == expected.shape else "wrong shape"  # .shape: crashes on a list

    with pytest.raises(CheckError, match=r"got list \(\[2\.0, 4\.0\]\), which cannot be compared .*AttributeError"):
        run_check("Task 0", lambda x: [2.0, 4.0], REAL, compare=fragile_compare)

    def fragile_diagnose(case, got):
        return "hint" if got.sum() > 100 else None  # crashes on a list

    with pytest.raises(CheckError, match=r"expected a tensor of shape \(2,\) but got list \(\[1, 2\]\)\.$"):
        run_check("Task 0", lambda x: [1, 2], REAL, diagnose=fragile_diagnose)


# ------------------------------------------------------------------ time limit, sys.exit, Ctrl-C
needs_alarm = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="the time limit needs SIGALRM")


def endless(x):
    while True:
        pass


@pytest.fixture
def timer_is_left_alone():
    """Every test below must leave no alarm armed and the SIGALRM handler as it was."""
    handler = signal.getsignal(signal.SIGALRM) if hasattr(signal, "SIGALRM") else None
    yield
    if hasattr(signal, "setitimer"):
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert signal.getsignal(signal.SIGALRM) is handler


@needs_alarm
def test_an_endless_loop_is_stopped_and_named(timer_is_left_alone):
    start = time.monotonic()
    with pytest.raises(CheckError) as info:
        run_check("Task 0", endless, CASES, timeout=0.5)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "your function did not return within 0.5 s on case 'a small vector'" in message
    assert "while True:" in message and "UNETLIB_CHECK_TIMEOUT" in message


@needs_alarm
def test_the_time_limit_cannot_be_swallowed_by_the_learners_except(timer_is_left_alone):
    def stubborn(x):
        while True:
            try:
                time.sleep(0.01)
            except Exception:
                pass

    with pytest.raises(CheckError, match="did not return within 0.3 s"):
        run_check("Task 0", stubborn, CASES, timeout=0.3)


@needs_alarm
def test_the_time_limit_comes_from_the_environment(monkeypatch, timer_is_left_alone):
    monkeypatch.setenv("UNETLIB_CHECK_TIMEOUT", "0.25")
    with pytest.raises(CheckError, match="within 0.25 s"):
        run_check("Task 0", endless, CASES)
    monkeypatch.setenv("UNETLIB_CHECK_TIMEOUT", "0")  # 0 = no limit: a quick function still passes
    run_check("Task 0", _double, CASES)


@pytest.mark.parametrize("env, timeout, error, match", [
    ("soon", None, ValueError, "UNETLIB_CHECK_TIMEOUT must be a number of seconds"),
    ("-1", None, ValueError, "UNETLIB_CHECK_TIMEOUT must be a finite number of seconds >= 0"),
    (None, float("inf"), ValueError, "timeout must be a finite number"),
    (None, "5", TypeError, "timeout must be a number of seconds"),
])
def test_bad_time_limits_are_refused(monkeypatch, env, timeout, error, match):
    if env is None:
        monkeypatch.delenv("UNETLIB_CHECK_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("UNETLIB_CHECK_TIMEOUT", env)
    with pytest.raises(error, match=match):
        run_check("Task 0", _double, CASES, timeout=timeout)


@needs_alarm
def test_the_timer_is_disarmed_however_the_call_ends(timer_is_left_alone):
    run_check("Task 0", _double, CASES, timeout=5)
    with pytest.raises(CheckError):
        run_check("Task 0", lambda x: x.reshape(5), CASES, timeout=5)
    with pytest.raises(KeyboardInterrupt):
        run_check("Task 0", lambda x: (_ for _ in ()).throw(KeyboardInterrupt), CASES, timeout=5)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@needs_alarm
def test_someone_elses_alarm_is_left_alone():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        run_check("Task 0", _double, CASES, timeout=1)
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30
        assert signal.getsignal(signal.SIGALRM) is not previous and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_outside_the_main_thread_checks_run_without_a_limit():
    errors = []

    def target():
        try:
            run_check("Task 0", _double, CASES, timeout=1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and errors == []


@pytest.mark.parametrize("code, shown", [(None, "sys.exit()"), (1, "sys.exit(1)"), ("bye", "sys.exit('bye')")])
def test_sys_exit_is_reported_not_obeyed(code, shown, timer_is_left_alone):
    def quitter(x):
        sys.exit(code)

    with pytest.raises(CheckError) as info:
        run_check("Task 0", quitter, CASES)
    message = str(info.value)
    assert f"case 'a small vector': your function called {shown}" in message
    assert "sys.exit(code)" in message  # the learner's line


def test_keyboard_interrupt_is_never_swallowed(timer_is_left_alone):
    def interrupted(x):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_check("Task 0", interrupted, CASES)
