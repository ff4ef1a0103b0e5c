"""unetlib.claims.expect: a notice in a lesson, a hard failure under the test suite."""
import pytest

from unetlib.claims import STRICT_ENV, expect


def test_a_claim_that_holds_is_silent(capsys, monkeypatch):
    monkeypatch.delenv(STRICT_ENV, raising=False)
    assert expect(3 > 2, "three beats two") is True
    assert capsys.readouterr().out == ""


def test_in_a_lesson_a_failed_claim_prints_a_notice_and_goes_on(capsys, monkeypatch):
    monkeypatch.delenv(STRICT_ENV, raising=False)
    assert expect(False, "U-Net finds most cells", why="Fewer steps find fewer cells.") is False
    out = capsys.readouterr().out
    assert "did not hold: U-Net finds most cells" in out
    assert "not an error in your code" in out and "Fewer steps find fewer cells." in out


def test_under_the_test_suite_a_failed_claim_fails_hard(monkeypatch):
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(AssertionError, match="claim did not hold: U-Net finds most cells"):
        expect(False, "U-Net finds most cells")


def test_the_suite_runs_notebooks_strictly():
    # conftest.py sets the variable, so nbval's kernels (which inherit it) fail on a broken claim.
    import os

    assert os.environ.get(STRICT_ENV) == "1"


def test_a_claim_needs_words():
    with pytest.raises(TypeError, match="claim must be a non-empty string"):
        expect(True, "")
