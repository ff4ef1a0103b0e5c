import pytest

from unetlib.budget import BUDGET_ENV, by_budget, training_budget


def test_full_is_the_default(monkeypatch):
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert training_budget() == "full"
    assert by_budget(full=6, quick=3) == 6


@pytest.mark.parametrize("value", ["quick", " Quick "])
def test_quick_picks_the_quick_value(monkeypatch, value):
    monkeypatch.setenv(BUDGET_ENV, value)
    assert training_budget() == "quick"
    assert by_budget(full=dict(epochs=6), quick=dict(epochs=3)) == dict(epochs=3)


def test_an_unknown_budget_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "fast")
    with pytest.raises(ValueError, match=r"UNETLIB_BUDGET is 'fast'.*full, quick"):
        training_budget()


def test_the_suite_runs_lessons_on_the_quick_budget():
    # tests/conftest.py sets it, so every notebook kernel nbval starts inherits it.
    assert training_budget() == "quick"
