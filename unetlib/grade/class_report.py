"""The class report: for every task how many learners passed it, and for every misconception how
many learners' answers showed it ("3 of 12: you counted ordered pairs ..."), as Markdown, CSV and
a bar chart (PNG). This is the view an instructor needs to plan the next lecture.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

__all__ = ["task_summary", "misconception_counts", "class_report_markdown", "write_class_report"]


def task_summary(records: list[dict]) -> list[dict]:
    """Per task: ``{"column", "task", "learners", "passed", "partly", "failed", "not attempted", "missing",
    "not graded"}`` counted over the learners who handed in that task's exercise."""
    rows: dict[str, dict] = {}
    for record in records:
        for task in record["tasks"]:
            row = rows.setdefault(task["column"], {"column": task["column"], "task": task["task"], "learners": 0,
                                                   "passed": 0, "partly passed": 0, "failed": 0,
                                                   "not attempted": 0, "missing": 0, "not graded": 0})
            row["learners"] += 1
            row[task["status"]] += 1
    return list(rows.values())


def misconception_counts(records: list[dict]) -> list[dict]:
    """Per (task, misconception): ``{"column", "task", "misconception", "learners", "of"}``, most frequent first.

    ``learners`` counts each learner once per task; ``of`` is how many handed the task in.
    """
    handed_in = Counter(task["column"] for record in records for task in record["tasks"])
    hits: Counter = Counter()
    labels = {}
    for record in records:
        for task in record["tasks"]:
            if task["misconception"]:
                hits[(task["column"], task["misconception"])] += 1
                labels[task["column"]] = task["task"]
    return [{"column": column, "task": labels[column], "misconception": text, "learners": count,
             "of": handed_in[column]}
            for (column, text), count in sorted(hits.items(), key=lambda item: (-item[1], item[0]))]


def class_report_markdown(records: list[dict]) -> str:
    """The report as Markdown: the task table, then the misconceptions, most frequent first."""
    learners = len({record["learner"] for record in records})
    lines = ["# Class report", "", f"{learners} learners, {len(records)} notebooks graded.", "",
             "## Tasks", "", "| task | passed | partly | failed | not attempted | missing | not graded |",
             "|---|---|---|---|---|---|---|"]
    for row in task_summary(records):
        n = row["learners"]
        lines.append(f"| {row['column']} ({row['task']}) | {row['passed']} of {n} | {row['partly passed']} | "
                     f"{row['failed']} | {row['not attempted']} | {row['missing']} | {row['not graded']} |")
    lines += ["", "## Misconceptions", ""]
    counts = misconception_counts(records)
    if not counts:
        lines.append("No wrong answer matched a known misconception.")
    for row in counts:
        lines.append(f"- **{row['learners']} of {row['of']}** ({row['column']}): {row['misconception']}")
    return "\n".join(lines) + "\n"


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _write_chart(path: Path, records: list[dict]) -> None:
    """Two bar charts in one PNG: learners passing each task, learners hitting each misconception."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and never a window on the instructor's screen
    import matplotlib.pyplot as plt

    tasks, counts = task_summary(records), misconception_counts(records)
    height = 1.5 + 0.35 * (len(tasks) + max(1, len(counts)))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, height),
                                         gridspec_kw={"height_ratios": [max(1, len(tasks)), max(1, len(counts))]})
    top.barh([row["column"] for row in tasks][::-1], [row["passed"] for row in tasks][::-1], color="tab:green")
    top.set_xlabel("learners who passed")
    top.set_title("Tasks")
    if counts:
        bottom.barh([_short(f"{row['column']}: {row['misconception']}") for row in counts][::-1],
                    [row["learners"] for row in counts][::-1], color="tab:red")
    bottom.set_xlabel("learners whose answer showed the misconception")
    bottom.set_title("Misconceptions")
    for axis in (top, bottom):
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_class_report(folder: Path, records: list[dict]) -> list[Path]:
    """Write class_report.md, misconceptions.csv and class_report.png into ``folder``; returns them."""
    markdown, table, chart = folder / "class_report.md", folder / "misconceptions.csv", folder / "class_report.png"
    markdown.write_text(class_report_markdown(records), encoding="utf-8")
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["column", "task", "misconception", "learners", "of"])
        writer.writeheader()
        writer.writerows(misconception_counts(records))
    _write_chart(chart, records)
    return [markdown, table, chart]
