"""A synthetic class of exercise-06 submissions, graded once by ``python -m unetlib grade``.

Every submission is built from the real solution (or exercise) notebook of exercise 06, which
runs in seconds; each one changes what one kind of learner hands in: a wrong answer with a
known misconception, a cell that raises, an endless loop, sys.exit(), os._exit() (a dead
kernel), a renamed or deleted function, deleted check cells, huge output, a warning on stderr,
a file that is no notebook (and, graded with --self, the untouched exercise). The grades, the feedback and the class
report must come out exactly as the comments say.
"""
from __future__ import annotations

import copy
import csv
import json
import zipfile
from pathlib import Path

import nbformat
import pytest

from unetlib.checks import nb06_isbi2012 as nb06
from unetlib.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXERCISE = "06_isbi2012_exercises"
COUNT_PAIRS, RAND, SPLIT_MERGE = "06 count_pairs", "06 rand_error_by_hand", "06 split_merge_errors"


def _tasks_only(path: Path) -> nbformat.NotebookNode:
    """The notebook up to Task 4, which reads the real EM slices (a download the tests avoid)."""
    notebook = nbformat.read(path, as_version=4)
    end = next(i for i, cell in enumerate(notebook.cells) if "## Task 4" in cell.source)
    notebook.cells = notebook.cells[:end]
    return notebook


def _code_cell_index(notebook, starts: str) -> int:
    return next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and c.source.startswith(starts))


def _replace_body(notebook, function: str, body: str) -> None:
    """Replace the solution region of ``function`` with ``body`` (indented code)."""
    cell = notebook.cells[_code_cell_index(notebook, f"def {function}(")]
    head = cell.source.split("### BEGIN SOLUTION")[0].rstrip(" ")  # up to the marker's own line
    cell.source = head + body.strip("\n") + "\n"


def _insert_code(notebook, after_function: str, source: str) -> None:
    index = _code_cell_index(notebook, f"def {after_function}(")
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))


def _delete_check_cells(notebook) -> None:
    notebook.cells = [c for c in notebook.cells if not c.source.startswith("check_")]


def build_class(folder: Path) -> dict[str, str]:
    """Write the class's notebooks into ``folder``; returns ``{learner: what they handed in}``."""
    solution = _tasks_only(ROOT / "solutions" / f"{EXERCISE}.ipynb")
    learners = {}

    def hand_in(learner: str, notebook, what: str) -> None:
        nbformat.write(notebook, folder / f"{learner}_{EXERCISE}.ipynb")
        learners[learner] = what

    # Right, but count_pairs written another way than the solution (which carol and adam keep),
    # with a warning on stderr that costs nothing.
    alice = copy.deepcopy(solution)
    _replace_body(alice, "count_pairs", """
    import warnings
    warnings.warn("a warning on stderr costs nothing")
    total = 0
    for cell_id in set(np.asarray(segments).ravel().tolist()) - {0}:
        n = int((np.asarray(segments) == cell_id).sum())
        total += n * (n - 1) // 2
    return total
""")
    hand_in("alice", alice, "right, count_pairs by a loop")

    # Ordered pairs (tasks 2 and 3 divide the factor 2 away), split and merge swapped, a dead kernel.
    bob = copy.deepcopy(solution)
    _replace_body(bob, "count_pairs", """
    segments = np.asarray(segments)
    sizes = np.unique(segments[segments != 0], return_counts=True)[1].astype(np.int64)
    return int(np.sum(sizes * (sizes - 1)))
""")
    _replace_body(bob, "split_merge_errors", """
    pred, truth = np.asarray(pred).astype(np.int64), np.asarray(truth).astype(np.int64)
    scored = truth != 0
    t, p = truth[scored], pred[scored]
    both = count_pairs(np.where(p != 0, t * (pred.max() + 1) + p, 0))
    return 1.0 - both / count_pairs(p), 1.0 - both / count_pairs(t)
""")
    _insert_code(bob, "rand_error_by_hand", "import os\nos._exit(1)")
    hand_in("bob", bob, "ordered pairs, split and merge swapped, os._exit() kills the kernel")

    # A cell that raises, 5 MB of output, sys.exit(), no check cells, a function renamed, one deleted.
    carol = copy.deepcopy(solution)
    _insert_code(carol, "count_pairs", "print('x' * 5_000_000)\n1 / 0")
    _insert_code(carol, "count_pairs", "import sys\nsys.exit()")
    _delete_check_cells(carol)
    cell = carol.cells[_code_cell_index(carol, "def rand_error_by_hand(")]
    cell.source = cell.source.replace("def rand_error_by_hand(", "def rand_eror_by_hand(")
    carol.cells.pop(_code_cell_index(carol, "def split_merge_errors("))
    hand_in("carol", carol, "raises, huge output, sys.exit(), no check cells, one function renamed, one deleted")

    # An endless cell (stopped) and a function that never returns. Graded first (learners are
    # taken in name order), so its waiting overlaps the other notebooks instead of ending the run.
    adam = copy.deepcopy(solution)
    _insert_code(adam, "count_pairs", "import time\nwhile True:\n    time.sleep(0.05)")
    _replace_body(adam, "split_merge_errors", "    while True:\n        time.sleep(0.05)\n")
    hand_in("adam", adam, "an endless cell and an endless function")

    (folder / f"ivan_{EXERCISE}.ipynb").write_text("{ this is not a notebook", encoding="utf-8")
    learners["ivan"] = "a file that is not a notebook"
    return learners


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class, zipped as an LMS would, graded once: (output folder, learners)."""
    root = tmp_path_factory.mktemp("grade_class")
    folder = root / "submissions"
    folder.mkdir()
    learners = build_class(folder)
    archive = root / "download.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.iterdir()):
            handle.write(path, f"{path.name}")
    out = root / "grades"
    # 20 s per cell: the endless cell is stopped, while the import cell (PyTorch) has room even
    # when every core is busy with other tests.
    status = main(["grade", str(archive), "--out", str(out), "--jobs", "2", "--cell-timeout", "20",
                   "--case-timeout", "1", "--nbgrader-csv"])
    assert status == 0
    return out, learners


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        return {row["learner"]: row for row in csv.DictReader(handle)}


def test_every_learner_gets_a_row_with_the_expected_points(graded):
    out, learners = graded
    rows = _rows(out)
    assert set(rows) == set(learners)
    points = {learner: (row[COUNT_PAIRS], row[RAND], row[SPLIT_MERGE], row["total"]) for learner, row in rows.items()}
    assert points == {
        "alice": ("1", "1", "1", "3"),
        # ordered pairs double every count, which tasks 2 and 3 divide away; swapped split and
        # merge pass only 1 of 12 cases (the perfect prediction: no split, no merge)
        "bob": ("0", "1", "0.08", "1.08"),
        "carol": ("1", "1", "0", "2"),    # the renamed function is graded, the deleted one is missing
        "adam": ("1", "1", "0", "2"),     # the endless function times out on every case
        "ivan": ("0", "0", "0", "0"),
    }
    assert {row["max_points"] for row in rows.values()} == {"3"}


def test_statuses_and_problems_name_what_went_wrong(graded):
    out, _ = graded
    rows = _rows(out)
    assert "raised ZeroDivisionError" in rows["carol"]["problems"]
    assert "called sys.exit()" in rows["carol"]["problems"]
    assert "ran longer than 20 s and was stopped" in rows["adam"]["problems"]
    assert "ended the kernel" in rows["bob"]["problems"]
    assert rows["ivan"]["status"] == f"{EXERCISE}: unreadable"
    assert rows["alice"]["problems"] == "" and rows["alice"]["status"] == f"{EXERCISE}: graded"


def test_task_records_carry_the_checks_message_and_misconception(graded):
    out, _ = graded
    data = json.loads((out / "grades.json").read_text(encoding="utf-8"))
    tasks = {(r["learner"], t["function"]): t for r in data["submissions"] for t in r["tasks"]}
    bob = tasks[("bob", "count_pairs")]
    assert bob["status"] == "failed" and bob["misconception"] == nb06._ORDERED
    assert bob["message"].startswith("Task 1 count_pairs: case ")
    assert tasks[("bob", "split_merge_errors")]["misconception"] == nb06._SWAPPED
    assert tasks[("alice", "count_pairs")]["status"] == "passed"  # the same answer, written differently
    assert "did not return within 1 s" in tasks[("adam", "split_merge_errors")]["message"]
    assert tasks[("carol", "split_merge_errors")]["status"] == "missing"
    assert "rand_eror_by_hand" in tasks[("carol", "rand_error_by_hand")]["note"]
    alice = tasks[("alice", "count_pairs")]
    assert (alice["passed"], alice["total"]) == (7, 7) and alice["hidden_total"] > 0
    assert alice["hidden_passed"] == alice["hidden_total"]


def test_feedback_files_repeat_the_check_message(graded):
    out, learners = graded
    files = {path.stem for path in (out / "feedback").glob("*.md")}
    assert files == set(learners)
    bob = (out / "feedback" / "bob.md").read_text(encoding="utf-8")
    assert "Score: 1.08 of 3 points" in bob and nb06._ORDERED in bob and nb06._SWAPPED in bob
    assert "raised ZeroDivisionError: division by zero" in (out / "feedback" / "carol.md").read_text(encoding="utf-8")


def test_class_report_counts_learners_per_misconception(graded):
    out, _ = graded
    report = (out / "class_report.md").read_text(encoding="utf-8")
    assert f"- **1 of 5** ({COUNT_PAIRS}): {nb06._ORDERED}" in report
    assert f"- **1 of 5** ({SPLIT_MERGE}): {nb06._SWAPPED}" in report
    assert f"| {COUNT_PAIRS} (Task 1 count_pairs) | 3 of 5 |" in report
    assert (out / "class_report.png").stat().st_size > 1000
    with open(out / "misconceptions.csv", newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 2


def test_nbgrader_export_layout(graded):
    out, _ = graded
    with open(out / "nbgrader_grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name",
                             "email", "raw_score", "late_submission_penalty", "score", "max_score"]
    assert {r["student_id"]: r["score"] for r in rows}["alice"] == "3"


def test_self_grading_shows_the_learner_what_the_grader_says(tmp_path, capsys):
    """``grade --self`` on the untouched exercise: every task not attempted, no hidden cases run."""
    stub = tmp_path / f"{EXERCISE}.ipynb"
    nbformat.write(_tasks_only(ROOT / "exercises" / f"{EXERCISE}.ipynb"), stub)
    assert main(["grade", "--self", str(stub), "--cell-timeout", "30"]) == 0
    shown = capsys.readouterr().out
    assert "Score: 0 of 3 points" in shown and shown.count(": not attempted (0/1 points") == 3
    assert "NotImplementedError" in shown and "hidden cases," not in shown
