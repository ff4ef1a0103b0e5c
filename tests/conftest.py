"""Shared test set-up.

pytest-xdist runs two workers on CI's two cores. Each worker, and every notebook kernel or
subprocess it starts, gets one torch thread: with two threads per worker the cores are
oversubscribed and training runs several times slower, not faster.
"""
import os

import torch

# Lessons check their training claims with unetlib.claims.expect: a notice for a learner, a hard
# failure here. The kernels nbval and the exercise tests start inherit this environment.
os.environ["UNETLIB_STRICT_CLAIMS"] = "1"
# Lessons train on their quick budget here (unetlib.budget): the suite runs every notebook on
# CI's two cores within its time limit; the stored outputs come from the full run.
os.environ["UNETLIB_BUDGET"] = "quick"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The environment variable reaches what the worker starts: the notebook kernels of nbval
    # and the CLI subprocesses, where unetlib.device.set_cpu_threads() honours it.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def _file_rank(path) -> tuple:
    # Lesson notebooks first, the later (longer-training) lessons before the earlier ones, then
    # solutions, then the library tests: with --dist loadfile each file runs on one worker, and a
    # long notebook that starts last keeps the whole suite waiting on one core.
    from pathlib import Path

    path = Path(str(path))
    if path.parent.name == "notebooks" and path.suffix == ".ipynb":
        return (0, tuple(-ord(ch) for ch in path.name))
    if path.parent.name == "solutions":
        return (1, path.name)
    return (2, str(path))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _file_rank(item.fspath))  # stable: cells keep their order
