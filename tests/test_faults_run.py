"""Faults around a run: overwriting inputs, bad --out, stale temp files, foreign or unsafe
checkpoints, running out of memory, relative --data, tiles larger than the images, log files."""
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unetlib.checkpoint import load_checkpoint, remove_stale_temp_files, save_checkpoint
from unetlib.cli import main
from unetlib.data import make_synthetic_dataset
from unetlib.train import TrainConfig, TrainingInterrupted, fit, load_model

import test_train as _train_tests
from test_train import quiet_fit

TINY = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--tile", "60",
        "--base-channels", "4", "--depth", "2", "--synthetic-images", "2", "--synthetic-val-images", "1",
        "--synthetic-size", "64", "--device", "cpu", "--no-amp"]


def tiny_config(**overrides) -> TrainConfig:
    """test_train's tiny run, cut to a single step."""
    return _train_tests.tiny_config(**{"epochs": 1, "steps_per_epoch": 1, "seed": 0, **overrides})


def run(argv, capsys):
    """main(argv) in this process; returns (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, info_lines: int = 0) -> str:
    """The error line; ``info_lines`` = progress lines printed on stderr before it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 + info_lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    return lines[-1]


def write_folder(root: Path, n=3, size=64, masks=None):
    """A folder dataset of synthetic cells (instance masks) or the given masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, item in enumerate(make_synthetic_dataset(n, size, seed=0)):
        Image.fromarray((item.image[0] * 255).astype(np.uint8)).save(root / "images" / f"{item.name}.png")
        mask = item.instances.astype(np.uint16) if masks is None else masks[i]
        tifffile.imwrite(root / "masks" / f"{item.name}.tif", mask)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    quiet_fit(tiny_config(out=str(out)))
    return out / "best.pt"


# ------------------------------------------------------------------------------ task 1: predict overwrites
@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "DIR"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = (np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8)
    Image.fromarray(image).save(root / "images" / "a.png")
    Image.fromarray(np.full((20, 24), 255, np.uint8)).save(root / "masks" / "a.png")
    return root


def test_predict_refuses_to_replace_ground_truth_masks(checkpoint, dataset, capsys):
    truth = (dataset / "masks" / "a.png").read_bytes()
    code, _, err = run(["predict", "--checkpoint", checkpoint, "--out", dataset / "masks",
                        dataset / "images" / "a.png", "--device", "cpu"], capsys)
    assert code == 2
    line = one_line_error(err)
    assert f"{dataset / 'masks' / 'a.png'} already exists" in line and "--overwrite" in line
    assert (dataset / "masks" / "a.png").read_bytes() == truth
    code, out, _ = run(["predict", "--checkpoint", checkpoint, "--out", dataset / "masks", "--overwrite",
                        dataset / "images" / "a.png", "--device", "cpu"], capsys)
    assert code == 0 and (dataset / "masks" / "a.png").read_bytes() != truth


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_predict_never_writes_over_an_input_image(checkpoint, dataset, capsys, overwrite):
    image = (dataset / "images" / "a.png").read_bytes()
    for out in (dataset / "images", Path(os.path.relpath(dataset / "images"))):  # also spelled differently
        code, _, err = run(["predict", "--checkpoint", checkpoint, "--out", out, *overwrite,
                            dataset / "images" / "a.png", "--device", "cpu"], capsys)
        assert code == 2
        assert "which is an input image" in one_line_error(err)
    assert (dataset / "images" / "a.png").read_bytes() == image


def test_predict_into_an_image_folder_does_not_replace_other_images(checkpoint, dataset, capsys):
    tifffile.imwrite(dataset / "images" / "b.tif", np.zeros((20, 24), np.uint8))
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(dataset / "images" / "b.png")  # another image
    code, _, err = run(["predict", "--checkpoint", checkpoint, "--out", dataset / "images",
                        dataset / "images" / "b.tif", "--device", "cpu"], capsys)
    assert code == 2
    assert f"{dataset / 'images' / 'b.png'} already exists and would be replaced by the mask of" in one_line_error(err)


# ------------------------------------------------------------------------------ task 2: bad --out
def test_train_refuses_an_empty_out_before_training(capsys, monkeypatch):
    import unetlib.train

    monkeypatch.setattr(unetlib.train, "load_sources", lambda *a, **k: pytest.fail("training started"))
    code, _, err = run(["train", "--out", "", *TINY], capsys)
    assert code == 2 and "--out is empty" in one_line_error(err)
    with pytest.raises(ValueError, match="--out is empty"):
        quiet_fit(tiny_config(out=""))


@pytest.mark.parametrize("command", ["train", "predict"])
def test_out_that_is_a_file_gets_a_clear_message(command, tmp_path, capsys, checkpoint, dataset):
    taken = tmp_path / "taken"
    taken.write_text("x")
    argv = (["train", "--out", taken, *TINY] if command == "train" else
            ["predict", "--checkpoint", checkpoint, "--out", taken, dataset / "images" / "a.png"])
    code, _, err = run(argv, capsys)
    line = one_line_error(err)
    assert code == 2 and f"--out {taken} is an existing file, not a folder" in line and "Errno" not in line
    argv[argv.index(taken)] = taken / "sub"
    code, _, err = run(argv, capsys)
    line = one_line_error(err)
    assert f"because {taken} is a file, not a folder" in line and "Errno" not in line


def test_out_without_permission_gets_a_clear_message(tmp_path, capsys, monkeypatch):
    # (the tests may run as root, which ignores permissions: fake the OS's answer)
    def refuse(self, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    code, _, err = run(["train", "--out", tmp_path / "new", *TINY], capsys)
    line = one_line_error(err)
    assert "cannot create this folder (Operation not permitted)" in line and "Errno" not in line
    monkeypatch.undo()

    def no_write(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_write)
    code, _, err = run(["train", "--out", tmp_path, *TINY], capsys)
    line = one_line_error(err)
    assert f"--out {tmp_path}: cannot write files into this folder (Permission denied)" in line


# ------------------------------------------------------------------------------ task 3: stale temp files
STALE = [".last.pt.ab12cd_9.tmp", ".best.pt.zzzzzzzz.tmp"]
KEEP = [".notes.tmp", "last.pt.ab12cd_9.tmp", ".last.pt.ab12cd_9.tmp.bak", ".other.pt.ab12cd_9.tmp"]


def test_stale_checkpoint_temp_files_are_removed_on_start_and_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in STALE + KEEP:
        (out / name).write_text("half a checkpoint")
    lines = []
    with pytest.raises(TrainingInterrupted):
        fit(tiny_config(out=str(out), epochs=2), progress=False, log=lines.append,
            callback=lambda info: (_ for _ in ()).throw(KeyboardInterrupt) if info["event"] == "epoch" else None)
    assert any(line.startswith("removed 2 stale checkpoint temp file(s)") for line in lines), lines
    assert sorted(p.name for p in out.glob(".*.tmp*")) == sorted(n for n in KEEP if n.startswith("."))
    for name in STALE:  # killed while saving, again
        (out / name).write_text("half a checkpoint")
    lines.clear()
    fit(tiny_config(out=str(out), epochs=2), progress=False, log=lines.append, resume=True)
    assert any(line.startswith("removed 2 stale checkpoint temp file(s)") for line in lines), lines
    assert not any((out / name).exists() for name in STALE)
    assert all((out / name).exists() for name in KEEP)


def test_remove_stale_temp_files_matches_the_writer(tmp_path, monkeypatch):
    import unetlib.checkpoint as ck

    kept = {}

    def killed_replace(src, dst):  # the process "dies" between writing and renaming
        kept["tmp"] = Path(src)
        raise SystemExit

    monkeypatch.setattr(ck.os, "replace", killed_replace)
    monkeypatch.setattr(ck.os, "remove", lambda path: None)  # and nothing cleans up
    with pytest.raises(SystemExit):
        save_checkpoint({"w": torch.zeros(1)}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert kept["tmp"].exists()
    assert remove_stale_temp_files(tmp_path) == [kept["tmp"]] and not kept["tmp"].exists()


# ------------------------------------------------------------------------------ tasks 7, 8: foreign checkpoints
def test_checkpoint_without_config_is_named_without_a_traceback(checkpoint, tmp_path, capsys, dataset):
    state = load_checkpoint(checkpoint)
    del state["config"]
    torch.save(state, tmp_path / "noconfig.pt")
    with pytest.raises(ValueError, match=r"noconfig\.pt is not a complete unetlib training checkpoint: it has "
                                         r"no 'config' entry"):
        load_model(tmp_path / "noconfig.pt")
    code, _, err = run(["predict", "--checkpoint", tmp_path / "noconfig.pt", "--out", tmp_path / "m",
                        dataset / "images" / "a.png"], capsys)
    assert code == 2 and "noconfig.pt is not a complete unetlib training checkpoint" in one_line_error(err)
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"bare\.pt is not a unetlib training checkpoint .*bare model state_dict"):
        load_model(tmp_path / "bare.pt")


def test_resume_from_a_last_pt_without_config_is_explained(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"format": "unetlib-train-v1", "model": {}}, out / "last.pt")
    code, _, err = run(["train", "--out", out, "--resume"], capsys)
    assert code == 2 and "last.pt is not a complete unetlib training checkpoint" in one_line_error(err)
    with pytest.raises(ValueError, match="has no 'config', 'model_args'"):
        quiet_fit(tiny_config(out=str(out)), resume=True)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_unsafe_pickle_is_refused_without_suggesting_weights_only_false(tmp_path, capsys, dataset):
    torch.save({"format": "unetlib-train-v1", "payload": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError) as info:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(info.value)
    assert "evil.pt is not a plain weights checkpoint" in message and "must not be" in message
    assert "weights_only" not in message and "trusted source" not in message
    code, out, err = run(["predict", "--checkpoint", tmp_path / "evil.pt", "--out", tmp_path / "m",
                          dataset / "images" / "a.png"], capsys)
    line = one_line_error(err)
    assert code == 2 and "not a plain weights checkpoint" in line and "weights_only" not in line
    assert "this ran while loading" not in out
    (tmp_path / "junk.pt").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt is not a readable unetlib checkpoint") as info:
        load_checkpoint(tmp_path / "junk.pt")
    assert "weights_only" not in str(info.value)


# ------------------------------------------------------------------------------ task 9: out of memory
def test_out_of_memory_in_train_names_the_settings_and_the_size(capsys, monkeypatch, tmp_path):
    import unetlib.train

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8 GiB total)")

    monkeypatch.setattr(unetlib.train, "fit", oom)
    code, _, err = run(["train", "--out", tmp_path / "r", *TINY], capsys)
    line = one_line_error(err)
    assert code == 2 and "out of memory during train (asked for 2.00 GiB)" in line
    assert "--batch-size (now 2)" in line and "--tile (now 60)" in line and "--synthetic-size (now 64)" in line


def test_out_of_memory_on_the_cpu_in_predict_and_evaluate(checkpoint, dataset, capsys, monkeypatch, tmp_path):
    import unetlib.train

    def cpu_oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 4294967296 bytes. Error code 12")

    def numpy_oom(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.45 GiB for an array with shape (1000, 1000, 1000)")

    monkeypatch.setattr(unetlib.train, "predict", cpu_oom)
    code, _, err = run(["predict", "--checkpoint", checkpoint, "--out", tmp_path / "m", "--tile", "252",
                        dataset / "images" / "a.png"], capsys)
    line = one_line_error(err)
    assert code == 2 and "out of memory during predict (asked for 4.00 GiB)" in line
    assert "--batch-size (now 4) or --tile (now 252)" in line
    monkeypatch.setattr(unetlib.train, "evaluate", numpy_oom)
    code, _, err = run(["evaluate", "--checkpoint", checkpoint, "--data", "synthetic"], capsys)
    line = one_line_error(err, info_lines=1)  # "evaluating on 1 held-out synthetic images"
    assert code == 2 and "out of memory during evaluate (asked for 7.45 GiB)" in line and "--tile" in line


def test_out_of_memory_in_synthetic_names_size(capsys, monkeypatch, tmp_path):
    import unetlib.data

    monkeypatch.setattr(unetlib.data, "make_synthetic_dataset", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    code, _, err = run(["synthetic", "--out", tmp_path / "d", "--size", "100000"], capsys)
    assert code == 2 and "lower --size (now 100000) or --n (now 8)" in one_line_error(err)


# ------------------------------------------------------------------------------ task 11: --data paths
def test_data_is_stored_absolute_and_resume_works_from_elsewhere(tmp_path, capsys, monkeypatch):
    write_folder(tmp_path / "d")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["train", "--data", "d", "--out", "run", *TINY, "--epochs", "2", "--val-fraction", "0.4",
                        "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(tmp_path / "d")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["data"] == str(tmp_path / "d")
    monkeypatch.chdir(tmp_path / "elsewhere")
    for data in (["--data", "../d"], []):  # same folder, other spelling; or not given at all
        code, out, err = run(["train", "--out", "../run", "--resume", "--no-progress", *data], capsys)
        assert code == 0, err
    code, _, err = run(["train", "--out", "../run", "--resume", "--data", "../elsewhere"], capsys)
    assert code == 2 and "cannot change settings when resuming: --data ../elsewhere" in one_line_error(err)


# ------------------------------------------------------------------------------ task 12: small images
def test_images_smaller_than_the_tile_name_a_tile_that_works(tmp_path, capsys):
    write_folder(tmp_path / "d", n=2, size=40)
    code, _, err = run(["train", "--data", tmp_path / "d", "--out", tmp_path / "r", *TINY, "--tile", "140"], capsys)
    line = one_line_error(err)
    assert code == 2 and "smaller than the 100 px label tile of --tile 140; use --tile 80 or smaller" in line
    assert "input_size" not in line
    code, _, err = run(["train", "--data", tmp_path / "d", "--out", tmp_path / "r2", *TINY, "--tile", "80",
                        "--no-progress"], capsys)
    assert code == 0, err


# ------------------------------------------------------------------------------ task 13: no bar in log files
def test_training_off_a_terminal_prints_one_line_per_epoch(tmp_path, capsys):
    args = [a for a in TINY if a != "--no-progress"]
    code, out, err = run(["train", "--out", tmp_path / "r", *args, "--epochs", "2", "--steps-per-epoch", "2"],
                         capsys)
    assert code == 0, err
    assert "\r" not in out and "\r" not in err
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split(" | ")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
    assert "step/s" not in err and "it/s" not in err


# ------------------------------------------------------------------------------ task 6: --masks in a run
def test_class_masks_train_a_multi_class_network(tmp_path, capsys):
    masks = []
    for item in make_synthetic_dataset(3, 64, seed=0):
        classes = np.where(item.instances % 2 == 1, 1, np.where(item.instances > 0, 2, 0)).astype(np.uint8)
        masks.append(classes)
    write_folder(tmp_path / "d", masks=masks)
    code, _, err = run(["train", "--data", tmp_path / "d", "--out", tmp_path / "r", *TINY], capsys)
    line = one_line_error(err)
    assert code == 2 and "could be class ids or instance ids" in line and "--masks classes" in line
    code, out, err = run(["train", "--data", tmp_path / "d", "--out", tmp_path / "r", *TINY, "--masks", "classes",
                          "--no-progress"], capsys)
    assert code == 0, err
    assert f"masks: {tmp_path / 'd' / 'masks'} read as 3 class masks (classes {{0, 1, 2}})" in out
    assert load_checkpoint(tmp_path / "r" / "best.pt")["model_args"]["num_classes"] == 3
    code, out, err = run(["evaluate", "--checkpoint", tmp_path / "r" / "best.pt", "--data", tmp_path / "d",
                          "--device", "cpu"], capsys)
    assert code == 0, err
    assert len(json.loads(out)["iou_per_class"]) == 3 and "read as 3 class masks" in err


def test_absurd_depth_is_refused_at_once_naming_the_flag():
    from unetlib.models import UNet
    from unetlib.train import TrainConfig

    with pytest.raises(ValueError, match=r"--depth 20: .*too deep"):
        TrainConfig(depth=20).validate()
    with pytest.raises(ValueError, match="too deep"):
        UNet(depth=20)   # before any 2**20-channel layer is allocated
