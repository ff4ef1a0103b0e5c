"""The course's figure style: 100 dpi, constrained layout, no text smaller than 9 pt.

Every lesson calls :func:`use_course_style` once in its set-up cell, after importing pyplot (and
after ``%matplotlib inline``, which would reset the figure display):

>>> from unetlib.viz import use_course_style
>>> use_course_style()

With constrained layout on, titles, colour bars, suptitles and figure legends get their own
room, so a title never sits on top of the image below it. (Do not call ``fig.tight_layout()``
afterwards: it switches the layout engine, and refuses to once a figure has a colour bar.)

In a notebook the figures are shown as PNGs with a palette of at most 256 colours
(:func:`png_with_palette`): at 100 dpi that keeps a saved notebook about as small as it was
at 72 dpi, and the figures are the same to the eye.
"""
from __future__ import annotations

import io
from typing import Optional

__all__ = ["COURSE_STYLE", "MIN_FONT_SIZE", "png_with_palette", "use_course_style"]

MIN_FONT_SIZE = 9.0  # points: the smallest text a course figure may print

COURSE_STYLE = {
    "figure.dpi": 100,
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


def png_with_palette(figure, colors: int = 256) -> Optional[bytes]:
    """The figure as the notebook shows it (``bbox_inches="tight"``, the figure's dpi), as a PNG
    with at most ``colors`` colours; None for a figure with nothing drawn (as IPython does).

    Plots have few colours and photographs of cells have grey levels, so a palette (maximum coverage,
    no dithering: no colour of the figure is lost, each is off by a few levels at most) roughly
    halves the file.
    """
    from PIL import Image

    if not figure.axes and not figure.lines:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", dpi=figure.dpi)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB")
    palette = image.quantize(colors=colors, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


def use_course_style() -> None:
    """Apply :data:`COURSE_STYLE` to matplotlib's ``rcParams`` (figures created afterwards use it)
    and, inside IPython/Jupyter, show figures as palette PNGs (:func:`png_with_palette`)."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams.update(COURSE_STYLE)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - plain Python: nothing to display
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    try:  # importing the inline backend sets up IPython's figure display (once); ours must come after
        import matplotlib_inline.backend_inline  # noqa: F401
    except ImportError:  # pragma: no cover
        pass
    shell.display_formatter.formatters["image/png"].for_type(Figure, png_with_palette)
