"""Segmentation losses: pixel-weighted cross-entropy (the paper's), soft Dice, focal, and sums.

Every loss takes ``(logits, target, weight=None)``:

* ``logits``: float (N, C, H, W).  ``C == 1`` means one sigmoid logit per
  pixel (foreground vs. background); ``C >= 2`` means softmax over C classes.
* ``target``: int64 (N, H, W) class ids in ``[0, C)`` (``[0, 1]`` for C == 1).
  (N, 1, H, W) is accepted and squeezed.
* ``weight``: optional float (N, H, W) per-pixel weights (the paper's weight
  map, see :mod:`unetlib.weights`).

Losses are computed in float32 even under autocast (bf16/fp16 logits are cast
up first), and use ``log_softmax`` / ``logsigmoid`` so that extreme logits give
finite values and gradients.

Normalisation: weighted losses are divided by the **number of pixels** (as
the paper's energy is a mean over pixels), not by the sum of weights; so the
weight map's average size (about 1-2) scales the loss.  Pass
``normalize="weights"`` to divide by the weight sum instead.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "check_logits_target",
    "weighted_cross_entropy",
    "soft_dice_loss",
    "focal_loss",
    "WeightedCrossEntropyLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "CombinedLoss",
    "make_loss",
    "LOSS_NAMES",
]


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def check_logits_target(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None):
    """Validate shapes/dtypes and return ``(logits, target, weight)`` ready for a loss.

    ``target`` of shape (N, 1, H, W) is squeezed to (N, H, W).  Raises
    TypeError/ValueError with a message that says what to change.
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"logits and target must be torch tensors, got {type(logits).__name__} and {type(target).__name__}."
        )
    if logits.ndim != 4:
        raise ValueError(
            f"logits must be (N, C, H, W), got shape {tuple(logits.shape)}. For a single image add a batch "
            "dimension with logits.unsqueeze(0)."
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point (raw network outputs), got {logits.dtype}.")
    n, c, h, w = logits.shape
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]  # (N, 1, H, W) -> (N, H, W): a common layout for binary masks
    if target.is_floating_point():
        raise TypeError(
            f"target must hold integer class ids (torch.int64), got {target.dtype}. If it is a 0/1 float mask "
            "use target.long(); if it is 0/255, use (target > 127).long(). Class ids, not probabilities."
        )
    if target.dtype == torch.bool:
        target = target.long()
    if target.ndim != 3:
        raise ValueError(
            f"target must be (N, H, W) class ids, got shape {tuple(target.shape)}. One-hot targets (N, C, H, W) "
            "can be converted with target.argmax(1)."
        )
    if target.shape[0] != n:
        raise ValueError(f"batch sizes differ: logits have N={n}, target has N={target.shape[0]}.")
    if target.shape[1:] != (h, w):
        hint = ""
        if target.shape[1] > h or target.shape[2] > w:
            hint = (
                " With valid padding the network output is smaller than its input: crop the target to the "
                "centred output region (unetlib.models.center_crop, or let the dataset cut label tiles of "
                "model.output_size(input))."
            )
        raise ValueError(
            f"logits are {h}x{w} (HxW) but target is {target.shape[1]}x{target.shape[2]}.{hint}"
        )
    n_classes = max(c, 2)
    if target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= n_classes:
            hint = (
                " A mask stored as 0/255 must be converted to 0/1 first (mask // 255)."
                if hi == 255
                else f" Either the model needs num_classes={hi + 1} or the mask holds wrong ids."
            )
            raise ValueError(
                f"target values must be class ids in [0, {n_classes - 1}] for C={c} logits, found range "
                f"[{lo}, {hi}].{hint}"
            )
    if weight is not None:
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"weight must be a torch tensor (N, H, W), got {type(weight).__name__}.")
        if weight.ndim == 4 and weight.shape[1] == 1:
            weight = weight[:, 0]
        if weight.shape != target.shape:
            raise ValueError(
                f"weight must have the target's shape {tuple(target.shape)}, got {tuple(weight.shape)}."
            )
        weight = weight.float()
    return logits, target.long(), weight


def _reduce(per_pixel: torch.Tensor, weight: Optional[torch.Tensor], normalize: str) -> torch.Tensor:
    if normalize not in ("pixels", "weights"):
        raise ValueError(f"normalize must be 'pixels' or 'weights', got {normalize!r}.")
    if weight is None:
        return per_pixel.mean()
    total = (per_pixel * weight).sum()
    if normalize == "pixels":
        return total / per_pixel.numel()
    return total / weight.sum().clamp_min(torch.finfo(torch.float32).tiny)


# ---------------------------------------------------------------------------------------------
# Functional losses
# ---------------------------------------------------------------------------------------------
def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    normalize: str = "pixels",
) -> torch.Tensor:
    """Pixel-weighted cross-entropy, a scalar float32 tensor.

    ``sum_x w(x) * -log p_{target(x)}(x)`` divided by the number of pixels
    (``normalize="pixels"``, the paper's mean) or by ``sum w``
    (``normalize="weights"``).  ``weight=None`` is plain cross-entropy.
    C == 1 uses binary cross-entropy on the single logit.

    Args:
        logits: float (N, C, H, W).
        target: int64 (N, H, W) (or (N, 1, H, W)).
        weight: float (N, H, W) or None.
    """
    logits, target, weight = check_logits_target(logits, target, weight)
    logits = logits.float()
    if logits.shape[1] == 1:
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="none")
    else:
        per_pixel = F.cross_entropy(logits, target, reduction="none")
    return _reduce(per_pixel, weight, normalize)


def _probabilities_and_onehot(logits: torch.Tensor, target: torch.Tensor):
    """(N, K, H, W) class probabilities and matching one-hot target; K = 1 for sigmoid outputs."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits), target[:, None].float()
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    return probs, onehot


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    smooth: float = 1.0,
    include_background: bool = True,
) -> torch.Tensor:
    """Soft Dice loss in [0, 1], a scalar float32 tensor.

    Per class k (summed over the whole batch):
    ``dice_k = (2 * sum p_k t_k + smooth) / (sum p_k + sum t_k + smooth)``, loss
    ``= 1 - mean_k dice_k``.  C == 1: sigmoid, the single foreground class.
    C >= 2: softmax, all classes (``include_background=False`` drops class 0).

    Empty classes: a class absent from the target that is also not predicted
    scores dice ~ 1 (nothing to find, nothing wrongly found: correct), and one
    that is predicted scores ~ 0, so false positives are punished.  ``smooth``
    keeps the 0/0 case finite.  Since ``2 sum p t <= sum p + sum t``, dice <= 1.

    ``weight`` is accepted for a uniform interface and ignored (Dice is a
    region overlap, not a per-pixel sum).
    """
    logits, target, _ = check_logits_target(logits, target, weight)
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}.")
    probs, onehot = _probabilities_and_onehot(logits.float(), target)
    if not include_background and probs.shape[1] > 1:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth).clamp_min(torch.finfo(torch.float32).tiny)
    return (1 - dice.mean()).clamp(0.0, 1.0)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    gamma: float = 2.0,
    alpha: Optional[float] = None,
    normalize: str = "pixels",
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017), a scalar float32 tensor.

    ``FL = -alpha_t * (1 - p_t)**gamma * log p_t`` per pixel, then reduced like
    :func:`weighted_cross_entropy` (optionally weighted by ``weight``).
    ``log p_t`` comes from ``log_softmax`` / ``logsigmoid`` and ``1 - p_t`` from
    ``-expm1(log p_t)``, so p = 0 or 1 (logits of +-1e4) stay finite.
    ``alpha`` (binary only, C == 1) weights the foreground; ``None`` = no alpha.
    """
    logits, target, weight = check_logits_target(logits, target, weight)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}.")
    logits = logits.float()
    if logits.shape[1] == 1:
        x = logits[:, 0]
        t = target.float()
        # log p_t for the true class: logsigmoid(x) for foreground, logsigmoid(-x) for background.
        log_pt = F.logsigmoid(torch.where(t > 0, x, -x))
    else:
        log_pt = torch.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
    # 1 - p_t without cancellation; the clamp keeps (.)**gamma differentiable at 0 for gamma < 1.
    one_minus_pt = (-torch.expm1(log_pt)).clamp_min(1e-12)
    per_pixel = -(one_minus_pt**gamma) * log_pt
    if alpha is not None:
        if logits.shape[1] != 1:
            raise ValueError("alpha is only defined for binary (C == 1) logits; use weight for multi-class.")
        per_pixel = per_pixel * torch.where(target > 0, alpha, 1 - alpha)
    return _reduce(per_pixel, weight, normalize)


# ---------------------------------------------------------------------------------------------
# Modules and registry
# ---------------------------------------------------------------------------------------------
class WeightedCrossEntropyLoss(nn.Module):
    """The paper's loss: cross-entropy weighted per pixel by the weight map (None -> unweighted)."""

    def __init__(self, normalize: str = "pixels"):
        super().__init__()
        self.normalize = normalize

    def forward(self, logits, target, weight=None):
        """logits (N, C, H, W), target (N, H, W) int64, weight (N, H, W) or None -> scalar."""
        return weighted_cross_entropy(logits, target, weight, normalize=self.normalize)


class CrossEntropyLoss(nn.Module):
    """Plain (unweighted) cross-entropy; a given weight map is ignored."""

    def forward(self, logits, target, weight=None):
        """logits (N, C, H, W), target (N, H, W) int64 -> scalar."""
        return weighted_cross_entropy(logits, target, None)


class DiceLoss(nn.Module):
    """Soft Dice loss in [0, 1] (see :func:`soft_dice_loss`)."""

    def __init__(self, smooth: float = 1.0, include_background: bool = True):
        super().__init__()
        self.smooth = smooth
        self.include_background = include_background

    def forward(self, logits, target, weight=None):
        """logits (N, C, H, W), target (N, H, W) int64 -> scalar; weight ignored."""
        return soft_dice_loss(logits, target, None, self.smooth, self.include_background)


class FocalLoss(nn.Module):
    """Focal loss (see :func:`focal_loss`); uses the weight map when given."""

    def __init__(self, gamma: float = 2.0, alpha: Optional[float] = None, use_weight: bool = True):
        super().__init__()
        self.gamma, self.alpha, self.use_weight = gamma, alpha, use_weight

    def forward(self, logits, target, weight=None):
        """logits (N, C, H, W), target (N, H, W) int64, weight (N, H, W) or None -> scalar."""
        return focal_loss(logits, target, weight if self.use_weight else None, self.gamma, self.alpha)


class CombinedLoss(nn.Module):
    """Weighted sum of losses: ``sum_i factor_i * loss_i(logits, target, weight)``.

    Args:
        terms: list of ``(loss_module, factor)`` pairs.
    """

    def __init__(self, terms):
        super().__init__()
        terms = list(terms)
        if not terms:
            raise ValueError("CombinedLoss needs at least one (loss, factor) term.")
        self.losses = nn.ModuleList([t[0] for t in terms])
        self.factors = [float(t[1]) for t in terms]

    def forward(self, logits, target, weight=None):
        """Scalar sum of the terms."""
        total = 0.0
        for loss, factor in zip(self.losses, self.factors):
            total = total + factor * loss(logits, target, weight)
        return total


_REGISTRY = {
    "ce": CrossEntropyLoss,
    "wce": WeightedCrossEntropyLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
}
#: names accepted by :func:`make_loss` (any "+"-joined combination of the base names works too).
LOSS_NAMES = ("ce", "wce", "dice", "focal", "wce+dice", "ce+dice", "focal+dice")


def make_loss(name: str, **kwargs) -> nn.Module:
    """Build a loss module from its CLI name.

    Names: ``"ce"`` (plain cross-entropy), ``"wce"`` (paper weight-map
    cross-entropy; unweighted when no weight is passed), ``"dice"``,
    ``"focal"``, and sums joined by ``+`` such as ``"wce+dice"`` (each term
    with factor 1).  ``kwargs`` go to a single loss's constructor.

    Every returned module is called as ``loss(logits, target, weight=None)``.
    """
    if not isinstance(name, str):
        raise TypeError(f"loss name must be a string, got {type(name).__name__}.")
    parts = [p.strip().lower() for p in name.split("+")]
    unknown = [p for p in parts if p not in _REGISTRY]
    if unknown or not parts:
        raise ValueError(
            f"unknown loss {name!r} ({', '.join(repr(u) for u in unknown)}). Choose from "
            f"{', '.join(LOSS_NAMES)} or join base losses {sorted(_REGISTRY)} with '+'."
        )
    if len(parts) == 1:
        return _REGISTRY[parts[0]](**kwargs)
    if kwargs:
        raise ValueError(f"keyword arguments are only supported for single losses, not {name!r}.")
    return CombinedLoss([(_REGISTRY[p](), 1.0) for p in parts])
