"""``python -m unetlib``: train -> predict -> evaluate, kill + resume, and one-line errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetlib.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2", "--tile", "60",
        "--base-channels", "4", "--depth", "2", "--synthetic-images", "2", "--synthetic-val-images", "1",
        "--synthetic-size", "64", "--device", "cpu", "--no-amp", "--no-progress"]


def run_cli(*args, check=True, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "unetlib", *map(str, args)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny synthetic run through the real command line, plus a folder dataset."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    run_cli("synthetic", "--out", data, "--n", "3", "--size", "64", "--seed", "1")
    result = run_cli("train", "--data", "synthetic", "--out", root / "run", *TINY)
    return root, data, result


def test_train_writes_history_and_checkpoints(trained):
    root, _, result = trained
    run = root / "run"
    assert "validation: 1 separate synthetic image(s)" in result.stdout
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "loss", "val_loss", "val_iou", "val_dice", "lr", "time"} <= set(header)
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / name, weights_only=True)
        assert state["config"]["base_channels"] == 4


def test_predict_writes_one_mask_per_image_of_the_same_size(trained, tmp_path):
    root, data, _ = trained
    images = sorted((data / "images").glob("*.png"))[:2]
    odd = tmp_path / "odd_size.png"  # not a valid U-Net size, and not square
    Image.fromarray((np.random.default_rng(0).random((37, 71)) * 255).astype(np.uint8)).save(odd)
    out = tmp_path / "masks"
    result = run_cli("predict", "--checkpoint", root / "run" / "best.pt", "--out", out, *images, odd,
                     "--device", "cpu")
    for path in [*images, odd]:
        mask = np.array(Image.open(out / f"{path.stem}.png"))
        assert mask.shape == np.array(Image.open(path)).shape
        assert set(np.unique(mask).tolist()) <= {0, 255}
    assert result.stdout.count("foreground") == 3


def test_evaluate_prints_json(trained):
    root, data, _ = trained
    for target in ("synthetic", data):
        result = run_cli("evaluate", "--checkpoint", root / "run" / "best.pt", "--data", target, "--device", "cpu")
        metrics = json.loads(result.stdout)
        assert 0 <= metrics["foreground_iou"] <= 1 and 0 <= metrics["pixel_error"] <= 1
    assert metrics["n_images"] == 3


def test_killed_run_resumes_to_the_end(tmp_path):
    """SIGKILL after the first epoch's checkpoint, then --resume finishes the run."""
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    args = ["train", "--out", out, *TINY, "--epochs", "3"]
    process = subprocess.Popen([sys.executable, "-m", "unetlib", *map(str, args)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (out / "last.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "last.pt").exists()
    done = torch.load(out / "last.pt", weights_only=True)["epoch"]
    result = run_cli("train", "--out", out, "--resume", "--no-progress")
    assert f"resuming {out}" in result.stdout
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3] and done >= 1


def test_bad_tile_gives_one_line_and_nonzero_exit_in_a_subprocess(tmp_path):
    assert_one_line_error(run_cli("train", "--tile", "570", "--depth", "4", "--out", tmp_path / "r", check=False),
                          "--tile 570 is not a valid input size for a depth-4 valid U-Net",
                          "nearest valid sizes are 556 and 572")


@pytest.mark.parametrize("argv,fragments", [
    (["train", "--data", "{tmp}/no_such_dir", "--out", "{tmp}/r"], ["data folder not found"]),
    (["train", "--epochs", "-3", "--out", "{tmp}/r"], ["--epochs must be an integer >= 1, got -3"]),
    (["train", "--epochs", "three"], ["invalid int value: 'three'"]),
    (["train", "--loss", "l2", "--out", "{tmp}/r"], ["unknown loss"]),
    (["train", "--out", "{tmp}/r", "--resume"], ["nothing to resume"]),
    (["predict", "--checkpoint", "{tmp}/missing.pt", "--out", "{tmp}/m", "{tmp}/img.png"], ["image not found"]),
    (["predict", "--checkpoint", "{tmp}/missing.pt", "--out", "{tmp}/m", "{tmp}/ok.png"], ["checkpoint not found"]),
    (["predict", "--checkpoint", "{tmp}/junk.pt", "--out", "{tmp}/m", "{tmp}/ok.png"], ["not a readable"]),
    (["predict", "--checkpoint", "{ckpt}", "--out", "{tmp}/m", "{tmp}/broken.png"], ["cannot read this file"]),
    (["evaluate", "--checkpoint", "{ckpt}", "--data", "{tmp}/nowhere"], ["data folder not found"]),
    (["frobnicate"], ["invalid choice"]),
])
def test_bad_input_gives_one_clear_line(argv, fragments, tmp_path, capsys, trained):
    (tmp_path / "junk.pt").write_bytes(b"definitely not a checkpoint")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    ckpt = trained[0] / "run" / "best.pt"
    argv = [a.format(tmp=tmp_path, ckpt=ckpt) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors (unknown command, bad int)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]
