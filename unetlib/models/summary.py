"""How big is a model? Parameter counts and a torchinfo layer table."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

__all__ = ["count_parameters", "summary"]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters (``requires_grad`` ones only if ``trainable_only``).

    Example: ``count_parameters(UNet(1, 2)) == 31_030_658``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters expects an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def summary(model: nn.Module, input_size: Union[int, Sequence[int]], **kwargs):
    """A torchinfo layer-by-layer table (output shapes, parameters, multiply-adds).

    Args:
        model: any module; if ``input_size`` is an int or an ``(H, W)`` pair the batch is
            ``(1, model.in_channels, H, W)`` (so the model needs an ``in_channels`` attribute).
        input_size: ``H`` (square), ``(H, W)`` or a full ``(N, C, H, W)``.
        **kwargs: passed to ``torchinfo.summary`` (e.g. ``depth=3``, ``col_names=...``).

    Returns:
        ``torchinfo.ModelStatistics``; ``print(...)`` it for the table. This runs one forward
        pass at ``input_size``: the paper's U-Net at 572 costs ~150 G multiply-adds.
    """
    import torchinfo

    if not isinstance(model, nn.Module):
        raise TypeError(f"summary expects an nn.Module, got {type(model).__name__}")
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    input_size = tuple(input_size)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in input_size):
        raise ValueError(f"input_size must contain positive ints, got {input_size!r}")
    if len(input_size) == 2:
        if not hasattr(model, "in_channels"):
            raise ValueError("give the full (N, C, H, W) input_size: the model has no in_channels attribute")
        input_size = (1, model.in_channels, *input_size)
    if len(input_size) != 4:
        raise ValueError(f"input_size must be H, (H, W) or (N, C, H, W), got {input_size!r}")
    if hasattr(model, "check_input_size"):  # a clear error now, not one wrapped by torchinfo
        model.check_input_size(input_size[-2], input_size[-1])
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("col_names", ("input_size", "output_size", "num_params", "mult_adds"))
    kwargs.setdefault("depth", 3)
    with torch.no_grad():
        return torchinfo.summary(model, input_size=input_size, **kwargs)
