"""The benchmarks in benchmarks/ run end to end and print their ratios (tiny sizes, no timing claims).

Speed targets are checked by running the benchmarks themselves (`make bench`, docs/benchmarks.md);
these tests only keep the scripts from rotting: every code path they take on a CPU runs here.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    """benchmarks/bench_train.py, imported once for this module's tests."""
    return load_benchmark("bench_train")


def test_train_benchmark_prints_the_engine_speedup_and_both_accuracies(bench, capsys):
    results = bench.main(["--steps", "4", "--batch", "2", "--size", "64", "--base", "8", "--depth", "2",
                          "--images", "2", "--val-images", "1", "--image-size", "64"])
    out = capsys.readouterr().out
    compare = results["compare"]
    assert compare["parameters"]["plain"] == compare["parameters"]["engine"]  # the same network size
    assert compare["speedup"] > 0 and compare["speedup_cpu_time"] > 0
    assert set(compare["val_foreground_iou"]) == {"plain", "engine"}
    printed = re.search(r"speed-up engine vs plain: ([0-9.]+)x wall", out)
    assert printed and float(printed.group(1)) == pytest.approx(compare["speedup"], abs=0.01)
    assert "JSON " in out


def test_plain_unet_copies_the_engine_weights_exactly(bench):
    import torch

    from unetlib.models import UNet

    engine = UNet(1, 2, 8, 2, padding="same", batch_norm=True, generator=torch.Generator().manual_seed(0)).eval()
    plain = bench.PlainUNet(1, 2, base=8, depth=2).eval()
    bench.copy_weights(engine, plain)
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(engine(x), plain(x), atol=1e-5)  # so both loops really start from one network


def test_plain_unet_refuses_weights_of_another_size(bench):
    from unetlib.models import UNet

    with pytest.raises(ValueError, match="do not line up"):
        bench.copy_weights(UNet(1, 2, 8, 2, padding="same", batch_norm=True), bench.PlainUNet(1, 2, base=8, depth=3))


def test_elastic_benchmark_prints_its_ratios():
    result = subprocess.run([sys.executable, "benchmarks/bench_elastic.py", "--repeats", "1"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    ratios = re.search(r"scipy / unetlib = ([0-9.]+)x\s+torchvision \(per item\) / unetlib = ([0-9.]+)x",
                       result.stdout)
    assert ratios, result.stdout[-2000:]
    assert float(ratios.group(1)) > 0 and float(ratios.group(2)) > 0
