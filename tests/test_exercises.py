"""The exercise system: exercises/ is generated from solutions/ and behaves as promised.

For every exercise notebook CI proves that it is up to date with its solution and that,
run top to bottom, it stops only at its NotImplementedError stubs. (That each solution
runs with every check passing is proved by nbval over solutions/.)
"""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from unetlib.exercises import ROOT, generate, make_exercise

SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
NOT_IMPLEMENTED = {"NotImplementedError", "NotImplementedYet"}


def test_every_solution_has_an_exercise_twin_and_vice_versa():
    solutions = {p.name for p in SOLUTIONS}
    exercises = {p.name for p in (ROOT / "exercises").glob("*.ipynb")}
    assert solutions == exercises, "run `make exercises` to regenerate exercises/ from solutions/"


def test_exercises_are_up_to_date_with_solutions():
    stale = generate(check=True)
    assert not stale, f"stale exercise notebooks {[p.name for p in stale]}: run `make exercises`"


@pytest.mark.parametrize("solution_path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_marks_tasks_and_exercise_hides_them(solution_path):
    solution = nbformat.read(solution_path, as_version=4)
    code = [c.source for c in solution.cells if c.cell_type == "code"]
    begins = sum(s.count("### BEGIN SOLUTION") for s in code)
    ends = sum(s.count("### END SOLUTION") for s in code)
    assert begins >= 1 and begins == ends, "every task needs a matching BEGIN/END SOLUTION pair"
    exercise = make_exercise(solution)
    exercise_code = "\n".join(c.source for c in exercise.cells if c.cell_type == "code")
    assert "BEGIN SOLUTION" not in exercise_code
    assert exercise_code.count("raise NotImplementedError()") >= begins
    assert all(c.get("outputs", []) == [] for c in exercise.cells if c.cell_type == "code")


@pytest.mark.parametrize("solution_path", SOLUTIONS, ids=lambda p: p.stem)
def test_exercise_notebook_stops_only_at_its_stubs(solution_path):
    exercise = make_exercise(nbformat.read(solution_path, as_version=4))
    client = NotebookClient(
        exercise,
        timeout=900,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(ROOT / "exercises")}},
    )
    client.execute()
    errors = [
        (i, out.get("ename"), out.get("evalue"))
        for i, cell in enumerate(exercise.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert errors, "the exercise notebook ran without reaching any NotImplementedError stub"
    unexpected = [e for e in errors if e[1] not in NOT_IMPLEMENTED]
    assert not unexpected, f"errors other than the stubs (cell index, error, message): {unexpected}"
