"""The one exception a grading mistake of the user raises (no notebooks, bad pattern, ...)."""
from __future__ import annotations

__all__ = ["GradeError"]


class GradeError(ValueError):
    """A mistake in how grading was asked for. ``python -m unetlib grade`` prints it as one
    ``error: ...`` line (a ValueError, which the CLI reports that way) and exits with status 2."""
