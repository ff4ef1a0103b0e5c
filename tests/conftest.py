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

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The environment variable reaches what the worker starts: the notebook kernels of nbval
    # and the CLI subprocesses, where unetlib.device.set_cpu_threads() honours it.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
