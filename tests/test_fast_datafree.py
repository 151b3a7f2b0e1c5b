"""method=fast_datafree (lightning_modules/fast_datafree.py): the Reptile meta step, the image pool, the student's
augmentation, warm-up, a tiny fit with a BatchNorm teacher (loss.bn), 2-process CPU DDP; the recipes compose."""
import copy
import csv
import re
from functools import partial

import lightning as L
import pytest
import torch
from helpers import FAST, compose_config, run_cli
from test_bn_statistics import WEIGHTS, TinyBNNet

from datamodules.data_free import DataFreeDataModule
from datamodules.digits import DigitsDataModule
from lightning_modules.fast_datafree import MetaGeneratorModule, random_shift_and_flip
from netcompress.core import ConfigError
from netcompress.losses.dafl import DAFLLoss
from netcompress.networks.generator import DAFLGenerator
from netcompress.networks.lenet import LeNet5, lenet5_half
from netcompress.networks.teacher import FrozenTeacher


def make_module(teacher=None, meta_lr=1.0, loss=None, **kwargs):
    torch.manual_seed(0)
    return MetaGeneratorModule(
        net=lenet5_half(), teacher=FrozenTeacher(teacher or TinyBNNet()),
        generator=DAFLGenerator(latent_dim=16, width=8),
        optimizer=partial(torch.optim.Adam, lr=0.002), generator_optimizer=partial(torch.optim.SGD, lr=meta_lr),
        adaptation_optimizer=partial(torch.optim.Adam, lr=0.01),
        loss=DAFLLoss(**{**WEIGHTS, "bn": 1.0, "adversarial": 1.0, **(loss or {})}), batch_size=8, noise_seed=3,
        image_every_n_epochs=0, **{"generator_steps": 3, **kwargs})


def params(net):
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def test_reptile_gradient_points_from_the_meta_generator_to_the_adapted_copy():
    """SGD with lr 1 on the Reptile gradient theta - theta' lands the meta generator on the adapted copy; the
    adapted copy itself moved (3 Adam steps) and its images are what synthesize returns."""
    module = make_module()
    before = params(module.generator)
    adapted = {}
    real_deepcopy = copy.deepcopy

    def spy(obj, *args):   # keep a handle on the adapted copy
        out = real_deepcopy(obj, *args)
        if obj is module.generator:
            adapted["net"] = out
        return out

    copy.deepcopy = spy
    try:
        images, terms = module.synthesize(module.noise(0))
    finally:
        copy.deepcopy = real_deepcopy
    fast = dict(adapted["net"].named_parameters())
    assert all(not torch.equal(before[k], fast[k]) for k in before)   # every parameter adapted
    for k, p in module.generator.named_parameters():
        assert torch.allclose(p.grad, before[k] - fast[k].detach())
    torch.optim.SGD(module.generator.parameters(), lr=1.0).step()
    for k, p in module.generator.named_parameters():
        assert torch.allclose(p, fast[k], atol=1e-6)
    assert images.shape == (8, 1, 32, 32) and not images.requires_grad
    assert {"oh", "a", "ie", "adv", "bn"} <= set(terms)
    assert not any(m._forward_hooks for m in module.teacher.modules())


def test_pool_is_a_ring_buffer_of_the_last_images():
    module = make_module(pool_size=10)
    batches = [torch.full((4, 1, 2, 2), float(i)) for i in range(3)]
    for b in batches:
        module.add_to_pool(b)
    assert module.pool_count == 12 and module.pool.shape == (10, 1, 2, 2)
    values = sorted(module.pool[:, 0, 0, 0].tolist())
    assert values == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]   # the two oldest were overwritten
    assert module.sample_images(5)[:, 0, 0, 0].tolist() == [2.0, 2.0, 2.0, 2.0, 1.0]   # the newest first


def test_student_augmentation_shifts_by_at_most_the_padding_and_mirrors():
    x = torch.arange(2 * 25, dtype=torch.float32).view(2, 1, 5, 5)
    rng = torch.Generator().manual_seed(0)
    for _ in range(5):
        y = random_shift_and_flip(x, 1, False, rng)
        for i in range(2):
            padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
            assert any(torch.equal(y[i], padded[:, dy:dy + 5, dx:dx + 5]) for dy in range(3) for dx in range(3))
    flipped = [random_shift_and_flip(x, 0, True, rng) for _ in range(20)]
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(2)) for f in flipped for i in range(2))
    assert any(torch.equal(f[0], x[0].flip(2)) for f in flipped) and any(torch.equal(f[0], x[0]) for f in flipped)


def fit(module, tmp_path, iterations=2, epochs=1):
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=1,
                        enable_checkpointing=False)
    trainer.fit(module, datamodule=DataFreeDataModule(DigitsDataModule(batch_size=128, holdout=180), iterations))
    return trainer


@pytest.mark.e2e
def test_a_fit_trains_the_student_on_the_pool_and_logs_the_bn_term(tmp_path):
    module = make_module(student_steps=2, meta_lr=0.01, student_clip_norm=1.0)
    student, generator = params(module.net), params(module.generator)
    teacher = copy.deepcopy(module.teacher.state_dict())
    trainer = fit(module, tmp_path, iterations=3)
    assert module.pool_count == 3 * 8
    assert all(not torch.equal(student[k], v) for k, v in module.net.named_parameters())
    assert any(not torch.equal(generator[k], v) for k, v in module.generator.named_parameters())
    assert all(torch.equal(v, module.teacher.state_dict()[k]) for k, v in teacher.items())
    logged = trainer.callback_metrics
    assert logged["train/loss_bn_epoch"] > 0 and logged["train/pool_epoch"] > 0
    assert logged["train/loss_student_epoch"] > 0
    assert not any(m._forward_hooks for m in module.teacher.modules())


@pytest.mark.e2e
def test_warmup_epochs_only_synthesize(tmp_path):
    module = make_module(warmup_epochs=1, loss={"bn": 0.0})
    student = params(module.net)
    fit(module, tmp_path, iterations=2)
    assert all(torch.equal(student[k], v) for k, v in module.net.named_parameters())
    assert module.pool_count == 16


def test_bad_settings_and_a_lenet_teacher_with_the_bn_term_are_errors():
    with pytest.raises(ConfigError, match="module.generator_steps=0"):
        make_module(generator_steps=0)
    with pytest.raises(ConfigError, match="loss.bn=1.0"):
        make_module(teacher=LeNet5())


@pytest.mark.parametrize("experiment", ["fast_datafree_digits", "fast_datafree_mnist_cpu",
                                        "metapruning_then_fast_datafree"])
def test_recipes_compose_to_the_fast_module(tmp_path, experiment):
    overrides = [f"experiment={experiment}"]
    if experiment.startswith("metapruning"):
        overrides.append(f"model.encoding={tmp_path / 'top_encodings.yaml'}")   # read at instantiation only
    cfg = compose_config(overrides, tmp_path)
    assert cfg.module._target_ == "lightning_modules.fast_datafree.MetaGeneratorModule"
    assert cfg.datamodule._target_ == "datamodules.data_free.DataFreeDataModule"
    assert cfg.task_name == "fast_datafree"
    assert cfg.module.generator_steps >= 1 and cfg.loss.bn == 0.0   # the digits teacher (LeNet-5) has no BatchNorm


@pytest.mark.e2e
@pytest.mark.slow
def test_two_process_cpu_ddp_keeps_the_ranks_weights_equal(tmp_path, monkeypatch):
    """2-process CPU DDP with a BatchNorm teacher (a ResNet-8 trained on first use for 1 epoch) and loss.bn, as a user
    types it: every rank synthesizes its own images (different noise) and keeps its own pool, yet after each epoch
    the student's and the meta generator's weights are the same on both ranks (the module prints and checks the
    fingerprints) and they moved between the epochs."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    proc = run_cli(["experiment=fast_datafree_digits", "trainer=ddp_cpu", "+model@teacher.net=resnet8",
                    f"teacher.train_if_missing.path={tmp_path / 'resnet8_teacher.pt'}",
                    "teacher.train_if_missing.max_epochs=1", "loss.bn=1", "loss.bn_momentum=0.9",
                    "generator.width=8", "module.global_batch_size=16", "datamodule.iterations_per_epoch=2",
                    "module.generator_steps=2", "module.student_steps=2", "module.warmup_epochs=0",
                    "trainer.max_epochs=2", "++trainer.limit_val_batches=1", "logger=csv", *FAST],
                   tmp_path, timeout=900)
    out = proc.stdout + proc.stderr
    noise = re.search(r"noise fingerprints of the first iteration per rank: (.*)", out).group(1).split(", ")
    assert len(noise) == 2 and noise[0] != noise[1]
    epochs = re.findall(r"weight fingerprints per rank after epoch (\d): student (\S+), (\S+); generator (\S+), (\S+)",
                        out)
    assert [e[0] for e in epochs] == ["0", "1"], out[-3000:]
    for _, s0, s1, g0, g1 in epochs:
        assert s0 == s1 and g0 == g1
    assert epochs[0][1] != epochs[1][1] and epochs[0][3] != epochs[1][3]   # both trained in the second epoch
    assert "[done]" in out and "test/acc" in out
    logged = {k for row in csv.DictReader(open(proc.run_dir / "csv" / "metrics.csv")) for k, v in row.items() if v}
    assert "train/loss_bn_epoch" in logged
