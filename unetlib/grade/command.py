"""``python -m unetlib grade``: the arguments and the whole run, from inputs to report files.

See docs/grading.md for the workflow and the trust model.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Optional

from .errors import GradeError
from .execute import RunSettings
from .inputs import DEFAULT_ID_PATTERN, Submission, collect_submissions
from .limits import KernelLimits
from .registry import Exercise, detect_exercise, find_exercise, load_exercises
from .scoring import SCORINGS

__all__ = ["add_arguments", "run_grade", "assign_exercises"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``grade`` sub-command's options to ``parser``."""
    parser.add_argument("inputs", nargs="*", help="submitted notebooks, folders, glob patterns or LMS zip files")
    parser.add_argument("--out", default="grades", help="output folder (default: grades)")
    parser.add_argument("--overwrite", action="store_true", help="replace the reports of an earlier run in --out")
    parser.add_argument("--self", dest="self_check", metavar="NOTEBOOK",
                        help="learner's view: grade one notebook as the instructor would (without hidden cases) "
                             "and print the feedback; writes nothing")
    parser.add_argument("--exercise", help="which exercise every input is, e.g. 01 or 06_isbi2012_exercises "
                                           "(default: detected from each notebook)")
    parser.add_argument("--solutions", help="the course's solutions/ folder (defines the exercises and tasks)")
    parser.add_argument("--id-pattern", default=DEFAULT_ID_PATTERN,
                        help="regex with a group 'learner', searched in each notebook's path relative to its "
                             f"folder or zip (default {DEFAULT_ID_PATTERN!r}: the name up to the first _ or /)")
    parser.add_argument("--jobs", type=int, help="submissions graded at once (default: one per CPU core)")
    parser.add_argument("--scoring", choices=SCORINGS, default="partial",
                        help="partial: points x fraction of cases passed (default); all-or-nothing")
    parser.add_argument("--no-hidden", action="store_true", help="grade on the visible cases only")
    parser.add_argument("--cell-timeout", type=float, default=120, help="seconds per learner cell (default 120)")
    parser.add_argument("--notebook-timeout", type=float, default=900,
                        help="seconds for all of one notebook's cells (default 900)")
    parser.add_argument("--case-timeout", type=float, default=30,
                        help="seconds per call of a learner's function during grading (default 30)")
    parser.add_argument("--memory-mb", type=int, default=4096, help="memory limit per kernel, MB (0 = none; default 4096)")
    parser.add_argument("--cpu-seconds", type=int, default=1200, help="CPU-time limit per kernel (0 = none; default 1200)")
    parser.add_argument("--nbgrader-csv", action="store_true",
                        help="also write nbgrader_grades.csv in the column layout of `nbgrader export`")


def _check_numbers(args) -> None:
    for flag in ("cell_timeout", "notebook_timeout", "case_timeout"):
        if not getattr(args, flag) > 0:
            raise GradeError(f"--{flag.replace('_', '-')} must be a positive number of seconds, got {getattr(args, flag)}")
    for flag in ("memory_mb", "cpu_seconds"):
        if getattr(args, flag) < 0:
            raise GradeError(f"--{flag.replace('_', '-')} must be >= 0 (0 = no limit), got {getattr(args, flag)}")
    if args.jobs is not None and args.jobs < 1:
        raise GradeError(f"--jobs must be at least 1, got {args.jobs}")


def assign_exercises(submissions: list[Submission], exercises: dict[str, Exercise],
                     given: Optional[str]) -> list[Exercise]:
    """Each submission's exercise: ``given`` for all, else detected (see :func:`detect_exercise`).

    A notebook that shows no exercise (emptied, unreadable) is taken to be the exercise all the
    others are, when they agree: it is still graded, to 0, rather than stopping the class.
    Raises :class:`GradeError` when that leaves any submission unknown, or when one learner
    handed in one exercise twice.
    """
    import nbformat

    if given:
        chosen = [find_exercise(given, exercises)] * len(submissions)
    else:
        chosen = []
        for submission in submissions:
            try:
                notebook = nbformat.read(str(submission.path), as_version=4)
            except Exception:  # noqa: BLE001 - unreadable: graded (to 0) as the class's exercise
                notebook = nbformat.v4.new_notebook()
            chosen.append(detect_exercise(submission.path.name, notebook, exercises))
        known = {exercise.name for exercise in chosen if exercise is not None}
        unknown = [s.name for s, e in zip(submissions, chosen) if e is None]
        if unknown and len(known) != 1:
            raise GradeError(f"cannot tell which exercise {unknown[0]} is"
                             f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}; "
                             f"pass --exercise, one of: {', '.join(exercises)}")
        chosen = [e if e is not None else exercises[next(iter(known))] for e in chosen]
    seen = Counter((s.learner, e.name) for s, e in zip(submissions, chosen))
    twice = [key for key, count in seen.items() if count > 1]
    if twice:
        learner, exercise = twice[0]
        files = [s.name for s, e in zip(submissions, chosen) if (s.learner, e.name) == twice[0]]
        raise GradeError(f"learner {learner!r} has {len(files)} notebooks of {exercise}: {', '.join(files)}; "
                         "keep one, or pass an --id-pattern that tells the learners apart")
    return chosen


def _settings(args, hidden: bool, jobs: int) -> RunSettings:
    from .runner import default_jobs

    return RunSettings(cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
                       case_timeout=args.case_timeout, hidden=hidden,
                       limits=KernelLimits(memory_mb=args.memory_mb, cpu_seconds=args.cpu_seconds),
                       threads=max(1, default_jobs() // max(1, jobs)))


def _self_check(args, exercises: dict[str, Exercise]) -> int:
    from .feedback import feedback_markdown
    from .runner import grade_all

    path = Path(args.self_check)
    if not path.is_file() or path.suffix != ".ipynb":
        raise GradeError(f"--self needs a notebook (.ipynb) file; {path} is not one")
    submission = Submission("you", path, path.name)
    (exercise,) = assign_exercises([submission], exercises, args.exercise)
    (record,) = grade_all([("you", path.name, path, exercise)], _settings(args, False, 1), args.scoring, 1)
    print(feedback_markdown("you", [record], show_hidden=False))
    print("(The instructor's grading also runs hidden cases: other seeds and sizes than these.)")
    return 0


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise GradeError(f"--out {out} is a file; give a folder")
    if (out / "grades.csv").exists() and not overwrite:
        raise GradeError(f"{out} already holds grades.csv; pass --overwrite to replace it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def _require_jupyter() -> None:
    """Grading runs notebooks: refuse in one line where the Jupyter packages are not installed."""
    import importlib.util

    missing = [name for name in ("nbformat", "nbclient", "jupyter_client", "ipykernel")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise GradeError(f"grading runs notebooks and needs {', '.join(missing)}; install the course with "
                         "its Jupyter extras: pip install -e '.[dev]' (or make lab)")


def run_grade(args) -> int:
    """Run ``python -m unetlib grade`` with parsed ``args``; returns the exit status (0)."""
    from .class_report import write_class_report
    from .feedback import write_feedback
    from .gradebook import task_columns, write_grades_csv, write_grades_json, write_nbgrader_csv
    from .runner import default_jobs, grade_all

    _check_numbers(args)
    _require_jupyter()
    exercises = load_exercises(Path(args.solutions) if args.solutions else None)
    if args.self_check:
        return _self_check(args, exercises)
    out = Path(args.out)
    _prepare_out(out, args.overwrite)
    with tempfile.TemporaryDirectory(prefix="unetlib-grade-inputs-") as unpacked:
        submissions = collect_submissions(args.inputs, Path(unpacked), args.id_pattern)
        chosen = assign_exercises(submissions, exercises, args.exercise)
        jobs = min(args.jobs or default_jobs(), len(submissions))
        print(f"grading {len(submissions)} notebooks with {jobs} worker(s)", file=sys.stderr)
        records = grade_all([(s.learner, s.name, s.path, e) for s, e in zip(submissions, chosen)],
                            _settings(args, not args.no_hidden, jobs), args.scoring, jobs,
                            log=lambda line: print(line, file=sys.stderr))
    by_learner: dict[str, list[dict]] = {}
    for record in records:
        by_learner.setdefault(record["learner"], []).append(record)
    write_grades_csv(out / "grades.csv", by_learner, task_columns(records))
    write_grades_json(out / "grades.json", records, {"scoring": args.scoring, "hidden": not args.no_hidden,
                                                      "cell_timeout": args.cell_timeout,
                                                      "notebook_timeout": args.notebook_timeout,
                                                      "case_timeout": args.case_timeout})
    write_feedback(out / "feedback", by_learner)
    write_class_report(out, records)
    if args.nbgrader_csv:
        write_nbgrader_csv(out / "nbgrader_grades.csv", records)
    print(f"wrote {out / 'grades.csv'}, {out / 'class_report.md'} (+ .png), and {len(by_learner)} feedback "
          f"files in {out / 'feedback'}")
    return 0
