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
