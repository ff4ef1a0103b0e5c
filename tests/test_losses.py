"""Tests for unetlib.losses: agreement with torch references, numerical safety, helpful errors."""
import pytest
import torch
import torch.nn.functional as F

from unetlib.losses import (
    LOSS_NAMES,
    CombinedLoss,
    DiceLoss,
    WeightedCrossEntropyLoss,
    check_logits_target,
    focal_loss,
    make_loss,
    soft_dice_loss,
    weighted_cross_entropy,
)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 7, generator=g)
    target = torch.randint(0, 3, (2, 6, 7), generator=g)
    return logits, target


def test_unweighted_ce_equals_torch(batch):
    logits, target = batch
    torch.testing.assert_close(weighted_cross_entropy(logits, target), F.cross_entropy(logits, target))


def test_class_dependent_weights_equal_torch_class_weights(batch):
    logits, target = batch
    class_w = torch.tensor([0.5, 2.0, 3.0])
    pixel_w = class_w[target]  # a weight map that depends only on the class
    by_weights = weighted_cross_entropy(logits, target, pixel_w, normalize="weights")
    torch.testing.assert_close(by_weights, F.cross_entropy(logits, target, weight=class_w))
    by_pixels = weighted_cross_entropy(logits, target, pixel_w, normalize="pixels")
    torch.testing.assert_close(by_pixels, by_weights * pixel_w.sum() / pixel_w.numel())


def test_single_logit_is_binary_ce_and_equals_two_class_softmax():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 5, 5, generator=g)
    t = torch.randint(0, 2, (3, 5, 5), generator=g)
    w = torch.rand(3, 5, 5, generator=g)
    ours = weighted_cross_entropy(x, t, w)
    reference = F.binary_cross_entropy_with_logits(x[:, 0], t.float(), reduction="none")
    torch.testing.assert_close(ours, (reference * w).mean())
    two_class = torch.cat([torch.zeros_like(x), x], dim=1)  # sigmoid(x) == softmax([0, x])[1]
    torch.testing.assert_close(ours, weighted_cross_entropy(two_class, t, w))


def test_target_with_channel_dim_is_accepted(batch):
    logits, target = batch
    torch.testing.assert_close(weighted_cross_entropy(logits, target[:, None]), weighted_cross_entropy(logits, target))


def test_dice_perfect_wrong_and_range(batch):
    _, target = batch
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, target) < 1e-3
    wrong = F.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(wrong, target) > 0.95
    for seed in range(5):
        logits = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(seed)) * 5
        assert 0.0 <= float(soft_dice_loss(logits, target)) <= 1.0


def test_dice_single_channel_equals_foreground_dice_of_two_class():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 8, 8, generator=g)
    t = torch.randint(0, 2, (2, 8, 8), generator=g)
    two_class = torch.cat([torch.zeros_like(x), x], dim=1)
    torch.testing.assert_close(soft_dice_loss(x, t), soft_dice_loss(two_class, t, include_background=False))
    # independent value: (2*sum(p*t) + 1) / (sum p + sum t + 1) with p = sigmoid(x)
    p = torch.sigmoid(x[:, 0])
    expected = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    torch.testing.assert_close(soft_dice_loss(x, t), expected)


def test_dice_empty_class_is_not_a_penalty_but_false_positives_are():
    target = torch.zeros(1, 6, 6, dtype=torch.long)
    target[0, :3] = 1  # class 2 absent
    right = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(right, target) < 1e-3  # absent and not predicted: correct
    fp = right.clone()
    fp[0, :, 5, :] = torch.tensor([0.0, 0.0, 50.0])[:, None]  # predicts the absent class on a row
    assert soft_dice_loss(fp, target) > 0.25


def test_focal_gamma_zero_is_cross_entropy(batch):
    logits, target = batch
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))
    x = logits[:, :1]
    t = target.clamp(max=1)
    torch.testing.assert_close(focal_loss(x, t, gamma=0.0), F.binary_cross_entropy_with_logits(x[:, 0], t.float()))


def test_focal_downweights_easy_pixels(batch):
    logits, target = batch
    assert focal_loss(logits, target, gamma=2.0) < focal_loss(logits, target, gamma=0.0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_extreme_logits_give_finite_values_and_gradients(channels, gamma):
    target = torch.tensor([[[0, 1], [1, 0]]])
    sign = torch.tensor([[[1.0, -1.0], [1.0, -1.0]]])  # half the pixels confidently right, half wrong
    logits = (sign[:, None] * 1e4).repeat(1, channels, 1, 1)
    if channels == 3:
        logits[:, 2] = -1e4
    for name in ("wce", "dice", "focal", "wce+dice"):
        x = logits.clone().requires_grad_(True)
        loss = make_loss(name)(x, target, torch.ones(1, 2, 2))
        loss.backward()
        assert torch.isfinite(loss), name
        assert torch.isfinite(x.grad).all(), name
    x = logits.clone().requires_grad_(True)
    loss = focal_loss(x, target, gamma=gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_focal_confident_and_correct_is_zero():
    target = torch.tensor([[[0, 1]]])
    logits = torch.tensor([[[[1e4, -1e4]], [[-1e4, 1e4]]]])
    assert float(focal_loss(logits, target)) == 0.0


def test_losses_under_bf16_autocast_on_cpu(batch):
    logits, target = batch
    weight = torch.rand(target.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    conv = torch.nn.Conv2d(3, 3, 1)
    torch.nn.init.eye_(conv.weight.data.view(3, 3))
    conv.bias.data.zero_()
    for name in ("wce", "dice", "focal", "wce+dice"):
        loss_fn = make_loss(name)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(logits * 1e3)  # bf16 activations with huge values
            assert out.dtype == torch.bfloat16
            loss = loss_fn(out, target, weight)
        assert loss.dtype == torch.float32 and torch.isfinite(loss), name
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_small = loss_fn(conv(logits), target, weight)
        torch.testing.assert_close(loss_small, loss_fn(logits, target, weight), atol=0.05, rtol=0.05)


def test_make_loss_registry_and_combination(batch):
    logits, target = batch
    weight = torch.rand(target.shape) + 0.5
    for name in LOSS_NAMES:
        assert torch.isfinite(make_loss(name)(logits, target, weight))
    combined = make_loss("wce+dice")
    assert isinstance(combined, CombinedLoss)
    expected = WeightedCrossEntropyLoss()(logits, target, weight) + DiceLoss()(logits, target)
    torch.testing.assert_close(combined(logits, target, weight), expected)
    # "ce" ignores the weight map, "wce" uses it
    torch.testing.assert_close(make_loss("ce")(logits, target, weight), F.cross_entropy(logits, target))
    assert not torch.allclose(make_loss("wce")(logits, target, weight), F.cross_entropy(logits, target))
    with pytest.raises(ValueError, match="unknown loss 'bce'.*wce\\+dice"):
        make_loss("bce")


def test_shape_and_value_errors_are_helpful(batch):
    logits, target = batch
    with pytest.raises(TypeError, match=r"integer class ids.*\.long\(\)"):
        weighted_cross_entropy(logits, target.float())
    with pytest.raises(ValueError, match=r"found range \[0, 255\].*0/255"):
        weighted_cross_entropy(logits[:, :2], target.clamp(max=1) * 255)
    with pytest.raises(ValueError, match="num_classes=5"):
        weighted_cross_entropy(logits, target.clamp(max=1) * 4)
    big_target = torch.zeros(2, 10, 11, dtype=torch.long)
    with pytest.raises(ValueError, match=r"6x7.*10x11.*center_crop"):
        soft_dice_loss(logits, big_target)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*unsqueeze"):
        focal_loss(logits[0], target[0])
    with pytest.raises(ValueError, match="batch sizes differ"):
        weighted_cross_entropy(logits, target[:1])
    with pytest.raises(ValueError, match="weight must have the target's shape"):
        weighted_cross_entropy(logits, target, torch.ones(2, 6, 6))
    with pytest.raises(ValueError, match=r"one-hot|\(N, H, W\)"):
        check_logits_target(logits, F.one_hot(target, 3).permute(0, 3, 1, 2))


def test_focal_alpha_matches_weighted_bce():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 1, 5, 5, generator=g)
    t = torch.randint(0, 2, (2, 5, 5), generator=g)
    alpha_t = torch.where(t > 0, 0.25, 0.75)
    expected = F.binary_cross_entropy_with_logits(x[:, 0], t.float(), weight=alpha_t)
    torch.testing.assert_close(focal_loss(x, t, gamma=0.0, alpha=0.25), expected)
    with pytest.raises(ValueError, match="alpha is only defined for binary"):
        focal_loss(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), alpha=0.25)
