"""Figure helpers shared by the notebooks: image panels and training curves.

* :func:`show_panels` lays out any number of ``(title, image, cmap)`` panels in a grid:
  an input, its label, several predictions side by side.
* :func:`colorize_instances` paints each instance id in its own colour, so two touching
  cells that a model merged into one show up as one colour.
* :func:`error_overlay` marks false positives and false negatives of a binary prediction;
  :func:`error_legend_handles` / :func:`add_error_legend` give the legend patches for its colours
  (``show_panels(..., legend=error_legend_handles())`` puts them under the panels).
* :func:`plot_history` / :func:`plot_histories` draw training curves of one run or compare
  several runs on the same axes.

Images may be numpy arrays or torch tensors, ``(H, W)``, ``(1, H, W)``, ``(3, H, W)`` or
``(H, W, 3)``; they are moved to the CPU and converted to float for display only.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

__all__ = [
    "to_display",
    "colorize_instances",
    "error_overlay",
    "ERROR_COLOURS",
    "error_legend_handles",
    "add_error_legend",
    "show_panels",
    "history_series",
    "plot_history",
    "plot_histories",
]


def to_display(array: Any) -> np.ndarray:
    """A numpy array ready for ``imshow``: ``(H, W)`` or ``(H, W, 3|4)``.

    Accepts numpy arrays or torch tensors of shape ``(H, W)``, ``(1, H, W)``, ``(1, 1, H, W)``,
    ``(3, H, W)`` (channels first, converted to ``(H, W, 3)``) or ``(H, W, 3|4)``. Bool
    arrays become 0/1 floats; bfloat16/float16 become float32.
    """
    try:  # torch is optional for this module's callers, but always present in the course
        import torch

        if isinstance(array, torch.Tensor):
            array = array.detach().cpu()
            if array.dtype in (torch.bfloat16, torch.float16, torch.bool):
                array = array.float()
            array = array.numpy()
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except Exception:
            raise TypeError(f"cannot display an object of type {type(array).__name__}; pass a numpy array or tensor") from None
    if array.dtype == bool:
        array = array.astype(np.float32)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4)):
        return array
    raise ValueError(
        f"cannot display an array of shape {array.shape}: expected (H, W), (1, H, W), (3, H, W) or (H, W, 3)"
    )


def colorize_instances(instances: Any, seed: int = 0) -> np.ndarray:
    """Paint instance ids with random bright colours: int ``(H, W)`` -> float32 ``(H, W, 3)``.

    Id 0 (background) is black. The colour of id ``k`` depends only on ``k`` and ``seed``, so
    the same cell has the same colour in every panel that uses the same ids.
    """
    ids = to_display(instances)
    if ids.ndim != 2:
        raise ValueError(f"instances must be a 2-D id map (H, W), got shape {ids.shape}")
    if np.issubdtype(ids.dtype, np.floating):
        if not np.all(np.mod(ids, 1) == 0):
            raise ValueError("instances must hold integer ids (0 = background); got fractional values")
    ids = ids.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError(f"instance ids must be >= 0, found {ids.min()}")
    n = int(ids.max(initial=0))
    rng = np.random.default_rng(seed)
    # Random hue, high saturation and value: neighbours rarely look alike.
    hue = rng.random(n + 1)
    sat = 0.55 + 0.45 * rng.random(n + 1)
    val = 0.75 + 0.25 * rng.random(n + 1)
    palette = _hsv_to_rgb(hue, sat, val)
    palette[0] = 0.0
    return palette[ids].astype(np.float32)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([
        np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
        np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1),
    ])
    return table[i, np.arange(len(h))]


# The colours of :func:`error_overlay`, with the legend label of each kind of pixel.
ERROR_COLOURS = {
    "TP": ((1.0, 1.0, 1.0), "TP: cell, found"),
    "FP": ((1.0, 0.15, 0.1), "FP: predicted cell on background"),
    "FN": ((0.2, 0.45, 1.0), "FN: missed cell pixel"),
    "TN": ((0.0, 0.0, 0.0), "TN: background, found"),
}


def error_overlay(prediction: Any, target: Any) -> np.ndarray:
    """Colour-code a binary prediction against the truth: float32 ``(H, W, 3)``.

    White = cell predicted and true (TP), red = predicted cell on true background (FP, false
    positive, e.g. a gap between touching cells filled in), blue = missed cell pixel (FN, false
    negative), black = background predicted and true (TN). Inputs are ``(H, W)`` arrays or
    tensors; anything > 0 counts as cell. :func:`error_legend_handles` gives the legend.
    """
    pred, true = to_display(prediction) > 0, to_display(target) > 0
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"prediction {pred.shape} and target {true.shape} must be 2-D maps of the same shape")
    rgb = np.zeros(pred.shape + (3,), dtype=np.float32)
    rgb[pred & true] = ERROR_COLOURS["TP"][0]
    rgb[pred & ~true] = ERROR_COLOURS["FP"][0]
    rgb[~pred & true] = ERROR_COLOURS["FN"][0]
    return rgb


def error_legend_handles(kinds: Sequence[str] = ("TP", "FP", "FN", "TN")) -> list:
    """Legend patches (matplotlib ``Patch``) for the colours of :func:`error_overlay`."""
    from matplotlib.patches import Patch

    unknown = [kind for kind in kinds if kind not in ERROR_COLOURS]
    if unknown:
        raise ValueError(f"unknown error kind(s) {unknown}; choose from {list(ERROR_COLOURS)}")
    return [Patch(facecolor=ERROR_COLOURS[kind][0], edgecolor="0.4", linewidth=0.8, label=ERROR_COLOURS[kind][1])
            for kind in kinds]


def add_error_legend(target, kinds: Sequence[str] = ("TP", "FP", "FN", "TN"), **legend_kwargs):
    """Add the :func:`error_overlay` colour legend to a Figure (under its panels) or an Axes.

    On a Figure with constrained layout the legend gets its own row below the panels. Extra
    keyword arguments go to ``legend`` (e.g. ``loc``, ``ncols``). Returns the Legend.
    """
    handles = error_legend_handles(kinds)
    if hasattr(target, "add_subplot"):  # a Figure
        legend_kwargs.setdefault("loc", "outside lower center")
        legend_kwargs.setdefault("ncols", len(handles))
    legend_kwargs.setdefault("frameon", False)
    return target.legend(handles=handles, **legend_kwargs)


def show_panels(
    images: Sequence[tuple],
    ncols: Optional[int] = None,
    *,
    panel_size: float = 2.6,
    suptitle: Optional[str] = None,
    colorbar: bool = False,
    row_labels: Optional[Sequence[str]] = None,
    legend: Optional[Sequence] = None,
):
    """Show images side by side (wrapping into rows of ``ncols``); returns the Figure.

    Args:
        images: list of ``(title, array, cmap)`` or ``(title, array, cmap, imshow_kwargs)``.
            ``cmap`` None means grey for 2-D arrays; RGB arrays ignore it. ``imshow_kwargs``
            e.g. ``{"vmin": 0, "vmax": 1}`` or ``{"interpolation": "nearest"}``.
        ncols: panels per row (default: all in one row).
        panel_size: inches per panel.
        suptitle: title over the whole figure.
        colorbar: add a colour bar to every 2-D panel.
        row_labels: optional text at the left of each row (e.g. the sample name).
        legend: optional legend handles (e.g. :func:`error_legend_handles`) drawn under the panels.

    Panels have no axis ticks: pixel indices mean nothing to the reader here. The figure uses
    constrained layout, so titles, colour bars, suptitle and legend never overlap the images.
    """
    import matplotlib.pyplot as plt

    items = list(images)
    if not items:
        raise ValueError("show_panels needs at least one (title, array, cmap) item")
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
            raise TypeError(f"item {i} must be (title, array, cmap) or (title, array, cmap, kwargs), got {item!r:.80}")
    ncols = len(items) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    nrows = math.ceil(len(items) / ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"row_labels has {len(row_labels)} entries but there are {nrows} rows")
    # Height: the panels, one title line per line of the longest title in each row, the
    # suptitle's lines and the legend row.
    title_lines = sum(max(str(item[0]).count("\n") + 1 for item in items[r * ncols:(r + 1) * ncols])
                      for r in range(nrows))
    height = panel_size * nrows + 0.19 * title_lines
    height += 0.22 * (suptitle.count("\n") + 1) + 0.1 if suptitle else 0.0
    height += 0.35 if legend else 0.0
    width = panel_size * ncols * (1.2 if colorbar else 1.0) + (0.3 if row_labels is not None else 0.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i, item in enumerate(items):
        title, array, cmap = item[:3]
        kwargs = dict(item[3]) if len(item) == 4 and item[3] else {}
        ax = axes.flat[i]
        shown = to_display(array)
        if shown.ndim == 2:
            kwargs.setdefault("cmap", cmap or "gray")
        kwargs.setdefault("interpolation", "nearest")
        image = ax.imshow(shown, **kwargs)
        ax.set_title(str(title), fontsize=9)
        if colorbar and shown.ndim == 2:
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if row_labels is not None:
        for r, text in enumerate(row_labels):
            axes[r, 0].axis("on")
            axes[r, 0].set_xticks([])
            axes[r, 0].set_yticks([])
            for spine in axes[r, 0].spines.values():
                spine.set_visible(False)
            axes[r, 0].set_ylabel(str(text), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    if legend:
        fig.legend(handles=list(legend), loc="outside lower center", ncols=len(legend), frameon=False, fontsize=9)
    return fig


def _as_records(history: Any) -> Any:
    """Unwrap history objects (``as_dict()``/``to_dict()``/``.history``/``.records``)."""
    for name in ("as_dict", "to_dict"):
        method = getattr(history, name, None)
        if callable(method):
            return method()
    for name in ("history", "records", "rows"):
        inner = getattr(history, name, None)
        if isinstance(inner, (Mapping, list)):
            return inner
    return history


def _finite_points(xs, ys):
    pts = [(float(x), float(y)) for x, y in zip(xs, ys)
           if isinstance(y, (int, float, np.integer, np.floating)) and not isinstance(y, bool) and math.isfinite(float(y))]
    return [p[0] for p in pts], [p[1] for p in pts]


def history_series(history: Any, x_key: Optional[str] = None) -> dict[str, tuple[list[float], list[float]]]:
    """Turn a training history into ``{metric: (x values, y values)}`` for plotting.

    Accepts a mapping ``{"loss": [...], "val_iou": [...], "step": [...]}`` (lists of numbers,
    possibly None/NaN where a metric was not measured), a list of per-step/epoch records
    ``[{"step": 1, "loss": 0.7}, ...]``, or an object with ``as_dict()``/``to_dict()`` or a
    ``history``/``records`` attribute holding one of those. The x axis is ``x_key`` if given,
    else the first of "step", "epoch", "iteration" present, else 1, 2, 3, ...
    Non-numeric entries and missing values are skipped.
    """
    data = _as_records(history)
    if isinstance(data, Mapping):
        columns = {k: list(v) for k, v in data.items() if isinstance(v, (list, tuple, np.ndarray))}
    elif isinstance(data, (list, tuple)) and all(isinstance(r, Mapping) for r in data):
        keys: list[str] = []
        for record in data:
            keys += [k for k in record if k not in keys]
        columns = {k: [record.get(k) for record in data] for k in keys}
    else:
        raise TypeError(
            f"cannot read a training history from {type(history).__name__}: pass a dict of lists "
            "(e.g. {'loss': [...]}) or a list of dicts (e.g. [{'step': 1, 'loss': 0.7}, ...])"
        )
    if not columns:
        raise ValueError("the history holds no series (no list-valued entries)")
    if x_key is None:
        x_key = next((k for k in ("step", "epoch", "iteration") if k in columns), None)
    if x_key is not None and x_key not in columns:
        raise ValueError(f"x_key {x_key!r} is not in the history; available: {sorted(columns)}")
    length = max(len(v) for v in columns.values())
    xs = columns[x_key] if x_key is not None else list(range(1, length + 1))
    series = {}
    for key, values in columns.items():
        if key == x_key:
            continue
        px, py = _finite_points(xs, values)
        if py:
            series[key] = (px, py)
    return series


def plot_history(
    history: Any,
    keys: Optional[Sequence[str]] = None,
    *,
    ax=None,
    title: str = "Training history",
    xlabel: Optional[str] = None,
    ylabel: str = "value",
    logy: bool = False,
    label_prefix: str = "",
    smooth: int = 1,
):
    """Plot the curves of one training run; returns the Axes.

    Args:
        history: see :func:`history_series` (dict of lists, list of dicts, history object).
        keys: which series to draw (default: all numeric ones).
        ax: draw into this Axes (default: a new figure).
        title, xlabel, ylabel: labels (``xlabel`` defaults to the x key, e.g. "step").
        logy: logarithmic y axis (useful for losses).
        label_prefix: prepended to each legend entry (e.g. the model name).
        smooth: moving-average window in points (1 = raw values).
    """
    import matplotlib.pyplot as plt

    series = history_series(history)
    keys = list(series) if keys is None else list(keys)
    missing = [k for k in keys if k not in series]
    if missing:
        raise ValueError(f"history has no series {missing}; available: {sorted(series)}")
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"smooth must be a positive int, got {smooth!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    for key in keys:
        xs, ys = series[key]
        if smooth > 1 and len(ys) >= smooth:
            kernel = np.ones(smooth) / smooth
            ys = np.convolve(ys, kernel, mode="valid")
            xs = xs[smooth - 1:]
        ax.plot(xs, ys, label=f"{label_prefix}{key}")
    if logy:
        ax.set_yscale("log")
    x_name = xlabel or next((k for k in ("step", "epoch", "iteration") if k in _column_names(history)), "step")
    ax.set_xlabel(x_name)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    return ax


def _column_names(history: Any) -> list[str]:
    data = _as_records(history)
    if isinstance(data, Mapping):
        return list(data)
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], Mapping):
        return list(data[0])
    return []


def plot_histories(
    histories: Mapping[str, Any],
    key: str = "loss",
    *,
    ax=None,
    title: Optional[str] = None,
    xlabel: Optional[str] = None,
    ylabel: Optional[str] = None,
    logy: bool = False,
    smooth: int = 1,
):
    """Compare one series (e.g. "loss") across several runs ``{name: history}``; returns the Axes."""
    import matplotlib.pyplot as plt

    if not isinstance(histories, Mapping) or not histories:
        raise TypeError("histories must be a non-empty dict {run name: history}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    for name, history in histories.items():
        plot_history(history, [key], ax=ax, title=title or f"{key} per run", xlabel=xlabel,
                     ylabel=ylabel or key, logy=logy, smooth=smooth)
        ax.lines[-1].set_label(str(name))
    ax.legend(fontsize=9)
    return ax
