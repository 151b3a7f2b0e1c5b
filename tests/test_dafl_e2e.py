"""DAFL end to end through run.py: the digits recipe learns without data, 2-process CPU DDP with per-rank noise,
a multirun sweep over the generator's loss weights, resume from the command line."""
import csv
import re

import pytest
import torch
from helpers import FAST, run_cli

TINY = ["generator.width=8", "module.global_batch_size=16", "datamodule.iterations_per_epoch=2", "trainer.max_epochs=1",
        "++trainer.limit_val_batches=1"]


@pytest.fixture
def one_thread(monkeypatch):
    """Two CPU cores shared by many processes: one thread per process is faster than oversubscribing them."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def quick_teacher(tmp_path_factory):
    """A LeNet-5 digits teacher trained for 2 epochs in its own file (the shared cache keeps the real one)."""
    path = tmp_path_factory.mktemp("teacher") / "lenet5_2ep.pt"
    return [f"teacher.train_if_missing.path={path}", "teacher.train_if_missing.max_epochs=2"]


def metrics_of(run_dir):
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    return {k: v for row in rows for k, v in row.items() if v != ""}


@pytest.mark.e2e
def test_digits_recipe_trains_a_data_free_student(tmp_path, one_thread):
    """The recipe, shortened to 4 of its 100 epochs (100 iterations of 64 images): far above chance (10%)."""
    proc = run_cli(["experiment=dafl_digits", "trainer.max_epochs=4", *FAST], tmp_path)
    run_dir = proc.run_dir
    acc = float(re.search(r"\[done\].*test/acc ([0-9.]+)", proc.stdout + proc.stderr).group(1))
    teacher = float(re.search(r"test/teacher_acc ([0-9.]+)", proc.stdout + proc.stderr).group(1))
    assert teacher > 0.9 and acc >= 0.6, (acc, teacher)
    logged = metrics_of(run_dir)
    for key in ("train/loss_generator_epoch", "train/loss_student_epoch", "train/loss_oh_epoch",
                "train/loss_a_epoch", "train/loss_ie_epoch", "train/diversity_epoch", "val/acc", "val/acc_best",
                "test/acc"):
        assert key in logged, key
    assert float(logged["train/diversity_epoch"]) > 0.05      # no collapse
    assert sorted(p.name for p in (run_dir / "csv" / "images").glob("train_generated_*.png")) == \
        [f"train_generated_{e:06d}.png" for e in range(4)]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert len(state["optimizer_states"]) == 2 and all(o["state"] for o in state["optimizer_states"])
    assert any(k.startswith("generator.") for k in state["state_dict"])


@pytest.mark.e2e
@pytest.mark.slow
def test_resume_from_the_command_line(tmp_path, one_thread, quick_teacher):
    first = run_cli(["experiment=dafl_digits", *quick_teacher, *TINY, *FAST], tmp_path)
    last = first.run_dir / "checkpoints" / "last.ckpt"
    proc = run_cli(["experiment=dafl_digits", *quick_teacher, *TINY, *FAST, "trainer.max_epochs=2",
                    f"ckpt_path={last}"], tmp_path)
    assert "Restoring states from the checkpoint" in proc.stdout + proc.stderr
    rows = list(csv.DictReader(open(proc.run_dir / "csv" / "metrics.csv")))
    assert {int(r["epoch"]) for r in rows if r.get("train/loss_step")} == {1}   # only the second epoch ran


@pytest.mark.e2e
@pytest.mark.slow
def test_two_process_cpu_ddp_draws_different_noise_per_rank(tmp_path, one_thread, quick_teacher):
    proc = run_cli(["experiment=dafl_digits", "trainer=ddp_cpu", "loss.global_ie=true",
                    *quick_teacher, *TINY, *FAST], tmp_path, timeout=900)
    out = proc.stdout + proc.stderr
    fingerprints = re.search(r"noise fingerprints of the first iteration per rank: (.*)", out).group(1).split(", ")
    assert len(fingerprints) == 2 and fingerprints[0] != fingerprints[1]
    assert "[done]" in out and "test/acc" in out and "unused parameters" not in out


@pytest.mark.e2e
@pytest.mark.slow
def test_multirun_sweeps_the_generator_loss_weights(tmp_path, one_thread, quick_teacher):
    proc = run_cli(["experiment=dafl_digits", *quick_teacher, *TINY, *FAST, "loss.ie=2,5",
                    "loss.a=0,0.1"], tmp_path, multirun=True, timeout=900)
    jobs = proc.run_dirs
    assert len({job.parent for job in jobs}) == 1   # one sweep folder
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        seen.add((re.search(r"loss.ie=(\S+)", overrides).group(1), re.search(r"loss.a=(\S+)", overrides).group(1)))
        assert "test/acc" in metrics_of(job)
    assert seen == {("2", "0"), ("2", "0.1"), ("5", "0"), ("5", "0.1")}


# Each recipe's result-changing values (docs/parity.md). lr_s/lr_g: student/generator learning rates.
OFFICIAL = dict(log_base=10, temperature=1.0, activation="mean", iterations=120, eps=0.8, output="batchnorm")
RECIPES = {
    "dafl_mnist": dict(OFFICIAL, latent=100, width=128, batch=512, opt_s="Adam", lr_s=0.002, lr_g=0.2,
                       weights=(1.0, 0.1, 5.0), epochs=200, milestones=None),
    "dafl_cifar10": dict(OFFICIAL, latent=1000, width=128, batch=1024, opt_s="SGD", lr_s=0.1, lr_g=0.02,
                         weights=(0.05, 0.01, 5.0), epochs=2000, milestones=[800, 1600]),
    "dafl_cifar100": dict(OFFICIAL, latent=1000, width=128, batch=1024, opt_s="SGD", lr_s=0.1, lr_g=0.02,
                          weights=(0.5, 0.1, 20.0), epochs=2000, milestones=[800, 1600]),
    "dafl_mnist_cpu": dict(OFFICIAL, latent=100, width=32, batch=32, opt_s="Adam", lr_s=0.002, lr_g=0.04,
                           weights=(1.0, 0.1, 5.0), epochs=30, milestones=[24], eps=1e-5, output="pixels",
                           iterations=480),
    "dafl_digits": dict(OFFICIAL, latent=100, width=16, batch=64, opt_s="Adam", lr_s=0.002, lr_g=0.02,
                        weights=(1.0, 0.1, 5.0), epochs=100, milestones=None, eps=1e-5, output="pixels",
                        iterations=25),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_compose_with_their_stated_values(tmp_path, name):
    from helpers import compose_config

    expected = RECIPES[name]
    cfg = compose_config([f"experiment={name}", "teacher.checkpoint=/t.ckpt"], tmp_path)
    module, generator, loss = cfg.module, cfg.generator, cfg.loss
    assert module._target_ == "lightning_modules.dafl.GeneratorThenStudentModule"
    assert (generator.latent_dim, generator.width, generator.inner_bn_eps, generator.output) == \
        (expected["latent"], expected["width"], expected["eps"], expected["output"])
    assert module.global_batch_size == expected["batch"]
    assert module.optimizer._target_ == f"torch.optim.{expected['opt_s']}" and module.optimizer.lr == expected["lr_s"]
    assert module.generator_optimizer._target_ == "torch.optim.Adam"
    assert module.generator_optimizer.lr == expected["lr_g"]
    assert loss._target_ == "netcompress.losses.dafl.DAFLLoss"
    assert (loss.oh, loss.a, loss.ie) == expected["weights"]
    assert (loss.log_base, loss.temperature, loss.activation) == \
        (expected["log_base"], expected["temperature"], expected["activation"])
    assert cfg.trainer.max_epochs == expected["epochs"]
    assert cfg.datamodule.iterations_per_epoch == expected["iterations"]
    if expected["milestones"] is None:
        assert module.scheduler is None
    else:
        if expected["opt_s"] == "SGD":
            assert module.optimizer.momentum == 0.9 and module.optimizer.weight_decay == 5e-4
        assert list(module.scheduler.milestones) == expected["milestones"] and module.scheduler.gamma == 0.1
        assert module.scheduler_interval == "epoch"
    if expected["output"] == "pixels":   # the real data's normalization constants
        assert (generator.pixel_mean, generator.pixel_std) == \
            ((0.1307, 0.3081) if cfg.data.get("dataset") == "torchvision.datasets.MNIST" else (0.3054, 0.3237))


@pytest.mark.parametrize("name, batch, optimizer, epochs, shift", [
    ("teacher_mnist_lenet5", 256, ("torch.optim.Adam", 0.001, 0.0), 9, 0),
    ("teacher_mnist_lenet5_small", 64, ("torch.optim.SGD", 0.05, 5e-4), 30, 1),
])
def test_mnist_teacher_recipes(tmp_path, name, batch, optimizer, epochs, shift):
    from helpers import compose_config

    cfg = compose_config([f"experiment={name}"], tmp_path)
    opt = cfg.module.optimizer
    assert cfg.data.global_batch_size == batch and (opt._target_, opt.lr, opt.weight_decay) == optimizer
    assert cfg.trainer.max_epochs == epochs and cfg.model._target_.endswith("LeNet5")
    assert cfg.data.random_shift == shift
