"""The notebook-05 checks accept correct answers and name the common mistakes.

For each check: a correct learner implementation (written independently of the library)
passes; realistic wrong implementations fail with a CheckError whose message names the
misconception; an untouched stub says "not implemented yet"; a wrong type is explained.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from unetlib.checks import CheckError, NotImplementedYet
from unetlib.checks.nb05_training import (
    CopyCentre,
    TinyValidNet,
    check_iou,
    check_stitching,
    check_weighted_cross_entropy,
)


def _stub(*args):
    raise NotImplementedError()


# --------------------------------------------------------------------------------------
# Task 1: weighted cross-entropy
# --------------------------------------------------------------------------------------
def wce_gather(logits, target, weight):
    """Correct: log_softmax, pick the true class, weight, mean over pixels."""
    log_p = torch.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
    return (-log_p * weight).mean()


def wce_one_hot(logits, target, weight):
    """Correct, written the one-hot way."""
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    per_pixel = -(one_hot * torch.log_softmax(logits, dim=1)).sum(dim=1)
    return (per_pixel * weight).sum() / per_pixel.numel()


@pytest.mark.parametrize("fn", [wce_gather, wce_one_hot])
def test_weighted_ce_accepts_correct_answers(fn, capsys):
    check_weighted_cross_entropy(fn)
    assert "all 4 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, misconception",
    [
        (lambda l, t, w: F.cross_entropy(l, t), "weights are ignored"),
        (lambda l, t, w: (F.cross_entropy(l, t, reduction="none") * w).sum() / w.sum(), "divided by the sum of the weights"),
        (lambda l, t, w: (F.cross_entropy(l, t) * w).mean(), "averaged the loss over the pixels *before* weighting"),
        (lambda l, t, w: (F.cross_entropy(torch.softmax(l, 1), t, reduction="none") * w).mean(), "softmax applied twice"),
        (lambda l, t, w: (F.nll_loss(torch.softmax(l, 1), t, reduction="none") * w).mean(), "without taking their log"),
        (lambda l, t, w: (-torch.log(torch.softmax(l, 1)).gather(1, t[:, None])[:, 0] * w).mean(), "underflows to log(0)"),
        (lambda l, t, w: (-(t[:, None] * torch.log_softmax(l, 1)).sum(1) * w).mean(), "target one-hot confusion"),
        (lambda l, t, w: (-torch.log_softmax(l, -1).gather(1, t[:, None])[:, 0] * w).mean(), "wrong dimension"),
        (lambda l, t, w: F.cross_entropy(l, t, reduction="none") * w, "reduce the per-pixel losses"),
    ],
    ids=["plain-ce", "by-weight-sum", "mean-then-weight", "softmax-twice", "nll-of-probs", "log-of-softmax",
         "one-hot-confusion", "wrong-dim", "no-reduction"],
)
def test_weighted_ce_names_the_misconception(wrong, misconception):
    with pytest.raises(CheckError, match="Likely mistake") as info:
        check_weighted_cross_entropy(wrong)
    assert misconception in str(info.value)


@pytest.mark.parametrize("eps", [1e-6, 1e-8, 1e-12, 3e-9], ids=["1e-6", "1e-8", "1e-12", "3e-9"])
def test_weighted_ce_names_log_of_softmax_plus_eps(eps):
    """The usual 'fix' for log(0): finite, but wrong for confidently wrong pixels (any eps)."""

    def log_softmax_plus_eps(logits, target, weight):
        probs = torch.softmax(logits, dim=1)
        log_p = torch.log(probs + eps).gather(1, target[:, None])[:, 0]
        return (-log_p * weight).mean()

    with pytest.raises(CheckError, match=r"Likely mistake: you took log\(softmax\(x\) \+ eps\)(.|\n)*Use "
                                         r"torch\.log_softmax(.|\n)*exact and stable for large logits"):
        check_weighted_cross_entropy(log_softmax_plus_eps)


def test_weighted_ce_names_probabilities_clamped_at_eps():
    def clamped(logits, target, weight):
        log_p = torch.log(torch.softmax(logits, dim=1).clamp(min=1e-7)).gather(1, target[:, None])[:, 0]
        return (-log_p * weight).sum() / target.numel()

    with pytest.raises(CheckError, match=r"clamped the probabilities at eps(.|\n)*Use torch\.log_softmax"):
        check_weighted_cross_entropy(clamped)


def test_weighted_ce_refuses_a_detached_loss_or_a_python_number():
    with pytest.raises(CheckError, match="no gradient"):
        check_weighted_cross_entropy(lambda l, t, w: wce_gather(l.detach(), t, w))
    with pytest.raises(CheckError, match=r"expected a 0-d tensor but got the Python number(.|\n)*no \.item\(\)"):
        check_weighted_cross_entropy(lambda l, t, w: wce_gather(l, t, w).item())


def test_weighted_ce_stub_and_wrong_type():
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        check_weighted_cross_entropy(_stub)
    with pytest.raises(CheckError, match="expected a function but got Tensor"):
        check_weighted_cross_entropy(torch.tensor(1.0))


# --------------------------------------------------------------------------------------
# Task 2: IoU
# --------------------------------------------------------------------------------------
def iou_loop(pred, target, num_classes):
    """Correct: one boolean mask per class; NaN when the union is empty."""
    result = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for k in range(num_classes):
        p, t = pred == k, target == k
        union = (p | t).sum()
        if union > 0:
            result[k] = (p & t).sum() / union
    return result


def _iou_variant(kind):
    def iou(pred, target, num_classes):
        values = []
        for k in range(num_classes):
            p, t = (pred == k), (target == k)
            inter, union = (p & t).sum().double(), (p | t).sum().double()
            empty = union == 0
            if kind == "empty-is-one":
                values.append(torch.tensor(1.0, dtype=torch.float64) if empty else inter / union)
            elif kind == "dice":
                values.append(torch.tensor(math.nan) if empty else 2 * inter / (p.sum() + t.sum()))
            elif kind == "sum-union":
                values.append(torch.tensor(math.nan) if empty else inter / (p.sum() + t.sum()))
            elif kind == "no-background" and k > 0:
                values.append(torch.tensor(math.nan) if empty else inter / union)
        return torch.stack([v.double() for v in values])

    return iou


def test_iou_accepts_a_correct_answer(capsys):
    check_iou(iou_loop)
    assert "all 5 cases passed" in capsys.readouterr().out


def test_iou_accepts_numpy_output():
    check_iou(lambda p, t, k: iou_loop(p, t, k).numpy())


@pytest.mark.parametrize(
    "kind, misconception",
    [
        ("empty-is-one", "scored 1.0; it must be NaN"),
        ("dice", "you computed Dice"),
        ("sum-union", "counts the intersection twice"),
        ("no-background", "you left out class 0 (background)"),
    ],
)
def test_iou_names_the_misconception(kind, misconception):
    with pytest.raises(CheckError, match="Likely mistake") as info:
        check_iou(_iou_variant(kind))
    assert misconception in str(info.value)


def test_iou_empty_class_message_says_where_the_nan_belongs():
    with pytest.raises(CheckError, match=r"class 2: expected NaN but got 1"):
        check_iou(_iou_variant("empty-is-one"))


def test_iou_per_image_average_is_named():
    def per_image(pred, target, k):
        if pred.ndim == 2:
            return iou_loop(pred, target, k)
        return torch.stack([iou_loop(p, t, k) for p, t in zip(pred, target)]).nanmean(0)

    with pytest.raises(CheckError, match="averaged the IoUs of the single images"):
        check_iou(per_image)


def test_iou_stub_and_wrong_type():
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        check_iou(_stub)
    with pytest.raises(CheckError, match="expected a tensor of shape \\(2,\\) but got list"):
        check_iou(lambda p, t, k: iou_loop(p, t, k).tolist())
    with pytest.raises(CheckError, match="expected a function but got str"):
        check_iou("iou")


# --------------------------------------------------------------------------------------
# Task 3: overlap-tile stitching
# --------------------------------------------------------------------------------------
def _tiled(model, image, tile_in, tile_out, *, lead="context", pad="reflect", step=None, drop_last=False,
           write_shift=0):
    """A learner-style implementation; the keywords reproduce the common mistakes."""
    _, height, width = image.shape
    context = (tile_in - tile_out) // 2
    lead = context if lead == "context" else lead
    step = tile_out if step is None else step
    ys = range(0, height - tile_out + 1 if drop_last else height, step)
    xs = range(0, width - tile_out + 1 if drop_last else width, step)
    bottom = max(ys) + tile_in - lead - height
    right = max(xs) + tile_in - lead - width
    if pad == "reflect":
        padded = F.pad(image, (lead, right, lead, bottom), mode="reflect")
    else:
        padded = F.pad(image, (lead, right, lead, bottom))
    result = None
    for y in ys:
        for x in xs:
            out = model(padded[None, :, y : y + tile_in, x : x + tile_in])[0]
            if result is None:
                result = torch.zeros((out.shape[0], height + tile_in, width + tile_in), dtype=out.dtype)
            result[:, y + write_shift : y + write_shift + tile_out, x + write_shift : x + write_shift + tile_out] = out
    return result[:, :height, :width]


def test_stitching_accepts_a_correct_answer(capsys):
    check_stitching(_tiled)
    assert "all 5 cases passed" in capsys.readouterr().out


def test_stitching_accepts_a_batched_correct_answer():
    def batched(model, image, tile_in, tile_out):
        _, h, w = image.shape
        c = (tile_in - tile_out) // 2
        ny, nx = math.ceil(h / tile_out), math.ceil(w / tile_out)
        padded = F.pad(image, (c, c + nx * tile_out - w, c, c + ny * tile_out - h), mode="reflect")
        tiles = torch.stack([padded[:, y * tile_out : y * tile_out + tile_in, x * tile_out : x * tile_out + tile_in]
                             for y in range(ny) for x in range(nx)])
        out = model(tiles)  # (ny * nx, K, t, t)
        k = out.shape[1]
        full = out.reshape(ny, nx, k, tile_out, tile_out).permute(2, 0, 3, 1, 4).reshape(k, ny * tile_out, nx * tile_out)
        return full[:, :h, :w]

    check_stitching(batched)


@pytest.mark.parametrize(
    "kwargs, misconception",
    [
        (dict(lead=0), "without the mirror padding"),
        (dict(step="tile_in"), "you stepped the tiles by tile_in"),
        (dict(step="plus_one"), "off-by-one tile stride"),
        (dict(step="minus_one"), "off-by-one tile stride"),
        (dict(drop_last=True), "last tile at the border is missing"),
        (dict(pad="zeros"), "you zero-padded the image"),
        (dict(write_shift="context"), "shifted by 2 px (the context)"),
    ],
    ids=["no-mirror", "input-stride", "stride+1", "stride-1", "last-tile", "zero-pad", "input-coordinates"],
)
def test_stitching_names_the_misconception(kwargs, misconception):
    def wrong(model, image, tile_in, tile_out):
        kw = dict(kwargs)
        kw["step"] = {"tile_in": tile_in, "plus_one": tile_out + 1, "minus_one": tile_out - 1}.get(kw.get("step"))
        if kw.get("write_shift") == "context":
            kw["write_shift"] = (tile_in - tile_out) // 2
        return _tiled(model, image, tile_in, tile_out, **kw)

    with pytest.raises(CheckError, match="Likely mistake") as info:
        check_stitching(wrong)
    assert misconception in str(info.value)


def test_stitching_names_a_last_tile_clamped_inside_the_image():
    """Moving the last tile back to H - tile_out is exact without pooling, not with it (odd origin)."""

    def clamped(model, image, tile_in, tile_out):
        _, h, w = image.shape
        c = (tile_in - tile_out) // 2
        padded = F.pad(image, (c, c, c, c), mode="reflect")  # no extra pad: no tile sticks out
        result = None
        for y in range(0, h, tile_out):
            for x in range(0, w, tile_out):
                y0, x0 = min(y, h - tile_out), min(x, w - tile_out)
                out = model(padded[None, :, y0 : y0 + tile_in, x0 : x0 + tile_in])[0]
                if result is None:
                    result = torch.zeros((out.shape[0], h, w), dtype=out.dtype)
                result[:, y0 : y0 + tile_out, x0 : x0 + tile_out] = out
        return result

    with pytest.raises(CheckError, match=r"1x29x27 image(.|\n)*moved the last tile back inside the image"
                                         r"(.|\n)*2\*\*depth = 16 for a depth-4 U-Net"):
        check_stitching(clamped)


def test_stitching_batch_dimension_and_wrong_tile_size_are_explained():
    with pytest.raises(CheckError, match="without the batch dimension"):
        check_stitching(lambda m, im, ti, to: _tiled(m, im, ti, to)[None])
    with pytest.raises(CheckError, match="expects input tiles of 10x10, got \\(6, 6\\)"):
        check_stitching(lambda m, im, ti, to: _tiled(m, im, to, to))


def test_stitching_stub_and_wrong_type():
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        check_stitching(_stub)
    with pytest.raises(CheckError, match="expected a tensor of shape \\(1, 20, 20\\) but got ndarray|expected a tensor"):
        check_stitching(lambda m, im, ti, to: _tiled(m, im, ti, to).tolist())
    with pytest.raises(CheckError, match="expected a function but got NoneType"):
        check_stitching(None)


def test_helper_models_are_valid_networks_with_the_stated_context():
    image = torch.rand(1, 1, 20, 20, dtype=torch.float64)
    assert torch.equal(CopyCentre(2)(image), image[..., 2:18, 2:18])
    assert TinyValidNet(1, 3)(image).shape == (1, 3, 14, 14)  # 3 px of context on each side
    with pytest.raises(ValueError, match="even input size"):
        TinyValidNet()(torch.rand(1, 1, 21, 21))


def test_iou_diagnoses_numpy_answers_too():
    with pytest.raises(CheckError, match="you computed Dice"):
        check_iou(lambda p, t, k: _iou_variant("dice")(p, t, k).numpy())
