"""Pixel-grid figures for convolution and transposed convolution (notebook 01).

Every helper returns a matplotlib ``Figure`` (the notebook ends its cell with
``plt.show()``), except :func:`show_conv_arithmetic`, which prints and shows, and
:func:`conv_explorer`, which returns an ipywidgets widget. Inputs are 2-D single-channel
grids: torch tensors or NumPy arrays of shape (H, W), any real dtype.

Colour code used throughout: the input is blue, the output orange, signed values
(kernels, matrices) red/blue around zero; red outlines mark the pixels that take part in
one step, a dashed orange outline the next step, hatching marks padding (or, for a
transposed convolution, the border that ``padding`` crops away).
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = [
    "draw_grid",
    "outline_cells",
    "plot_conv_step",
    "plot_scatter_step",
    "plot_matrix",
    "plot_images",
    "plot_padding_modes",
    "conv_arithmetic_text",
    "draw_conv_arithmetic",
    "show_conv_arithmetic",
    "conv_explorer",
]

FIRST_STEP = {"color": "red", "linestyle": "-"}
NEXT_STEP = {"color": "darkorange", "linestyle": "--"}


def _as_2d(values, name: str = "values") -> np.ndarray:
    """``values`` (tensor or array, shape (H, W)) as a float64 NumPy array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D grid (H, W), got shape {array.shape}; squeeze batch/channel dims first")
    return array


def _font_size(n_cells: int) -> float:
    """Annotation font size for a grid ``n_cells`` wide: 11 pt on small grids, never below 9 pt."""
    return float(max(9.0, min(11.0, 110.0 / max(n_cells, 1))))


def _format_number(value: float, decimals: Optional[int]) -> str:
    if decimals is None:
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.{decimals}f}"


def draw_grid(
    ax,
    values,
    *,
    title: str,
    xlabel: str = "column",
    ylabel: str = "row",
    cmap: Optional[str] = None,
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    annotate: bool = True,
    decimals: Optional[int] = None,
    shade: Optional[np.ndarray] = None,
    row_offset: int = 0,
    col_offset: int = 0,
):
    """Draw a 2-D grid ``values`` (H, W) as coloured cells with thin borders on ``ax``.

    annotate: write each value in its cell (integers as integers, else ``decimals``).
    shade:    optional bool (H, W) mask of cells to hatch in grey (padding, cropped border).
    row_offset, col_offset: the index shown for the first row/column (e.g. -p for a padded input).
    Signed data gets a red/blue map centred on zero unless ``cmap`` is given. Returns ``ax``.
    """
    grid = _as_2d(values)
    height, width = grid.shape
    signed = grid.min() < 0
    if cmap is None:
        cmap = "RdBu_r" if signed else "Blues"
    if vmin is None and vmax is None:
        if signed:
            limit = float(np.abs(grid).max()) or 1.0
            vmin, vmax = -limit, limit
        else:
            vmin, vmax = min(0.0, float(grid.min())), float(grid.max()) or 1.0
    image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    # Ticks: every index on small grids, a few on large ones.
    for axis_ticks, n, offset, set_labels in ((ax.set_xticks, width, col_offset, ax.set_xticklabels), (ax.set_yticks, height, row_offset, ax.set_yticklabels)):
        step = 1 if n <= 16 else int(np.ceil(n / 8))
        positions = list(range(0, n, step))
        axis_ticks(positions)
        set_labels([str(p + offset) for p in positions], fontsize=max(9.0, _font_size(max(width, height)) * 0.8 + 1))
    # Cell borders drawn only over the grid itself (not the whole axes).
    line_width = 0.5 if max(width, height) <= 24 else 0.2
    ax.hlines(np.arange(-0.5, height, 1), -0.5, width - 0.5, color="black", linewidth=line_width)
    ax.vlines(np.arange(-0.5, width, 1), -0.5, height - 0.5, color="black", linewidth=line_width)
    if shade is not None:
        for r, c in zip(*np.nonzero(np.asarray(shade, dtype=bool))):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor="lightgrey", edgecolor="grey", hatch="///", linewidth=0.5))
    if annotate and max(width, height) <= 24:
        norm = Normalize(vmin=image.norm.vmin, vmax=image.norm.vmax)
        colormap = plt.get_cmap(cmap)
        size = _font_size(max(width, height))
        for r in range(height):
            for c in range(width):
                if shade is not None and shade[r, c]:
                    continue
                red, green, blue, _ = colormap(norm(grid[r, c]))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(c, r, _format_number(grid[r, c], decimals), ha="center", va="center", fontsize=size, color="white" if dark else "black")
    return ax


def outline_cells(ax, cells: Iterable[tuple[int, int]], *, color: str = "red", linestyle: str = "-", linewidth: float = 2.5, fill_alpha: float = 0.25) -> None:
    """Mark (row, col) cells of a grid drawn by :func:`draw_grid`.

    Each cell gets a translucent ``color`` fill, and one box is drawn around all of them, so a
    dilated kernel shows its taps (filled) inside its span (the box).
    """
    cells = list(cells)
    if not cells:
        return
    for r, c in cells:
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor=color, alpha=fill_alpha, edgecolor="none"))
    rows = [r for r, _ in cells]
    cols = [c for _, c in cells]
    top, left = min(rows), min(cols)
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), max(cols) - left + 1, max(rows) - top + 1, fill=False, edgecolor=color, linestyle=linestyle, linewidth=linewidth))


def _figure_for_grids(widths: Sequence[int], height_cells: int, figwidth: float = 10.5) -> tuple[Figure, list]:
    """A one-row figure whose panels are as wide as the grids they show."""
    ratios = [max(w, 2) for w in widths]
    fig_height = min(5.5, max(3.0, 0.45 * height_cells + 1.8))
    fig, axes = plt.subplots(1, len(widths), figsize=(figwidth, fig_height), gridspec_kw={"width_ratios": ratios}, constrained_layout=True)
    return fig, list(np.atleast_1d(axes))


def plot_conv_step(x, w, row: int, col: int, *, stride: int = 1, padding: int = 0, dilation: int = 1) -> Figure:
    """One step of a single-channel convolution (cross-correlation, as in PyTorch).

    x: input (H, W); w: kernel (kh, kw). Draws the zero-padded input with the window of
    output pixel (row, col) outlined, the kernel, and the output (from ``F.conv2d``) with
    that pixel outlined. Returns the Figure.
    """
    x_np, w_np = _as_2d(x, "x"), _as_2d(w, "w")
    x_t = torch.as_tensor(x_np)[None, None]
    w_t = torch.as_tensor(w_np)[None, None]
    out = F.conv2d(x_t, w_t, stride=stride, padding=padding, dilation=dilation)[0, 0].numpy()
    if not (0 <= row < out.shape[0] and 0 <= col < out.shape[1]):
        raise ValueError(f"(row, col) = ({row}, {col}) is outside the output of shape {out.shape}")
    padded = np.pad(x_np, padding)
    shade = np.pad(np.zeros_like(x_np, dtype=bool), padding, constant_values=True)
    kh, kw = w_np.shape
    taps = [(row * stride + a * dilation, col * stride + b * dilation) for a in range(kh) for b in range(kw)]

    fig, axes = _figure_for_grids([padded.shape[1], kw, out.shape[1]], padded.shape[0])
    pad_note = f", zero-padded by {padding} (hatched)" if padding else ""
    draw_grid(axes[0], padded, title=f"input x {x_np.shape[0]}×{x_np.shape[1]}{pad_note}", shade=shade, row_offset=-padding, col_offset=-padding)
    # Value grids: outline only (a fill would change the colours that encode the values),
    # except for dilated kernels, whose taps are not contiguous.
    outline_cells(axes[0], taps, **FIRST_STEP, fill_alpha=0.25 if dilation > 1 else 0.0)
    draw_grid(axes[1], w_np, title=f"kernel w {kh}×{kw}", xlabel="kernel column", ylabel="kernel row")
    draw_grid(axes[2], out, title=f"output {out.shape[0]}×{out.shape[1]}", cmap="Oranges" if out.min() >= 0 else None)
    outline_cells(axes[2], [(row, col)], **FIRST_STEP, fill_alpha=0.0)
    fig.suptitle(
        f"Convolution, stride {stride}: output[{row}, {col}] = sum(red input window × kernel) = {_format_number(out[row, col], None)}"
    )
    return fig


def plot_scatter_step(x, w, row: int, col: int, *, stride: int = 1) -> Figure:
    """One step of a single-channel transposed convolution in its scatter form (no padding).

    x: input (H, W); w: kernel (kh, kw). Draws the input with pixel (row, col) outlined, the
    kernel, that pixel's stamp ``x[row, col] * w``, and the full output (every stamp added,
    from ``F.conv_transpose2d``) with the stamp's footprint outlined. Returns the Figure.
    """
    x_np, w_np = _as_2d(x, "x"), _as_2d(w, "w")
    out = F.conv_transpose2d(torch.as_tensor(x_np)[None, None], torch.as_tensor(w_np)[None, None], stride=stride)[0, 0].numpy()
    if not (0 <= row < x_np.shape[0] and 0 <= col < x_np.shape[1]):
        raise ValueError(f"(row, col) = ({row}, {col}) is outside the input of shape {x_np.shape}")
    kh, kw = w_np.shape
    stamp = x_np[row, col] * w_np
    footprint = [(row * stride + a, col * stride + b) for a in range(kh) for b in range(kw)]

    fig, axes = _figure_for_grids([x_np.shape[1], kw, kw, out.shape[1]], out.shape[0], figwidth=11.0)
    draw_grid(axes[0], x_np, title=f"input x {x_np.shape[0]}×{x_np.shape[1]}")
    outline_cells(axes[0], [(row, col)], **FIRST_STEP, fill_alpha=0.0)
    draw_grid(axes[1], w_np, title=f"kernel w {kh}×{kw}", xlabel="kernel column", ylabel="kernel row")
    draw_grid(axes[2], stamp, title=f"stamp x[{row},{col}]·w", xlabel="kernel column", ylabel="kernel row")
    draw_grid(axes[3], out, title=f"output {out.shape[0]}×{out.shape[1]} (all stamps added)", cmap="Oranges" if out.min() >= 0 else None)
    outline_cells(axes[3], footprint, **FIRST_STEP, fill_alpha=0.0)
    fig.suptitle(
        f"Transposed convolution, stride {stride}: input pixel ({row}, {col}) adds its stamp "
        f"to the output block starting at ({row * stride}, {col * stride})"
    )
    return fig


def plot_matrix(matrix, *, title: str, input_shape: tuple[int, int], output_shape: tuple[int, int], annotate: bool = True,
                decimals: Optional[int] = None, colorbar: bool = False) -> Figure:
    """Show a linear map between two small grids as a matrix image.

    matrix: (out_H*out_W, in_H*in_W) for ``input_shape`` (in_H, in_W) and ``output_shape``;
    rows and columns are labelled with the (row, col) pixel they stand for. ``colorbar``
    adds a colour scale (useful when the values are not written in the cells). Returns the Figure.
    """
    m = _as_2d(matrix, "matrix")
    n_out, n_in = output_shape[0] * output_shape[1], input_shape[0] * input_shape[1]
    if m.shape != (n_out, n_in):
        raise ValueError(f"matrix has shape {m.shape}, but {output_shape} outputs x {input_shape} inputs needs ({n_out}, {n_in})")
    height = min(7.0, 1.5 + 0.33 * m.shape[0]) if m.shape[0] > 4 else 3.2
    width = min(13.0, 1.5 + (0.6 if m.shape[0] <= 4 else 0.4) * m.shape[1] + (1.5 if colorbar else 0.0))
    fig, ax = plt.subplots(figsize=(width, height), constrained_layout=True)
    draw_grid(ax, m, title=title, annotate=annotate, decimals=decimals,
              xlabel=f"input pixel (row, col) of the {input_shape[0]}×{input_shape[1]} input, flattened",
              ylabel=f"output pixel of the {output_shape[0]}×{output_shape[1]} output")
    ax.set_xticks(range(n_in))
    ax.set_xticklabels([f"({r},{c})" for r in range(input_shape[0]) for c in range(input_shape[1])], rotation=90, fontsize=9)
    ax.set_yticks(range(n_out))
    ax.set_yticklabels([f"({r},{c})" for r in range(output_shape[0]) for c in range(output_shape[1])], fontsize=9)
    if colorbar:
        fig.colorbar(ax.images[0], ax=ax, shrink=0.8, label="value")
    return fig


def plot_images(images: Sequence, titles: Sequence[str], *, suptitle: str, cmap: str = "gray", share_range: bool = False, colorbar: bool = True) -> Figure:
    """A row of images (each (H, W)) with titles, pixel axes and colour bars. Returns the Figure.

    share_range: use one common colour range, so grey levels are comparable across panels.
    """
    arrays = [_as_2d(image, "image") for image in images]
    if len(arrays) != len(titles):
        raise ValueError(f"got {len(arrays)} images but {len(titles)} titles")
    limits = (min(a.min() for a in arrays), max(a.max() for a in arrays)) if share_range else (None, None)
    panel = min(3.6, 11.5 / len(arrays))  # the row stays about 11.5 inches wide: shown 1:1 in a notebook
    fig, axes = plt.subplots(1, len(arrays), figsize=(panel * len(arrays), panel + 0.8), constrained_layout=True)
    for ax, array, title in zip(np.atleast_1d(axes), arrays, titles):
        shown = ax.imshow(array, cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("column (px)")
        ax.set_ylabel("row (px)")
        if colorbar:
            fig.colorbar(shown, ax=ax, shrink=0.8)
    fig.suptitle(suptitle)
    return fig


def plot_padding_modes(input_size: int = 5, kernel_size: int = 3) -> Figure:
    """Valid, same and full padding side by side for a square input and an odd square kernel.

    Top row: the zero-padded inputs (padding hatched) with the window of output pixel (0, 0)
    in red; bottom row: the outputs, sized by :func:`unetlib.shapes.conv_output_size`.
    """
    from unetlib.shapes import conv_output_size

    if kernel_size % 2 == 0:
        raise ValueError(f"'same' padding needs an odd kernel_size, got {kernel_size}")
    i, k = input_size, kernel_size
    modes = [("valid", 0), ("same", (k - 1) // 2), ("full", k - 1)]
    biggest = i + 2 * (k - 1)
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7.5), constrained_layout=True)
    for column, (name, p) in enumerate(modes):
        o = conv_output_size(i, k, padding=p)
        interior = np.pad(np.ones((i, i)), p)
        ax_in, ax_out = axes[0, column], axes[1, column]
        draw_grid(ax_in, interior, title=f"{name} (p={p}): input {i}×{i}" + (" + padding" if p else ""), cmap="Blues", vmin=0, vmax=4,
                  annotate=False, shade=interior == 0, row_offset=-p, col_offset=-p)
        outline_cells(ax_in, [(a, b) for a in range(k) for b in range(k)], **FIRST_STEP)
        draw_grid(ax_out, np.ones((o, o)), title=f"{name}: output {o}×{o}", cmap="Oranges", vmin=0, vmax=4, annotate=False)
        outline_cells(ax_out, [(0, 0)], **FIRST_STEP)
        for ax, n in ((ax_in, i + 2 * p), (ax_out, o)):  # same cell size in every panel
            margin = (biggest - n) / 2 + 0.15  # + 0.15: room for the red outline of the largest grid
            ax.set_xlim(-0.5 - margin, n - 0.5 + margin)
            ax.set_ylim(n - 0.5 + margin, -0.5 - margin)
            ax.set_frame_on(False)
    fig.suptitle(f"Padding modes for a {k}×{k} kernel on a {i}×{i} input (red: the window that makes output pixel (0, 0))")
    return fig


# ------------------------------------------------------------------------------------
# Convolution arithmetic: formula with numbers, grid diagram, interactive explorer
# ------------------------------------------------------------------------------------
def conv_arithmetic_text(input_size: int, kernel_size: int, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1, transposed: bool = False) -> str:
    """The output-size formula (Dumoulin & Visin; PyTorch's conventions) with the numbers filled in.

    Sizes along one spatial dimension (ints). Raises the ValueError of
    :mod:`unetlib.shapes` when the configuration is impossible.
    """
    from unetlib.shapes import conv_output_size, conv_transpose_output_size

    i, k, s, p, a, d = input_size, kernel_size, stride, padding, output_padding, dilation
    if transposed:
        o = conv_transpose_output_size(i, k, stride=s, padding=p, output_padding=a, dilation=d)
        return (
            f"Transposed convolution: i={i}, k={k}, s={s}, p={p}, output_padding={a}, d={d}\n"
            f"o = (i - 1)*s - 2p + d*(k - 1) + output_padding + 1\n"
            f"  = ({i} - 1)*{s} - 2*{p} + {d}*({k} - 1) + {a} + 1\n"
            f"  = {o}"
        )
    o = conv_output_size(i, k, stride=s, padding=p, dilation=d)
    numerator = i + 2 * p - d * (k - 1) - 1
    note = f"\n(output_padding={a} is ignored: only a transposed convolution has it)" if a else ""
    return (
        f"Convolution: i={i}, k={k}, s={s}, p={p}, d={d}\n"
        f"o = floor((i + 2p - d*(k - 1) - 1) / s) + 1\n"
        f"  = floor(({i} + 2*{p} - {d}*({k} - 1) - 1) / {s}) + 1\n"
        f"  = floor({numerator} / {s}) + 1 = {o}{note}"
    )


def draw_conv_arithmetic(input_size: int, kernel_size: int, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1, transposed: bool = False) -> Figure:
    """Draw the input and output grids of a square (transposed) convolution.

    Convolution: the zero-padded input (padding hatched) with the kernel taps of output
    pixel (0, 0) in red and of (0, 1) dashed orange; the output with those pixels outlined.
    Transposed: the input with pixels (0, 0) and (0, 1) outlined; the uncropped output
    canvas, each cell numbered with how many kernel taps add into it, the footprints of
    those two input pixels outlined and the border that ``padding`` crops hatched.
    Raises the ValueError of :mod:`unetlib.shapes` for impossible configurations.
    """
    from unetlib.shapes import conv_output_size, conv_transpose_output_size

    i, k, s, p, a, d = input_size, kernel_size, stride, padding, output_padding, dilation
    if not transposed:
        o = conv_output_size(i, k, stride=s, padding=p, dilation=d)
        n = i + 2 * p
        interior = np.pad(np.ones((i, i)), p)
        shade = interior == 0
        fig, (ax_in, ax_out) = _figure_for_grids([n, o], max(n, o), figwidth=11.0)
        draw_grid(ax_in, interior, title=f"input {i}×{i}" + (f", padding {p} (hatched)" if p else ""), cmap="Blues", vmin=0, vmax=4, annotate=False, shade=shade, row_offset=-p, col_offset=-p)
        outline_cells(ax_in, [(x * d, y * d) for x in range(k) for y in range(k)], **FIRST_STEP)
        if o > 1:
            outline_cells(ax_in, [(x * d, s + y * d) for x in range(k) for y in range(k)], **NEXT_STEP)
        draw_grid(ax_out, np.ones((o, o)), title=f"output {o}×{o}", cmap="Oranges", vmin=0, vmax=4, annotate=False)
        outline_cells(ax_out, [(0, 0)], **FIRST_STEP)
        if o > 1:
            outline_cells(ax_out, [(0, 1)], **NEXT_STEP)
        fig.suptitle(f"Convolution k={k}, s={s}, p={p}, d={d}\nred: the input pixels output (0,0) reads; dashed: output (0,1)")
        return fig

    o = conv_transpose_output_size(i, k, stride=s, padding=p, output_padding=a, dilation=d)
    counts = F.conv_transpose2d(torch.ones(1, 1, i, i), torch.ones(1, 1, k, k), stride=s, dilation=d)[0, 0].numpy()
    full = counts.shape[0]
    canvas = max(full, p + o)  # output_padding may reach past the last stamp (those cells get no tap)
    counts = np.pad(counts, ((0, canvas - full), (0, canvas - full)))
    kept = np.zeros((canvas, canvas), dtype=bool)
    kept[p : p + o, p : p + o] = True
    fig, (ax_in, ax_out) = _figure_for_grids([i, canvas], max(i, canvas), figwidth=11.0)
    draw_grid(ax_in, np.ones((i, i)), title=f"input {i}×{i}", cmap="Blues", vmin=0, vmax=4, annotate=False)
    outline_cells(ax_in, [(0, 0)], **FIRST_STEP)
    if i > 1:
        outline_cells(ax_in, [(0, 1)], **NEXT_STEP)
    crop_note = f"; hatched: cropped by padding {p}" if p else ""
    draw_grid(ax_out, counts, title=f"output {o}×{o}\n(number: taps adding into the pixel{crop_note})", cmap="Oranges", vmin=0, vmax=max(counts.max(), 1) * 1.6, shade=~kept, row_offset=-p, col_offset=-p)
    outline_cells(ax_out, [(x * d, y * d) for x in range(k) for y in range(k)], **FIRST_STEP)
    if i > 1:
        outline_cells(ax_out, [(x * d, s + y * d) for x in range(k) for y in range(k)], **NEXT_STEP)
    fig.suptitle(f"Transposed convolution k={k}, s={s}, p={p}, output_padding={a}, d={d}\nred: where input (0,0) writes; dashed: input (0,1)")
    return fig


def show_conv_arithmetic(input_size: int = 5, kernel_size: int = 3, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1, transposed: bool = False) -> None:
    """Print the size formula with numbers and show the grid diagram (both square, one dimension).

    An impossible configuration prints ``Invalid configuration: <reason from unetlib.shapes>``
    instead of raising, so an interactive explorer never shows a traceback.
    """
    try:
        text = conv_arithmetic_text(input_size, kernel_size, stride, padding, output_padding, dilation, transposed)
    except ValueError as error:
        print(f"Invalid configuration: {error}")
        return
    print(text)
    draw_conv_arithmetic(input_size, kernel_size, stride, padding, output_padding, dilation, transposed)
    plt.show()


def conv_explorer():
    """An ipywidgets explorer around :func:`show_conv_arithmetic` (sliders + conv/transposed toggle)."""
    import ipywidgets as widgets  # a notebook-only dependency

    def slider(description: str, value: int, low: int, high: int):
        return widgets.IntSlider(value=value, min=low, max=high, description=description, continuous_update=False, style={"description_width": "initial"})

    return widgets.interactive(
        show_conv_arithmetic,
        transposed=widgets.ToggleButtons(options=[("convolution", False), ("transposed convolution", True)], value=False, description="layer"),
        input_size=slider("input size i", 5, 1, 10),
        kernel_size=slider("kernel k", 3, 1, 5),
        stride=slider("stride s", 1, 1, 3),
        padding=slider("padding p", 0, 0, 3),
        output_padding=slider("output_padding", 0, 0, 2),
        dilation=slider("dilation d", 1, 1, 3),
    )
