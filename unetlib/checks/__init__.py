"""Exercise checks: one function per task, called right after the task in a notebook.

Each ``check_*`` runs the learner's answer on several cases and either prints one line
of success or raises a :class:`CheckError` naming the failing case and, where it can,
the misconception behind it. Per-notebook checks live in ``nbXX_*.py`` modules and are
re-exported here so a notebook needs only ``from unetlib.checks import check_conv2d``.
"""
from ._core import Case, CheckError, NotImplementedYet, compare_values, passed, run_check

__all__ = ["Case", "CheckError", "NotImplementedYet", "compare_values", "passed", "run_check"]

# Per-notebook checks are imported lazily-safe: a module that is not written yet is skipped.
import importlib as _importlib

for _name in ("nb01_convolution", "nb02_shapes", "nb02_unet_class", "nb03_fcn_unet", "nb04_elastic", "nb05_training", "nb05_loop_losses", "nb06_isbi2012"):
    try:
        _module = _importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_name}":
            raise
        continue
    for _attr in getattr(_module, "__all__", []):
        globals()[_attr] = getattr(_module, _attr)
        __all__.append(_attr)
