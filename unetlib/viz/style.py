"""The course's figure style: 100 dpi, constrained layout, no text smaller than 9 pt.

Every lesson calls :func:`use_course_style` once in its set-up cell, after importing pyplot:

>>> from unetlib.viz.style import use_course_style
>>> use_course_style()

With constrained layout on, titles, colour bars and suptitles get their own room, so a title
never sits on top of the image below it. (Do not call ``fig.tight_layout()`` afterwards: it
switches the layout engine, and refuses to once a figure has a colour bar.)
"""
from __future__ import annotations

__all__ = ["COURSE_STYLE", "MIN_FONT_SIZE", "use_course_style"]

MIN_FONT_SIZE = 9.0  # points: the smallest text a course figure may print

COURSE_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.constrained_layout.use": True,
    "font.size": 10.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 10.0,
    "xtick.labelsize": MIN_FONT_SIZE,
    "ytick.labelsize": MIN_FONT_SIZE,
    "legend.fontsize": MIN_FONT_SIZE,
    "legend.title_fontsize": 10.0,
    "figure.titlesize": 11.0,
    "figure.labelsize": 10.0,
}


def use_course_style() -> None:
    """Apply :data:`COURSE_STYLE` to matplotlib's ``rcParams`` (figures created afterwards use it)."""
    import matplotlib

    matplotlib.rcParams.update(COURSE_STYLE)
