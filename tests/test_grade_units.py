"""The grading pieces that need no kernel: inputs and learner ids, exercises and tasks, the
case-by-case check runner, scoring, the class report, resource limits, and the one-line errors
of ``python -m unetlib grade`` for every mistake a user can make."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest

from unetlib.checks import check_count_pairs, check_split_merge_errors
from unetlib.checks import nb06_isbi2012 as nb06
from unetlib.cli import main
from unetlib.grade import GradeError
from unetlib.grade.class_report import class_report_markdown, misconception_counts
from unetlib.grade.execute import strip_check_calls
from unetlib.grade.hidden import VARIANTS
from unetlib.grade.inputs import collect_submissions
from unetlib.grade.kernel_side import _run_check_recorded, find_function, misconception
from unetlib.grade.limits import KernelLimits
from unetlib.grade.registry import detect_exercise, find_exercise, load_exercises
from unetlib.grade.scoring import score_task

EXERCISE = "06_isbi2012_exercises"


@pytest.fixture(scope="module")
def exercises():
    return load_exercises()


def _notebook(path: Path, source: str = "x = 1") -> Path:
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), path)
    return path


# ------------------------------------------------------------------- exercises and tasks
def test_tasks_come_from_the_solution_notebooks(exercises):
    tasks = exercises[EXERCISE].tasks
    assert [(t.function, t.check, t.points) for t in tasks] == [
        ("count_pairs", "check_count_pairs", 1.0), ("rand_error_by_hand", "check_rand_error_by_hand", 1.0),
        ("split_merge_errors", "check_split_merge_errors", 1.0)]
    assert tasks[0].column == "06 count_pairs"
    assert "01_convolution_exercises" in exercises


def test_an_exercise_is_named_by_number_stem_or_file(exercises):
    assert find_exercise("06", exercises).name == EXERCISE
    assert find_exercise(f"exercises/{EXERCISE}.ipynb", exercises).name == EXERCISE
    with pytest.raises(GradeError, match="unknown exercise '99'; choose one of: 01_convolution_exercises"):
        find_exercise("99", exercises)
    with pytest.raises(GradeError, match="ambiguous"):
        find_exercise("0", exercises)


def test_the_exercise_is_detected_from_the_name_or_the_code(exercises):
    empty = nbformat.v4.new_notebook()
    assert detect_exercise(f"alice_{EXERCISE}.ipynb", empty, exercises).name == EXERCISE
    renamed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("def count_pairs(s):\n    return 0")])
    assert detect_exercise("alice.ipynb", renamed, exercises).name == EXERCISE
    assert detect_exercise("alice.ipynb", empty, exercises) is None


def test_learners_check_calls_become_pass():
    source = "check_conv2d(conv2d)\nif True:\n    check_iou(iou)\nvalue = check_helper(x) + 1\n"
    assert strip_check_calls(source) == "pass\nif True:\n    pass\nvalue = check_helper(x) + 1\n"


# -------------------------------------------------------------------- inputs and ids
def test_learner_ids_from_folders_zips_and_patterns(tmp_path):
    folder = tmp_path / "hand-in"
    (folder / "bob").mkdir(parents=True)
    (folder / ".ipynb_checkpoints").mkdir()
    _notebook(folder / f"alice_{EXERCISE}.ipynb")
    _notebook(folder / "bob" / f"{EXERCISE}.ipynb")
    _notebook(folder / ".ipynb_checkpoints" / f"alice_{EXERCISE}-checkpoint.ipynb")
    archive = tmp_path / "moodle.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(folder / f"alice_{EXERCISE}.ipynb", f"Jane Doe_1234_assignsubmission_file_/{EXERCISE}.ipynb")
        handle.write(folder / f"alice_{EXERCISE}.ipynb", "../escape_s123456.ipynb")  # never extracted
        handle.writestr("notes.txt", "not a notebook")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    found = collect_submissions([str(folder), str(archive)], unpacked)
    assert [s.learner for s in found] == ["Jane Doe", "alice", "bob"]
    assert not (tmp_path / "escape_s123456.ipynb").exists()
    by_number = collect_submissions([str(tmp_path / "hand-in" / "*.ipynb")], unpacked, r"(?P<learner>[a-z]+)_06")
    assert [s.learner for s in by_number] == ["alice"]


@pytest.mark.parametrize("pattern, message", [
    ("(unclosed", "is not a valid regular expression"),
    ("[a-z]+", "needs a group named learner"),
    (r"(?P<learner>s\d{6})", "cannot read a learner id from"),
])
def test_bad_id_patterns_are_refused(tmp_path, pattern, message):
    _notebook(tmp_path / f"alice_{EXERCISE}.ipynb")
    with pytest.raises(GradeError, match=message):
        collect_submissions([str(tmp_path)], tmp_path, pattern)


def test_cli_mistakes_are_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    _notebook(tmp_path / "alice_x.ipynb", "print('no exercise here')")
    (tmp_path / "bad.zip").write_text("not a zip")
    cases = [
        ([str(empty)], "no notebooks (.ipynb) found in"),
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(tmp_path / "nothing-*.ipynb")], "matches no file"),
        ([str(tmp_path / "bad.zip")], "is not a readable zip file"),
        ([str(tmp_path / "alice_x.ipynb")], "cannot tell which exercise alice_x.ipynb is; pass --exercise"),
        ([str(tmp_path / "alice_x.ipynb"), "--exercise", "42"], "unknown exercise '42'"),
        ([str(tmp_path / "alice_x.ipynb"), "--id-pattern", "(x"], "is not a valid regular expression"),
        ([str(tmp_path / "alice_x.ipynb"), "--jobs", "0"], "--jobs must be at least 1"),
        ([], "no submissions given"),
        (["--self", str(tmp_path / "missing.ipynb")], "--self needs a notebook"),
    ]
    for arguments, message in cases:
        out = tmp_path / f"out{len(message)}"
        assert main(["grade", *arguments, "--out", str(out)]) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err


def test_one_learner_with_one_exercise_twice_is_refused(tmp_path, capsys):
    _notebook(tmp_path / f"alice_a_{EXERCISE}.ipynb")
    _notebook(tmp_path / f"alice_b_{EXERCISE}.ipynb")
    assert main(["grade", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "learner 'alice' has 2 notebooks of 06_isbi2012_exercises" in capsys.readouterr().err


def test_an_earlier_run_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "grades.csv").write_text("learner\n")
    assert main(["grade", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


# ------------------------------------------------------------------ the check runner
def _ordered_pairs(segments):
    sizes = np.unique(segments[segments != 0], return_counts=True)[1]
    return int(np.sum(sizes * (sizes - 1)))


def test_every_case_is_run_and_the_first_failure_is_the_checks_message():
    result = _run_check_recorded(check_count_pairs, _ordered_pairs, {})
    assert result["outcome"] == "failed" and result["label"] == "Task 1 count_pairs"
    assert (result["passed"], result["total"]) == (0, 7)
    assert misconception(result["message"]) == nb06._ORDERED
    right = _run_check_recorded(check_count_pairs, lambda s: _ordered_pairs(s) // 2, {})
    assert (right["outcome"], right["passed"], right["total"]) == ("passed", 7, 7)


def test_hidden_cases_are_other_inputs_with_the_same_diagnoses():
    (variant,) = VARIANTS["check_split_merge_errors"]

    def swapped(pred, truth):
        split, merge = nb06._rand_errors(np.asarray(pred), np.asarray(truth))[1:]
        return merge, split

    hidden = _run_check_recorded(check_split_merge_errors, swapped, variant(nb06))
    assert hidden["total"] == 5 and "hidden" in hidden["message"]
    assert misconception(hidden["message"]) == nb06._SWAPPED
    assert nb06._pair_images()[0][0].startswith("one true cell")  # restored after the run


def test_a_stub_is_not_attempted_and_a_renamed_function_is_found():
    def stub(segments):
        raise NotImplementedError()

    assert _run_check_recorded(check_count_pairs, stub, {})["outcome"] == "not_attempted"
    namespace = {"count_pair": _ordered_pairs, "x": 3}
    _ordered_pairs.__module__ = "__main__"  # as if the learner had defined it in the notebook
    fn, note = find_function(namespace, "count_pairs")
    assert fn is _ordered_pairs and "count_pair" in note
    assert find_function({"count_pairs": 3}, "count_pairs") == (None, "`count_pairs` is a int, not a function")


# ---------------------------------------------------------------------- scoring, report
def test_partial_credit_or_all_or_nothing(exercises):
    task = exercises[EXERCISE].tasks[0]
    found = {"function": "count_pairs", "status": "failed", "note": None,
             "visible": {"outcome": "failed", "passed": 6, "total": 7, "message": "m\n   Likely mistake: x"},
             "hidden": {"passed": 3, "total": 5, "message": None}}
    partial = score_task(task, found, "partial")
    assert (partial["points"], partial["status"], partial["misconception"]) == (0.75, "partly passed", "x")
    assert score_task(task, found, "all-or-nothing")["points"] == 0.0
    assert score_task(task, None, "partial")["status"] == "not graded"


def test_the_class_report_counts_each_learner_once_per_misconception():
    def record(learner, status, hint):
        return {"learner": learner, "tasks": [{"column": "01 conv2d", "task": "Task 1 conv2d", "status": status,
                                               "misconception": hint}]}

    records = [record("a", "failed", "flipped"), record("b", "failed", "flipped"), record("c", "passed", None)]
    assert misconception_counts(records) == [{"column": "01 conv2d", "task": "Task 1 conv2d",
                                              "misconception": "flipped", "learners": 2, "of": 3}]
    assert "- **2 of 3** (01 conv2d): flipped" in class_report_markdown(records)


def test_kernel_limits_reach_the_child_process():
    if sys.platform == "win32":
        pytest.skip("no resource limits on Windows")
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_DATA)[0], resource.getrlimit(resource.RLIMIT_CPU)[0])"
    limits = KernelLimits(memory_mb=1024, cpu_seconds=30, file_mb=0)
    shown = subprocess.run([sys.executable, "-c", code], preexec_fn=limits.preexec(), capture_output=True,
                           text=True, check=True).stdout.split()
    assert shown == [str(1024 * 2**20), "30"]
    assert KernelLimits(0, 0, 0).preexec() is None


def test_shifted_seeds_give_other_inputs_to_the_same_check():
    from unetlib.checks import check_fuse_additive
    from unetlib.checks import nb03_fcn_unet as nb03

    (variant,) = VARIANTS["check_fuse_additive"]
    seen = {"visible": [], "hidden": []}

    def recorder(into):
        def fuse_additive(*args, **kwargs):
            into.append([a.clone() for a in args if hasattr(a, "clone")])
            return None  # wrong on purpose: only the inputs matter here
        return fuse_additive

    _run_check_recorded(check_fuse_additive, recorder(seen["visible"]), {})
    _run_check_recorded(check_fuse_additive, recorder(seen["hidden"]), variant(nb03))
    visible, hidden = seen["visible"][0], seen["hidden"][0]
    assert [t.shape for t in visible] == [t.shape for t in hidden]  # the same kind of case ...
    assert any(not (v == h).all() for v, h in zip(visible, hidden))  # ... with other values
    assert nb03.torch.Generator is __import__("torch").Generator  # restored after the run


def test_points_come_from_the_solution_check_cells_metadata(tmp_path, capsys):
    check = nbformat.v4.new_code_cell("check_count_pairs(count_pairs)", metadata={"unetlib": {"points": 2.5}})
    cells = [nbformat.v4.new_code_cell("def count_pairs(s):\n    return 0"), check,
             nbformat.v4.new_code_cell("check_iou(iou)")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "07_extra_exercises.ipynb")
    exercise = load_exercises(tmp_path)["07_extra_exercises"]
    assert [(t.function, t.points) for t in exercise.tasks] == [("count_pairs", 2.5), ("iou", 1.0)]
    assert exercise.max_points == 3.5
    assert main(["grade", str(tmp_path), "--solutions", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no solution notebooks with check cells in" in capsys.readouterr().err


def test_missing_jupyter_packages_are_one_line_errors(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nbclient" else real(name, *a))
    assert main(["grade", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "needs nbclient; install the course with its Jupyter extras" in capsys.readouterr().err
