"""unetlib.viz: the numbers the figures show agree with torch, and bad input is refused clearly."""
import re

import matplotlib

matplotlib.use("Agg")  # headless: no display in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from unetlib.viz.conv_grids import (  # noqa: E402
    conv_arithmetic_text,
    draw_conv_arithmetic,
    draw_grid,
    plot_conv_step,
    show_conv_arithmetic,
)
from unetlib.viz.panels import (  # noqa: E402
    add_error_legend,
    colorize_instances,
    error_legend_handles,
    error_overlay,
    history_series,
    show_panels,
    to_display,
)
from unetlib.viz.unet_diagram import draw_unet  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def final_number(text: str) -> int:
    return int(re.findall(r"= (\d+)", text)[-1])


@pytest.mark.parametrize("i,k,s,p,d", [(5, 3, 1, 0, 1), (5, 3, 2, 1, 1), (7, 3, 2, 0, 2), (572, 3, 1, 0, 1), (6, 4, 3, 2, 1)])
def test_convolution_formula_text_ends_with_torchs_output_size(i, k, s, p, d):
    torch_size = F.conv2d(torch.zeros(1, 1, i, i), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d).shape[-1]
    assert final_number(conv_arithmetic_text(i, k, s, p, dilation=d)) == torch_size


@pytest.mark.parametrize("i,k,s,p,a,d", [(3, 3, 1, 0, 0, 1), (4, 2, 2, 0, 0, 1), (5, 3, 2, 1, 1, 1), (3, 3, 2, 1, 0, 2)])
def test_transposed_formula_text_ends_with_torchs_output_size(i, k, s, p, a, d):
    torch_size = F.conv_transpose2d(torch.zeros(1, 1, i, i), torch.zeros(1, 1, k, k), stride=s, padding=p,
                                    output_padding=a, dilation=d).shape[-1]
    text = conv_arithmetic_text(i, k, s, p, a, d, transposed=True)
    assert final_number(text) == torch_size
    figure = draw_conv_arithmetic(i, k, s, p, a, d, transposed=True)
    assert any(f"output {torch_size}×{torch_size}" in ax.get_title() for ax in figure.axes)


def test_impossible_configuration_raises_and_the_explorer_prints_instead(capsys):
    with pytest.raises(ValueError):
        conv_arithmetic_text(2, 5)  # a 5-wide kernel does not fit a 2-pixel input
    show_conv_arithmetic(input_size=2, kernel_size=5)
    assert capsys.readouterr().out.startswith("Invalid configuration:")


def test_conv_step_title_shows_the_value_torch_computes():
    x = torch.arange(25.0).reshape(5, 5)
    w = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    figure = plot_conv_step(x, w, 1, 2, stride=1)
    expected = F.conv2d(x[None, None], w[None, None])[0, 0, 1, 2].item()
    assert figure._suptitle.get_text().endswith(f"= {expected:.0f}")
    with pytest.raises(ValueError, match="outside the output"):
        plot_conv_step(x, w, 4, 0)


def test_draw_grid_refuses_batched_input_with_a_hint():
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="squeeze"):
        draw_grid(ax, torch.zeros(1, 3, 3), title="x")


def test_instance_colours_are_per_id_and_background_is_black():
    ids = np.array([[0, 1, 1], [2, 2, 0], [3, 1, 0]])
    rgb = colorize_instances(ids)
    assert rgb.shape == (3, 3, 3) and rgb.dtype == np.float32
    assert np.all(rgb[ids == 0] == 0)
    assert np.all(rgb[ids == 1] == rgb[0, 1])  # one id, one colour
    colours = {tuple(rgb[ids == k][0]) for k in (1, 2, 3)}
    assert len(colours) == 3 and all(max(c) > 0.5 for c in colours)  # distinct and bright
    np.testing.assert_array_equal(colorize_instances(torch.from_numpy(ids)), rgb)  # deterministic, tensor or array
    with pytest.raises(ValueError, match="integer ids"):
        colorize_instances(ids + 0.5)


def test_error_overlay_colours_each_kind_of_pixel():
    prediction = np.array([[1, 1, 0, 0]])
    truth = np.array([[1, 0, 1, 0]])
    rgb = error_overlay(prediction, truth)
    white, false_positive, false_negative, black = rgb[0]
    assert np.all(white == 1) and np.all(black == 0)
    assert false_positive[0] > 0.9 and false_positive[2] < 0.2  # red
    assert false_negative[2] > 0.9 and false_negative[0] < 0.3  # blue
    with pytest.raises(ValueError, match="same shape"):
        error_overlay(prediction, truth.T)


def test_to_display_squeezes_and_moves_channels():
    assert to_display(torch.zeros(1, 1, 4, 5)).shape == (4, 5)
    assert to_display(torch.zeros(3, 4, 5)).shape == (4, 5, 3)
    assert to_display(torch.ones(2, 2, dtype=torch.bfloat16)).dtype == np.float32
    with pytest.raises(ValueError, match="cannot display"):
        to_display(np.zeros((2, 4, 5)))


def test_show_panels_draws_one_image_per_panel():
    figure = show_panels([("a", np.zeros((4, 4)), "gray"), ("b", np.ones((4, 4)), None), ("c", np.eye(4), "gray")], ncols=2)
    with_images = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in with_images] == ["a", "b", "c"]


def test_history_series_skips_missing_values_and_picks_the_step_axis():
    series = history_series([{"step": 1, "loss": 0.9, "val_iou": None},
                             {"step": 2, "loss": 0.5, "val_iou": 0.7},
                             {"step": 3, "loss": float("nan"), "val_iou": 0.8}])
    assert series["loss"] == ([1.0, 2.0], [0.9, 0.5])
    assert series["val_iou"] == ([2.0, 3.0], [0.7, 0.8])
    with pytest.raises(ValueError, match="x_key 'epoch'"):
        history_series({"step": [1], "loss": [1.0]}, x_key="epoch")


def test_unet_diagram_labels_the_papers_sizes_and_refuses_invalid_ones():
    figure = draw_unet(572)
    labels = " ".join(text.get_text() for ax in figure.axes for text in ax.texts)
    assert "572" in labels and "388" in labels and "1024" in labels
    with pytest.raises(ValueError, match="556"):
        draw_unet(570)


def _all_text(figure):
    """Every visible Text artist of a figure: titles, labels, tick labels, annotations, legends."""
    return [text for text in figure.findobj(matplotlib.text.Text) if text.get_visible() and text.get_text().strip()]


def test_course_style_sets_100_dpi_constrained_layout_and_9_point_text():
    from unetlib.viz import use_course_style
    from unetlib.viz.style import COURSE_STYLE, MIN_FONT_SIZE

    with matplotlib.rc_context():
        use_course_style()
        assert plt.rcParams["figure.dpi"] >= 100 and plt.rcParams["figure.constrained_layout.use"]
        figure, ax = plt.subplots()
        ax.set_title("t")
        ax.set_xlabel("x")
        ax.plot([0, 1], [0, 1], label="a")
        ax.legend()
        figure.canvas.draw()
        assert min(text.get_fontsize() for text in _all_text(figure)) >= MIN_FONT_SIZE
    assert all(value >= MIN_FONT_SIZE for key, value in COURSE_STYLE.items() if key.endswith("size"))


@pytest.mark.parametrize("make", [
    lambda: draw_unet(572),
    lambda: draw_unet(188, depth=2, base_channels=16),
    lambda: show_panels([("a", np.zeros((4, 4)), "gray"), ("b", np.eye(4), None)], suptitle="s",
                        legend=error_legend_handles()),
    lambda: plot_conv_step(torch.arange(16.0).reshape(4, 4), torch.ones(3, 3), 0, 0),
], ids=["unet-572", "unet-depth-2", "panels", "conv-step"])
def test_course_figures_print_no_text_below_9_points(make):
    figure = make()
    figure.canvas.draw()
    small = sorted({(text.get_text(), text.get_fontsize()) for text in _all_text(figure) if text.get_fontsize() < 9})
    assert not small, f"text below 9 pt: {small[:5]}"


def test_error_legend_patches_use_the_overlay_colours():
    prediction, truth = np.array([[1, 1, 0, 0]]), np.array([[1, 0, 1, 0]])
    rgb = error_overlay(prediction, truth)[0]
    handles = error_legend_handles()
    assert [h.get_label().split(":")[0] for h in handles] == ["TP", "FP", "FN", "TN"]
    for handle, pixel in zip(handles, rgb):  # TP, FP, FN, TN: the order of the pixels above
        np.testing.assert_allclose(handle.get_facecolor()[:3], pixel, atol=1e-6)
    figure = show_panels([("errors", rgb[None], None)], legend=handles)
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [h.get_label() for h in handles]
    _, ax = plt.subplots()
    assert len(add_error_legend(ax, kinds=("FP", "FN")).get_texts()) == 2
    with pytest.raises(ValueError, match="unknown error kind"):
        error_legend_handles(["XX"])


def test_show_panels_titles_do_not_overlap_the_images_below():
    from unetlib.viz import use_course_style

    with matplotlib.rc_context():
        use_course_style()
        items = [(f"panel {k}\nsecond line", np.zeros((8, 8)), "gray") for k in range(8)]
        figure = show_panels(items, ncols=4, panel_size=2.0, suptitle="over all", legend=error_legend_handles())
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        top_row, bottom_row = figure.axes[:4], figure.axes[4:]
        for upper, lower in zip(top_row, bottom_row):
            image_top = upper.get_window_extent(renderer)
            title = lower.title.get_window_extent(renderer)
            assert title.y1 <= image_top.y0 + 1  # the second row's title sits below the first row's image
        suptitle = figure._suptitle.get_window_extent(renderer)
        assert all(suptitle.y0 >= ax.title.get_window_extent(renderer).y1 - 1 for ax in top_row)


def test_padding_modes_leave_room_for_the_outline_of_the_largest_grid():
    from unetlib.viz.conv_grids import plot_padding_modes

    figure = plot_padding_modes(5, 3)
    full_input = figure.axes[2]  # top row: valid, same, full inputs
    left, right = full_input.get_xlim()
    bottom, top = full_input.get_ylim()
    assert left < -0.5 and right > 8.5 and top < -0.5 and bottom > 8.5  # the 9 x 9 grid plus a margin


def test_palette_png_is_smaller_and_keeps_the_picture():
    import io

    from PIL import Image

    from unetlib.viz.style import png_with_palette

    figure, ax = plt.subplots(figsize=(3, 3), dpi=100)
    ax.imshow(np.random.default_rng(0).random((64, 64)), cmap="gray")
    ax.set_title("noise")
    plain = io.BytesIO()
    figure.savefig(plain, format="png", bbox_inches="tight", dpi=100)
    data = png_with_palette(figure)
    image, reference = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(plain.getvalue())).convert("RGB")
    assert image.mode == "P" and image.size == reference.size
    assert len(data) < len(plain.getvalue())
    difference = np.abs(np.asarray(image.convert("RGB"), dtype=int) - np.asarray(reference, dtype=int))
    assert difference.mean() < 2.0  # on a 0-255 scale: the same picture to the eye
    assert png_with_palette(plt.figure()) is None  # nothing drawn: nothing shown
