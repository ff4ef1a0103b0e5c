"""Overlap-tile inference: exact agreement with whole-image prediction, bounded memory."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unetlib.models import FCN, UNet
from unetlib.tiling import mirror_pad, plan_tiles, predict_tiled, reflect_indices, tile_grid


def tiny_unet(depth=2, padding="valid", num_classes=2, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return UNet(1, num_classes, base_channels=4, depth=depth, padding=padding).to(dtype).eval()


def whole_image_reference(model, image, plan):
    """model(mirror-padded image) on ONE big valid input, cropped to the image.

    The padding is done by numpy (independent of unetlib.tiling.reflect_indices): ``lead`` px
    before, and enough after to reach a valid input size.
    """
    _, height, width = image.shape
    size = plan.lead + max(height, width) + plan.tile_size
    while True:
        try:
            model.check_input_size(size, size)
            break
        except ValueError:
            size += 1
    pads = ((0, 0), (plan.lead, size - plan.lead - height), (plan.lead, size - plan.lead - width))
    padded = torch.from_numpy(np.pad(image.numpy(), pads, mode="reflect"))
    with torch.no_grad():
        out = model(padded[None])[0]
    k = plan.keep_start
    return out[:, k : k + height, k : k + width]


# ----------------------------------------------------------------------------- the pieces
def test_tile_grid_covers_every_pixel_exactly_once():
    for height, width, tile in [(10, 7, 3), (8, 8, 4), (5, 20, 7), (1, 1, 5)]:
        count = np.zeros((height, width), dtype=int)
        origins = tile_grid(height, width, tile)
        for y, x in origins:
            count[y : y + tile, x : x + tile] += 1
        assert (count == 1).all(), (height, width, tile)
        assert origins[0] == (0, 0)
        assert len(origins) == -(-height // tile) * -(-width // tile)


def test_tile_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="out_tile must be a positive int"):
        tile_grid(10, 10, 0)
    with pytest.raises(ValueError, match="leaves gaps"):
        tile_grid(10, 10, 4, stride=5)


@pytest.mark.parametrize("size,before,after", [(5, 2, 3), (3, 7, 9), (1, 2, 2), (4, 0, 0), (2, 5, 1)])
def test_reflect_indices_matches_numpy_reflect_padding(size, before, after):
    expected = np.pad(np.arange(size), (before, after), mode="reflect")
    assert reflect_indices(-before, size + after, size).tolist() == expected.tolist()


def test_mirror_pad_matches_torch_reflect_for_small_pads():
    image = torch.randn(2, 9, 11)
    ours = mirror_pad(image, 3, 4, 5, 2)
    theirs = F.pad(image[None], (5, 2, 3, 4), mode="reflect")[0]
    assert torch.equal(ours, theirs)


def test_plan_for_the_paper_network():
    plan = plan_tiles(UNet(), tile_size=572)
    assert (plan.tile_size, plan.out_size, plan.align) == (572, 388, 16)
    # 388 is not a multiple of 16: keep the central 384 so tiles stay on the pooling grid.
    assert plan.stride == 384 and plan.stride % 16 == 0
    assert plan.lead == 92 + plan.keep_start


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("height,width", [(37, 50), (130, 97)])
def test_valid_unet_tiled_equals_whole_image_prediction(depth, height, width):
    model = tiny_unet(depth)
    image = torch.randn(1, height, width, dtype=torch.float64)
    tile = {2: 60, 3: 116}[depth]  # small tiles -> many tiles, including partial ones
    plan = plan_tiles(model, tile)
    assert len(tile_grid(height, width, plan.stride)) > 4
    tiled = predict_tiled(model, image, tile, output="logits", batch_size=3)
    assert tiled.shape == (2, height, width)
    reference = whole_image_reference(model, image, plan)
    torch.testing.assert_close(tiled, reference, rtol=0, atol=1e-10)


def test_valid_bilinear_unet_is_exact_thanks_to_its_margin():
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=2, up_mode="bilinear").double().eval()
    image = torch.randn(1, 70, 53, dtype=torch.float64)
    plan = plan_tiles(model, 80)
    assert plan.keep_start >= 4  # 2**depth px of the 40 px output are discarded per side
    tiled = predict_tiled(model, image, 80, output="logits")
    torch.testing.assert_close(tiled, whole_image_reference(model, image, plan), rtol=0, atol=1e-10)
    seams = predict_tiled(model, image, 80, output="logits", margin=0)
    assert (seams - whole_image_reference(model, image, plan_tiles(model, 80, margin=0))).abs().max() > 1e-3


def test_default_tile_also_exact_and_image_smaller_than_context():
    model = tiny_unet(3)
    image = torch.randn(1, 9, 13, dtype=torch.float64)  # far smaller than the 88 px context
    plan = plan_tiles(model, None, (9, 13))
    tiled = predict_tiled(model, image, output="logits")
    torch.testing.assert_close(tiled, whole_image_reference(model, image, plan), rtol=0, atol=1e-10)


def test_same_padding_unet_has_no_seams_with_default_margin():
    model = tiny_unet(2, padding="same")
    image = torch.randn(1, 70, 90, dtype=torch.float64)
    plan = plan_tiles(model, 64)
    assert plan.keep_start >= 20 and len(tile_grid(70, 90, plan.stride)) > 4
    tiled = predict_tiled(model, image, 64, output="logits")
    torch.testing.assert_close(tiled, whole_image_reference(model, image, plan), rtol=0, atol=1e-10)


def test_same_padding_without_margin_shows_seams():
    """The margin matters: with none, tile borders see zero padding and results differ."""
    model = tiny_unet(2, padding="same")
    image = torch.randn(1, 70, 90, dtype=torch.float64)
    plan = plan_tiles(model, 64, margin=0)
    tiled = predict_tiled(model, image, 64, output="logits", margin=0)
    reference = whole_image_reference(model, image, plan)
    assert (tiled - reference).abs().max() > 1e-3


# ----------------------------------------------------------------------------- outputs and inputs
def test_probs_labels_and_numpy_hw_input():
    model = tiny_unet(2, num_classes=3)
    image = np.random.default_rng(0).random((45, 61))  # (H, W) numpy
    probs = predict_tiled(model, image, 60, output="probs")
    labels = predict_tiled(model, image, 60, output="labels")
    assert probs.shape == (3, 45, 61)
    torch.testing.assert_close(probs.sum(0), torch.ones(45, 61, dtype=probs.dtype))
    assert labels.dtype == torch.uint8 and labels.shape == (45, 61)
    assert torch.equal(labels.long(), probs.argmax(0))


def test_single_logit_model_gives_sigmoid_and_threshold():
    model = tiny_unet(2, num_classes=1)
    image = torch.randn(1, 30, 30, dtype=torch.float64)
    logits = predict_tiled(model, image, 60, output="logits")
    probs = predict_tiled(model, image, 60, output="probs")
    labels = predict_tiled(model, image, 60, output="labels")
    torch.testing.assert_close(probs, torch.sigmoid(logits))
    assert torch.equal(labels, (logits[0] > 0).to(torch.uint8))


def test_fcn_and_training_mode_is_restored():
    torch.manual_seed(0)
    model = FCN(1, 2, "8s", base_channels=4)
    model.train()
    probs = predict_tiled(model, torch.rand(1, 50, 70), tile_size=128)
    assert probs.shape == (2, 50, 70) and torch.isfinite(probs).all()
    assert model.training


def test_bad_inputs_raise_clear_errors():
    model = tiny_unet(2)
    with pytest.raises(ValueError, match="nearest valid sizes"):
        predict_tiled(model, torch.rand(1, 50, 50), tile_size=61)
    with pytest.raises(ValueError, match="expects 1"):
        predict_tiled(model, torch.rand(3, 50, 50))
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(H, W\)"):
        predict_tiled(model, torch.rand(1, 1, 50, 50))
    with pytest.raises(ValueError, match="output must be one of"):
        predict_tiled(model, torch.rand(1, 50, 50), output="mask")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        predict_tiled(model, torch.rand(1, 50, 50), batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        predict_tiled(model, torch.rand(1, 0, 50))
    with pytest.raises(TypeError, match="torch.Tensor or numpy array"):
        predict_tiled(model, [[1.0, 2.0]])


# ----------------------------------------------------------------------------- bounded memory
def _largest_activation(model, image, tile):
    largest = [0]

    def record(module, inputs, output):
        largest[0] = max(largest[0], output.numel())

    handles = [m.register_forward_hook(record) for m in model.modules()]
    try:
        labels = predict_tiled(model, image, tile, batch_size=2, output="labels")
    finally:
        for h in handles:
            h.remove()
    return largest[0], labels


@pytest.mark.slow  # ~10 s of CPU: 4 Mpx through a (tiny) U-Net
def test_large_image_memory_is_bounded_by_the_tile():
    """A 2048x2048 image never creates a bigger activation than a 512x512 one.

    (8192x8192 works the same way; see the tiling module / report for its measured cost.)
    """
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=2, depth=2).eval()
    tile = 296  # output 256 per tile
    small, _ = _largest_activation(model, torch.rand(1, 512, 512), tile)
    large, labels = _largest_activation(model, torch.rand(1, 2048, 2048), tile)
    assert large == small
    assert small == 2 * 2 * 294 * 294  # batch 2 x 2 channels x first 3x3 conv output of one tile
    assert labels.shape == (2048, 2048) and labels.dtype == torch.uint8
