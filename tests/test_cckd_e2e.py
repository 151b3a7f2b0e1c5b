"""CCKD end to end: the digits default learns, logs every term and the heatmap, SUR runs, DDP on 2 CPU
processes, Hydra sweeps (one run per job), clear errors."""
import csv
from pathlib import Path

import pytest
import yaml
from helpers import FAST, run_cli, run_config

from netcompress.core import find_config_error

pytestmark = pytest.mark.e2e   # every test here runs run.py or a Trainer fit

TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", *FAST]


def metrics_columns(run_dir: Path) -> set[str]:
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    return {k for row in rows for k, v in row.items() if v != ""}


def test_cckd_digits_student_learns(tmp_path):
    # The default run (python run.py = method=cckd, LeNet-5-half from the cached LeNet-5 teacher), shortened.
    metrics = run_config(["trainer.max_epochs=5", "module.heatmap_every_n_epochs=3", *FAST], tmp_path)
    assert metrics["test/acc"] >= 0.90
    assert metrics["test/teacher_acc"] >= 0.90
    logged = metrics_columns(tmp_path)
    assert {"train/loss_ce_epoch", "train/loss_kd_epoch", "train/loss_cc_epoch", "train/loss_epoch", "train/acc",
            "val/acc_top5", "val/teacher_acc", "val/teacher_acc_top5",
            "test/teacher_acc_top5"} <= logged
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    # the student is validated every epoch, the frozen teacher at the first validation only
    assert [r["epoch"] for r in rows if r.get("val/acc")] == ["0", "1", "2", "3", "4"]
    assert [r["epoch"] for r in rows if r.get("val/teacher_acc")] == ["0"]
    heatmaps = sorted((tmp_path / "csv" / "images").glob("train_correlation_*.png"))
    assert len(heatmaps) == 2  # epochs 0 and 3


def test_sur_sampler_gets_teacher_features(tmp_path):
    metrics = run_config(["sampler=sur", "data.batch_sampler.num_superclasses=4", *TINY], tmp_path)
    assert "test/acc" in metrics


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    proc = run_cli(["method=cckd", "trainer=ddp_cpu", *TINY, "logger=csv"], tmp_path, timeout=900)
    out = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 1" in out or "world_size=2" in out.lower() or "Initializing distributed" in out
    assert "test/acc" in out


@pytest.mark.slow
def test_sweep_each_job_is_its_own_run(tmp_path):
    jobs = run_cli(["method=cckd", "loss.beta=0.5,2.0", *TINY], tmp_path, multirun=True, timeout=900).run_dirs
    assert len({job.parent for job in jobs}) == 1 and jobs[0].parent.parent.name == "multiruns"
    assert [p.name for p in jobs] == ["0", "1"]
    betas = []
    for job in jobs:
        assert (job / "csv" / "metrics.csv").is_file()
        betas.append(yaml.safe_load(open(job / ".hydra" / "config.yaml"))["loss"]["beta"])
    assert betas == [0.5, 2.0]


@pytest.mark.slow
def test_missing_dataset_fails_clearly(tmp_path):
    args = ["method=cckd", "data=imagenet", "data.root=/missing", *TINY]
    proc = run_cli(args, tmp_path, check=False, timeout=300)
    assert proc.returncode == 1
    assert "data.root" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["loss.kernel=cosine"], "loss.kernel"),
    (["data.batch_size=30"], "data.batch_sampler.k"),
    (["method=supervised", "+sampler=sur"], "SUR sampler needs the teacher"),
])
def test_bad_options_raise_config_errors(tmp_path, args, message):
    with pytest.raises(Exception) as info:
        run_config([*args, *TINY], tmp_path)
    error = find_config_error(info.value)
    assert error is not None and message in str(error)
