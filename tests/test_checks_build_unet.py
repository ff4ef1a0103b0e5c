"""check_unet_class accepts correct U-Net classes written differently and names the usual mistakes.

The learner-style classes here are written independently of unetlib.models (their own
attribute names, the decoder registered before the encoder, functional ReLUs in one of
them), so the check must match layers by the order they run, not by name. Each wrong
class carries one mistake a learner plausibly makes; the check must reject it with a
CheckError whose message names that mistake.
"""
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unetlib.checks import CheckError, NotImplementedYet, check_unet_class
from unetlib.models import UNet


class LearnerUNet(nn.Module):
    """A learner's U-Net. The class attributes switch on one mistake each (defaults: correct)."""

    crop = "centre"        # "centre", "none" or "top-left"
    skip_first = True      # torch.cat([skip, up]) (the course's order) or [up, skip]
    halve = True           # the up-convolution halves the channels
    pad = 0                # 0 (valid, the paper) or 1
    second_relu = True     # the ReLU after the second conv of each double conv
    pool_first = False     # pool before the first double conv too
    final_1x1 = True
    extra_levels = 0       # 1: one pooling too many
    relu_after_up = False
    batch_norm = False
    softmax_out = False
    honour_base = True

    def __init__(self, in_channels, num_classes, base_channels=64, depth=4):
        super().__init__()
        if not self.honour_base:
            base_channels = 64
        depth += self.extra_levels
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        # The decoder is registered first: registration order must not matter to the check.
        self.up_convs, self.decoder = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(depth)):
            up_width = widths[i] if self.halve else widths[i + 1]
            self.up_convs.append(nn.ConvTranspose2d(widths[i + 1], up_width, kernel_size=2, stride=2))
            self.decoder.append(self._double(widths[i] + up_width, widths[i]))
        self.encoder = nn.ModuleList(
            self._double(in_channels if i == 0 else widths[i - 1], widths[i]) for i in range(depth + 1))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1) if self.final_1x1 else None

    def _double(self, cin, cout):
        layers = [nn.Conv2d(cin, cout, 3, padding=self.pad)]
        layers += [nn.BatchNorm2d(cout)] if self.batch_norm else []
        layers += [nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=self.pad)]
        layers += [nn.ReLU(inplace=True)] if self.second_relu else []
        return nn.Sequential(*layers)

    def _crop(self, skip, h, w):
        if self.crop == "none":
            return skip
        if self.crop == "top-left":
            return skip[:, :, :h, :w]
        dy, dx = (skip.shape[2] - h) // 2, (skip.shape[3] - w) // 2
        return skip[:, :, dy:dy + h, dx:dx + w]

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.encoder):
            if i > 0 or self.pool_first:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip
        for up, block in zip(self.up_convs, self.decoder):
            x = up(x)
            if self.relu_after_up:
                x = F.relu(x)
            skip = self._crop(skips.pop(), x.shape[2], x.shape[3])
            x = block(torch.cat([skip, x] if self.skip_first else [x, skip], dim=1))
        if self.head is not None:
            x = self.head(x)
        return torch.softmax(x, dim=1) if self.softmax_out else x


def variant(**changes):
    return type("WrongUNet", (LearnerUNet,), changes)


class FunctionalUNet(nn.Module):
    """Correct, written another way: functional ReLU and pooling, a crop by negative F.pad,
    layers kept in a ModuleDict registered in a scrambled order."""

    def __init__(self, in_channels, num_classes, base_channels=64, depth=4):
        super().__init__()
        self.depth = depth
        c = [base_channels * 2 ** i for i in range(depth + 1)]
        layers = {"out": nn.Conv2d(c[0], num_classes, 1)}
        for i in range(depth):
            layers[f"up{i}"] = nn.ConvTranspose2d(c[i + 1], c[i], 2, 2)
            layers[f"dec{i}b"] = nn.Conv2d(c[i], c[i], 3)
            layers[f"dec{i}a"] = nn.Conv2d(2 * c[i], c[i], 3)
        for i in range(depth + 1):
            layers[f"enc{i}b"] = nn.Conv2d(c[i], c[i], 3)
            layers[f"enc{i}a"] = nn.Conv2d(in_channels if i == 0 else c[i - 1], c[i], 3)
        self.layers = nn.ModuleDict(layers)

    def forward(self, x):
        L = self.layers
        skips = []
        for i in range(self.depth + 1):
            if i:
                skips.append(x)
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            x = F.relu(L[f"enc{i}b"](F.relu(L[f"enc{i}a"](x))))
        for i in reversed(range(self.depth)):
            x = L[f"up{i}"](x)
            skip = skips.pop()
            dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            skip = F.pad(skip, (-(dx // 2), -(dx - dx // 2), -(dy // 2), -(dy - dy // 2)))
            x = F.relu(L[f"dec{i}b"](F.relu(L[f"dec{i}a"](torch.cat((skip, x), 1)))))
        return L["out"](x)


@pytest.mark.parametrize("cls", [LearnerUNet, FunctionalUNet, UNet], ids=["learner", "functional", "unetlib"])
def test_accepts_correct_classes_written_differently(cls, capsys):
    start = time.perf_counter()
    check_unet_class(cls)
    assert "Task 4 UNetClass: all 5 cases passed" in capsys.readouterr().out
    assert time.perf_counter() - start < 10  # about 0.5 s; generous for a loaded CI machine


@pytest.mark.parametrize(
    "changes, misconception",
    [
        ({"crop": "none"}, "the skip is not cropped"),
        ({"crop": "top-left"}, "cropped off-centre"),
        ({"skip_first": False}, "concatenation order swapped"),
        ({"halve": False}, "not halving the channels"),
        ({"pad": 1}, "padding=1 in a valid net"),
        ({"second_relu": False}, "a missing ReLU"),
        ({"pool_first": True}, "pooling before the first double convolution"),
        ({"final_1x1": False}, "no final 1x1 convolution"),
        ({"extra_levels": 1}, "wrong depth (5 poolings)"),
        ({"relu_after_up": True}, "a ReLU after the up-convolution"),
        ({"batch_norm": True}, "BatchNorm"),
        ({"softmax_out": True}, "drop the softmax"),
        ({"honour_base": False}, "ignores its `base_channels` argument"),
    ],
    ids=["no-crop", "off-centre", "cat-order", "up-not-halving", "padding-1", "missing-relu", "pool-first",
         "no-1x1", "depth-5", "relu-after-up", "batchnorm", "softmax", "base-ignored"],
)
def test_names_the_misconception(changes, misconception):
    with pytest.raises(CheckError, match="Likely mistake") as info:
        check_unet_class(variant(**changes))
    message = str(info.value)
    assert misconception in message
    assert "is wrong:" in message  # the failing case and what differs come first


def test_message_says_expected_and_got_parameters():
    with pytest.raises(CheckError) as info:
        check_unet_class(variant(halve=False))
    message = str(info.value)
    assert "case 'parameters of UNetClass(1, 2), the paper's network'" in message
    assert "expected 31,030,658 parameters but got" in message


def test_forward_shape_error_becomes_a_readable_check_error():
    with pytest.raises(CheckError) as info:
        check_unet_class(variant(crop="none"))
    message = str(info.value)
    assert "the forward pass on a 1x1x572x572 input raised RuntimeError" in message
    assert "at line" in message and "torch.cat" in message  # the learner's own line
    assert "Traceback" not in message


def test_constructor_error_becomes_a_readable_check_error():
    class NoDepth(nn.Module):
        def __init__(self, in_channels, num_classes, base_channels=64):
            super().__init__()

    with pytest.raises(CheckError, match=r"creating UNetClass\(1, 2\) raised TypeError") as info:
        check_unet_class(lambda *a, **k: NoDepth(*a, depth_is_missing=True, **k))
    assert "with these names" in str(info.value)

    class Broken(LearnerUNet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.extra = nn.Conv2d(3, 4, kernel_size=3, padding="full")

    with pytest.raises(CheckError, match=r"creating UNetClass\(1, 2\) raised"):
        check_unet_class(Broken)


def test_a_layer_run_twice_is_explained():
    class Reused(FunctionalUNet):
        def forward(self, x):  # the encoder's second conv of level 0 also runs as the decoder's
            self.layers["dec0b"] = self.layers["enc0b"]
            return super().forward(x)

    with pytest.raises(CheckError, match="runs twice"):
        check_unet_class(Reused)


def test_untouched_stubs_are_not_implemented_yet():
    class StubInit(nn.Module):
        def __init__(self, in_channels, num_classes, base_channels=64, depth=4):
            super().__init__()
            raise NotImplementedError()

    class StubForward(nn.Module):
        def __init__(self, in_channels, num_classes, base_channels=64, depth=4):
            super().__init__()

        def forward(self, x):
            raise NotImplementedError()

    for stub in (StubInit, StubForward):
        with pytest.raises(NotImplementedYet, match="not implemented yet"):
            check_unet_class(stub)


def test_refuses_an_instance_or_a_non_class():
    with pytest.raises(CheckError, match="not UNet\\(1, 2\\)"):
        check_unet_class(LearnerUNet(1, 2, base_channels=2, depth=1))
    with pytest.raises(CheckError, match="expected a class but got str"):
        check_unet_class("UNet")
