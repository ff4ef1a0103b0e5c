"""Grade many submissions side by side, one worker process and one kernel per submission.

A worker runs :func:`unetlib.grade.execute.run_submission`, which never raises for what a
learner did; if a worker itself fails (it is killed, or the grader has a bug), that submission
is reported as not graded and the others go on.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Optional

from .execute import RunSettings, run_submission
from .registry import Exercise
from .scoring import score_submission

__all__ = ["grade_all", "default_jobs"]


def default_jobs() -> int:
    """One worker per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _grade_one(path: str, exercise: Exercise, settings: RunSettings) -> dict:
    return run_submission(Path(path), exercise, settings)


def grade_all(jobs: list[tuple[str, str, Path, Exercise]], settings: RunSettings, scoring: str,
              workers: int, log: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Grade every ``(learner, name, path, exercise)`` in ``jobs``; returns the scored records.

    workers: parallel worker processes (each runs one kernel at a time).
    log:     called with one line per finished submission (progress), or None.
    Records come back in the order of ``jobs``.
    """
    results: list[Optional[dict]] = [None] * len(jobs)

    def finish(index: int, run: dict) -> None:
        learner, name, _path, exercise = jobs[index]
        results[index] = score_submission(learner, name, exercise, run, scoring)
        if log:
            record = results[index]
            log(f"[{sum(r is not None for r in results)}/{len(jobs)}] {learner} {name}: "
                f"{record['points']:g}/{record['max_points']:g} ({record['status']}, {record['seconds']:.0f} s)")

    if workers <= 1 or len(jobs) == 1:
        for index, (_learner, _name, path, exercise) in enumerate(jobs):
            finish(index, _grade_one(str(path), exercise, settings))
        return results
    pending = list(range(len(jobs)))
    for attempt in range(_POOL_ROUNDS):
        pending = _pool_round(jobs, pending, settings, workers, finish, last=attempt == _POOL_ROUNDS - 1)
        if not pending:
            break
    return results


# A worker that dies (killed from outside, out of memory) breaks the whole pool: every submission
# still waiting then fails with BrokenProcessPool. Those are graded again in a new pool; a
# submission that breaks the pool every time is reported as not graded.
_POOL_ROUNDS = 2


def _pool_round(jobs, indices: list[int], settings: RunSettings, workers: int, finish, last: bool) -> list[int]:
    """Grade ``indices`` of ``jobs`` in one process pool; returns those to try again (pool broke)."""
    from concurrent.futures.process import BrokenProcessPool

    again = []
    # spawn: a fresh interpreter per worker, never a fork of a parent that holds threads or torch.
    with ProcessPoolExecutor(max_workers=min(workers, len(indices)), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_grade_one, str(jobs[index][2]), jobs[index][3], settings): index
                   for index in indices}
        for future in as_completed(futures):
            index = futures[future]
            try:
                run = future.result()
            except BrokenProcessPool as exc:
                if not last:
                    again.append(index)
                    continue
                run = _not_graded(f"the grading worker died: {exc}")
            except Exception as exc:  # noqa: BLE001 - a failed worker costs one submission, not the class
                run = _not_graded(f"the grading worker failed: {type(exc).__name__}: {exc}")
            finish(index, run)
    return sorted(again)


def _not_graded(problem: str) -> dict:
    return {"status": "not graded", "tasks": None, "seconds": 0.0, "problems": [problem]}
