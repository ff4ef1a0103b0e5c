"""unetlib.models: the paper's U-Net, its options and blocks, the FCN, and the helpers."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unetlib.models import (
    FCN,
    DoubleConv,
    Down,
    OutConv,
    UNet,
    Up,
    bilinear_kernel,
    center_crop,
    count_parameters,
    incoming_nodes,
    init_paper_weights_,
    summary,
)
from unetlib.shapes import unet_output_size


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run single-threaded: on a busy 2-core machine two spinning OpenMP
    threads are several times slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def meta_unet(*args, **kwargs) -> UNet:
    """A UNet whose tensors have shapes but no storage: free to build and to run."""
    with torch.device("meta"):
        return UNet(*args, **kwargs)


def make_disks(n: int, size: int, seed: int):
    """Bright disks on Gaussian noise: images (n, 1, size, size) float32, masks (n, size, size) int64."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n, size, size, dtype=torch.int64)
    for i in range(n):
        for _ in range(3):
            cy, cx = torch.randint(8, size - 8, (2,), generator=g).tolist()
            radius = torch.randint(5, 10, (1,), generator=g).item()
            masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 1
    images = 0.6 * masks[:, None].float() + 0.3 * torch.randn(n, 1, size, size, generator=g)
    return images, masks


# --------------------------------------------------------------------------- the paper's network
@pytest.mark.parametrize("in_channels, num_classes, kwargs, expected", [
    (1, 2, {}, 31_030_658),
    (1, 1, {}, 31_030_593),
    (3, 2, {}, 31_031_810),
    (3, 2, {"padding": "same", "batch_norm": True}, 31_037_698),  # the common re-implementation
])
def test_parameter_counts(in_channels, num_classes, kwargs, expected):
    assert count_parameters(meta_unet(in_channels, num_classes, **kwargs)) == expected


def test_paper_network_has_23_conv_layers():
    model = meta_unet()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert sum(m.kernel_size == (3, 3) and m.padding == (0, 0) for m in convs) == 18
    assert sum(m.kernel_size == (1, 1) for m in convs) == 1
    assert len(convs) == 19
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in ups] == [
        (1024, 512, (2, 2), (2, 2)), (512, 256, (2, 2), (2, 2)), (256, 128, (2, 2), (2, 2)), (128, 64, (2, 2), (2, 2))]
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in model.modules())


def test_paper_network_maps_572_to_388_on_meta_device():
    model = meta_unet()
    out = model(torch.empty(1, 1, 572, 572, device="meta"))
    assert out.shape == (1, 2, 388, 388)
    assert model.output_size(572) == 388 and model.output_size((572, 636)) == (388, 452)


def test_real_forward_at_572_with_a_narrow_network():
    # same layers and sizes as the paper's network, 1/256 of its multiply-adds
    model = UNet(1, 2, base_channels=4)
    with torch.no_grad():
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_invalid_size_raises_before_any_layer_runs():
    model = UNet(1, 2, base_channels=2)
    calls = []
    model.inc.register_forward_pre_hook(lambda module, args: calls.append(1))
    with pytest.raises(ValueError, match="height of 570: nearest valid sizes are 556 and 572"):
        model(torch.zeros(1, 1, 570, 572))
    with pytest.raises(ValueError, match="width of 570: nearest valid sizes are 556 and 572"):
        model(torch.zeros(1, 1, 572, 570))
    with pytest.raises(ValueError, match="188 \\+ 16k"):
        model.check_input_size(572, 200)
    assert calls == []
    model.check_input_size(572, 188)  # valid: no error
    model.check_input_size(572)       # square
    with pytest.raises(ValueError, match="height of 571"):
        model.check_input_size(571)
    with pytest.raises(ValueError, match="556 and 572"):
        model.output_size(570)


@pytest.mark.parametrize("bad, error, match", [
    (torch.zeros(1, 188, 188), ValueError, r"x\.unsqueeze\(0\)"),
    (torch.zeros(188, 188), ValueError, r"x\[None, None\]"),
    (torch.zeros(1, 3, 188, 188), ValueError, "built for 1 input channel"),
    (torch.zeros(1, 188, 188, 1), ValueError, r"permute\(0, 3, 1, 2\)"),
    (torch.zeros(1, 1, 188, 188, dtype=torch.uint8), TypeError, r"x\.float\(\)"),
    (torch.zeros(1, 1, 188, 188).numpy(), TypeError, "torch.Tensor"),
])
def test_bad_inputs_get_clear_errors(bad, error, match):
    model = UNet(1, 2, base_channels=2)
    with pytest.raises(error, match=match):
        model(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"padding": "full"}, "padding must be one of"),
    ({"up_mode": "nearest"}, "up_mode must be one of"),
    ({"depth": 0}, "depth must be a positive int"),
    ({"base_channels": 2.5}, "base_channels must be a positive int"),
    ({"dropout": 1.0}, "dropout must be a probability"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize("kwargs, size", [
    ({"padding": "same"}, 64),
    ({"up_mode": "bilinear"}, 92),
    ({"padding": "same", "up_mode": "bilinear", "batch_norm": True}, 48),
    ({"batch_norm": True}, 92),
    ({"dropout": 0.5}, 92),
    ({"depth": 2}, 48),
    ({"depth": 1, "padding": "same"}, 10),
])
def test_options_run_with_the_right_output_shape(kwargs, size):
    kwargs = {"depth": 3, **kwargs}
    model = UNet(2, 3, base_channels=4, **kwargs)
    out = model(torch.randn(2, 2, size, size + 2 ** kwargs["depth"]))
    expected = unet_output_size((size, size + 2 ** kwargs["depth"]), kwargs["depth"], kwargs.get("padding", "valid"))
    assert out.shape == (2, 3, *expected)
    if kwargs.get("padding") == "same":
        assert out.shape[-2:] == (size, size + 2 ** kwargs["depth"])


def test_batch_norm_removes_the_conv_bias():
    model = UNet(1, 2, base_channels=4, depth=2, batch_norm=True)
    for module in model.modules():
        if isinstance(module, DoubleConv):
            convs = [m for m in module.block if isinstance(m, nn.Conv2d)]
            assert all(c.bias is None for c in convs)
            assert [type(m) for m in module.block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2 * (2 * 2 + 1)


def test_dropout_sits_on_the_bottleneck_and_is_off_in_eval():
    model = UNet(1, 2, base_channels=4, depth=2, dropout=0.5)
    seen, bottleneck = [], []
    model.dropout.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    model.downs[-1].register_forward_hook(lambda m, args, out: bottleneck.append(out))
    x = torch.randn(1, 1, 48, 48)
    torch.manual_seed(0)
    a, b = model(x), model(x)
    assert not torch.equal(a, b)  # training mode: random masks
    assert seen[0][0] is bottleneck[0]  # applied to the end of the contracting path
    assert seen[0][0].shape[1] == model.base_channels * 2 ** model.depth
    alive = seen[0][0] != 0  # ReLU zeros are not dropout's doing
    dropped = (seen[0][1] == 0)[alive]
    assert dropped.numel() > 50 and 0.3 < dropped.float().mean().item() < 0.7  # element-wise, p = 0.5
    model.eval()
    assert torch.equal(model(x), model(x))
    assert isinstance(UNet(depth=2, base_channels=2).dropout, nn.Identity)


def test_bilinear_mode_uses_upsample_and_a_1x1_conv():
    model = UNet(1, 2, base_channels=4, depth=2, up_mode="bilinear")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    up = model.ups[0].up
    assert isinstance(up[0], nn.Upsample) and up[0].mode == "bilinear" and up[0].align_corners is False
    assert up[1].kernel_size == (1, 1) and (up[1].in_channels, up[1].out_channels) == (16, 8)


def test_channels_last_and_autocast():
    model = UNet(1, 2, base_channels=4, depth=2).eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        reference = model(x)
        out_cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        assert torch.allclose(out_cl, reference, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model(x)
    assert out_bf16.dtype == torch.bfloat16 and out_bf16.shape == reference.shape
    relative_error = (out_bf16.float() - reference).norm() / reference.norm()
    assert relative_error < 0.05  # bf16 keeps ~3 significant digits
    with torch.no_grad():  # float64 works too: no dtype is assumed anywhere
        assert model.double()(x.double()).dtype == torch.float64


# --------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("layer", [
    nn.Conv2d(5, 3, 3), nn.Conv2d(4, 2, (1, 1)), nn.Conv2d(6, 4, 3, groups=2),
    nn.ConvTranspose2d(6, 3, 2, stride=2), nn.ConvTranspose2d(4, 2, 3, stride=2),
    nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1), nn.ConvTranspose2d(2, 2, 3, stride=1),
])
def test_incoming_nodes_counts_the_inputs_of_one_output(layer):
    # Independent count: with all weights 1 and an all-ones input, an output value is the
    # number of (channel, pixel) inputs that feed it; interior outputs reach the maximum.
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.zero_()
        out = layer(torch.ones(1, layer.in_channels, 9, 9))
    assert incoming_nodes(layer) == int(out.max().item())


def test_paper_initialisation_std():
    model = UNet(1, 2, base_channels=32, depth=3, generator=torch.Generator().manual_seed(0))
    conv = model.downs[1].conv.block[2]   # 3x3 conv, 128 -> 128: N = 9 * 128
    up = model.ups[0].up                  # up-conv 256 -> 128: N = 256 (one input pixel per output)
    for layer, n in ((conv, 9 * 128), (up, 256)):
        assert incoming_nodes(layer) == n
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / n), rel=0.02)
        assert layer.weight.mean().abs().item() < 0.01 * math.sqrt(2 / n) * 10
        assert torch.count_nonzero(layer.bias) == 0
    assert incoming_nodes(nn.Conv2d(64, 64, 3)) == 576  # the paper's example: std 0.0589


def test_initialisation_is_reproducible_with_a_generator():
    a = UNet(1, 2, base_channels=4, depth=2, generator=torch.Generator().manual_seed(1))
    b = UNet(1, 2, base_channels=4, depth=2, generator=torch.Generator().manual_seed(1))
    c = UNet(1, 2, base_channels=4, depth=2, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    init_paper_weights_(c, torch.Generator().manual_seed(1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    with pytest.raises(TypeError, match="Conv2d or ConvTranspose2d"):
        incoming_nodes(nn.Linear(2, 2))


# --------------------------------------------------------------------------- blocks
def test_center_crop_takes_the_centre():
    x = torch.arange(2 * 3 * 9 * 12).reshape(2, 3, 9, 12)
    out = center_crop(x, 5, 6)
    assert out.shape == (2, 3, 5, 6)
    assert torch.equal(out, x[:, :, 2:7, 3:9])
    odd = center_crop(x, 8, 11)  # odd difference: the extra pixel goes at the bottom/right
    assert torch.equal(odd, x[:, :, 0:8, 0:11])
    assert torch.equal(center_crop(x, 9, 12), x)
    with pytest.raises(ValueError, match="larger 10x12"):
        center_crop(x, 10, 12)
    with pytest.raises(TypeError, match="ints"):
        center_crop(x, 5.0, 6)


def test_blocks_shapes():
    x = torch.randn(2, 3, 20, 24)
    assert DoubleConv(3, 8)(x).shape == (2, 8, 16, 20)
    assert DoubleConv(3, 8, padding="same", batch_norm=True)(x).shape == (2, 8, 20, 24)
    assert Down(3, 8)(x).shape == (2, 8, 6, 8)
    with pytest.raises(ValueError, match="even sizes"):
        Down(3, 8)(torch.randn(1, 3, 21, 24))
    up = Up(8, 4)
    out = up(torch.randn(2, 8, 6, 6), torch.randn(2, 4, 17, 17))  # skip cropped 17 -> 12
    assert out.shape == (2, 4, 8, 8)
    assert OutConv(4, 5)(out).shape == (2, 5, 8, 8)
    with pytest.raises(ValueError, match="larger"):
        up(torch.randn(1, 8, 6, 6), torch.randn(1, 4, 10, 10))


def test_up_concatenates_the_cropped_skip():
    up = Up(4, 2)
    seen = []
    up.conv.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x, skip = torch.randn(1, 4, 3, 3), torch.randn(1, 2, 10, 10)
    up(x, skip)
    assert torch.equal(seen[0][:, :2], skip[:, :, 2:8, 2:8])
    assert torch.allclose(seen[0][:, 2:], up.up(x))


# --------------------------------------------------------------------------- FCN
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bilinear_kernel_reproduces_bilinear_interpolation(factor):
    x = torch.randn(1, 3, 7, 9, dtype=torch.float64)
    up = nn.ConvTranspose2d(3, 3, 2 * factor, stride=factor, padding=factor // 2, bias=False).double()
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(3, 3, 2 * factor))
        ours = up(x)
    reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == reference.shape == (1, 3, 7 * factor, 9 * factor)
    inner = (slice(None), slice(None), slice(factor, -factor), slice(factor, -factor))
    assert torch.allclose(ours[inner], reference[inner], atol=1e-12)


def test_bilinear_kernel_shape_and_errors():
    w = bilinear_kernel(2, 2, 4)
    assert w.shape == (2, 2, 4, 4) and w.dtype == torch.float32
    assert torch.allclose(w[0, 0, 0], torch.tensor([0.0625, 0.1875, 0.1875, 0.0625]))
    assert torch.count_nonzero(w[0, 1]) == 0
    assert torch.allclose(bilinear_kernel(1, 1, 3)[0, 0, 1], torch.tensor([0.5, 1.0, 0.5]))
    with pytest.raises(ValueError, match="in_channels must equal out_channels"):
        bilinear_kernel(2, 3, 4)
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        bilinear_kernel(2, 2, 0)


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
@pytest.mark.parametrize("size", [(64, 96), (45, 70), (20, 33)])
def test_fcn_output_size_equals_input_size(variant, size):
    model = FCN(2, 3, variant=variant, base_channels=4)
    out = model(torch.randn(1, 2, *size))
    assert out.shape == (1, 3, *size)
    assert model.output_size(size) == size and model.padded_size(45) == 64


def test_fcn_skips_are_added_score_layers_start_at_zero():
    model = FCN(1, 2, variant="8s", base_channels=4)
    assert hasattr(model, "score_pool4") and hasattr(model, "score_pool3")
    assert not hasattr(FCN(variant="32s", base_channels=4), "score_pool4")
    assert not hasattr(FCN(variant="16s", base_channels=4), "score_pool3")
    x = torch.randn(1, 1, 64, 64)
    assert torch.count_nonzero(model(x)) == 0  # zero-initialised scores, as Long et al.
    with torch.no_grad():  # the pool3 scores alone, upsampled x8 by the bilinear layer
        model.score_pool3.bias.fill_(1.0)
        out = model(x)
    assert torch.allclose(out[..., 8:-8, 8:-8], torch.ones(1, 2, 48, 48))


def test_fcn_checks_its_input_and_arguments():
    model = FCN(1, 2, base_channels=4)
    with pytest.raises(ValueError, match=r"x\.unsqueeze\(0\)"):
        model(torch.zeros(1, 64, 64))
    with pytest.raises(ValueError, match="built for 1 input channel"):
        model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="variant must be"):
        FCN(variant="4s")


# --------------------------------------------------------------------------- helpers
def test_count_parameters_and_summary():
    model = UNet(1, 2, base_channels=4, depth=2)
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    model.outc.conv.weight.requires_grad_(False)
    assert count_parameters(model) == total - 4 * 2
    assert count_parameters(model, trainable_only=False) == total
    stats = summary(model, 48)
    assert stats.total_params == total
    text = str(stats)
    assert "ConvTranspose2d" in text and "[1, 2, 8, 8]" in text
    assert summary(model, (1, 1, 48, 52)).total_params == total
    with pytest.raises(ValueError, match="input height of 1: nearest valid size is 44"):
        summary(model, (1, 48))  # checked before torchinfo runs (it would wrap the error)
    with pytest.raises(ValueError, match="input_size must be"):
        summary(model, (1, 1, 1, 48, 48))
    with pytest.raises(TypeError, match="nn.Module"):
        count_parameters("not a model")


# --------------------------------------------------------------------------- they learn
def overfit(model: nn.Module, size: int, steps: int, lr: float) -> tuple[float, float]:
    images, masks = make_disks(4, size, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        logits = model(images)
        target = center_crop(masks, logits.shape[-2], logits.shape[-1])
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 20:
            break
    return losses[0], min(losses)


def test_tiny_unet_overfits_one_batch():
    model = UNet(1, 2, base_channels=8, depth=2, generator=torch.Generator().manual_seed(0))
    first, best = overfit(model, size=84, steps=80, lr=1e-2)
    assert best < first / 10, (first, best)


def test_tiny_fcn_overfits_one_batch():
    model = FCN(1, 2, variant="8s", base_channels=4, batch_norm=True, generator=torch.Generator().manual_seed(0))
    first, best = overfit(model, size=64, steps=120, lr=1e-2)
    assert best < first / 10, (first, best)
