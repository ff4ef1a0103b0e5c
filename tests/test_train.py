"""The trainer: reproducibility, exact resume, checkpoints, evaluation and the fast paths."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from unetlib.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from unetlib.data import LabeledImage, make_synthetic_dataset
from unetlib.device import resolve_device, set_cpu_threads, speed_settings
from unetlib.train import (
    TrainConfig,
    TrainingInterrupted,
    _WarmupCosine,
    default_tile,
    evaluate,
    fit,
    load_model,
    predict,
)
from unetlib.utils import cpu_supports_bf16, environment_banner, seed_everything


def tiny_config(**overrides) -> TrainConfig:
    """A run that takes about a second: base 4, depth 2, 60 px tiles, 64 px images."""
    values = dict(epochs=2, steps_per_epoch=3, batch_size=2, tile=60, base_channels=4, depth=2,
                  synthetic_images=2, synthetic_val_images=1, synthetic_size=64, device="cpu",
                  amp=False, seed=3, eval_batch_size=2)
    values.update(overrides)
    return TrainConfig(**values)


def quiet_fit(config, **kwargs):
    return fit(config, progress=False, log=lambda line: None, **kwargs)


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- utils, device, checkpoint
def test_seed_everything_repeats_all_generators():
    import random

    seed_everything(5)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    with pytest.raises(ValueError, match=">= 0"):
        seed_everything(-1)


def test_environment_banner_names_device_and_torch():
    banner = environment_banner()
    assert "device" in banner and torch.__version__ in banner and "bf16" in banner


def test_resolve_device_and_speed_settings():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    cpu = speed_settings(torch.device("cpu"))
    assert cpu.channels_last and not cpu.use_grad_scaler and not cpu.pin_memory
    assert cpu.amp == cpu_supports_bf16()  # bf16 only where the CPU has it natively
    assert speed_settings(torch.device("cpu"), amp=False).amp_dtype is None


def test_cpu_threads_honour_omp_num_threads(monkeypatch):
    from unetlib.utils import physical_cpu_count

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_cpu_threads() == 1 and torch.get_num_threads() == 1  # the environment's limit wins
        assert set_cpu_threads(2) == 2  # an explicit number wins over the environment
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_cpu_threads() == physical_cpu_count()
        monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
        assert set_cpu_threads() == physical_cpu_count()
        with pytest.raises(ValueError, match="num_threads must be >= 1"):
            set_cpu_threads(0)
    finally:
        torch.set_num_threads(before)


def test_cpu_bf16_can_be_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("UNETLIB_CPU_BF16", "0")
    assert cpu_supports_bf16() is False
    assert speed_settings(torch.device("cpu")).amp_dtype is None  # the float32 path
    assert speed_settings(torch.device("cpu"), amp=True).amp_dtype == torch.bfloat16  # asked for explicitly


def test_checkpoint_is_atomic_and_weights_only(tmp_path):
    path = tmp_path / "sub" / "c.pt"
    save_checkpoint({"w": torch.arange(3), "rng": capture_rng_state(), "name": "x"}, path)
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temp file left behind
    state = torch.load(path, weights_only=True)  # plain data only
    assert torch.equal(state["w"], torch.arange(3))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")


def test_rng_state_roundtrip(tmp_path):
    import random

    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_warmup_cosine_schedule_shape():
    schedule = _WarmupCosine(100)
    factors = [schedule(step) for step in range(100)]
    assert factors[0] == pytest.approx(1 / 5) and max(factors) == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.01, abs=0.01)
    assert all(a >= b for a, b in zip(factors[5:], factors[6:]))  # decays after warm-up


def test_default_tile_is_valid_and_covers_cells():
    from unetlib.shapes import is_valid_input_size, unet_output_size

    for depth in (2, 3, 4):
        tile = default_tile(depth)
        assert is_valid_input_size(tile, depth) and unet_output_size(tile, depth) >= 100
    assert default_tile(2) == 140 and default_tile(4) == 284


# ----------------------------------------------------------------------------- config errors
@pytest.mark.parametrize("overrides,message", [
    (dict(epochs=-1), "--epochs must be an integer >= 1"),
    (dict(tile=61), "--tile 61 is not a valid input size for a depth-2 valid U-Net; nearest valid sizes are 60 and 64"),
    (dict(loss="mse"), "unknown loss"),
    (dict(padding="reflect"), "--padding must be one of"),
    (dict(lr=0.0), "--lr must be a positive number"),
    (dict(device="tpu"), "unknown device"),
    (dict(tile=252, synthetic_size=64), "more than the 64 px synthetic images"),
])
def test_bad_config_is_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**overrides).validate()


def test_missing_data_folder(tmp_path):
    from unetlib.data import DatasetError

    with pytest.raises(DatasetError, match="data folder not found"):
        quiet_fit(tiny_config(data=str(tmp_path / "nope")))


# ----------------------------------------------------------------------------- reproducibility and resume
@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted 2-epoch run, shared by the reproducibility and resume tests."""
    out = tmp_path_factory.mktemp("full") / "run"
    return quiet_fit(tiny_config(out=str(out))), out


def test_same_seed_same_run_and_files(full_run, tmp_path):
    a, run = full_run
    b = quiet_fit(tiny_config(out=str(tmp_path / "b")))
    assert_same_weights(a.model.state_dict(), b.model.state_dict())
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    c = quiet_fit(tiny_config(seed=4, epochs=1, steps_per_epoch=1))
    assert any(not torch.equal(p, q) for p, q in zip(a.model.parameters(), c.model.parameters()))

    assert {"best.pt", "last.pt", "history.csv", "history.json", "config.json"} <= {p.name for p in run.iterdir()}
    saved = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in saved] == [1, 2]
    for key in ("loss", "val_loss", "val_iou", "val_dice", "lr", "time"):
        assert all(isinstance(r[key], float) for r in saved), key
    with open(run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["loss"]) for r in rows] == pytest.approx([r["loss"] for r in saved])
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["step_in_epoch"] == 0 and last["global_step"] == 6
    assert last["config"]["seed"] == 3 and len(last["history"]) == 2
    assert_same_weights(last["model"], {k: v.contiguous() for k, v in a.model.state_dict().items()})


def test_resume_after_an_epoch_gives_identical_weights(full_run, tmp_path):
    full, _ = full_run
    with pytest.raises(TrainingInterrupted):
        quiet_fit(tiny_config(out=str(tmp_path / "part")), callback=_stop_after_epoch(1))
    assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 1
    resumed = quiet_fit(tiny_config(out=str(tmp_path / "part")), resume=True)
    assert_same_weights(full.model.state_dict(), resumed.model.state_dict())
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]


def test_resume_mid_epoch_gives_identical_weights(full_run, tmp_path):
    """Killed after step 2 of epoch 2 (a callback raises KeyboardInterrupt), then --resume."""
    full, _ = full_run
    part = tiny_config(out=str(tmp_path / "part"))
    with pytest.raises(TrainingInterrupted):
        quiet_fit(part, callback=_stop_at_step(5))
    state = load_checkpoint(tmp_path / "part" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 5)
    resumed = quiet_fit(part, resume=True)
    assert_same_weights(full.model.state_dict(), resumed.model.state_dict())
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full], rel=1e-12)


def test_sigterm_stops_between_steps_and_saves(tmp_path):
    """SIGTERM (what `kill` sends) becomes a clean stop after the current step."""
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)

    def callback(info):
        if info["event"] == "step" and info["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="SIGTERM"):
        quiet_fit(tiny_config(out=str(tmp_path / "run")), callback=callback)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 2
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored


def test_resume_and_overwrite_guards(full_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        quiet_fit(tiny_config(out=str(tmp_path / "empty")), resume=True)
    with pytest.raises(ValueError, match="already holds a run"):
        quiet_fit(tiny_config(out=str(full_run[1])))


def _stop_after_epoch(n):
    def callback(info):
        if info["event"] == "epoch" and info["epoch"] == n:
            raise KeyboardInterrupt
    return callback


def _stop_at_step(n):
    def callback(info):
        if info["event"] == "step" and info["step"] == n:
            raise KeyboardInterrupt
    return callback


# ----------------------------------------------------------------------------- evaluation and prediction
class ConstantForeground(nn.Module):
    """Predicts 'foreground' everywhere: its scores are independent of the image."""

    in_channels, num_classes = 1, 2

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([-1.0, 1.0]))

    def forward(self, x):
        return self.bias.view(1, 2, 1, 1).expand(x.shape[0], 2, x.shape[2], x.shape[3]).clone()


def test_evaluate_matches_an_independent_count():
    images = make_synthetic_dataset(2, 48, seed=1)
    metrics = evaluate(ConstantForeground(), images, tile_size=32)
    masks = np.stack([im.mask for im in images])
    expected_iou = masks.sum() / masks.size  # TP = foreground, union = every pixel
    assert metrics["foreground_iou"] == pytest.approx(expected_iou)
    assert metrics["foreground_dice"] == pytest.approx(2 * expected_iou / (1 + expected_iou))
    assert metrics["pixel_error"] == pytest.approx(1 - expected_iou)
    assert metrics["n_images"] == 2
    json.dumps(metrics)  # JSON-ready


def test_evaluate_hands_back_the_foreground_probabilities_it_computed():
    images = make_synthetic_dataset(1, 40, seed=1) + make_synthetic_dataset(1, (56, 30), seed=2)
    probs = []
    evaluate(ConstantForeground(), images, tile_size=32, foreground_probs=probs)
    assert [p.shape for p in probs] == [im.mask.shape for im in images]
    expected = float(torch.softmax(torch.tensor([-1.0, 1.0]), 0)[1])   # the model's constant P(foreground)
    assert all(p.dtype == np.float32 and np.allclose(p, expected) for p in probs)


def test_evaluate_images_of_different_sizes():
    images = make_synthetic_dataset(1, 40, seed=1) + make_synthetic_dataset(1, (56, 30), seed=2)
    metrics = evaluate(ConstantForeground(), images, tile_size=32)
    foreground = sum(im.mask.sum() for im in images)
    pixels = sum(im.mask.size for im in images)
    assert metrics["foreground_iou"] == pytest.approx(foreground / pixels)


def test_load_model_and_predict_from_checkpoint(tmp_path):
    history = quiet_fit(tiny_config(out=str(tmp_path / "run"), epochs=1))
    model, config = load_model(tmp_path / "run" / "best.pt")
    assert config.base_channels == 4 and not model.training
    assert_same_weights(model.state_dict(), {k: v.contiguous() for k, v in history.model.state_dict().items()})
    image = np.random.default_rng(0).random((1, 37, 51)).astype(np.float32)
    labels = predict(tmp_path / "run" / "best.pt", image, amp=False)
    assert labels.shape == (37, 51) and labels.dtype == torch.uint8
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "run" / "nope.pt")


def test_folder_data_holds_out_images(tmp_path):
    import tifffile
    from PIL import Image

    for folder in ("images", "masks"):
        (tmp_path / "d" / folder).mkdir(parents=True)
    for item in make_synthetic_dataset(5, 64, seed=0):
        Image.fromarray((item.image[0] * 255).astype(np.uint8)).save(tmp_path / "d" / "images" / f"{item.name}.png")
        tifffile.imwrite(tmp_path / "d" / "masks" / f"{item.name}.tif", item.instances.astype(np.uint16))
    lines = []
    history = fit(tiny_config(data=str(tmp_path / "d"), epochs=1), progress=False, log=lines.append)
    holdout = [line for line in lines if line.startswith("validation:")]
    assert len(holdout) == 1 and "holding out 1 of 5 images" in holdout[0]
    assert history[-1]["val_iou"] is not None


def test_elastic_deformation_run_is_reproducible():
    config = tiny_config(epochs=1, steps_per_epoch=2, elastic=True, synthetic_val_images=0)
    a, b = quiet_fit(config), quiet_fit(config)
    assert_same_weights(a.model.state_dict(), b.model.state_dict())
    plain = quiet_fit(dataclass_replace(config, elastic=False))
    assert a[-1]["loss"] != plain[-1]["loss"]  # the deformation changed the tiles


def test_nan_loss_stops_with_a_clear_error():
    class NaNNet(ConstantForeground):
        def output_size(self, size):
            return size

        def forward(self, x):
            return super().forward(x) * float("nan")

    with pytest.raises(FloatingPointError, match="lower --lr"):
        quiet_fit(tiny_config(epochs=1), model=NaNNet())


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_bf16_autocast_keeps_the_fp32_accuracy():
    """Same run in fp32 and with bf16 autocast: the losses after 10 steps agree to a few %."""
    config = tiny_config(epochs=1, steps_per_epoch=10, batch_size=4, base_channels=8, lr=3e-3)
    losses = {False: [], True: []}
    runs = {}
    for amp in (False, True):
        runs[amp] = quiet_fit(dataclass_replace(config, amp=amp),
                              callback=lambda info, amp=amp: losses[amp].append(info.get("loss")))
    assert np.mean(losses[False][-3:]) < 0.9 * losses[False][0]  # it did learn something
    assert np.mean(losses[True][-3:]) == pytest.approx(np.mean(losses[False][-3:]), rel=0.05)
    assert runs[True][-1]["val_loss"] == pytest.approx(runs[False][-1]["val_loss"], rel=0.05)


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)
