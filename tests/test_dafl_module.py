"""GeneratorThenStudentModule: what each optimizer changes, the frozen teacher, per-rank noise, resume, NaN stop,
collapse warning, configuration errors. Tiny networks on CPU; no teacher training needed."""
import copy
from functools import partial

import lightning as L
import pytest
import torch

from datamodules.data_free import DataFreeDataModule
from datamodules.digits import DigitsDataModule
from lightning_modules.dafl import GeneratorThenStudentModule, TrainingDiverged
from netcompress.core import ConfigError
from netcompress.losses.dafl import DAFLLoss
from netcompress.networks.generator import DAFLGenerator
from netcompress.networks.lenet import LeNet5, lenet5_half
from netcompress.networks.teacher import FrozenTeacher

MNIST_WEIGHTS = dict(oh=1.0, a=0.1, ie=5.0, log_base=10, temperature=1.0, activation="mean", global_ie=False,
                     adversarial=0.0, bn=0.0, bn_momentum=0.0)


def make_module(generator_lr=0.02, student_lr=0.002, batch_size=16, loss=None, **kwargs):
    torch.manual_seed(0)
    return GeneratorThenStudentModule(
        net=lenet5_half(), teacher=FrozenTeacher(LeNet5()), generator=DAFLGenerator(latent_dim=16, width=8),
        optimizer=partial(torch.optim.Adam, lr=student_lr),
        generator_optimizer=partial(torch.optim.Adam, lr=generator_lr),
        loss=DAFLLoss(**{**MNIST_WEIGHTS, **(loss or {})}),
        batch_size=batch_size, noise_seed=7, image_every_n_epochs=0, **kwargs)


def make_datamodule(iterations=3):
    return DataFreeDataModule(DigitsDataModule(batch_size=128, holdout=180), iterations_per_epoch=iterations)


def fit(module, tmp_path, epochs=1, iterations=3, ckpt_path=None, **trainer_kwargs):
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=1,
                        **trainer_kwargs)
    trainer.fit(module, datamodule=make_datamodule(iterations), ckpt_path=ckpt_path)
    return trainer


def params(net):
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def changed(before, net):
    return {k for k, v in net.named_parameters() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("adversarial", [0.0, 1.0])
def test_each_loss_reaches_only_its_own_network(adversarial):
    module = make_module(loss={"adversarial": adversarial})   # the DFAD-style term too: through the images only
    out = module.losses(module.noise(0))
    out["loss_generator"].backward(retain_graph=True)
    assert all(p.grad is None for p in module.net.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.generator.parameters())
    module.generator.zero_grad(set_to_none=True)
    out["loss_student"].backward()
    assert all(p.grad is None for p in module.generator.parameters())
    assert all(p.grad is not None for p in module.net.parameters())
    assert all(p.grad is None for p in module.teacher.parameters())
    assert ("loss_adv" in out) == bool(adversarial)


def test_adversarial_term_pushes_the_generator_towards_disagreement():
    """With only the adversarial term, one generator step raises the teacher-student logit gap on fresh noise."""
    module = make_module(loss={"oh": 0.0, "a": 0.0, "ie": 0.0, "adversarial": 1.0})
    opt = torch.optim.Adam(module.generator.parameters(), lr=0.05)
    gap = []
    for step in range(20):
        out = module.losses(module.noise(100 + step))
        gap.append(out["loss_adv"].item())
        opt.zero_grad()
        out["loss_generator"].backward()
        opt.step()
    assert gap[-1] > 1.5 * gap[0], gap


@pytest.mark.e2e
@pytest.mark.parametrize("frozen", ["generator", "student"])
def test_generator_step_changes_only_the_generator_and_student_step_only_the_student(tmp_path, frozen):
    # an optimizer with lr 0 does nothing: what changes is what the other optimizer steps
    module = make_module(generator_lr=0.0 if frozen == "generator" else 0.02,
                         student_lr=0.0 if frozen == "student" else 0.002)
    before = {name: params(getattr(module, name)) for name in ("generator", "net")}
    teacher_before = copy.deepcopy(module.teacher.state_dict())
    opt_g, opt_s = module.configure_optimizers()
    assert {id(p) for g in opt_g.param_groups for p in g["params"]} == {id(p) for p in module.generator.parameters()}
    assert {id(p) for g in opt_s.param_groups for p in g["params"]} == {id(p) for p in module.net.parameters()}
    fit(module, tmp_path)
    moving, still = ("net", "generator") if frozen == "generator" else ("generator", "net")
    assert changed(before[moving], getattr(module, moving)) == set(before[moving])   # every parameter moved
    assert changed(before[still], getattr(module, still)) == set()
    teacher_after = module.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], teacher_after[k]) for k in teacher_before)
@pytest.mark.e2e
def test_teacher_stays_frozen_in_eval_mode_during_training(tmp_path):
    module = make_module()
    modes = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append((pl_module.teacher.training, pl_module.teacher.net.training, pl_module.generator.training))

    teacher_before = copy.deepcopy(module.teacher.state_dict())
    fit(module, tmp_path, callbacks=[Spy()])
    assert modes and all(m == (False, False, True) for m in modes)
    assert all(torch.equal(v, module.teacher.state_dict()[k]) for k, v in teacher_before.items())


def test_noise_differs_per_rank_and_iteration_and_is_reproducible():
    module = make_module()
    z = module.noise(5, rank=0)
    assert z.shape == (16, 16)
    assert torch.equal(z, module.noise(5, rank=0))
    assert not torch.allclose(z, module.noise(5, rank=1))
    assert not torch.allclose(z, module.noise(6, rank=0))
    module.noise_seed = 8
    assert not torch.allclose(z, module.noise(5, rank=0))
@pytest.mark.e2e
def test_checkpoint_holds_both_networks_and_optimizers_and_resume_is_exact(tmp_path):
    straight = make_module()
    fit(straight, tmp_path / "a", epochs=2)
    first = make_module()
    trainer = fit(first, tmp_path / "b", epochs=1)
    ckpt = tmp_path / "b" / "one.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)
    assert any(k.startswith("generator.") for k in state["state_dict"])
    assert any(k.startswith("net.") for k in state["state_dict"])
    assert len(state["optimizer_states"]) == 2 and all(s["state"] for s in state["optimizer_states"])
    assert state["dafl_noise_seed"] == 7
    resumed = make_module()
    resumed.noise_seed = None  # comes back from the checkpoint
    fit(resumed, tmp_path / "c", epochs=2, ckpt_path=ckpt)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert not torch.equal(first.generator.fc.weight, resumed.generator.fc.weight)
@pytest.mark.e2e
def test_nan_loss_stops_with_a_clear_message_before_any_step(tmp_path):
    module = make_module(loss={"a": float("nan")})
    before = {name: params(getattr(module, name)) for name in ("generator", "net")}
    with pytest.raises(TrainingDiverged, match=r"NaN/inf at epoch 0, iteration 0 \(loss=nan.*"
                                                 r"loss_generator=nan.*ckpt_path"):
        fit(module, tmp_path)
    assert not isinstance(TrainingDiverged("x"), ConfigError)  # a training-time failure: run.py shows its traceback
    for name in ("generator", "net"):
        assert changed(before[name], getattr(module, name)) == set()
@pytest.mark.e2e
def test_collapsed_generator_is_warned_about(tmp_path):
    module = make_module(generator_lr=0.0)
    with torch.no_grad():
        module.generator.fc.weight.zero_()   # every z gives the same image
    assert module.generator(module.noise(0)).flatten(1).std(0).max() < 1e-5
    with pytest.warns(UserWarning, match="generator collapsed"):
        fit(module, tmp_path)
@pytest.mark.e2e
def test_student_scheduler_steps_per_epoch_and_survives_resume(tmp_path):
    module = make_module(scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[1, 2], gamma=0.1))
    trainer = fit(module, tmp_path, epochs=2, iterations=1)
    assert trainer.optimizers[1].param_groups[0]["lr"] == pytest.approx(0.0002)   # epochs 0, 1 ran: one decay
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.02)     # the generator has none
    ckpt = tmp_path / "s.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = make_module(scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[1, 2], gamma=0.1))
    trainer = fit(resumed, tmp_path, epochs=3, iterations=1, ckpt_path=ckpt)
    assert trainer.optimizers[1].param_groups[0]["lr"] == pytest.approx(0.00002)


def test_the_criterion_settings_are_saved():
    module = make_module(loss={"ie": 20.0})
    assert module.hparams["loss"] == {**MNIST_WEIGHTS, "ie": 20.0, "_target_": "netcompress.losses.dafl.DAFLLoss"}
@pytest.mark.e2e
def test_global_batch_is_split_across_processes_and_must_divide(tmp_path):
    module = make_module(batch_size=None, global_batch_size=12)

    class World:   # what setup (and noise) read of the trainer
        world_size, global_rank = 3, 0

    module._trainer = World()
    module.setup("fit")
    assert module.batch_size == 4 and module.noise(0).shape[0] == 4
    module = make_module(batch_size=None, global_batch_size=10)
    module._trainer = World()
    with pytest.raises(ConfigError, match="module.global_batch_size=10 does not divide over the 3"):
        module.setup("fit")
    module = make_module(batch_size=None, global_batch_size=12)   # one process: all 12 images per iteration
    fit(module, tmp_path, iterations=1)
    assert module.batch_size == 12
@pytest.mark.e2e
def test_best_validation_accuracy_is_logged_beside_the_last(tmp_path):
    module = make_module(student_lr=0.05)
    seen = []

    class Spy(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                seen.append(float(pl_module.metrics["val__top1"].compute()))

    trainer = fit(module, tmp_path, epochs=3, iterations=2, callbacks=[Spy()])
    logged = trainer.callback_metrics
    assert len(seen) == 3
    assert float(logged["val/acc_best"]) == pytest.approx(max(seen))
    assert float(logged["val/acc"]) == pytest.approx(seen[-1])


def test_bad_configuration_names_the_key():
    with pytest.raises(ConfigError, match="loss=dict: method=dafl needs DAFL's criterion.*loss=dafl"):
        GeneratorThenStudentModule(lenet5_half(), LeNet5(), DAFLGenerator(), torch.optim.Adam, torch.optim.Adam,
                                   loss={"beta": 1.0})
    with pytest.raises(ConfigError, match="module.batch_size=1"):
        make_module(batch_size=1)
    with pytest.raises(ConfigError, match="module.global_batch_size=null and module.batch_size=null"):
        make_module(batch_size=None)
    with pytest.raises(ConfigError, match="datamodule.real=str"):
        DataFreeDataModule("datamodules.digits.DigitsDataModule")
    with pytest.raises(ConfigError, match="datamodule.iterations_per_epoch=0"):
        DataFreeDataModule(DigitsDataModule(), iterations_per_epoch=0)
