import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py, tests/wandb_records.py


@pytest.fixture(scope="session", autouse=True)
def hermetic_environment(tmp_path_factory):
    """One teacher cache per test session (the digits teacher is trained once, on first use, and shared with
    subprocesses), no wandb key (so the offline fallback is what runs), no stray GPU."""
    os.environ["COMPRESSION_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("WANDB_API_KEY", None)
    os.environ["WANDB_SILENT"] = "true"
    os.environ["NETRC"] = str(tmp_path_factory.mktemp("home") / ".netrc")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    # Tiny models gain nothing from intra-op threads, and two spinning threads per process collapse when another
    # process (a DDP rank, a second job) shares the cores: one thread each, here and in subprocesses.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    yield
