"""Turn what the grading kernel found into points, per task and per submission.

Scoring ``"partial"`` (the default) gives a task's points times the fraction of its cases that
passed, visible and hidden together; ``"all-or-nothing"`` gives them only when every case passed.
A task the learner did not attempt (the stub still raises NotImplementedError), a function that
is missing, and a notebook that could not be graded all give 0.
"""
from __future__ import annotations

from typing import Optional

from .kernel_side import misconception
from .registry import Exercise, Task

__all__ = ["SCORINGS", "score_task", "score_submission", "TASK_STATUSES"]

SCORINGS = ("partial", "all-or-nothing")
#: Every status a task can end with, as the reports spell it.
TASK_STATUSES = ("passed", "partly passed", "failed", "not attempted", "missing", "not graded")


def score_task(task: Task, found: Optional[dict], scoring: str) -> dict:
    """One task's record for the reports.

    task:    the task (its points, function, check).
    found:   the kernel's result for it (see :func:`unetlib.grade.kernel_side.grade_task`), or None.
    scoring: one of :data:`SCORINGS`.

    Returns a dict: column, task (label), function, points, max_points, status, passed, total,
    hidden_passed, hidden_total, message (the check's own text), misconception (or None), note.
    """
    record = {"column": task.column, "task": f"Task {task.number} {task.function}", "function": task.function,
              "check": task.check, "max_points": task.points, "points": 0.0, "status": "not graded",
              "passed": 0, "total": 0, "hidden_passed": 0, "hidden_total": 0,
              "message": None, "misconception": None, "note": None}
    if found is None:
        return record
    record["note"] = found.get("note")
    visible, hidden = found.get("visible") or {}, found.get("hidden") or {}
    record["task"] = visible.get("label") or record["task"]
    record.update(passed=visible.get("passed", 0), total=visible.get("total", 0),
                  hidden_passed=hidden.get("passed", 0), hidden_total=hidden.get("total", 0))
    kernel_status = found.get("status")
    if kernel_status == "missing":
        record["status"] = "missing"
        return record
    if kernel_status == "not_attempted":
        record["status"] = "not attempted"
        return record
    if kernel_status == "error":  # the kernel stopped during this task (os._exit, a crash, time): 0 points
        record.update(status="failed", message=found.get("note"), note=None)
        return record
    record["message"] = visible.get("message") or hidden.get("message")
    record["misconception"] = misconception(record["message"])
    passed = record["passed"] + record["hidden_passed"]
    total = record["total"] + record["hidden_total"]
    fraction = passed / total if total else 0.0
    if scoring == "all-or-nothing":
        fraction = 1.0 if total and passed == total else 0.0
    record["points"] = round(task.points * fraction, 2)
    record["status"] = "passed" if total and passed == total else "partly passed" if passed else "failed"
    return record


def score_submission(learner: str, name: str, exercise: Exercise, run: dict, scoring: str) -> dict:
    """A submission's record: learner, file, exercise, status, problems, seconds, tasks, points, max_points.

    run: what :func:`unetlib.grade.execute.run_submission` returned for it.
    """
    by_function = {item.get("function"): item for item in (run.get("tasks") or [])}
    tasks = [score_task(task, by_function.get(task.function), scoring) for task in exercise.tasks]
    return {"learner": learner, "file": name, "exercise": exercise.name, "status": run["status"],
            "problems": list(run.get("problems") or []), "seconds": run.get("seconds", 0.0), "tasks": tasks,
            "points": round(sum(t["points"] for t in tasks), 2), "max_points": exercise.max_points}
