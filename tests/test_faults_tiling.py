"""A huge --tile on a small image is capped to the smallest tile that covers the image."""
import torch

from unetlib.models import UNet
from unetlib.tiling import plan_tiles, predict_tiled


def test_huge_tile_on_a_small_image_is_capped():
    model = UNet(1, 2, base_channels=2, depth=2).eval()
    huge = 40_004  # valid for depth 2; one such tile would be 40004 x 40004 floats
    plan = plan_tiles(model, huge, image_size=(37, 50))
    assert plan.stride >= 50  # one tile still covers the image ...
    assert plan.tile_size < 50 + 40 + 2 * plan.align + 1  # ... and it is about image + context
    assert plan_tiles(model, plan.tile_size - 4, image_size=(37, 50)).stride < 50  # the smallest that does


def test_capped_tile_gives_the_same_prediction_and_small_inputs():
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=2, depth=2).eval()
    image = torch.rand(1, 37, 50)
    seen = []
    model.register_forward_pre_hook(lambda module, inputs: seen.append(tuple(inputs[0].shape[-2:])))
    big = predict_tiled(model, image, tile_size=1004, output="logits")
    assert max(max(s) for s in seen) < 100  # not 1004
    exact = predict_tiled(model, image, tile_size=60, output="logits")  # several 20 px tiles
    torch.testing.assert_close(big, exact)


def test_a_tile_smaller_than_the_image_is_kept():
    model = UNet(1, 2, base_channels=2, depth=2).eval()
    assert plan_tiles(model, 92, image_size=(300, 300)).tile_size == 92
    same = UNet(1, 2, base_channels=2, depth=2, padding="same").eval()
    plan = plan_tiles(same, 1024, image_size=(40, 40))
    assert plan.tile_size < 1024 and plan.stride >= 40
