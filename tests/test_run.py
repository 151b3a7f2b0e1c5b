"""The foundation end to end: teacher cache, resume, loggers, DDP on CPU, multirun, clear errors."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from data_files import write_mnist
from helpers import FAST, ROOT, compose_config, run_cli, run_config
from hydra.utils import instantiate
from wandb_records import history, offline_runs, run_info

from datamodules.digits import DigitsDataModule
from lightning_modules.teacher import build_teacher
from netcompress.core import ConfigError
from netcompress.networks.lenet import LeNet5


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.e2e
def test_digits_teacher_is_trained_once_cached_and_accurate(tmp_path):
    cfg = compose_config(["teacher=digits_lenet5"], tmp_path)
    teacher = instantiate(cfg.teacher)
    cached = Path(cfg.teacher.train_if_missing.path)
    assert cached.is_file()
    dm = DigitsDataModule(holdout=180)
    dm.setup()
    x, y = dm.test_set.tensors
    with torch.no_grad():
        accuracy = (teacher(x).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.95
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    written = cached.stat().st_mtime_ns
    instantiate(cfg.teacher)  # second time: loaded from the cache, not trained again
    assert cached.stat().st_mtime_ns == written


def test_cached_teacher_does_not_depend_on_the_runs_seed(tmp_path):
    """The digits teacher is trained under its own seed: runs with other seeds build the same file."""
    from datamodules.digits import DigitsDataModule

    weights = []
    for run_seed in (1, 2):
        torch.manual_seed(run_seed)   # the run's seed, which Hydra's instantiate builds the network under
        path = tmp_path / f"teacher{run_seed}.pt"
        build_teacher(LeNet5(), train_if_missing={"path": str(path), "max_epochs": 1, "lr": 1e-3, "seed": 0},
                      datamodule=DigitsDataModule(batch_size=64, holdout=180, num_workers=0))
        weights.append(torch.load(path, weights_only=True))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_mismatched_teacher_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "seven_classes.pt"
    torch.save(LeNet5(num_classes=7).state_dict(), path)
    with pytest.raises(ConfigError) as error:
        build_teacher(LeNet5(num_classes=10), checkpoint=str(path))
    assert "teacher.checkpoint=" in str(error.value) and "number of classes" in str(error.value)
    with pytest.raises(ConfigError, match="no such file"):
        build_teacher(LeNet5(), checkpoint=str(tmp_path / "missing.ckpt"))


@pytest.mark.e2e
def test_resume_from_last_checkpoint_continues_at_next_epoch(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run_config(["method=supervised", "model=lenet5", "trainer.max_epochs=2", *FAST], first)
    last = first / "checkpoints" / "last.ckpt"
    assert last.is_file() and not list(first.rglob("*.tmp"))
    assert sorted({r["epoch"] for r in csv_rows(first) if r.get("val/acc")}) == ["0", "1"]
    metrics = run_config(["method=supervised", "model=lenet5", "trainer.max_epochs=3", f"ckpt_path={last}", *FAST],
                         second)
    assert sorted({r["epoch"] for r in csv_rows(second) if r.get("val/acc")}) == ["2"]
    assert metrics["test/acc"] > 0.5
    assert torch.load(second / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 2  # written every epoch
    # a Lightning checkpoint of a supervised run is a valid teacher checkpoint
    teacher = build_teacher(LeNet5(), checkpoint=str(last))
    state = torch.load(last, weights_only=False)["state_dict"]
    assert torch.equal(teacher.net.head[2].weight, state["net.head.2.weight"])


@pytest.mark.e2e
def test_logs_params_and_flops(tmp_path):
    run_config(["method=supervised", "model=lenet5", "trainer.max_epochs=1", *FAST], tmp_path)
    rows = csv_rows(tmp_path)
    assert any(r.get("model/flops") == "416520" for r in rows)
    assert any(r.get("model/params") == "61706" for r in rows)
    assert (tmp_path / ".." / tmp_path.name / "csv" / "hparams.yaml").is_file()


@pytest.mark.e2e
@pytest.mark.slow
def test_multirun_with_wandb_offline_one_run_per_job(tmp_path):
    proc = run_cli(["method=supervised", "model=lenet5", "logger=wandb", "optimizer.lr=0.001,0.003",
                    "trainer.max_epochs=1", *FAST], tmp_path, multirun=True)
    assert [job.name for job in proc.run_dirs] == ["0", "1"] and proc.run_dirs[0].parent == proc.run_dirs[1].parent
    runs = offline_runs(tmp_path)
    assert len(runs) == 2 and {r.parents[2].name for r in runs} == {"0", "1"}
    sweep = proc.run_dirs[0].parent.name
    for run_file in runs:
        job = run_file.parents[2].name
        assert run_info(run_file) == {"name": f"supervised/{sweep}/{job}", "group": f"supervised/{sweep}"}
        rows = history(run_file)
        logged = {k for row in rows for k in row}
        assert {"val/acc", "train/loss_epoch", "model/flops", "test/acc"} <= logged
        assert max(row["val/acc"] for row in rows if "val/acc" in row) > 0.3
    assert "wandb sync" in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_ddp_on_two_cpu_processes_logs_once(tmp_path):
    proc = run_cli(["method=supervised", "model=lenet5", "trainer=ddp_cpu", "trainer.max_epochs=2",
                    "callbacks.progress_bar=null", "data.batch_size=32"], tmp_path)
    out = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out
    assert out.count("[done]") == 1
    assert len(proc.run_dirs) == 1   # the second process writes into the first one's run folder
    rows = [r for r in csv_rows(proc.run_dir) if r.get("val/acc")]
    assert [r["epoch"] for r in rows] == ["0", "1"]  # one row per epoch: rank 0 logs, metrics are synced
    assert float(rows[-1]["val/acc"]) > 0.5
    assert (proc.run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.e2e
@pytest.mark.slow
def test_missing_dataset_is_one_clear_paragraph(tmp_path):
    proc = run_cli(["method=supervised", "data=cifar10", "model=resnet20", "data.root=/nonexistent"], tmp_path,
                   check=False)
    assert proc.returncode == 1
    assert "data.root=/nonexistent" in proc.stderr and "data.download=true" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_unknown_option_names_the_group_and_the_choices(tmp_path):
    proc = run_cli(["method=supervised", "model=lenet5", "data=nosuch"], tmp_path, check=False)
    assert proc.returncode != 0
    assert "Could not find 'data/nosuch'" in proc.stderr and "digits" in proc.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_two_runs_started_together_get_their_own_folders(tmp_path):
    cmd = [sys.executable, str(ROOT / "run.py"), "method=supervised", "model=lenet5", "train=false", "test=false",
           "logger=none", "callbacks=none"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = list((tmp_path / "logs" / "supervised" / "runs").iterdir())
    assert len(runs) == 2
    assert all((r / ".hydra" / "config.yaml").is_file() for r in runs)  # the composed config is saved


@pytest.mark.parametrize("method", ["supervised", "cckd", "kd", "dafl", "metapruning"])
def test_checkpoint_hyperparameters_hold_only_plain_values(tmp_path, method, recwarn):
    """Lightning resumes with torch.load(weights_only=True): no networks, partials or DictConfigs in hparams."""
    cfg = compose_config([f"method={method}"], tmp_path)
    module = instantiate(cfg.module, _convert_="object")

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (bool, int, float, str))

    assert plain(dict(module.hparams)), dict(module.hparams)
    assert not [w for w in recwarn if "nn.Module" in str(w.message)]


@pytest.mark.e2e
def test_multirun_as_typed_puts_its_jobs_in_one_sweep_folder(tmp_path):
    """`python run.py -m method=cckd loss.beta=10,100 trainer.max_epochs=1`, no hydra.* overrides."""
    proc = run_cli(["-m", "method=cckd", "loss.beta=10,100", "trainer.max_epochs=1", *FAST], tmp_path)
    assert (proc.stdout + proc.stderr).count("[done]") == 2
    assert [job.name for job in proc.run_dirs] == ["0", "1"]
    sweep = proc.run_dirs[0].parent
    assert sweep == proc.run_dirs[1].parent and sweep.parent == tmp_path / "logs" / "cckd" / "multiruns"
    commands = [json.loads((job / "metrics.json").read_text())["command"] for job in proc.run_dirs]
    assert [c.split()[:2] for c in commands] == [["python", "run.py"]] * 2   # each job's own command, runnable
    assert ["loss.beta=10" in commands[0].split(), "loss.beta=100" in commands[1].split()] == [True, True]
    assert [yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["loss"]["beta"] for job in
            proc.run_dirs] == [10, 100]


@pytest.mark.e2e
@pytest.mark.slow
def test_two_sweeps_started_together_get_their_own_sweep_folders(tmp_path):
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", "method=supervised", "seed=1,2", "train=false",
           "test=false", "logger=none", "callbacks=none"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    sweeps = list((tmp_path / "logs" / "supervised" / "multiruns").iterdir())
    assert len(sweeps) == 2 and all(sorted(p.name for p in s.iterdir() if p.is_dir()) == ["0", "1"]
                                    for s in sweeps)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_bad_data_root_is_named_before_an_unset_teacher_checkpoint(tmp_path):
    """`method=dafl data=mnist data.root=/nonexistent` names data.root; with the data there, the unset
    teacher checkpoint (??? in conf/teacher/for_mnist.yaml) is named."""
    proc = run_cli(["method=dafl", "data=mnist", "data.root=/nonexistent"], tmp_path, check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: data.root=/nonexistent")
    root = write_mnist(tmp_path / "mnist")
    proc = run_cli(["method=dafl", "data=mnist", f"data.root={root}"], tmp_path, check=False)
    assert proc.returncode == 1 and "error: teacher.checkpoint must be set" in proc.stderr
    assert "Traceback" not in proc.stderr
