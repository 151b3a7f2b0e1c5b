"""Fault tolerance, measured: a run SIGKILLed mid-training (a real process, killed from outside) and resumed from
its last.ckpt ends with exactly the metrics and weights of a run that was never interrupted (CPU,
trainer.deterministic=true, fixed seed), for every method; a search killed mid-generation resumes to the same top
encodings; a requeued job (same run folder) resumes by itself and its CSV log keeps the epochs before the kill; a
truncated checkpoint is a clear error."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import FAST, ROOT, run_cli, run_config, run_folders

from netcompress.reporting.loggers import logged_values

DETERMINISTIC = [*FAST, "trainer.deterministic=true", "seed=7", "trainer.max_epochs=3", "logger=csv"]
METHODS = {
    "supervised": ["method=supervised", "model=lenet5", "data.batch_size=16"],
    "cckd": ["method=cckd", "data.batch_size=32"],
    "dafl": ["experiment=dafl_digits", "datamodule.iterations_per_epoch=12"],
    "pruningnet": ["experiment=metapruning_digits", "model=pruningnet_mbv1_small", "+trainer.limit_train_batches=8"],
}


def start(args: list[str], workdir: Path) -> subprocess.Popen:
    """``python run.py <args>`` in ``workdir``, in the background (output in workdir/output.txt)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "output.txt", "w")
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=workdir, env=dict(os.environ),
                            stdout=log, stderr=subprocess.STDOUT)


def sigkill_when(proc: subprocess.Popen, ready, workdir: Path, delay: float = 0.0, timeout: float = 600) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` turns true; fails if it ended by itself first."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before it could be killed:\n"
                                 f"{(workdir / 'output.txt').read_text()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run to reach the point where it is killed")
        time.sleep(0.02)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before the kill landed"


def first_checkpoint(workdir: Path):
    return lambda: any(workdir.glob("logs/*/runs/*/checkpoints/last.ckpt"))


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def assert_same_outcome(resumed: Path, uninterrupted: Path) -> None:
    a, b = metrics_of(resumed), metrics_of(uninterrupted)
    compared = sorted(k for k in b if k.startswith(("test/", "val/")))
    assert compared and {k: a[k] for k in compared} == {k: b[k] for k in compared}
    sa, sb = final_state(resumed), final_state(uninterrupted)
    assert sa["epoch"] == sb["epoch"] and sa["global_step"] == sb["global_step"]
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    for key, value in sb["state_dict"].items():
        assert torch.equal(sa["state_dict"][key], value), key


@pytest.mark.e2e
@pytest.mark.parametrize("method", [
    "supervised",
    pytest.param("cckd", marks=pytest.mark.slow),
    pytest.param("dafl", marks=pytest.mark.slow),
    pytest.param("pruningnet", marks=pytest.mark.slow),
])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, method):
    args = [*METHODS[method], *DETERMINISTIC]
    uninterrupted = run_cli(args, tmp_path / "uninterrupted").run_dir

    killed_dir = tmp_path / "killed"
    sigkill_when(start(args, killed_dir), first_checkpoint(killed_dir), killed_dir, delay=0.2)
    (killed,) = run_folders(killed_dir)
    last = killed / "checkpoints" / "last.ckpt"
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    print(f"[fault] {method}: SIGKILLed with last.ckpt at epoch {killed_at}; resumed to the same result")
    assert killed_at < 2 and not (killed / "metrics.json").exists()  # killed during training, nothing finished
    assert not list(killed.rglob("*.tmp"))

    resumed = run_cli([*args, f"ckpt_path={last}"], tmp_path / "resumed")
    assert_same_outcome(resumed.run_dir, uninterrupted)
    out = resumed.stdout + resumed.stderr
    assert "Restoring states from the checkpoint" in out or "Restored all states" in out

    if method == "supervised":
        # a requeued job reruns in its own run folder: last.ckpt there is picked up without ckpt_path
        try:
            run_config(args, killed)
        finally:
            torch.use_deterministic_algorithms(False)  # trainer.deterministic=true set it for this process
        assert_same_outcome(killed, uninterrupted)
        # its CSV log keeps the epochs before the kill: the same val/acc curve as the uninterrupted run's
        curve = [logged_values(d / "csv" / "metrics.csv", "val/acc") for d in (killed, uninterrupted)]
        assert len(curve[1]) == 3 and curve[0] == curve[1]


@pytest.mark.e2e
@pytest.mark.slow
def test_sigkilled_search_resumes_to_the_same_top_encodings(tmp_path):
    train = run_cli([*METHODS["pruningnet"], *FAST, "trainer.max_epochs=1", "test=false", "logger=none"],
                    tmp_path / "train").run_dir
    search = ["experiment=metapruning_digits_search", "model=pruningnet_mbv1_small", *FAST,
              f"search.pruningnet_ckpt={train / 'checkpoints' / 'last.ckpt'}", "search.generations=6",
              "search.population=8", "search.parents=3", "search.mutations=4", "search.crossovers=4",
              "search.calib_batches=2", "search.calib_batch_size=64"]
    uninterrupted = run_cli([*search, "logger=wandb"], tmp_path / "uninterrupted").run_dir

    state = tmp_path / "state.json"
    killed_dir = tmp_path / "killed"

    def past_first_generation():
        return state.is_file() and json.loads(state.read_text())["generation"] >= 2

    sigkill_when(start([*search, f"search.state={state}", "logger=none"], killed_dir), past_first_generation,
                 killed_dir)
    killed_at = json.loads(state.read_text())["generation"]
    print(f"[fault] search: SIGKILLed after generation {killed_at} of 6")
    assert killed_at < 6
    resumed = run_cli([*search, f"search.state={state}", "logger=none"], tmp_path / "resumed")
    assert f"resuming from {state}" in resumed.stdout + resumed.stderr
    top = yaml.safe_load((resumed.run_dir / "top_encodings.yaml").read_text())
    expected = yaml.safe_load((uninterrupted / "top_encodings.yaml").read_text())
    assert top["top"] == expected["top"] and top["uniform"] == expected["uniform"]

    # the search's scatter plot reached wandb as an image (offline run read back)
    from wandb_records import image_keys, offline_runs

    (run_file,) = offline_runs(uninterrupted)
    assert "search/flops_vs_acc" in image_keys(run_file)


@pytest.mark.e2e
def test_truncated_checkpoint_is_a_clear_error_naming_the_file(tmp_path):
    run = run_cli(["method=supervised", "model=lenet5", "trainer.max_epochs=1", "logger=none", *FAST],
                  tmp_path / "run").run_dir
    data = (run / "checkpoints" / "last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    proc = run_cli(["method=supervised", "model=lenet5", f"ckpt_path={truncated}"], tmp_path / "resume", check=False)
    assert proc.returncode == 1
    assert f"error: ckpt_path={truncated}: not a readable PyTorch checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.run_dir is None   # the run never started: its folder is removed
