"""Hidden cases: the course's checks run again on inputs the exercise notebook never shows.

A learner sees the visible cases' names and, on failure, their expected values; tuning an
answer to them is possible. The grader re-runs a check with other seeds or sizes, by replacing
the check module's case-building internals for the duration of one run (the grading kernel is
thrown away afterwards). Every variant keeps the check's own reference and diagnoses, so a
hidden case that fails is explained exactly like a visible one.

:data:`VARIANTS` maps a check's name to its variants; a variant is a function
``module -> dict of module attributes to replace``. A variant may return None where it does not
apply. A check without a variant is graded on its visible cases only.
"""
from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Callable, Iterator, Optional

__all__ = ["VARIANTS", "patched", "has_hidden_cases"]

Variant = Callable[[ModuleType], Optional[dict]]


def _isbi_pairs(module: ModuleType) -> dict:
    """Notebook 06: random label pairs of other shapes and seeds than the notebook's 7x9 ones."""

    def pair_images():
        pairs = []
        for seed, shape, cells in ((1009, (9, 11), 5), (2027, (5, 13), 3), (3041, (12, 8), 6),
                                   (4051, (10, 10), 4), (5059, (6, 15), 7)):
            pred = module._random_labels(seed, shape=shape, cells=cells)
            truth = module._random_labels(seed + 1, shape=shape, cells=cells)
            pairs.append((f"hidden {shape[0]}x{shape[1]} labels (seed {seed})", pred, truth))
        return pairs

    return {"_pair_images": pair_images}


def _convolution_seed(module: ModuleType) -> dict:
    """Notebook 01: the random tensors of tasks 1 and 2 drawn from another seed."""
    return {"_SEED": int(module._SEED) + 7919}


def _shifted_torch_seeds(module: ModuleType) -> Optional[dict]:
    """Any check that draws its inputs from seeded ``torch.Generator()`` s: every seed shifted.

    The module's ``torch`` is replaced by a copy whose ``Generator`` adds an offset in
    ``manual_seed``: the same kinds of cases (shapes, sizes, edge cases) with other random values,
    and the check's reference computed from those. None when the module uses no ``torch``.
    """
    real = getattr(module, "torch", None)
    if not isinstance(real, ModuleType) or not hasattr(real, "Generator"):
        return None

    class ShiftedGenerator(real.Generator):
        def manual_seed(self, seed):
            return super().manual_seed(int(seed) + _SEED_OFFSET)

    proxy = ModuleType(real.__name__, real.__doc__)
    proxy.__dict__.update(real.__dict__)
    proxy.Generator = ShiftedGenerator
    return {"torch": proxy}


_SEED_OFFSET = 7919  # a prime far from the small seeds the checks use

#: ``{check name: [variant, ...]}``; see the module docstring.
VARIANTS: dict[str, list[Variant]] = {
    "check_count_pairs": [_isbi_pairs],
    "check_rand_error_by_hand": [_isbi_pairs],
    "check_split_merge_errors": [_isbi_pairs],
    "check_conv2d": [_convolution_seed],
    "check_conv_transpose2d": [_convolution_seed],
}
# Checks whose cases come from seeded torch generators (solutions pass their hidden cases:
# tests/test_grade_units.py and a graded run of every solution notebook say so).
for _name in ("check_unet_class", "check_fc_to_conv", "check_fuse_additive", "check_crop_and_concat",
              "check_displacement_field", "check_warp_mask", "check_warp_image", "check_weighted_cross_entropy",
              "check_iou", "check_stitching", "check_train_step", "check_weight_map", "check_dice_loss",
              "check_focal_loss"):
    VARIANTS.setdefault(_name, []).append(_shifted_torch_seeds)


def has_hidden_cases(check_name: str) -> bool:
    """True when :data:`VARIANTS` holds at least one variant for ``check_name``."""
    return bool(VARIANTS.get(check_name))


@contextlib.contextmanager
def patched(module: ModuleType, replacements: dict) -> Iterator[None]:
    """Replace attributes of ``module`` for the ``with`` block, then restore them (even on error)."""
    missing = object()
    saved = {name: getattr(module, name, missing) for name in replacements}
    try:
        for name, value in replacements.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                delattr(module, name)
            else:
                setattr(module, name, value)

