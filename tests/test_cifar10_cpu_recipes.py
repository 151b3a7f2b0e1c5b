"""The CIFAR-10 CPU recipes (docs/notes/cifar10-dev.md): they compose to the stated settings, the distillation recipes
share the student recipe's settings (so the table compares methods, not optimizers), and each trains through one step
on tiny CIFAR-10 files in torchvision's on-disk format."""
import inspect

import pytest
import torch
from data_files import write_cifar
from helpers import FAST, compose_config, run_config

from lightning_modules.classifier import ClassifierModule
from netcompress.networks.cifar_resnet import he_resnet

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


MP = ["metapruning_cifar10_cpu", "metapruning_cifar10_cpu_search", "metapruning_cifar10_cpu_retrain",
      "metapruning_then_cckd_cifar10_cpu"]


def test_metapruning_recipes_compose_on_cifar(tmp_path):
    cfgs = {name: compose_config([f"experiment={name}", "model.encoding=x.yaml"] if "retrain" in name or "then" in name
                                 else [f"experiment={name}"], tmp_path) for name in MP}
    for name, cfg in cfgs.items():
        assert cfg.data.dataset.endswith("CIFAR10") and cfg.data.random_shift == 4 and cfg.data.flip, name
        assert (cfg.data.batch_size, cfg.data.num_workers, cfg.trainer.accelerator) == (64, 0, "cpu"), name
    train, search = cfgs["metapruning_cifar10_cpu"], cfgs["metapruning_cifar10_cpu_search"]
    assert train.module._target_.endswith("PruningNetModule") and train.model.arch == "mobilenetv2"
    assert train.model.size == search.model.size == "small" and search.stage == "search"
    retrain, compose = cfgs["metapruning_cifar10_cpu_retrain"], cfgs["metapruning_then_cckd_cifar10_cpu"]
    # the composition trains the same network with the retraining's optimizer, schedule and epochs, by CCKD from
    # the CIFAR ResNet-20 with cckd_cifar10_cpu's loss weights
    for key in ("model", "optimizer", "scheduler", "trainer.max_epochs", "data.batch_size"):
        assert select(compose, key) == select(retrain, key), key
    # the labels-only row of the same recipe (method=supervised) builds its module: no CCKD-only module keys
    labels = compose_config(["experiment=metapruning_then_cckd_cifar10_cpu", "method=supervised",
                             "model.encoding=x.yaml"], tmp_path)
    inspect.signature(ClassifierModule).bind(**{k: None for k in labels.module if k != "_target_"})
    assert labels.trainer.gradient_clip_val == compose.trainer.gradient_clip_val
    cckd = compose_config(["experiment=cckd_cifar10_cpu"], tmp_path)
    assert compose.task_name == "cckd" and compose.teacher.net.depth == 20 and compose.trainer.gradient_clip_val == 1
    assert {k: compose.loss[k] for k in ("ce_weight", "kd_weight", "temperature", "beta")} == \
        {k: cckd.loss[k] for k in ("ce_weight", "kd_weight", "temperature", "beta")}


@pytest.mark.e2e
def test_metapruning_stages_and_composition_run_on_cifar_files(tmp_path, monkeypatch):
    """The three MetaPruning stages and the CCKD composition, two steps each, on tiny CIFAR-10 files."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = write_cifar(tmp_path / "data", per_batch=24)
    data = [f"data.root={root}", "data.holdout=16", "data.batch_size=8"]
    tiny = [*data, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1", "logger=none", *FAST]
    run_config(["experiment=metapruning_cifar10_cpu", "test=false", *tiny], tmp_path / "train")
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 2
    search = ["search.population=4", "search.generations=1", "search.parents=2", "search.mutations=2",
              "search.crossovers=2", "search.calib_batches=1", "search.calib_batch_size=8", "search.val_batches=1"]
    run_config(["experiment=metapruning_cifar10_cpu_search", f"search.pruningnet_ckpt={ckpt}", "search.max_flops=0.5",
                *search, *data, "logger=none", *FAST], tmp_path / "search")
    encodings = tmp_path / "search" / "top_encodings.yaml"
    assert encodings.is_file()
    metrics = run_config(["experiment=metapruning_cifar10_cpu_retrain", f"model.encoding={encodings}", *tiny],
                         tmp_path / "retrain")
    assert metrics["model/flops"] <= 0.5 * metrics_full_flops(encodings) and 0 <= metrics["test/acc"] <= 1
    teacher = tmp_path / "resnet20.pt"
    torch.save(he_resnet(20).state_dict(), teacher)
    metrics = run_config(["experiment=metapruning_then_cckd_cifar10_cpu", f"model.encoding={encodings}",
                          f"teacher.checkpoint={teacher}", *tiny], tmp_path / "cckd")
    assert "test/teacher_acc" in metrics and 0 <= metrics["test/acc"] <= 1
    assert torch.load(tmp_path / "cckd" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2


def metrics_full_flops(encodings) -> float:
    import yaml

    return yaml.safe_load(encodings.read_text())["budget"]["full_flops"]
