"""Figure helpers for the course notebooks (matplotlib only; every figure is drawn here, not copied).

``conv_grids``: pixel grids, convolution and transposed-convolution diagrams, and the
interactive convolution-arithmetic explorer of notebook 01.
"""
