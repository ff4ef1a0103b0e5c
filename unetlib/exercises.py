"""Generate the learner's exercise notebooks from the solution notebooks.

``solutions/`` is the single source of truth. Inside a solution notebook the learner's
part is marked nbgrader-style::

    def conv2d(x, w):
        ### BEGIN SOLUTION
        ...reference code...
        ### END SOLUTION

``make exercises`` (``python -m unetlib.exercises``) writes ``exercises/<same name>``
with each marked region replaced by ``raise NotImplementedError()`` (markdown answers by
"YOUR ANSWER HERE") and every output cleared. We reuse nbgrader's ``ClearSolutions`` and
nbconvert's ``ClearOutputPreprocessor`` rather than parsing the markers ourselves.

``python -m unetlib.exercises --check`` exits non-zero when ``exercises/`` is stale.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ClearMetadataPreprocessor, ClearOutputPreprocessor

ROOT = Path(__file__).resolve().parent.parent
BANNER = (
    "> **Exercise version.** Cells marked `raise NotImplementedError()` are yours to fill in; "
    "run the check cell after each task. The worked version lives in `solutions/`."
)


def make_exercise(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return the exercise version of a solution notebook (a new notebook; input untouched)."""
    # Imported here: nbgrader is heavy and only this tool needs it.
    from nbgrader.preprocessors import ClearSolutions

    nb = copy.deepcopy(solution)
    resources = {}
    clear_solutions = ClearSolutions(enforce_metadata=False)
    nb, resources = clear_solutions.preprocess(nb, resources)
    nb, resources = ClearOutputPreprocessor().preprocess(nb, resources)
    nb, resources = ClearMetadataPreprocessor(preserve_nb_metadata_mask={("kernelspec"), ("language_info")}).preprocess(nb, resources)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(BANNER, id="exercise-banner"))
    return nb


def exercise_text(solution_path: Path) -> str:
    """The exact text the exercise notebook for ``solution_path`` should have on disk."""
    solution = nbformat.read(solution_path, as_version=4)
    return nbformat.writes(make_exercise(solution)) + "\n"


def generate(solutions_dir: Path = ROOT / "solutions", exercises_dir: Path = ROOT / "exercises", check: bool = False) -> list[Path]:
    """Write (or with ``check=True`` only compare) every exercise notebook.

    Returns the exercise paths that were stale (missing or different). Exercise notebooks
    without a solution are reported as stale too, since nothing could regenerate them.
    """
    stale = []
    exercises_dir.mkdir(exist_ok=True)
    expected_names = set()
    for solution_path in sorted(solutions_dir.glob("*.ipynb")):
        target = exercises_dir / solution_path.name
        expected_names.add(target.name)
        text = exercise_text(solution_path)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            stale.append(target)
            if not check:
                target.write_text(text, encoding="utf-8")
    stale += [p for p in sorted(exercises_dir.glob("*.ipynb")) if p.name not in expected_names]
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unetlib.exercises", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale exercise notebooks; exit 1 if any")
    args = parser.parse_args(argv)
    stale = generate(check=args.check)
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run `make exercises`)")
        return 1 if stale else 0
    for path in stale:
        print(f"wrote {path.relative_to(ROOT)}")
    if not stale:
        print("exercises/ is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
