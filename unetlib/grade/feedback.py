"""One feedback file per learner, in Markdown: each task's result and, for a wrong answer, the
same message the check prints in JupyterLab, misconception included.
"""
from __future__ import annotations

import re
from pathlib import Path

__all__ = ["feedback_markdown", "write_feedback", "safe_file_name"]

_SYMBOL = {"passed": "✅", "partly passed": "🟡", "failed": "❌", "not attempted": "✋", "missing": "❔",
           "not graded": "⚠️"}


def safe_file_name(learner: str) -> str:
    """A file name for ``learner``'s feedback: letters, digits, ``.``, ``-`` and ``_`` only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", learner).strip("._") or "learner"
    return name[:100]


def _cases(task: dict) -> str:
    text = f"{task['passed']}/{task['total']} cases"
    if task["hidden_total"]:
        text += f", {task['hidden_passed']}/{task['hidden_total']} hidden cases"
    return text


def feedback_markdown(learner: str, records: list[dict], show_hidden: bool = True) -> str:
    """The feedback text for ``learner`` from their scored submission records (one per exercise).

    show_hidden: name hidden cases' counts (False for ``grade --self``, which runs none).
    """
    lines = [f"# Feedback for {learner}", ""]
    for record in records:
        lines += [f"## {record['exercise']} ({record['file']})", "",
                  f"**Score: {record['points']:g} of {record['max_points']:g} points** "
                  f"(graded in {record['seconds']:.0f} s)", ""]
        if record["status"] != "graded":
            lines += [f"⚠️ This notebook could not be graded ({record['status']}).", ""]
        if record["problems"]:
            lines += ["While your notebook ran:", ""] + [f"- {problem}" for problem in record["problems"]] + [""]
        for task in record["tasks"]:
            symbol = _SYMBOL.get(task["status"], "")
            counts = f", {_cases(task)}" if task["total"] else ""
            if not show_hidden and task["total"]:
                counts = f", {task['passed']}/{task['total']} cases"
            lines.append(f"### {symbol} {task['task']}: {task['status']} "
                         f"({task['points']:g}/{task['max_points']:g} points{counts})")
            lines.append("")
            if task["note"]:
                lines += [f"Note: {task['note']}.", ""]
            if task["status"] == "not attempted":
                lines += ["The function still raises `NotImplementedError()`: replace that line with your code.", ""]
            if task["message"] and task["status"] != "passed":
                lines += ["```text", task["message"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_feedback(folder: Path, by_learner: dict[str, list[dict]]) -> list[Path]:
    """Write ``folder/LEARNER.md`` for every learner; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for learner, records in sorted(by_learner.items()):
        name = safe_file_name(learner)
        while name in used:  # two ids that map to the same file name: keep both files
            name += "_"
        used.add(name)
        path = folder / f"{name}.md"
        path.write_text(feedback_markdown(learner, records), encoding="utf-8")
        written.append(path)
    return written
