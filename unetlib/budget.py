"""How much a lesson trains: the full run stored in the notebook, or a quick one.

A learner gets ``"full"``: the runs the lesson text describes and the stored outputs show.
Setting the environment variable ``UNETLIB_BUDGET=quick`` shortens every training cell that
reads :func:`by_budget` (the same code, fewer or smaller steps), for a quick look at a lesson,
for grading a class, and for the test suite, which runs every notebook on two CPU cores. A
lesson's checked claims (:func:`unetlib.claims.expect`) are chosen to hold in both budgets.
"""
from __future__ import annotations

import os
from typing import TypeVar

__all__ = ["BUDGET_ENV", "BUDGETS", "training_budget", "by_budget"]

BUDGET_ENV = "UNETLIB_BUDGET"
BUDGETS = ("full", "quick")

T = TypeVar("T")


def training_budget() -> str:
    """``"full"`` (the default) or ``"quick"``, from ``$UNETLIB_BUDGET``; anything else raises ValueError."""
    value = os.environ.get(BUDGET_ENV, "").strip().lower() or "full"
    if value not in BUDGETS:
        raise ValueError(f"the environment variable {BUDGET_ENV} is {os.environ[BUDGET_ENV]!r}; "
                         f"set it to one of {', '.join(BUDGETS)} (or unset it for the full run).")
    return value


def by_budget(full: T, quick: T) -> T:
    """``full`` for the full budget, ``quick`` under ``UNETLIB_BUDGET=quick``.

    Example: ``EPOCHS = by_budget(full=6, quick=3)``.
    """
    return quick if training_budget() == "quick" else full
