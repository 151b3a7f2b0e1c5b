"""What the fast CIFAR teacher is made of: airbench's network and whitening, the triangle schedule, BatchNorm biases
at a scaled learning rate, test-time augmentation, and the recipe as typed."""
import functools
import json

import pytest
import torch
from helpers import FAST, compose_config, run_config
from hydra.utils import instantiate

from lightning_modules.classifier import ClassifierModule
from netcompress.core import ConfigError
from netcompress.networks.airbench import AirbenchNet
from netcompress.schedules import triangle


def test_whitening_filters_make_the_image_patches_uncorrelated_with_unit_variance():
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.5, 0.2], [0.0, 1.0, 0.7], [0.3, 0.0, 1.0]])   # correlated colour channels
    images = torch.einsum("oc,nchw->nohw", mixing, torch.randn(200, 3, 12, 12)) + 0.3
    net = AirbenchNet(num_classes=10, widths=(8, 8, 8))
    net.init_from_data(images)
    assert net.whiten.weight.shape == (24, 3, 2, 2) and not net.whiten.weight.requires_grad
    responses = torch.nn.functional.conv2d(images, net.whiten.weight[:12])        # (N, 12, 11, 11)
    covariance = torch.cov(responses.permute(1, 0, 2, 3).reshape(12, -1))
    assert torch.allclose(covariance, torch.eye(12), atol=0.05)
    assert torch.equal(net.whiten.weight[12:], -net.whiten.weight[:12])


def test_airbench_net_follows_the_classifier_interface_and_names_its_batchnorm_biases():
    net = AirbenchNet(num_classes=7, widths=(8, 16, 16))
    logits, features = net(torch.randn(2, 3, 32, 32), return_features=True)
    assert logits.shape == (2, 7) and features.shape == (2, net.feature_dim) == (2, 16)
    biases = net.bias_parameters()
    assert len(biases) == 6 and all(b.requires_grad for b in biases)
    assert all(not m.weight.requires_grad for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_triangle_schedule_by_hand():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = triangle(optimizer, total_steps=10, start=0.2, peak_at=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx([0.2, 0.6, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    with pytest.raises(ConfigError, match="total_steps=1"):
        triangle(optimizer, total_steps=1)


def test_bias_parameters_get_the_scaled_lr_and_the_same_decay_per_step():
    net = AirbenchNet(num_classes=10, widths=(8, 8, 8))
    optimizer = functools.partial(torch.optim.SGD, lr=0.5, weight_decay=1e-3, momentum=0.9)
    module = ClassifierModule(net, optimizer, bias_lr_scale=64)
    biases, others = module.configure_optimizers().param_groups
    assert (biases["lr"], biases["weight_decay"]) == (32.0, pytest.approx(1e-3 / 64))
    assert (others["lr"], others["weight_decay"]) == (0.5, 1e-3)
    assert {id(p) for p in biases["params"]} == {id(b) for b in net.bias_parameters()}
    assert len(biases["params"]) + len(others["params"]) == len(module.trainable_parameters())


def test_test_time_augmentation_averages_the_mirrored_and_shifted_views():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    x = torch.randn(4, 1, 6, 6)
    net(x)
    mirror = ClassifierModule(net, torch.optim.SGD, tta=1).predict_logits(x)
    assert torch.allclose(mirror, (net(x) + net(x.flip(3))) / 2)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[:, :, :6, :6], padded[:, :, 2:, 2:]
    by_hand = sum(w * (net(v) + net(v.flip(3))) / 2 for w, v in ((0.5, x), (0.25, up_left), (0.25, down_right)))
    assert torch.allclose(ClassifierModule(net, torch.optim.SGD, tta=2).predict_logits(x), by_hand, atol=1e-6)
    with pytest.raises(ConfigError, match="module.tta=3"):
        ClassifierModule(net, torch.optim.SGD, tta=3)


def test_the_teacher_recipe_composes_to_airbench_and_runs_bf16_channels_last(tmp_path):
    from test_image_folder import write_tree

    root = write_tree(tmp_path / "tree", classes=10, per_class=4)
    overrides = ["experiment=teacher_cifar10_jpeg_cpu", f"data.root={root}", *FAST, "trainer.max_epochs=2",
                 "data.batch_size=20", "callbacks.speed=null", "callbacks.init_from_data.num_images=30",
                 "model.widths=[8,8,8]", "trainer.check_val_every_n_epoch=1"]
    cfg = compose_config(overrides, tmp_path / "run")
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.module.bias_lr_scale, cfg.module.tta) == (1.2738, 0.85, 64, 2)
    assert (cfg.data.random_shift, cfg.data.pad_mode, cfg.module.label_smoothing) == (2, "reflect", 0.2)
    dirac = instantiate(cfg.model).whiten.weight.clone()
    metrics = run_config(overrides, tmp_path / "run")
    record = json.loads(next((tmp_path / "run").glob("**/metrics.json")).read_text())
    assert (record["precision"], record["memory_format"]) == ("bf16-mixed", "channels_last")
    assert metrics["speed/train_throughput"] > 0
    weights = torch.load(next((tmp_path / "run").glob("**/last.ckpt")), weights_only=True)["state_dict"]
    assert not torch.allclose(weights["net.whiten.weight"], dirac)   # whitened from the data before training


def test_a_kept_half_precision_checkpoint_tests_and_teaches_like_the_run(tmp_path):
    """scripts/keep_checkpoint.py: half the size, and the same test accuracy through ckpt_path= (train=false) and
    through teacher.checkpoint= (a KD run's test/teacher_acc)."""
    import subprocess
    import sys

    from helpers import ROOT

    overrides = ["method=supervised", "model=lenet5", *FAST, "trainer.max_epochs=2", "callbacks.speed=null"]
    trained = run_config(overrides, tmp_path / "train")
    run_dir = next((tmp_path / "train").glob("**/metrics.json")).parent
    stem = tmp_path / "kept" / "lenet5_digits"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "keep_checkpoint.py"), str(run_dir), str(stem)],
                   check=True, capture_output=True)
    kept = torch.load(stem.with_suffix(".ckpt"), weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in kept.values() if v.is_floating_point())
    assert json.loads(stem.with_suffix(".metrics.json").read_text())["metrics"]["test/acc"] == trained["test/acc"]
    tested = run_config([*overrides, "train=false", f"ckpt_path={stem.with_suffix('.ckpt')}"], tmp_path / "test")
    assert tested["test/acc"] == pytest.approx(trained["test/acc"], abs=0.003)
    taught = run_config(["method=kd", "teacher=checkpoint", "model@teacher.net=lenet5", *FAST,
                         f"teacher.checkpoint={stem.with_suffix('.ckpt')}", "trainer.max_epochs=1",
                         "callbacks.speed=null"], tmp_path / "kd")
    assert taught["test/teacher_acc"] == pytest.approx(trained["test/acc"], abs=0.003)


@pytest.mark.parametrize("recipe", ["teacher_cifar10_jpeg_cpu", "student_cifar10_jpeg_cpu", "kd_cifar10_jpeg_cpu",
                                    "cckd_cifar10_jpeg_cpu", "dkd_cifar10_jpeg_cpu"])
def test_cifar10_jpeg_recipes_keep_their_numerics_on_a_gpu_and_read_the_kept_teacher(tmp_path, recipe):
    cfg = compose_config([f"experiment={recipe}", "trainer=gpu", "data.root=/data"], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert cfg.callbacks.channels_last._target_ == "netcompress.callbacks.ChannelsLast"
    if recipe not in ("teacher_cifar10_jpeg_cpu", "student_cifar10_jpeg_cpu"):
        from helpers import ROOT

        teacher = compose_config(["experiment=teacher_cifar10_jpeg_cpu", "data.root=/data"], tmp_path / "t")
        assert cfg.teacher.checkpoint == str(ROOT / "conf" / "experiment" / "teacher_cifar10_jpeg_cpu.ckpt")
        assert cfg.teacher.net == teacher.model   # the network the kept checkpoint was trained as
