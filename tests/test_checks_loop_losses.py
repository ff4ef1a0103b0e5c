"""The training-loop checks (train_step, weight_map, dice_loss, focal_loss) accept correct answers
written in different ways and name the usual mistakes.

Each correct implementation is written independently of unetlib (numpy vs torch, loops vs
vectorised, other smoothing constants); each wrong one is a mistake a learner plausibly
makes, and the check must reject it with a CheckError whose message names the misconception.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from unetlib.checks import (CheckError, NotImplementedYet, check_dice_loss, check_focal_loss, check_train_step,
                            check_weight_map)


def _stub(*args, **kwargs):
    raise NotImplementedError()


# --------------------------------------------------------------------------------------
# train_step
# --------------------------------------------------------------------------------------
def step_standard(model, images, masks, weights, optimizer):
    model.train()
    optimizer.zero_grad()
    loss = (F.cross_entropy(model(images), masks, reduction="none") * weights).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


def step_zero_last(model, images, masks, weights, optimizer):
    """Correct, written differently: gather on log_softmax, zero_grad after the step, float()."""
    model.train()
    log_p = torch.log_softmax(model(images), dim=1).gather(1, masks[:, None])[:, 0]
    loss = (-log_p * weights).sum() / log_p.numel()
    loss.backward()
    optimizer.step()
    model.zero_grad(set_to_none=False)
    return float(loss.detach())


def _step(order="zfbs", loss="paper", train=True, returns="item"):
    """A learner's train_step; the arguments switch on one mistake each."""
    def train_step(model, images, masks, weights, optimizer):
        if train:
            model.train()
        for op in order:
            if op == "z":
                optimizer.zero_grad()
            elif op == "f":
                logits = model(images)
                per_pixel = F.cross_entropy(torch.softmax(logits, 1) if loss == "softmax" else logits, masks,
                                            reduction="none")
                value = {"paper": (per_pixel * weights).mean(), "softmax": (per_pixel * weights).mean(),
                         "unweighted": per_pixel.mean(), "summed": (per_pixel * weights).sum(),
                         "by_weights": (per_pixel * weights).sum() / weights.sum()}[loss]
            elif op == "b":
                value.backward()
            else:
                optimizer.step()
        return value if returns == "tensor" else value.item()

    return train_step


@pytest.mark.parametrize("fn", [step_standard, step_zero_last, _step("fzbs")], ids=["standard", "zero-last", "zero-mid"])
def test_train_step_accepts_correct_answers(fn, capsys):
    check_train_step(fn)
    assert "Task 5: one training step: all 2 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, misconception",
    [
        (_step(order="fbs"), "zero_grad forgotten: loss.backward() adds to every parameter's .grad"),
        (_step(order="zfsb"), "optimizer.step() before loss.backward()"),
        (_step(order="sfb"), "optimizer.step() before loss.backward(): the step then uses the previous batch's"),
        (_step(order="zfbzs"), "the parameters did not change"),
        (_step(loss="softmax"), "softmax applied before a loss that already applies it"),
        (_step(loss="unweighted"), "the weight map is ignored"),
        (_step(loss="summed"), "loss summed instead of averaged"),
        (_step(loss="by_weights"), "divided by the sum of the weights"),
        (_step(train=False), "model left in eval mode"),
        (_step(returns="tensor"), "returning a tensor instead of a Python float: return loss.item()"),
    ],
    ids=["no-zero-grad", "step-before-backward", "step-before-backward-lagged", "zero-between", "softmax",
         "weights-ignored", "summed", "by-weight-sum", "eval-mode", "tensor"],
)
def test_train_step_names_the_misconception(wrong, misconception):
    with pytest.raises(CheckError, match="Likely mistake") as info:
        check_train_step(wrong)
    assert misconception in str(info.value)


def test_train_step_messages_say_what_differs():
    with pytest.raises(CheckError, match=r"after 2 steps the parameter 'conv.weight' differs"):
        check_train_step(_step(order="fbs"))
    with pytest.raises(CheckError, match=r"step 1 returned tensor(.|\n)*keeps the whole computation graph"):
        check_train_step(_step(returns="tensor"))
    with pytest.raises(CheckError, match=r"step 1 returned the loss [\d.]+, expected [\d.]+"):
        check_train_step(_step(loss="summed"))


def test_train_step_backward_after_an_in_place_step_is_explained():
    with pytest.raises(CheckError, match=r"raised RuntimeError: one of the variables(.|\n)*Likely mistake: "
                                         r"optimizer\.step\(\) before loss\.backward\(\)(.|\n)*at line \d+: value.backward\(\)"):
        check_train_step(_step(order="fszb"))


def test_train_step_stub_and_wrong_type():
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        check_train_step(_stub)
    with pytest.raises(CheckError, match="expected a function but got float"):
        check_train_step(0.5)


# --------------------------------------------------------------------------------------
# weight_map
# --------------------------------------------------------------------------------------
def wmap_numpy(instances, w0=10.0, sigma=5.0):
    """Correct: one distance transform per cell over the whole image, sorted per pixel."""
    labels = np.asarray(instances)
    fg = labels > 0
    present = [c for c in (fg, ~fg) if c.any()]
    wc = np.zeros(labels.shape)
    for c in present:
        wc[c] = labels.size / (len(present) * c.sum())
    ids = [i for i in np.unique(labels) if i != 0]
    if len(ids) < 2:
        return wc
    d = np.sort(np.stack([ndimage.distance_transform_edt(labels != i) for i in ids]), axis=0)
    return wc + ~fg * w0 * np.exp(-(d[0] + d[1]) ** 2 / (2 * sigma ** 2))


def wmap_torch(instances, w0=10.0, sigma=5.0):
    """Correct, in torch and brute force: distance from every pixel to every pixel of each cell."""
    labels = torch.as_tensor(np.asarray(instances).astype(np.int64))
    h, w = labels.shape
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2).double()
    flat = labels.reshape(-1)
    fg = flat > 0
    weights = torch.ones(h * w, dtype=torch.float64)
    if fg.any() and (~fg).any():
        weights = torch.where(fg, h * w / (2 * fg.sum()), h * w / (2 * (~fg).sum())).double()
    dists = [torch.cdist(coords, coords[flat == i]).min(1).values for i in flat.unique() if i > 0]
    if len(dists) >= 2:
        d = torch.stack(dists).sort(0).values
        weights = weights + (~fg) * w0 * torch.exp(-(d[0] + d[1]) ** 2 / (2 * sigma ** 2))
    return weights.reshape(h, w).float()


def _wmap(mistake):
    """A learner's weight_map with one mistake."""
    def weight_map(instances, w0=10.0, sigma=5.0):
        labels = np.asarray(instances).astype(np.int64)
        fg = labels > 0
        n, n_fg = labels.size, fg.sum()
        wc = np.where(fg, n / (2 * max(n_fg, 1)), n / (2 * max(n - n_fg, 1))) if 0 < n_fg < n else np.ones(labels.shape)
        if mistake == "no-wc":
            wc = np.ones(labels.shape)
        if mistake == "two-classes":  # always n / (2 n_class), guarded against 0 / 0
            wc = np.where(fg, n / (2 * max(n_fg, 1)), n / (2 * max(n - n_fg, 1)))
        if mistake == "divide-by-zero":
            with np.errstate(divide="ignore", invalid="ignore"):
                wc = fg * (n / (2 * n_fg)) + ~fg * (n / (2 * (n - n_fg)))
        ids = [i for i in np.unique(labels) if i != 0]
        if mistake == "range-ids":  # assumes the ids are 1, 2, ..., max
            ids = list(range(1, labels.max() + 1))
        if mistake == "centre":
            yy, xx = np.indices(labels.shape)
            maps = [np.hypot(yy - cy, xx - cx) for cy, cx in ndimage.center_of_mass(fg, labels, ids)]
        elif mistake == "edt-of-mask":
            maps = [ndimage.distance_transform_edt(labels == i) for i in ids]
        else:
            maps = [ndimage.distance_transform_edt(labels != i) for i in ids]
        if mistake == "far-dropped":
            maps = [np.where(m > 2 * sigma, np.inf, m) for m in maps]
        fill = 0.0 if mistake == "one-cell-d2-zero" and len(maps) == 1 else np.inf
        d = np.sort(np.stack(maps + [np.full(labels.shape, fill)] * (2 - min(len(maps), 2))), axis=0)
        d1, d2 = d[0], d[1]
        if mistake == "d1-twice":
            d2 = d1
        two_sigma2 = sigma ** 2 if mistake == "sigma-squared" else 2 * sigma ** 2
        border = w0 * np.exp(-(d1 + d2) ** 2 / two_sigma2)
        return wc + (border if mistake == "on-cells" else ~fg * border)

    return weight_map


@pytest.mark.parametrize("fn", [wmap_numpy, wmap_torch, _wmap(None)], ids=["numpy", "torch", "variant-correct"])
def test_weight_map_accepts_correct_answers(fn, capsys):
    check_weight_map(fn)
    assert "Task 4: the weight map: all 5 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mistake, misconception",
    [
        ("centre", "distance to the cell centre instead of its border"),
        ("on-cells", "border term is added on cell pixels too"),
        ("d1-twice", "d1 used twice"),
        ("sigma-squared", "sigma**2 instead of 2 sigma**2"),
        ("no-wc", "w_c forgotten"),
        ("far-dropped", "far cells dropped in a way that changes the map"),
        ("one-cell-d2-zero", "with a single cell there is no second-nearest cell"),
        ("edt-of-mask", "distance_transform_edt measures the distance to the nearest zero"),
        ("two-classes", "w_c counted a class with no pixels"),
        ("divide-by-zero", "NaN or inf"),
        ("range-ids", "distance maps for ids that no cell has (range(1, instances.max() + 1) with ids 1, 2, 5, 7)"),
    ],
)
def test_weight_map_names_the_misconception(mistake, misconception):
    with pytest.raises(CheckError, match="Likely mistake") as info:
        check_weight_map(_wmap(mistake))
    assert misconception in str(info.value)


def test_weight_map_edge_cases_are_named_in_the_failing_case():
    with pytest.raises(CheckError, match=r"case 'a single cell: no second-nearest cell"):
        check_weight_map(_wmap("one-cell-d2-zero"))
    with pytest.raises(CheckError, match=r"case 'no cell at all \(an empty tile\)'"):
        check_weight_map(_wmap("divide-by-zero"))


def test_weight_map_stub_and_wrong_return():
    with pytest.raises(NotImplementedYet):
        check_weight_map(_stub)
    with pytest.raises(CheckError, match="expected shape"):
        check_weight_map(lambda inst, w0=10.0, sigma=5.0: wmap_numpy(inst, w0, sigma)[None])


# --------------------------------------------------------------------------------------
# dice_loss
# --------------------------------------------------------------------------------------
def dice_vectorised(logits, target):
    p = torch.softmax(logits, dim=1)
    t = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter, denom = (p * t).sum((0, 2, 3)), p.sum((0, 2, 3)) + t.sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (denom + 1)).mean()


def dice_loop_small_eps(logits, target, eps=1e-6):
    """Correct with another smoothing constant, one class at a time."""
    p = torch.softmax(logits, dim=1)
    scores = []
    for k in range(logits.shape[1]):
        t = (target == k).float()
        scores.append((2 * (p[:, k] * t).sum() + eps) / (p[:, k].sum() + t.sum() + eps))
    return 1 - torch.stack(scores).mean()


def _dice(mistake):
    def dice_loss(logits, target):
        c = logits.shape[1]
        t = F.one_hot(target, c).permute(0, 3, 1, 2).float()
        p = {"no-softmax": logits, "sigmoid": torch.sigmoid(logits)}.get(mistake, torch.softmax(logits, 1))
        if mistake == "argmax":
            p = F.one_hot(logits.argmax(1), c).permute(0, 3, 1, 2).float()
        dims = (2, 3) if mistake == "per-image" else (0, 2, 3)
        inter, denom = (p * t).sum(dims), p.sum(dims) + t.sum(dims)
        smooth = 0.0 if mistake == "no-smoothing" else 1.0
        if mistake == "denominator-only":
            dice = 2 * inter / (denom + 1e-6)
        elif mistake == "over-union":  # IoU's union under Dice's 2 sum p t
            dice = (2 * inter + smooth) / (denom - inter + smooth)
        else:
            dice = (2 * inter + smooth) / (denom + smooth)
        loss = {"returned-dice": dice.mean(), "classes-summed": 1 - dice.sum()}.get(mistake, 1 - dice.mean())
        return loss.item() if mistake == "float" else loss

    return dice_loss


@pytest.mark.parametrize("fn", [dice_vectorised, dice_loop_small_eps, lambda l, t: dice_loop_small_eps(l, t, 0.5)],
                         ids=["smooth-1", "eps-1e-6", "eps-0.5"])
def test_dice_accepts_correct_answers(fn, capsys):
    check_dice_loss(fn)
    assert "Task 6: soft Dice loss: all 4 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mistake, misconception",
    [
        ("no-smoothing", "no smoothing: a class absent from the target"),
        ("argmax", "argmax instead of probabilities: the loss has no gradient"),
        ("no-softmax", "no softmax"),
        ("sigmoid", "sigmoid instead of softmax"),
        ("returned-dice", "you returned the Dice coefficient"),
        ("per-image", "averaged per-image Dice scores"),
        ("denominator-only", "smoothing only in the denominator"),
        ("classes-summed", "a Dice above 1 or negative"),
        ("over-union", "IoU's denominator): that ratio reaches 2 for a perfect prediction, a Dice above 1"),
        ("float", "return a tensor, not a Python number"),
    ],
)
def test_dice_names_the_misconception(mistake, misconception):
    with pytest.raises(CheckError, match="Likely mistake") as info:
        check_dice_loss(_dice(mistake))
    assert misconception in str(info.value)


def test_dice_no_smoothing_fails_on_the_empty_class_case():
    with pytest.raises(CheckError, match=r"case 'class 2 absent from the target(.|\n)*the loss is nan"):
        check_dice_loss(_dice("no-smoothing"))


def test_dice_detached_value_has_no_gradient_and_is_not_called_argmax():
    with pytest.raises(CheckError, match="the loss has no gradient: it is cut off from the logits") as info:
        check_dice_loss(lambda l, t: dice_vectorised(l.detach(), t))
    assert "argmax" not in str(info.value)


def test_dice_stub():
    with pytest.raises(NotImplementedYet):
        check_dice_loss(_stub)


# --------------------------------------------------------------------------------------
# focal_loss
# --------------------------------------------------------------------------------------
def focal_gather(logits, target, gamma=2.0):
    log_pt = torch.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
    return (-(1 - log_pt.exp()) ** gamma * log_pt).mean()


def focal_from_ce(logits, target, gamma=2.0):
    """Correct, another way: per-pixel cross-entropy, p_t = exp(-ce)."""
    ce = F.cross_entropy(logits, target, reduction="none")
    return ((1 - torch.exp(-ce)) ** gamma * ce).mean()


def focal_one_hot(logits, target, gamma=2.0):
    log_p = F.log_softmax(logits, dim=1)
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    per_pixel = -(one_hot * (1 - log_p.exp()).pow(gamma) * log_p).sum(dim=1)
    return per_pixel.sum() / per_pixel.numel()


def focal_classwise(logits, target, gamma=2.0):
    """Correct, a loop over the classes with logsumexp and a mask."""
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    total = logits.new_zeros(())
    for k in range(logits.shape[1]):
        mask = (target == k).to(logits.dtype)
        total = total + (-(1 - log_p[:, k].exp()) ** gamma * log_p[:, k] * mask).sum()
    return total / target.numel()


def _focal(mistake):
    def focal_loss(logits, target, gamma=2.0):
        if mistake == "gamma-or-2":
            gamma = gamma or 2.0
        if mistake == "textbook-one-hot":  # the printed formula, summed over a one-hot target
            probs = torch.softmax(logits, dim=1)
            one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
            return -(one_hot * (1 - probs) ** gamma * torch.log(probs)).sum(1).mean()
        p = torch.softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        if mistake == "textbook":
            return (-(1 - p) ** gamma * torch.log(p)).mean()
        if mistake == "clipped":
            p = p.clamp(1e-7, 1 - 1e-7)
            return (-(1 - p) ** gamma * torch.log(p)).mean()
        log_pt = torch.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        p = log_pt.exp()
        factor = {"p-not-1-minus-p": p ** gamma, "gamma-on-p": 1 - p ** gamma, "gamma-on-log": 1 - p,
                  "gamma-times": gamma * (1 - p), "alpha": 0.25 * (1 - p) ** gamma}.get(mistake, (1 - p) ** gamma)
        per_pixel = factor * (-log_pt) ** (gamma if mistake == "gamma-on-log" else 1)
        return per_pixel.sum() if mistake == "summed" else per_pixel.mean()

    return focal_loss


@pytest.mark.parametrize("fn", [focal_gather, focal_from_ce, focal_one_hot, focal_classwise],
                         ids=["gather", "from-ce", "one-hot", "classwise-loop"])
def test_focal_accepts_correct_answers(fn, capsys):
    check_focal_loss(fn)
    assert "Task 7: focal loss: all 4 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mistake, misconception",
    [
        ("textbook", "not finite at saturated logits"),
        ("textbook-one-hot", "0 * -inf = NaN in a one-hot sum"),
        ("clipped", "you clipped the probabilities (here eps = 1e-07)"),
        ("p-not-1-minus-p", "uses p_t instead of 1 - p_t"),
        ("gamma-on-p", "gamma on the wrong factor: it is the exponent of (1 - p_t), not of p_t"),
        ("gamma-on-log", "gamma on the wrong factor: (1 - p_t)**gamma * (-log p_t), not (1 - p_t) * (-log p_t)**gamma"),
        ("alpha", "a constant factor alpha = 0.25 (RetinaNet's alpha_t"),
        ("gamma-times", "gamma is an exponent, not a factor"),
        ("gamma-or-2", "you used gamma = 2 although gamma=0 was passed"),
        ("summed", "loss summed instead of averaged"),
    ],
)
def test_focal_names_the_misconception(mistake, misconception):
    with pytest.raises(CheckError, match="Likely mistake") as info:
        check_focal_loss(_focal(mistake))
    assert misconception in str(info.value)


def test_focal_gamma_zero_case_is_where_gamma_or_2_fails():
    with pytest.raises(CheckError, match=r"case 'gamma=0: must equal plain cross-entropy'") as info:
        check_focal_loss(_focal("gamma-or-2"))
    assert "with gamma = 0 the factor (1 - p_t)**0 is 1, so the focal loss must equal plain cross-entropy" in str(info.value)


def test_focal_saturated_case_is_where_the_textbook_form_fails():
    with pytest.raises(CheckError, match=r"case 'saturated float32 logits(.|\n)*the loss is (inf|nan)"):
        check_focal_loss(_focal("textbook"))


def test_focal_stub_and_python_number():
    with pytest.raises(NotImplementedYet):
        check_focal_loss(_stub)
    with pytest.raises(CheckError, match="expected a 0-d tensor but got the Python number"):
        check_focal_loss(lambda l, t, gamma=2.0: focal_gather(l, t, gamma).item())
