"""The CIFAR-10 CPU recipes (docs/results.md, CIFAR-10): they compose to the stated settings, the distillation recipes
share the student recipe's settings (so the table compares methods, not optimizers), and each trains through one step
on tiny CIFAR-10 files in torchvision's on-disk format."""
import pytest
import torch
from data_files import write_cifar
from helpers import FAST, compose_config, run_config

from iccv19.networks.cifar_resnet import he_resnet

RECIPES = ["teacher_cifar10_cpu", "student_cifar10_cpu", "kd_cifar10_cpu", "cckd_cifar10_cpu", "dafl_cifar10_cpu"]
SHARED = ["data.batch_size", "data.num_workers", "data.mean", "data.std", "optimizer", "scheduler",
          "trainer.max_epochs", "model"]


def select(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def test_teacher_and_student_networks(tmp_path):
    teacher = compose_config(["experiment=teacher_cifar10_cpu"], tmp_path)
    student = compose_config(["experiment=student_cifar10_cpu"], tmp_path)
    assert (teacher.model.depth, student.model.depth) == (20, 8)
    assert teacher.module._target_ == student.module._target_ == "lightning_modules.classifier.ClassifierModule"
    for cfg in (teacher, student):
        assert cfg.data.dataset.endswith("CIFAR10") and cfg.trainer.accelerator == "cpu"
        assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.scheduler._target_.endswith("CosineAnnealingLR")
    # the ResNet-8 is a real ResNet (one basic block per stage, a projection shortcut where the width changes)
    net = he_resnet(8)
    assert len(net.layers) == 3 and isinstance(net.layers[1].shortcut, torch.nn.Sequential)


@pytest.mark.parametrize("recipe, method, sampler", [("kd_cifar10_cpu", "kd", "RandomBatchSampler"),
                                                     ("cckd_cifar10_cpu", "cckd", "ClassUniformBatchSampler")])
def test_distillation_recipes_keep_the_student_recipe(tmp_path, recipe, method, sampler):
    student = compose_config(["experiment=student_cifar10_cpu"], tmp_path)
    cfg = compose_config([f"experiment={recipe}"], tmp_path)
    assert cfg.task_name == method and cfg.data.batch_sampler._target_.endswith(sampler)
    assert cfg.teacher.net.depth == 20
    for key in SHARED:
        assert select(cfg, key) == select(student, key), key
    kd = compose_config(["experiment=kd_cifar10_cpu"], tmp_path).loss
    assert {k: cfg.loss[k] for k in ("ce_weight", "kd_weight", "temperature")} == \
        {k: kd[k] for k in ("ce_weight", "kd_weight", "temperature")}


def test_dafl_recipe_matches_the_teacher_normalization(tmp_path):
    cfg = compose_config(["experiment=dafl_cifar10_cpu"], tmp_path)
    teacher = compose_config(["experiment=teacher_cifar10_cpu"], tmp_path)
    assert list(cfg.data.mean) == list(teacher.data.mean) and list(cfg.data.std) == list(teacher.data.std)
    assert list(cfg.generator.pixel_mean) == list(teacher.data.mean)
    assert list(cfg.generator.pixel_std) == list(teacher.data.std)
    assert (cfg.model.depth, cfg.teacher.net.depth) == (8, 20)


@pytest.mark.e2e
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_one_step(tmp_path, monkeypatch, recipe):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = write_cifar(tmp_path / "data")
    teacher = tmp_path / "resnet20.pt"
    torch.save(he_resnet(20).state_dict(), teacher)
    tiny = ["data.batch_size=16", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "logger=none", *FAST]
    if recipe.startswith("dafl"):
        tiny += ["datamodule.iterations_per_epoch=2", "module.global_batch_size=8", "module.num_images=8"]
    extra = [] if recipe in ("teacher_cifar10_cpu", "student_cifar10_cpu") else [f"teacher.checkpoint={teacher}"]
    metrics = run_config([f"experiment={recipe}", f"data.root={root}", *extra, *tiny], tmp_path / "out")
    assert 0.0 <= metrics["test/acc"] <= 1.0
    last = torch.load(next((tmp_path / "out").rglob("last.ckpt")), weights_only=False)
    assert last["global_step"] == (4 if recipe.startswith("dafl") else 2)   # DAFL: two optimizer steps an iteration
