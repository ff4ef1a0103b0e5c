"""Check for the exercise "write the U-Net class": the paper's valid-padding U-Net.

:func:`check_unet_class` takes the learner's class, ``UNetClass(in_channels, num_classes,
base_channels=64, depth=4)``, and proves, case by case:

1. ``UNetClass(1, 2)`` has the paper's 31,030,658 parameters (built on the meta device:
   no memory is allocated, so this is instant), and ``UNetClass(3, 5, base_channels=4,
   depth=2)`` as many as :class:`unetlib.models.UNet` with the same arguments;
2. a ``(1, 1, 572, 572)`` input gives ``(1, 2, 388, 388)`` logits (meta device; on the CPU
   with ``base_channels=4`` if the forward pass cannot run on meta);
3. it computes the same function as ``unetlib.models.UNet(..., padding="valid")`` (no
   BatchNorm, no dropout: the defaults, i.e. the paper's network): the reference's
   weights are copied convolution by convolution *in the order the layers run* (forward
   hooks on every Conv2d/ConvTranspose2d of both networks), so attribute names and the
   order of registration do not matter; then both run on a small float64 input.

On a wrong answer the diagnosis first reads the layers (padding, channels of the
up-convolution, number of levels, the final 1x1 convolution, ...), then compares the
input of every convolution with the reference's and names the misconception that explains
the first place where they part (a missing ReLU, a skip cropped off-centre, the
concatenation order). Errors raised by the learner's constructor or forward pass are
reported as a :class:`CheckError` with the learner's line, not as a deep traceback.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..models import UNet
from ._core import Case, CheckError, _learner_frame, compare_values, run_check

__all__ = ["check_unet_class", "PAPER_PARAMETERS"]

TASK = "Task 4 UNetClass"
#: Parameters of the paper's network, UNet(1, 2): 64 -> 1024 channels, 23 convolutions.
PAPER_PARAMETERS = 31_030_658
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)

# The misconceptions, as the learner reads them (tests match on these words).
HINT_PADDING = ("padding=1 in a valid net: the paper's 3x3 convolutions are unpadded (padding=0), each "
                "removes one pixel per side; that is why 572 shrinks to 388 and why the skip must be cropped.")
HINT_UP_CHANNELS = ("the up-convolution is not halving the channels: ConvTranspose2d(2c, c, kernel_size=2, "
                    "stride=2) turns 2c channels into c, so that with the c skip channels the concatenation "
                    "has 2c again.")
HINT_UP_SHAPE = "the up-convolution is a 2x2 kernel with stride 2: ConvTranspose2d(2c, c, kernel_size=2, stride=2)."
HINT_NO_UP = ("no up-convolution: the paper's expanding path doubles the size with a learned 2x2 "
              "ConvTranspose2d (stride 2) that halves the channels.")
HINT_NO_1X1 = ("no final 1x1 convolution: after the last double convolution a 1x1 convolution maps the "
               "{base} channels to num_classes logits per pixel (nn.Conv2d(base_channels, num_classes, 1)).")
HINT_POOL_FIRST = ("pooling before the first double convolution: the first level runs its two 3x3 "
                   "convolutions on the full-size input (572 -> 570 -> 568) and only then pools.")
HINT_BATCHNORM = ("your network has BatchNorm layers; the paper's U-Net (2015) has none (conv -> ReLU), "
                  "and its 31,030,658 parameters do not include any.")
HINT_NO_BIAS = "some convolutions have no bias (bias=False); the paper's convolutions all have one."
HINT_NO_CROP = ("the skip is not cropped: with unpadded convolutions the encoder map is larger than the "
                "upsampled decoder map, so centre-crop the skip to the decoder's size before torch.cat "
                "(top = (H - h) // 2, left = (W - w) // 2).")
HINT_CHANNELS = ("a convolution got a different number of channels than it was built for: the "
                 "concatenation of the cropped skip (c channels) and the up-convolution's output "
                 "(c channels) has 2c channels, the input of the next double convolution.")
HINT_ORDER = ("concatenation order swapped: the course (like unetlib) puts the cropped skip first, "
              "torch.cat([skip, upsampled], dim=1).")
HINT_OFF_CENTRE = ("the skip is cropped off-centre (from its top-left corner); crop the centre so both maps "
                   "line up: top = (H - h) // 2, left = (W - w) // 2.")
HINT_CROP_HEIGHT_ONLY = ("the crop offset for the width was computed from the heights: on a rectangular "
                         "input the two differ; use (H - h) // 2 for the rows and (W - w) // 2 for the columns.")
HINT_RELU_UP = "a ReLU after the up-convolution: in the paper it has no activation of its own."
HINT_SKIP_EARLY = "the skip is saved before its ReLU: keep the encoder output after the second conv's ReLU."
HINT_AVG_POOL = "average pooling: the paper's contracting path uses 2x2 max pooling (stride 2)."
HINT_FINAL_ACT = ("the network does not return raw logits: drop the {what} after the final 1x1 convolution "
                  "(the loss applies the softmax itself).")


def _hint_missing_relu(where: str) -> str:
    return (f"a missing ReLU: the output of {where} goes on without its ReLU. In the paper every 3x3 "
            "convolution is followed by a ReLU.")


def _hint_depth(found: int, depth: int) -> str:
    return (f"wrong depth ({found} poolings): depth={depth} means {depth} max-poolings on the way down and "
            f"{depth} up-convolutions on the way up, but your network has {found} of them.")


@dataclass
class _Layer:
    """One call of a convolution during a forward pass, with copies of its input and output."""

    module: nn.Module
    name: str
    inp: Optional[torch.Tensor]
    out: Optional[torch.Tensor]


@dataclass
class _Result:
    """What a case measured, or why it could not (``problem``), plus what the diagnosis needs."""

    value: Any = None
    problem: Optional[str] = None
    exc: Optional[BaseException] = None
    net: Optional[nn.Module] = None
    layers: list = field(default_factory=list)
    x: Optional[torch.Tensor] = None  # the input of an output case (for the activation diagnosis)
    size: Optional[int] = None        # the input height the layers were traced with
    spec: Any = None


def _attempt(fn: Callable, *args, **kwargs):
    """``(fn(*args, **kwargs), None)`` or ``(None, exception)``; NotImplementedError passes through."""
    try:
        return fn(*args, **kwargs), None
    except NotImplementedError:
        raise
    except Exception as exc:  # the learner's bug: reported as a sentence by _raised
        return None, exc


def _raised(what: str, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{what} raised {type(exc).__name__}: {text}{_learner_frame(exc)}"


def _call_text(args: tuple, kwargs: dict) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"UNetClass({', '.join(parts)})"


def _build(cls, args: tuple, kwargs: dict, devices: tuple = ("cpu",)):
    """``(network, None, None)`` built on the first device that works, or ``(None, problem, exc)``."""
    for device in devices:
        with torch.device(device):
            net, exc = _attempt(cls, *args, **kwargs)
        if exc is None:
            if not isinstance(net, nn.Module):
                return None, f"{_call_text(args, kwargs)} gave a {type(net).__name__}, not an nn.Module", None
            return net, None, None
    problem = _raised(f"creating {_call_text(args, kwargs)}", exc)
    if isinstance(exc, TypeError) and "argument" in str(exc):
        problem += ("\n   The constructor must be UNetClass(in_channels, num_classes, base_channels=64, "
                    "depth=4), with these names")
    return None, problem, exc


def _trace(net: nn.Module, x: torch.Tensor):
    """Run ``net(x)``; return ``(output, every convolution call in order, exception or None)``."""
    names = {m: n for n, m in net.named_modules()}
    layers: list[_Layer] = []

    def keep(t):
        return t.detach().clone() if isinstance(t, torch.Tensor) else None

    def hook(module, args, output):  # copies: an in-place ReLU would overwrite the output later
        layers.append(_Layer(module, names.get(module, "?"), keep(args[0] if args else None), keep(output)))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, _CONVS)]
    try:
        with torch.no_grad():
            out, exc = _attempt(net, x)
    finally:
        for h in handles:
            h.remove()
    return out, layers, exc


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _reference_count(*args, **kwargs) -> int:
    with torch.device("meta"):
        return _count(UNet(*args, **kwargs))


def _signature(module: nn.Module) -> tuple:
    return (type(module).__name__, module.in_channels, module.out_channels, tuple(module.kernel_size),
            tuple(module.stride), module.padding, module.bias is not None)


def _describe_layer(module: nn.Module) -> str:
    kind, cin, cout, k, s, p, bias = _signature(module)
    return f"{kind}({cin}, {cout}, kernel_size={k}, stride={s}, padding={p}{'' if bias else ', bias=False'})"


# --------------------------------------------------------------------------------------
# The diagnosis: first the layers, then the activations
# --------------------------------------------------------------------------------------
def _structure_hint(net: nn.Module, layers: list, depth: int, base: int, size: Optional[int],
                    finished: bool) -> Optional[str]:
    """A misconception visible in the layers themselves (no weights needed), or None.

    ``layers``: the convolutions in the order a forward pass ran them (``finished``: to the end).
    """
    modules = list(net.modules())
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    ups = [m for m in modules if isinstance(m, nn.ConvTranspose2d)]
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules):
        return HINT_BATCHNORM
    if any(m.kernel_size == (3, 3) and m.padding not in ((0, 0), "valid") for m in convs):
        return HINT_PADDING
    if layers and size is not None and layers[0].inp is not None and layers[0].inp.shape[-2] < size:
        return HINT_POOL_FIRST
    if not ups:
        return HINT_NO_UP
    if len(ups) != depth:
        return _hint_depth(len(ups), depth)
    widths = [m.out_channels for m in convs if m.kernel_size == (3, 3)]
    if widths and max(widths) > min(widths) * 2 ** depth:  # one level more than depth allows
        return _hint_depth(depth + 1, depth)
    if any(u.out_channels == u.in_channels for u in ups):
        return HINT_UP_CHANNELS
    if any(u.kernel_size != (2, 2) or u.stride != (2, 2) for u in ups):
        return HINT_UP_SHAPE
    last = layers[-1].module if layers and finished else None
    if not any(m.kernel_size == (1, 1) for m in convs) or (last is not None and last.kernel_size != (1, 1)):
        return HINT_NO_1X1.format(base=base)
    if any(m.bias is None for m in convs + ups):
        return HINT_NO_BIAS
    return None


def _layer_mismatch(mine: list, ref: list) -> Optional[str]:
    """Where the learner's convolutions (in the order they run) stop matching the reference's."""
    if len({id(layer.module) for layer in mine}) < len(mine):
        return ("one convolution layer runs twice in your forward pass: every convolution needs its own "
                "layer (and its own weights), so create a new nn.Conv2d for each")
    for i, (a, b) in enumerate(itertools.zip_longest(mine, ref)):
        if a is None:
            return f"your network runs {len(mine)} convolutions, the paper's {len(ref)}"
        if b is None:
            return f"your network runs {len(mine)} convolutions, the paper's only {len(ref)}"
        if _signature(a.module) != _signature(b.module):
            return (f"convolution {i + 1} (in the order they run) is {_describe_layer(a.module)}, but the "
                    f"paper's network has {_describe_layer(b.module)} there")
    return None


def _same(a: Any, b: Optional[torch.Tensor]) -> bool:
    if not isinstance(a, torch.Tensor) or b is None or a.shape != b.shape:
        return False
    return bool(torch.allclose(a.double(), b.double(), atol=1e-8, rtol=1e-6))


def _role(name: str) -> str:
    """What feeds a convolution of the reference UNet, from its attribute path."""
    if name == "inc.block.0":
        return "first"
    if name.startswith("downs.") and name.endswith("conv.block.0"):
        return "pool"
    if name.startswith("ups.") and name.endswith("conv.block.0"):
        return "cat"
    return "relu"  # second conv of a double conv, an up-convolution, the final 1x1


def _activation_hint(mine: list, ref: list, x: torch.Tensor, got: Any, expected: torch.Tensor, depth: int):
    """Compare each convolution's input with the reference's; name the first difference."""
    index = {layer.name: i for i, layer in enumerate(ref)}
    for i, (a, b) in enumerate(zip(mine, ref)):
        if _same(a.inp, b.inp):
            continue
        role = _role(b.name)
        prev = ref[i - 1].out if i else None
        where = f"convolution {i} in the order they run ({_describe_layer(ref[i - 1].module)})" if i else ""
        candidates = []
        if role == "first":
            candidates.append((HINT_POOL_FIRST, lambda: F.max_pool2d(x, 2)))
        elif role == "relu":
            candidates.append((_hint_missing_relu(where), lambda: prev))
        elif role == "pool":
            candidates += [(_hint_missing_relu(where), lambda: F.max_pool2d(prev, 2)),
                           (HINT_AVG_POOL, lambda: F.avg_pool2d(F.relu(prev), 2))]
        else:  # the concatenation of the cropped skip and the up-convolution's output
            level = depth - 1 - int(b.name.split(".")[1])
            j = index["inc.block.2" if level == 0 else f"downs.{level - 1}.conv.block.2"]
            up, raw = prev, ref[j].out
            h, w = up.shape[-2:]
            dy, dx = raw.shape[-2] - h, raw.shape[-1] - w

            def crop(t, top=dy // 2, left=dx // 2):
                return t[..., top:top + h, left:left + w]

            skip = F.relu(crop(raw))
            candidates += [
                (HINT_ORDER, lambda: torch.cat([up, skip], 1)),
                (HINT_OFF_CENTRE, lambda: torch.cat([F.relu(crop(raw, 0, 0)), up], 1)),
                (HINT_OFF_CENTRE + " " + HINT_ORDER, lambda: torch.cat([up, F.relu(crop(raw, 0, 0))], 1)),
                (HINT_CROP_HEIGHT_ONLY, lambda: torch.cat([F.relu(crop(raw, dy // 2, dy // 2)), up], 1)),
                (HINT_CROP_HEIGHT_ONLY, lambda: torch.cat([F.relu(crop(raw, dx // 2, dx // 2)), up], 1)),
                (HINT_RELU_UP, lambda: torch.cat([skip, F.relu(up)], 1)),
                (HINT_SKIP_EARLY, lambda: torch.cat([crop(raw), up], 1)),
            ]
        for hint, make in candidates:
            try:
                if _same(a.inp, make()):
                    return hint
            except Exception:  # a candidate that does not fit this layer explains nothing
                continue
        before = f"up to convolution {i} agree with the reference, but" if i else "agree on nothing:"
        return (f"your layers {before} the input of convolution {i + 1} ({_describe_layer(b.module)}) "
                "differs: look at what your forward pass does just before it.")
    if isinstance(got, torch.Tensor):
        for what, fn in (("ReLU", F.relu), ("softmax", lambda t: torch.softmax(t, 1)), ("sigmoid", torch.sigmoid)):
            if _same(got, fn(expected)):
                return HINT_FINAL_ACT.format(what=what)
        return ("every convolution gets the right input, but what forward returns is not the output of the "
                "final 1x1 convolution: return it unchanged (the logits).")
    return None


def _diagnose(case: Case, got: Any) -> Optional[str]:
    if not isinstance(got, _Result) or got.net is None:
        return None
    spec, layers, size, exc = got.spec, got.layers, got.size, got.exc
    if spec.get("counts") and isinstance(got.value, int):  # a constructor ignoring an argument
        for ignored, count in spec["counts"].items():
            if got.value == count:
                return (f"your class ignores its `{ignored}` argument: UNetClass{spec['args']} has as many "
                        f"parameters as the reference built without it.")
    if spec["kind"] == "count":  # trace a forward pass on the meta device: shapes, no values
        with torch.device("meta"):
            _, layers, exc = _trace(got.net, torch.empty(1, spec["args"][0], 572, 572))
        size = 572
    hint = _structure_hint(got.net, layers, spec["depth"], spec["base"], size, finished=exc is None)
    if hint:
        return hint
    if got.exc is not None:
        message = str(got.exc)
        if "Sizes of tensors must match" in message:
            return HINT_NO_CROP
        if "channels" in message or "weight of size" in message:
            return HINT_CHANNELS
        return None
    if spec["kind"] == "output" and got.value is not None:
        return _activation_hint(got.layers, spec["ref_layers"], got.x, got.value, spec["expected_out"],
                                spec["depth"])
    return None


# --------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------
def _probe_count(cls, spec) -> _Result:
    args, kwargs = spec["args"], spec["kwargs"]
    net, problem, exc = _build(cls, args, kwargs, devices=("meta", "cpu"))
    if net is None:
        return _Result(problem=problem, exc=exc, spec=spec)
    count = _count(net)
    if count == 0:  # a stub class that builds nothing: its forward says whether it is untouched
        with torch.device("meta"):
            _attempt(net, torch.empty(1, args[0], 572, 572))
    return _Result(value=count, net=net, spec=spec)


def _probe_size(cls, spec) -> _Result:
    """Meta device first (instant); the CPU with base_channels=4 if the forward needs real values."""
    result = None
    for device, kwargs in (("meta", {}), ("cpu", {"base_channels": 4})):
        net, problem, exc = _build(cls, (1, 2), kwargs, devices=(device,))
        if net is None:
            result = result or _Result(problem=problem, exc=exc, spec=spec)
            continue
        with torch.device(device):
            out, layers, exc = _trace(net, torch.zeros(1, 1, 572, 572))
        result = _Result(net=net, layers=layers, size=572, exc=exc, spec={**spec, "base": 64 if kwargs == {} else 4})
        if exc is None:
            result.value = tuple(out.shape) if isinstance(out, torch.Tensor) else out
            return result
        result.problem = _raised("the forward pass on a 1x1x572x572 input", exc)
    return result


def _probe_output(cls, spec) -> _Result:
    x = spec["x"]
    net, problem, exc = _build(cls, spec["args"], spec["kwargs"])
    if net is None:
        return _Result(problem=problem, exc=exc, spec=spec)
    net.double()
    what = f"the forward pass on a {'x'.join(map(str, x.shape))} input"
    _, layers, exc = _trace(net, x)
    result = _Result(net=net, layers=layers, x=x, size=x.shape[-2], exc=exc, spec=spec)
    if exc is not None:
        result.problem = _raised(what, exc)
        return result
    mismatch = _layer_mismatch(layers, spec["ref_layers"])
    if mismatch:
        result.problem = f"its layers differ from the paper's: {mismatch}"
        return result
    with torch.no_grad():  # the reference's weights, by execution order
        for a, b in zip(layers, spec["ref_layers"]):
            a.module.weight.copy_(b.module.weight)
            if b.module.bias is not None:
                a.module.bias.copy_(b.module.bias)
        result.value, result.layers, result.exc = _trace(net, x)
    if result.exc is not None:
        result.problem = _raised(what, result.exc)
    return result


def _output_spec(in_channels: int, num_classes: int, depth: int, batch: int, height: int, width: int,
                 seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ref = UNet(in_channels, num_classes, base_channels=4, depth=depth, generator=gen).double()
    with torch.no_grad():  # non-zero biases, so a missing bias or a shifted map shows
        for m in ref.modules():
            if isinstance(m, _CONVS):
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen, dtype=torch.float64) * 0.1)
    x = torch.randn(batch, in_channels, height, width, generator=gen, dtype=torch.float64)
    out, layers, _ = _trace(ref, x)
    return {"kind": "output", "args": (in_channels, num_classes), "kwargs": {"base_channels": 4, "depth": depth}, "x": x,
            "depth": depth, "base": 4, "ref_layers": layers, "expected_out": out.detach()}


def _cases() -> list[Case]:
    small = (3, 5)
    counts = {"base_channels": _reference_count(*small, depth=2),
              "depth": _reference_count(*small, base_channels=4),
              "in_channels": _reference_count(1, 5, base_channels=4, depth=2),
              "num_classes": _reference_count(3, 2, base_channels=4, depth=2)}
    paper = {"kind": "count", "args": (1, 2), "kwargs": {}, "depth": 4, "base": 64}
    scaled = {"kind": "count", "args": small, "kwargs": {"base_channels": 4, "depth": 2}, "depth": 2, "base": 4, "counts": counts}
    out_small = _output_spec(1, 2, 2, 2, 44, 52, seed=11)
    out_deep = _output_spec(3, 5, 4, 1, 188, 188, seed=12)
    return [
        Case("parameters of UNetClass(1, 2), the paper's network", ("count", paper), expected=PAPER_PARAMETERS),
        Case("parameters of UNetClass(3, 5, base_channels=4, depth=2)", ("count", scaled),
             expected=_reference_count(*small, base_channels=4, depth=2)),
        Case("output size of UNetClass(1, 2) for a 1x1x572x572 input", ("size", {**paper, "kind": "size"}),
             expected=(1, 2, 388, 388)),
        Case("same output as the paper's network (weights copied layer by layer): UNetClass(1, 2, "
             "base_channels=4, depth=2), a batch of 2 rectangular 44x52 inputs", ("output", out_small),
             expected=out_small["expected_out"], atol=1e-8, rtol=1e-6),
        Case("same output as the paper's network (weights copied layer by layer): UNetClass(3, 5, "
             "base_channels=4, depth=4), a 188x188 input (the smallest valid size)", ("output", out_deep),
             expected=out_deep["expected_out"], atol=1e-8, rtol=1e-6),
    ]


def _compare(got: Any, expected: Any, atol: float, rtol: float) -> Optional[str]:
    if got.problem:
        return got.problem
    if isinstance(expected, int):
        return None if got.value == expected else f"expected {expected:,} parameters but got {got.value:,}"
    if isinstance(expected, tuple):
        return None if got.value == expected else f"expected an output of shape {expected} but got {got.value}"
    return compare_values(got.value, expected, atol, rtol)


def check_unet_class(UNetClass) -> None:
    """Check ``UNetClass(in_channels, num_classes, base_channels=64, depth=4)``, the paper's
    valid-padding U-Net: its parameter count, its output size and, with the reference's
    weights copied in, its output (see the module docstring)."""
    if not callable(UNetClass):
        raise CheckError(f"{TASK}: expected a class but got {type(UNetClass).__name__}. Pass the class itself.")
    if isinstance(UNetClass, nn.Module):
        raise CheckError(f"{TASK}: expected the class itself but got an instance ({type(UNetClass).__name__}). "
                         "Pass the class, e.g. check_unet_class(UNet), not UNet(1, 2).")
    probes = {"count": _probe_count, "size": _probe_size, "output": _probe_output}

    def probe(kind, spec):
        return probes[kind](UNetClass, spec)

    run_check(TASK, probe, _cases(), _diagnose, compare=_compare)
