"""The cluster path against a real SLURM (the local one of ``bash scripts/local_slurm.sh start``: slurmctld, munged and
two slurmd node entries on this host; CI starts it): a ``-m`` sweep through ``hydra/launcher=slurm``, a job requeued
mid-fit (``scontrol requeue``) and one that reaches its time limit resume in their run folder to the result of an
uninterrupted job, a requeued search resumes its population, and DDP across the two nodes (1 process each) of KD,
a PruningNet and fast_datafree keeps the ranks' weights equal after every epoch; KD ends where one process with the
same global batch ends (the other two compute something else by design: see the test).

Jobs run with one CPU and one thread each (``cpus_per_task=1``, ``OMP_NUM_THREADS=1`` from the environment sbatch
exports), as the runs they are compared with. SLURM holds a requeued job for two minutes before it may start again;
the tests release it at once (``scontrol update StartTime=now``), as an administrator can."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import FAST, ROOT, run_cli, run_folders

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the sweep extra is not installed: "
                    "pip install -e '.[sweep]'")

# one job = one process on one CPU of a node; gpus_per_node follows trainer.devices unless set to null
SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20"]
DIGITS = ["method=supervised", "model=lenet5", "data.batch_size=16", "trainer.deterministic=true", "seed=7",
          "trainer.max_epochs=6", "logger=csv", *FAST]


def slow_epochs(seconds: float) -> list[str]:
    """tests/slow_epochs.py: a sleep before every epoch (wall time for a signal to land in, no computing)."""
    return ["+callbacks.slow_epochs._target_=slow_epochs.SlowEpochs", f"+callbacks.slow_epochs.seconds={seconds}"]


def up_nodes() -> list[str]:
    if shutil.which("sinfo") is None:
        pytest.skip("sinfo is not on PATH: no SLURM here (bash scripts/local_slurm.sh start installs and starts a "
                    "local cluster)")
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("sinfo did not answer in 30 s: the SLURM controller is not up (bash scripts/local_slurm.sh start)")
    nodes = [line.split()[0] for line in out.stdout.splitlines()
             if line.split()[1].rstrip("*~#") in ("idle", "mix", "alloc")]
    if not nodes:
        pytest.skip(f"no SLURM node is up (sinfo: {(out.stdout + out.stderr).strip()[:200]}): "
                    f"bash scripts/local_slurm.sh start")
    return nodes


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """The nodes that are up (skips without a cluster); the jobs import this checkout (and tests/slow_epochs.py)
    through PYTHONPATH, which sbatch passes on with the rest of the environment."""
    nodes = up_nodes()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        env.setenv("OMP_NUM_THREADS", "1")
        yield nodes


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def job_ids(sweep: Path) -> list[str]:
    """The SLURM job ids of a sweep's jobs, by job number: submitit's folders, <array id>_<index> (one job: <id>)."""
    found = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir() and re.fullmatch(r"\d+(_\d+)?", p.name)]
    arrays = [j for j in found if "_" in j]
    return sorted(arrays, key=lambda j: int(j.split("_")[1])) if arrays else found


def job_field(job: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    match = re.search(rf"\b{field}=(\S+)", out)
    return match.group(1) if match else ""


def final_state(job: str, wait_s: float = 120) -> str:
    """The job's state once it has ended: submitit reads the result before SLURM has run the job's epilog."""
    deadline = time.monotonic() + wait_s
    while (state := job_field(job, "JobState")) in ("RUNNING", "COMPLETING") and time.monotonic() < deadline:
        time.sleep(1)
    return state


def release_held(job: str, *settings: str) -> None:
    """A requeued job waits two minutes (BeginTime): let it start now (with these ``scontrol update`` settings)."""
    if job_field(job, "JobState") == "PENDING" and job_field(job, "Reason") == "BeginTime":
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now", *settings], check=True, timeout=30)


def start_sweep(args: list[str], workdir: Path) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-m", *args], cwd=workdir, env=dict(os.environ),
                            stdout=open(workdir / "output.txt", "w"), stderr=subprocess.STDOUT)


def wait_for(ready, proc: subprocess.Popen, workdir: Path, timeout: float = 300):
    """Polls ``ready()`` until it returns something true; fails when the sweep ends or the time is up first."""
    deadline = time.time() + timeout
    while not (found := ready()):
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended first (status {proc.returncode}):\n"
                                 f"{(workdir / 'output.txt').read_text()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"timed out:\n{(workdir / 'output.txt').read_text()[-3000:]}")
        time.sleep(0.5)
    return found


def finish(proc: subprocess.Popen, workdir: Path, job: str, *settings: str, timeout: float = 600) -> Path:
    """Waits for the sweep to end (releasing the job each time SLURM holds it after a requeue); its one run folder."""
    deadline = time.time() + timeout
    while proc.poll() is None:
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"timed out:\n{(workdir / 'output.txt').read_text()[-3000:]}")
        release_held(job, *settings)
        time.sleep(1)
    output = (workdir / "output.txt").read_text()
    assert proc.returncode == 0, output[-3000:]
    assert "WARNING" not in output and "sacct error" not in output, output   # polling is quiet
    (run_dir,) = run_folders(workdir)   # one run folder, whatever happened to the job
    return run_dir


def last_checkpoint_of(workdir: Path):
    return lambda: next(iter(workdir.glob("logs/*/multiruns/*/0/checkpoints/last.ckpt")), None)


def assert_same_outcome(resumed: Path, uninterrupted: Path) -> None:
    a, b = metrics_of(resumed), metrics_of(uninterrupted)
    compared = sorted(k for k in b if k.startswith(("test/", "val/")))
    assert compared and {k: a[k] for k in compared} == {k: b[k] for k in compared}
    sa, sb = weights(resumed), weights(uninterrupted)
    assert (sa["epoch"], sa["global_step"]) == (sb["epoch"], sb["global_step"])
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    for key, value in sb["state_dict"].items():
        assert torch.equal(sa["state_dict"][key], value), key


def test_sweep_runs_every_job_in_its_own_folder(tmp_path):
    proc = run_cli([*SLURM, "seed=1,2", "debug=tiny"], tmp_path, multirun=True)
    out = proc.stdout + proc.stderr
    assert [j.name for j in proc.run_dirs] == ["0", "1"] and len({j.parent for j in proc.run_dirs}) == 1
    for seed, job in zip((1, 2), proc.run_dirs, strict=True):
        record = json.loads((job / "metrics.json").read_text())
        assert record["command"] == f"python run.py seed={seed} debug=tiny"   # its own values, as typed
        assert 0 <= record["metrics"]["test/acc"] <= 1 and (job / "checkpoints" / "last.ckpt").is_file()
    jobs = job_ids(proc.run_dirs[0].parent)
    assert len(jobs) == 2 and all(final_state(j) == "COMPLETED" for j in jobs)   # SLURM ran both
    assert "WARNING" not in out and "sacct error" not in out, out   # submitit's polling is quiet
    assert "job states from squeue" in out   # and says why (this cluster keeps no accounting)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The digits run as one uninterrupted SLURM job (the requeue tests compare with it)."""
    return run_cli([*SLURM, *DIGITS], tmp_path_factory.mktemp("uninterrupted"), multirun=True).run_dir


def test_job_requeued_mid_fit_resumes_in_its_run_folder(tmp_path, uninterrupted):
    proc = start_sweep([*SLURM, *DIGITS, *slow_epochs(3)], tmp_path)
    last = wait_for(last_checkpoint_of(tmp_path), proc, tmp_path)
    (job,) = job_ids(last.parents[2])
    requeued_at = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert not (last.parents[1] / "metrics.json").exists()   # mid-fit
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    run_dir = finish(proc, tmp_path, job)
    assert job_field(job, "Restarts") == "1" and requeued_at < 5
    assert_same_outcome(run_dir, uninterrupted)
    log = (run_dir / "run.log").read_text()
    assert "Received SIGTERM" in log   # the preemption, then the same run folder picked up again
    assert f"[resume] {run_dir / 'checkpoints' / 'last.ckpt'} exists" in log and "Restored all states" in log
    print(f"[slurm] requeued with last.ckpt at epoch {requeued_at}; resumed to the uninterrupted result")


def test_job_at_its_time_limit_is_requeued_and_resumes(tmp_path, uninterrupted):
    # USR2 signal_delay_s before the 3-minute limit, and SLURM may send it up to 60 s earlier: 60 to 120 s into the
    # job (after its first epoch), which sleeps 30 s before every epoch after the first in its first run (150 s). The
    # requeued run gets 10 minutes: SLURM can signal a requeued job at once, before submitit listens, killing it.
    limit = ["hydra.launcher.timeout_min=3", "hydra.launcher.signal_delay_s=60"]
    proc = start_sweep([*SLURM, *limit, *DIGITS, *slow_epochs(30), "+callbacks.slow_epochs.first_attempt_only=true"],
                       tmp_path)
    sweep = wait_for(lambda: next(iter(tmp_path.glob("logs/*/multiruns/*/.submitit")), None), proc, tmp_path).parent
    (job,) = wait_for(lambda: job_ids(sweep), proc, tmp_path)
    run_dir = finish(proc, tmp_path, job, "TimeLimit=10")
    restarts = int(job_field(job, "Restarts"))
    assert restarts == 1
    assert_same_outcome(run_dir, uninterrupted)
    log = (run_dir / "run.log").read_text()
    assert log.count("[resume]") == 1 and "Restored all states" in log
    submitit_log = "".join(p.read_text() for p in (sweep / ".submitit" / job).glob("*_log.*"))
    assert "Caught signal SIGUSR2" in submitit_log and "this job is timed-out" in submitit_log
    assert "Requeued job" in submitit_log
    print(f"[slurm] time limit: requeued {restarts} time(s); resumed to the uninterrupted result")


def test_search_requeued_mid_way_resumes_its_population(tmp_path):
    train = run_cli(["experiment=metapruning_digits", "model=pruningnet_mbv1_small", "+trainer.limit_train_batches=8",
                     "trainer.max_epochs=1", "test=false", "logger=none", *FAST], tmp_path / "train").run_dir
    generations = 24
    search = ["experiment=metapruning_digits_search", "model=pruningnet_mbv1_small", *FAST, "logger=none",
              f"search.pruningnet_ckpt={train / 'checkpoints' / 'last.ckpt'}", f"search.generations={generations}",
              "search.population=8", "search.parents=3", "search.mutations=4", "search.crossovers=4",
              "search.calib_batches=2", "search.calib_batch_size=64"]
    workdir = tmp_path / "search"
    proc = start_sweep([*SLURM, *search], workdir)

    def state_past_generation_2():
        state = next(iter(workdir.glob("logs/*/multiruns/*/0/search_state.json")), None)
        return state if state and json.loads(state.read_text())["generation"] >= 2 else None

    state = wait_for(state_past_generation_2, proc, workdir)
    (job,) = job_ids(state.parents[1])
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    requeued_at = json.loads(state.read_text())["generation"]
    run_dir = finish(proc, workdir, job)
    assert job_field(job, "Restarts") == "1"
    log = (run_dir / "run.log").read_text()
    first, resumed = log.split(f"[search] resuming from {run_dir / 'search_state.json'}")
    done_first = [int(g) for g in re.findall(r"\[search\] generation (\d+)/", first)]
    done_after = [int(g) for g in re.findall(r"\[search\] generation (\d+)/", resumed)]
    assert done_first and done_first == list(range(1, len(done_first) + 1)) and len(done_first) < generations
    assert done_after == list(range(len(done_first) + 1, generations + 1)), (done_first, done_after)   # continues
    assert requeued_at <= len(done_first) and json.loads((run_dir / "search_state.json").read_text())[
        "generation"] == generations
    top = yaml.safe_load((run_dir / "top_encodings.yaml").read_text())
    assert top["top"] and all(t["flops"] <= top["budget"]["max_flops"] for t in top["top"])
    print(f"[slurm] search requeued after generation {len(done_first)} of {generations}; resumed, not restarted")


# -- DDP across the two node entries: 2 nodes x 1 process -------------------------------------------------------

TWO_NODES = ["trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
             "+callbacks.ranks_in_sync._target_=netcompress.callbacks.RanksInSync"]
DDP_METHODS = {
    "kd": ["method=kd", "data.global_batch_size=32", "+trainer.limit_train_batches=6"],
    "pruningnet": ["experiment=metapruning_digits", "model=pruningnet_mbv1_small", "data.global_batch_size=32",
                   "+trainer.limit_train_batches=6"],
    "fast_datafree": ["experiment=fast_datafree_digits", "module.global_batch_size=16", "generator.width=8",
                      "datamodule.iterations_per_epoch=2", "module.generator_steps=1", "module.student_steps=2",
                      "module.warmup_epochs=0"],
}
# the PruningNet trains the BatchNorms of the step's encoding only: DDP must be told that parameters go unused
TWO_NODES_ONLY = {"pruningnet": ["trainer.strategy=ddp_find_unused_parameters_true"]}
EPOCHS = 2


def rank_fingerprints(log: str) -> list[tuple[str, str]]:
    """(epoch, what follows) of every ``[ranks]`` line RanksInSync printed."""
    return re.findall(r"\[ranks\] weight fingerprints after epoch (\d+): (.*)", log)


@pytest.mark.parametrize("method", list(DDP_METHODS))
def test_ddp_across_two_nodes_keeps_ranks_equal_and_matches_one_process(tmp_path, method, cluster):
    if len(cluster) < 2:
        pytest.skip(f"DDP across nodes needs two SLURM nodes up, found {cluster}")
    args = [*DDP_METHODS[method], f"trainer.max_epochs={EPOCHS}", "++trainer.limit_val_batches=1", "logger=csv",
            *FAST]
    one = run_cli(args, tmp_path / "one", timeout=1200).run_dir   # trains the teacher (once) that the jobs read
    proc = run_cli([*SLURM, *TWO_NODES, *TWO_NODES_ONLY.get(method, []), *args], tmp_path / "two", timeout=1200,
                   multirun=True)
    (run_dir,) = proc.run_dirs
    (job,) = job_ids(run_dir.parent)
    assert job_field(job, "NodeList") == "n[1-2]" and job_field(job, "NumNodes") == "2"
    log = (run_dir / "run.log").read_text()
    epochs = rank_fingerprints(log)
    assert [e for e, _ in epochs] == [str(e) for e in range(EPOCHS)], log[-3000:]
    for _, nets in epochs:   # each network's fingerprint (sum/sum of squares) is the same on both ranks
        for net in nets.split("; "):
            name, per_rank = net.split(" ", 1)
            first, second = per_rank.split(", ")
            assert first == second, f"{name}: {per_rank}"
    assert epochs[0][1] != epochs[1][1]   # and the weights moved in the second epoch

    two_state, one_state = weights(run_dir)["state_dict"], weights(one)["state_dict"]
    trained = [k for k in one_state if k.startswith(("net.", "generator.")) and one_state[k].is_floating_point()]
    assert trained and two_state.keys() == one_state.keys()
    gap = max((two_state[k] - one_state[k]).abs().max().item() for k in trained)
    print(f"[slurm] {method} over 2 nodes: ranks equal after every epoch; largest weight difference to one process "
          f"{gap:.3g}; test/acc {metrics_of(run_dir)['test/acc']:.4f} (one process {metrics_of(one)['test/acc']:.4f})")
    if method != "kd":
        # PruningNet: each process normalizes with its own batch's BatchNorm statistics (16 images, one process: 32;
        # torch's SyncBatchNorm is GPU-only). fast_datafree: each rank synthesizes its own images from its own noise
        # and adapts its own copy of the generator on them. Neither is the computation of one process, so only the
        # ranks' agreement is required (above).
        return
    for k in trained:
        torch.testing.assert_close(two_state[k], one_state[k], rtol=1e-4, atol=1e-5, msg=k)
    assert metrics_of(run_dir)["test/acc"] == pytest.approx(metrics_of(one)["test/acc"], abs=1 / 360)
