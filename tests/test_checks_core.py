"""The check machinery every exercise uses: messages a learner can act on."""
import pytest
import torch

from unetlib.checks import Case, CheckError, NotImplementedYet, run_check


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
