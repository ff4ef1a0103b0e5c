"""Which exercises exist, which tasks each has, and what each task is worth.

The solution notebooks are the single source of truth (as for ``make exercises``): every
code cell that calls a course check on a learner's function, ``check_count_pairs(count_pairs)``,
declares one task: the function the learner writes and the check that grades it. Adding a task
to a solution notebook therefore adds it to grading, with nothing to register here.

Points: 1 per task, unless the solution's check cell declares others in its metadata,
``{"unetlib": {"points": 2}}``, or :data:`POINTS` below names the task.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import GradeError

__all__ = ["Task", "Exercise", "POINTS", "load_exercises", "find_exercise", "detect_exercise",
           "default_solutions_dir"]

#: Points per task where a task is worth more than 1: ``{(exercise stem, function): points}``.
#: (Empty: every task is worth 1. Solution-cell metadata overrides this table.)
POINTS: dict[tuple[str, str], float] = {}

# A check call on a learner's function, alone on its line: ``check_conv2d(conv2d)``.
CHECK_CALL = re.compile(r"^[ \t]*(check_\w+)\(\s*([A-Za-z_]\w*)\s*\)[ \t;]*$", re.M)
_DEFINITION = re.compile(r"^(?:def|class)\s+([A-Za-z_]\w*)", re.M)


@dataclass(frozen=True)
class Task:
    """One graded task: the learner writes ``function``; ``check`` (a name in :mod:`unetlib.checks`) grades it.

    exercise: the exercise's stem, e.g. ``"06_isbi2012_exercises"``.
    number:   1-based position of the task in the notebook.
    points:   what a fully correct answer earns.
    """

    exercise: str
    number: int
    function: str
    check: str
    points: float = 1.0

    @property
    def column(self) -> str:
        """The task's column in grades.csv: ``"06 count_pairs"`` (exercise number and function)."""
        return f"{self.exercise.split('_')[0]} {self.function}"


@dataclass(frozen=True)
class Exercise:
    """An exercise notebook: its stem (``"01_convolution_exercises"``) and its tasks in order."""

    name: str
    tasks: tuple[Task, ...]

    @property
    def max_points(self) -> float:
        return float(sum(task.points for task in self.tasks))


def default_solutions_dir() -> Path:
    """``solutions/`` of the course checkout this unetlib was installed from."""
    return Path(__file__).resolve().parent.parent.parent / "solutions"


def _cell_points(cell) -> Optional[float]:
    value = (cell.get("metadata") or {}).get("unetlib", {}).get("points")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_exercises(solutions_dir: Optional[Path] = None) -> dict[str, Exercise]:
    """Every exercise in ``solutions_dir`` (default :func:`default_solutions_dir`), by stem.

    Returns ``{stem: Exercise}``; raises :class:`GradeError` if the folder holds no solution
    notebook with a check call.
    """
    import nbformat

    folder = Path(solutions_dir) if solutions_dir is not None else default_solutions_dir()
    exercises = {}
    for path in sorted(folder.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        tasks, seen = [], set()
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            for check, function in CHECK_CALL.findall(cell.source):
                if function in seen:  # a second check of one function is still one task
                    continue
                seen.add(function)
                points = _cell_points(cell)
                if points is None:
                    points = POINTS.get((path.stem, function), 1.0)
                tasks.append(Task(path.stem, len(tasks) + 1, function, check, points))
        if tasks:
            exercises[path.stem] = Exercise(path.stem, tuple(tasks))
    if not exercises:
        raise GradeError(f"no solution notebooks with check cells in {folder}; pass --solutions DIR "
                         "(the course's solutions/ folder)")
    return exercises


def find_exercise(name: str, exercises: dict[str, Exercise]) -> Exercise:
    """The exercise ``name`` names: its stem, a prefix of it (``"06"``, ``"06_isbi2012"``) or a file name."""
    key = Path(name).stem if name.endswith(".ipynb") else name
    if key in exercises:
        return exercises[key]
    matches = [stem for stem in exercises if stem.startswith(key)]
    if len(matches) == 1:
        return exercises[matches[0]]
    choices = ", ".join(exercises)
    if matches:
        raise GradeError(f"--exercise {name!r} is ambiguous: it matches {', '.join(matches)}")
    raise GradeError(f"unknown exercise {name!r}; choose one of: {choices} (or its number, e.g. 01)")


def detect_exercise(file_name: str, notebook, exercises: dict[str, Exercise]) -> Optional[Exercise]:
    """Which exercise a submission is, or None when it cannot tell.

    file_name: the submission's name; an exercise stem inside it decides.
    notebook:  the submission (an nbformat NotebookNode); otherwise the exercise whose task
               functions and checks it mentions most (a learner may delete check cells or rename
               a function, so any overlap counts) wins, when one clearly does.
    """
    for stem, exercise in exercises.items():
        if stem in file_name:
            return exercise
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    names = set(_DEFINITION.findall(source)) | set(re.findall(r"\b(check_\w+)\b", source))
    scores = {stem: sum((task.function in names) + (task.check in names) for task in exercise.tasks)
              for stem, exercise in exercises.items()}
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    if not ranked or ranked[0][1] == 0 or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return None
    return exercises[ranked[0][0]]
