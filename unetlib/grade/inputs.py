"""Find the submitted notebooks and tell whose each one is.

Inputs may be notebooks, folders (searched recursively), glob patterns (``"hand-in/*.ipynb"``)
or zip files as an LMS downloads them (extracted into a private folder first). Each notebook
gets a learner id from its path relative to the input it came from (``alice/01_conv.ipynb``, or
inside a zip ``Jane Doe_1234_assignsubmission_file_/01_conv.ipynb``), with ``/`` between folders:

* the default pattern, :data:`DEFAULT_ID_PATTERN`, takes everything before the first ``_`` or
  ``/``: ``alice_01_convolution_exercises.ipynb`` -> ``alice``; Moodle's
  ``Jane Doe_1234_assignsubmission_file_/x.ipynb`` -> ``Jane Doe``; Canvas's
  ``doejane_12345_6789_01_conv.ipynb`` -> ``doejane``; ``bob/x.ipynb`` -> ``bob``;
* ``--id-pattern REGEX`` sets another: a Python regular expression with a group named
  ``learner``, searched in that relative path, e.g. ``'(?P<learner>s\\d{6})'`` for student numbers.

Jupyter's ``.ipynb_checkpoints`` copies and macOS's ``__MACOSX`` folders are ignored.
"""
from __future__ import annotations

import glob
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from .errors import GradeError

__all__ = ["Submission", "DEFAULT_ID_PATTERN", "compile_id_pattern", "collect_submissions"]

DEFAULT_ID_PATTERN = r"^(?P<learner>[^_/]+)"
_IGNORED_PARTS = {".ipynb_checkpoints", "__MACOSX"}


@dataclass(frozen=True)
class Submission:
    """One notebook to grade: ``learner`` (id), ``path`` (on disk) and ``name`` (as handed in)."""

    learner: str
    path: Path
    name: str


def compile_id_pattern(pattern: str) -> re.Pattern:
    """The compiled ``--id-pattern``; :class:`GradeError` if it is no regex or lacks ``(?P<learner>...)``."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise GradeError(f"--id-pattern {pattern!r} is not a valid regular expression: {exc}") from None
    if "learner" not in compiled.groupindex:
        raise GradeError(f"--id-pattern {pattern!r} needs a group named learner, e.g. '^(?P<learner>[^_/]+)'")
    return compiled


def _ignored(relative: PurePosixPath) -> bool:
    return any(part in _IGNORED_PARTS or part.startswith("._") for part in relative.parts)


def _extract_zip(archive: Path, into: Path) -> Path:
    """Extract the notebooks of ``archive`` into a new folder under ``into``; returns that folder."""
    target = into / f"zip-{len(list(into.iterdir()))}-{archive.stem}"
    try:
        with zipfile.ZipFile(archive) as handle:
            for member in handle.infolist():
                relative = PurePosixPath(member.filename)
                # Never outside the target (a "../" or absolute name in a hostile zip), only notebooks.
                if member.is_dir() or relative.is_absolute() or ".." in relative.parts:
                    continue
                if relative.suffix != ".ipynb" or _ignored(relative):
                    continue
                destination = target.joinpath(*relative.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with handle.open(member) as source, open(destination, "wb") as sink:
                    sink.write(source.read())
    except zipfile.BadZipFile:
        raise GradeError(f"{archive} is not a readable zip file") from None
    target.mkdir(parents=True, exist_ok=True)
    return target


def _expand(inputs: Iterable[str], workdir: Path) -> list[tuple[Path, Path]]:
    """``(notebook path, the root its learner id is read relative to)`` for every input."""
    found = []
    for text in inputs:
        path = Path(text)
        if any(ch in text for ch in "*?[") and not path.exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise GradeError(f"the pattern {text!r} matches no file")
            found += _expand(matches, workdir)
        elif path.is_dir():
            found += [(nb, path) for nb in sorted(path.rglob("*.ipynb"))
                      if not _ignored(PurePosixPath(nb.relative_to(path).as_posix()))]
        elif path.is_file() and path.suffix.lower() == ".zip":
            root = _extract_zip(path, workdir)
            found += [(nb, root) for nb in sorted(root.rglob("*.ipynb"))]
        elif path.is_file() and path.suffix == ".ipynb":
            found.append((path, path.parent))
        elif path.exists():
            raise GradeError(f"{path} is neither a notebook (.ipynb), a folder nor a zip file")
        else:
            raise GradeError(f"{path} does not exist")
    return found


def collect_submissions(inputs: Iterable[str], workdir: Path, id_pattern: str = DEFAULT_ID_PATTERN) -> list[Submission]:
    """Every submitted notebook in ``inputs``, with its learner id, sorted by learner.

    inputs:     notebooks, folders, glob patterns or zip files (strings).
    workdir:    an empty folder for extracted zips.
    id_pattern: see the module docstring.

    Raises :class:`GradeError` when nothing is found, a pattern matches no file, or a learner id
    cannot be read from a name.
    """
    pattern = compile_id_pattern(id_pattern)
    inputs = list(inputs)
    if not inputs:
        raise GradeError("no submissions given; name notebooks, folders, glob patterns or zip files to grade")
    submissions = []
    for notebook, root in _expand(inputs, workdir):
        relative = notebook.relative_to(root).as_posix()
        match = pattern.search(relative)
        learner = match.group("learner") if match else None
        if not learner or not learner.strip():
            raise GradeError(f"cannot read a learner id from {relative!r} with --id-pattern {pattern.pattern!r}; "
                             "name files LEARNER_anything.ipynb or pass another --id-pattern")
        submissions.append(Submission(learner.strip(), notebook, relative))
    if not submissions:
        raise GradeError(f"no notebooks (.ipynb) found in {', '.join(inputs)}")
    return sorted(submissions, key=lambda s: (s.learner, s.name))
