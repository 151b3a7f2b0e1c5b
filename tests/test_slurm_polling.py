"""submitit's job polling under hydra/launcher=slurm (netcompress/slurm.py), without a cluster: a fake ``sacct`` that
answers as a cluster without accounting storage does switches the polling to ``squeue``, whose lines are read as
sacct's; a working sacct is kept."""
import os
import stat

import pytest

pytest.importorskip("submitit", reason="the sweep extra is not installed: pip install -e '.[sweep]'")
from netcompress.slurm import PollWithSqueueWithoutAccounting, QueueWatcher  # noqa: E402


def fake_sacct(folder, stderr: str, status: int, stdout: str = "") -> None:
    path = folder / "sacct"
    path.write_text(f"#!/bin/sh\nprintf '%s' '{stdout}'\necho '{stderr}' >&2\nexit {status}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_without_accounting_the_states_come_from_squeue(tmp_path, monkeypatch):
    fake_sacct(tmp_path, "Slurm accounting storage is disabled", 1)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    watcher = QueueWatcher()
    for job in ("12_0", "12_1", "13"):
        watcher.register_job(job)
    assert watcher._make_command() == ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", "--jobs=12,13"]
    assert watcher.from_squeue is True
    info = watcher.read_info("12_0|COMPLETED|n1\n12_1|RUNNING|n2\n13|PENDING|\n")
    assert {k: v["State"] for k, v in info.items()} == {"12_0": "COMPLETED", "12_1": "RUNNING", "13": "PENDING"}
    assert info["12_1"]["NodeList"] == "n2"


def test_a_working_sacct_is_kept(tmp_path, monkeypatch):
    fake_sacct(tmp_path, "", 0, "JobID|State|NodeList\\n7|RUNNING|n1\\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    watcher = QueueWatcher()
    watcher.register_job("7")
    assert watcher._make_command()[:2] == ["sacct", "-o"] and watcher.from_squeue is False
    assert watcher.read_info("JobID|State|NodeList\n7|RUNNING|n1\n")["7"]["State"] == "RUNNING"


def test_the_launcher_config_installs_the_watcher_before_a_sweep(tmp_path):
    from helpers import compose_config
    from submitit.slurm.slurm import SlurmJob

    cfg = compose_config(["hydra/launcher=slurm"], tmp_path)
    assert cfg.hydra.callbacks.slurm_polling._target_ == "netcompress.slurm.PollWithSqueueWithoutAccounting"
    original = SlurmJob.watcher
    try:
        PollWithSqueueWithoutAccounting().on_multirun_start(cfg)
        assert isinstance(SlurmJob.watcher, QueueWatcher)
    finally:
        SlurmJob.watcher = original
