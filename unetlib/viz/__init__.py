"""Figure helpers for the course notebooks (matplotlib only; every figure is drawn here, not copied).

``style``: :func:`use_course_style`, the figure settings every lesson applies in its set-up cell
(100 dpi, constrained layout, text of at least 9 pt).
``conv_grids``: pixel grids, convolution and transposed-convolution diagrams, and the
interactive convolution-arithmetic explorer of notebook 01.
``panels``: image panels, instance colours, error overlays with their legend, training curves.
``unet_diagram``: the U of the paper's Fig. 1, drawn from the shape arithmetic.
"""
from .style import use_course_style

__all__ = ["use_course_style"]
