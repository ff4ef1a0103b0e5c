"""Models of the course: the paper's U-Net (and options), its blocks, and a small FCN.

``from unetlib.models import UNet, FCN, count_parameters, summary``.
"""
from .blocks import DoubleConv, Down, OutConv, Up, center_crop
from .fcn import FCN, bilinear_kernel
from .summary import count_parameters, summary
from .unet import UNet, check_image_batch, incoming_nodes, init_paper_weights_

__all__ = [
    "UNet", "DoubleConv", "Down", "Up", "OutConv", "center_crop",
    "FCN", "bilinear_kernel",
    "count_parameters", "summary",
    "incoming_nodes", "init_paper_weights_", "check_image_batch",
]
