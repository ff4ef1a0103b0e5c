"""Shared test set-up.

pytest-xdist runs two workers on CI's two cores. Each worker gets one torch thread:
with two threads per worker the cores are oversubscribed and small models run several
times slower, not faster.
"""
import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
