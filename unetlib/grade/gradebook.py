"""The class's scores as files: ``grades.csv`` (one row per learner), ``grades.json`` (everything),
and optionally ``nbgrader_grades.csv`` in the column layout of ``nbgrader export``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

__all__ = ["task_columns", "write_grades_csv", "write_grades_json", "write_nbgrader_csv", "NBGRADER_COLUMNS"]

#: The columns ``nbgrader export`` writes (its CsvExportPlugin), in its order.
NBGRADER_COLUMNS = ("assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
                    "raw_score", "late_submission_penalty", "score", "max_score")


def task_columns(records: list[dict]) -> list[str]:
    """Every task column in first-seen order (exercise by exercise, task by task)."""
    columns = []
    for record in records:
        for task in record["tasks"]:
            if task["column"] not in columns:
                columns.append(task["column"])
    return columns


def write_grades_csv(path: Path, by_learner: dict[str, list[dict]], columns: list[str]) -> None:
    """``grades.csv``: learner, one column of points per task (empty: not handed in), total,
    max_points, seconds, status (each exercise's status, ``;``-joined) and problems."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["learner", *columns, "total", "max_points", "seconds", "status", "problems"])
        for learner, records in sorted(by_learner.items()):
            points = {task["column"]: task["points"] for record in records for task in record["tasks"]}
            writer.writerow([learner, *[f"{points[c]:g}" if c in points else "" for c in columns],
                             f"{sum(r['points'] for r in records):g}", f"{sum(r['max_points'] for r in records):g}",
                             f"{sum(r['seconds'] for r in records):.1f}",
                             "; ".join(f"{r['exercise']}: {r['status']}" for r in records),
                             " | ".join(p for r in records for p in r["problems"])])


def write_grades_json(path: Path, records: list[dict], settings: dict) -> None:
    """``grades.json``: every submission record (tasks, messages, misconceptions) and the settings used."""
    path.write_text(json.dumps({"settings": settings, "submissions": records}, indent=1, ensure_ascii=False),
                    encoding="utf-8")


def write_nbgrader_csv(path: Path, records: list[dict]) -> None:
    """``nbgrader_grades.csv``: one row per learner and exercise, as ``nbgrader export`` writes it
    (student_id = the learner id; names, e-mail, due date and timestamp left empty)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(NBGRADER_COLUMNS)
        for record in sorted(records, key=lambda r: (r["exercise"], r["learner"])):
            writer.writerow([record["exercise"], "", "", record["learner"], "", "", "",
                             f"{record['points']:g}", "0.0", f"{record['points']:g}", f"{record['max_points']:g}"])
