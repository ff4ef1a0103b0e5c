"""Classroom grading: run a class's exercise notebooks and grade them with the course's checks.

``python -m unetlib grade SUBMISSIONS... --out grades`` executes each submitted notebook in a
fresh, resource-limited kernel, takes the learner's functions from it, runs the course's checks
on them (visible and hidden cases; the learner's own check cells are never trusted), and writes
``grades.csv``, one feedback file per learner and a class report of misconceptions.
docs/grading.md describes the workflow and what the sandboxing does and does not protect against.

One idea per module:

* :mod:`~unetlib.grade.registry`: exercises and tasks, read from the solution notebooks; points.
* :mod:`~unetlib.grade.inputs`: folders, globs and LMS zips; learner ids from file names.
* :mod:`~unetlib.grade.execute`: one notebook in one limited kernel (nbclient), timeouts, restarts.
* :mod:`~unetlib.grade.kernel`: starting that kernel (environment, limits, capped output).
* :mod:`~unetlib.grade.limits`: the kernel's memory, CPU-time and file-size limits.
* :mod:`~unetlib.grade.kernel_side`: the checks, case by case, inside the learner's kernel.
* :mod:`~unetlib.grade.hidden`: hidden-case variants of the checks (other seeds and sizes).
* :mod:`~unetlib.grade.scoring`: points per task (partial or all-or-nothing).
* :mod:`~unetlib.grade.runner`: submissions in parallel worker processes.
* :mod:`~unetlib.grade.feedback`, :mod:`~unetlib.grade.gradebook`, :mod:`~unetlib.grade.class_report`:
  the output files.
* :mod:`~unetlib.grade.command`: the command line.
"""
from .errors import GradeError

__all__ = ["GradeError"]
