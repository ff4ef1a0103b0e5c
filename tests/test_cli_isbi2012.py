"""`python -m unetlib train|evaluate --data isbi2012` on the shared copy of the slices (no network)."""
import json
import os
from pathlib import Path

import pytest

import unetlib
from unetlib.cli import main

DATA_ROOT = Path(os.environ.get("UNETLIB_DATA_DIR") or Path(unetlib.__file__).resolve().parents[2] / "shared" / "data")
HAVE_COPY = (DATA_ROOT / "isbi2012" / "labels" / "29.png").is_file()


def test_ci_has_the_shared_copy():
    # A skipped ISBI test must never pass for a green CI: there the copy has to be found.
    if not os.environ.get("CI"):
        pytest.skip("only CI promises the shared copy")
    assert HAVE_COPY, f"CI must find the ISBI 2012 slices at {DATA_ROOT}/isbi2012 (.ci/run sets UNETLIB_DATA_DIR)"


@pytest.mark.skipif(not HAVE_COPY, reason=f"no ISBI 2012 copy at {DATA_ROOT}/isbi2012 (set UNETLIB_DATA_DIR)")
def test_train_and_evaluate_on_isbi2012(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNETLIB_DATA_DIR", str(DATA_ROOT))
    run = tmp_path / "run"
    status = main(["train", "--data", "isbi2012", "--out", str(run), "--epochs", "1", "--steps-per-epoch", "2",
                   "--batch-size", "2", "--base-channels", "4", "--depth", "2", "--tile", "60",
                   "--val-fraction", "0.04", "--device", "cpu", "--no-progress"])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "training on slices 0-23, validation slices 24-24; slices 25-29 are the test set" in out.out + out.err
    assert json.loads((run / "config.json").read_text())["data"] == "isbi2012"   # a name, not a path

    status = main(["evaluate", "--checkpoint", str(run / "last.pt"), "--data", "isbi2012", "--device", "cpu"])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "slices 25-29" in out.err
    scores = json.loads(out.out)
    challenge = scores["isbi_challenge"]
    assert 0.0 <= challenge["pixel_error"] <= 1.0 and 0.0 <= challenge["rand_error"] <= 1.0


def test_isbi2012_refuses_a_separate_validation_folder(tmp_path, capsys):
    status = main(["train", "--data", "isbi2012", "--val-data", str(tmp_path), "--out", str(tmp_path / "run"),
                   "--epochs", "1", "--steps-per-epoch", "1", "--device", "cpu"])
    assert status == 2
    assert "omit --val-data" in capsys.readouterr().err


def test_isbi2012_tile_larger_than_a_slice_is_refused(capsys, tmp_path):
    status = main(["train", "--data", "isbi2012", "--tile", "716", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert status == 2
    assert "512 px ISBI 2012 slices" in capsys.readouterr().err


def test_isbi2012_has_its_own_defaults_and_flags_override_them(monkeypatch, tmp_path):
    from unetlib import cli, train

    preset = train.DATA_DEFAULTS["isbi2012"]
    config = train.TrainConfig.for_data("isbi2012")
    for key, value in preset.items():
        assert getattr(config, key) == value
    assert train.TrainConfig.for_data("isbi2012", depth=2).depth == 2          # an explicit setting wins
    assert train.TrainConfig.for_data("synthetic") == train.TrainConfig()     # synthetic keeps the defaults

    seen = {}

    def fake_fit(config, **kwargs):
        seen["config"] = config
        raise ValueError("stop here")

    monkeypatch.setattr(train, "fit", fake_fit)
    assert cli.main(["train", "--data", "isbi2012", "--epochs", "3", "--out", str(tmp_path / "run")]) == 2
    used = seen["config"]
    assert used.epochs == 3 and used.depth == preset["depth"] and used.select_by == "val_rand_error"


def test_best_checkpoint_can_follow_the_rand_error():
    from unetlib.train import _selection_metric

    record = {"loss": 0.5, "val_iou": 0.8, "val_rand_error": 0.07}
    assert _selection_metric(record, "val_rand_error") == (0.07, True)    # lower is better
    assert _selection_metric(record, "val_iou") == (0.8, False)
    assert _selection_metric({"loss": 0.5}, "val_rand_error") == (-0.5, False)  # no validation: the loss
