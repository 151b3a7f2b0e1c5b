import os
import sys
from pathlib import Path

import pytest
import torch

import datamodules  # noqa: F401  (registers the resolvers conf/ uses)
import netcompress.config  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py, tests/wandb_records.py


@pytest.fixture(scope="session", autouse=True)
def hermetic_environment(tmp_path_factory):
    """One teacher cache per test session, shared by the pytest-xdist workers and the subprocesses (the digits
    teacher is trained once, on first use, under a file lock), no wandb key (so the offline fallback is what runs),
    no stray GPU."""
    session = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):   # workers' folders are popen-gw<N> inside the session's folder
        session = session.parent
    os.environ["COMPRESSION_CACHE"] = str(session / "cache")
    os.environ.pop("WANDB_API_KEY", None)
    os.environ["WANDB_SILENT"] = "true"
    os.environ["NETRC"] = str(tmp_path_factory.mktemp("home") / ".netrc")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    # Tiny models gain nothing from intra-op threads, and two spinning threads per process collapse when another
    # process (a DDP rank, a second job) shares the cores: one thread each, here and in subprocesses.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    yield
