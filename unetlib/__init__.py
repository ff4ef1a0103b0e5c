"""unetlib: the library behind the U-Net course.

Small modules, one idea each, imported explicitly by the notebooks::

    from unetlib.shapes import unet_output_size      # convolution arithmetic
    from unetlib.models import UNet, FCN              # the paper's network, FCN-32s/16s/8s
    from unetlib.data import synthetic_cells          # touching cells, instance labels
    from unetlib.weights import weight_map            # the paper's w(x)
    from unetlib.losses import make_loss              # weighted CE, Dice, focal
    from unetlib.metrics import segmentation_metrics  # IoU, Dice, pixel and Rand error
    from unetlib.augment import elastic_deform        # coarse-grid elastic deformation
    from unetlib.tiling import predict_tiled          # overlap-tile inference
    from unetlib.train import fit                     # the trainer (also: python -m unetlib)
    from unetlib.checks import check_conv2d           # exercise checks

Importing ``unetlib`` itself stays cheap: submodules load only when you import them.
"""
__version__ = "0.1.0"
