"""Set-up promises: two README commands, CI calls exactly one of them, conda mirrors pip."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {Requirement(line).name.lower(): str(Requirement(line).specifier) for line in lines}


def _environment_yml_pip_requirements() -> dict[str, str]:
    # environment.yml is tiny and flat; reading the pip list needs no YAML library.
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    items = [m.group(1).strip() for m in re.finditer(r"^\s+- (.+)$", pip_block, re.M)]
    requirements = [Requirement(item) for item in items if not item.startswith("-")]
    return {r.name.lower(): str(r.specifier) for r in requirements}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    assert _environment_yml_pip_requirements() == _pyproject_requirements()


def test_environment_yml_pins_python_like_pyproject():
    requires_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"python{requires_python}" in (ROOT / "environment.yml").read_text()


def test_environment_yml_installs_the_course_library():
    assert re.search(r"^\s+- -e \.$", (ROOT / "environment.yml").read_text(), re.M)


def test_ci_runs_exactly_the_readme_test_command():
    commands = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert commands[-1] == "make test"
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme


def test_required_packages_are_declared():
    declared = set(_pyproject_requirements())
    assert {"torch", "torchvision", "matplotlib", "jupyterlab", "ipywidgets", "nbval", "numpy"} <= declared


def test_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if p.name not in readme]
    assert not missing, f"README does not mention {missing}"


def test_make_does_not_reinstall_an_up_to_date_environment():
    # `make -q` exits 0 only when the target is up to date, i.e. nothing would be rebuilt.
    if not (ROOT / ".venv/.installed-stamp").exists():
        import pytest

        pytest.skip("environment was not created by make")
    assert subprocess.run(["make", "-q", ".venv/.installed-stamp"], cwd=ROOT).returncode == 0


def test_make_lab_opens_the_start_page():
    dry_run = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "jupyter lab" in dry_run and "notebooks/00_start_here.ipynb" in dry_run
    assert (ROOT / "notebooks/00_start_here.ipynb").exists()


def test_make_test_portable_computes_like_an_avx2_cpu_without_bf16():
    # `make test-portable` must really cap the kernels: read the settings the way make passes them
    # and ask torch and unetlib what they then do.
    dry_run = subprocess.run(["make", "-n", "test-portable"], cwd=ROOT, capture_output=True, text=True, check=True)
    pytest_line = next(line for line in dry_run.stdout.splitlines() if "-m pytest" in line)
    settings = dict(item.split("=", 1) for item in pytest_line.split() if re.fullmatch(r"[A-Z][A-Z0-9_]*=\S+", item))
    assert settings.keys() >= {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "UNETLIB_CPU_BF16"}
    test_line = next(line for line in subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True,
                                                     text=True, check=True).stdout.splitlines() if "-m pytest" in line)
    assert pytest_line.endswith(test_line), "test-portable must run exactly the suite that `make test` runs"
    probe = ("import torch, unetlib.utils as u; "
             "print(torch.backends.cpu.get_cpu_capability(), u.cpu_supports_bf16())")
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **settings},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] in ("AVX2", "DEFAULT", "NO AVX"), f"kernels not capped: {out[0]}"
    assert out[1] == "False", "bf16 autocast must be off under test-portable"
