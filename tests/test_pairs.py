"""Every method x data combination composes to a sensible student/teacher pair and trains a step on tiny data
written in the data set's real on-disk format (teachers with random weights: there is nothing to download)."""
import pytest
import torch
from data_files import write_cifar, write_image_folder, write_mnist
from helpers import FAST, compose_config, run_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from netcompress.core import ConfigError

METHODS = ["supervised", "kd", "cckd", "dafl", "metapruning"]
DATA = {  # data group: (writer, extra overrides, expected student and teacher networks)
    "digits": (None, [], ("lenet5_half", "LeNet5")),
    "mnist": (write_mnist, [], ("lenet5_half", "LeNet5")),
    "cifar10": (lambda root: write_cifar(root, 10), [], ("resnet18", "resnet34")),
    "cifar100": (lambda root: write_cifar(root, 100, per_batch=400), [], ("resnet18", "resnet34")),
    "imagenet": (write_image_folder, ["data.num_classes=3", "data.pin_memory=false"], ("resnet18", "resnet34")),
}


def pair_overrides(method: str, data: str, tmp_path) -> list[str]:
    writer, extra, _ = DATA[data]
    overrides = [f"method={method}", f"data={data}", *extra]
    if data == "imagenet" and method in ("kd", "cckd", "dafl"):
        overrides.append("teacher.net.weights=null")   # no download here: a randomly initialized ResNet-34
    if writer is not None:
        overrides.append(f"data.root={writer(tmp_path / 'data')}")
    cfg = compose_config(overrides, tmp_path)
    if cfg.get("teacher") and OmegaConf.is_missing(cfg.teacher, "checkpoint"):
        path = tmp_path / "random_teacher.pt"   # what a trained teacher checkpoint of this architecture holds
        torch.save(instantiate(cfg.teacher.net).state_dict(), path)
        overrides.append(f"teacher.checkpoint={path}")
    return overrides


@pytest.mark.parametrize("data", sorted(DATA))
def test_each_data_set_picks_its_pair(tmp_path, data):
    student, teacher = DATA[data][2]
    cfg = compose_config([f"data={data}"], tmp_path)   # method=cckd, the default
    assert student in cfg.model._target_ or student == cfg.model.get("arch")
    assert teacher in cfg.teacher.net._target_ or teacher == cfg.teacher.net.get("arch")
    assert cfg.model.num_classes == cfg.teacher.net.num_classes == cfg.data.num_classes


@pytest.mark.e2e
@pytest.mark.parametrize("data", sorted(DATA))
@pytest.mark.parametrize("method", METHODS)
def test_method_on_data_trains_a_step(tmp_path, method, data):
    overrides = pair_overrides(method, data, tmp_path)
    tiny = ["++trainer.fast_dev_run=1", "logger=none", "callbacks=none", "data.batch_size=4", "data.num_workers=0",
            *FAST[2:]]
    if method == "dafl":
        tiny += ["module.global_batch_size=4", "generator.width=4", "datamodule.iterations_per_epoch=1"]
    metrics = run_config([*overrides, *tiny], tmp_path)
    assert "test/acc" in metrics and 0.0 <= metrics["test/acc"] <= 1.0


def test_a_data_set_without_a_pair_composes_with_the_networks_named(tmp_path):
    """data=fashion_mnist has no conf/model/student_fashion_mnist.yaml nor conf/teacher/for_fashion_mnist.yaml: the
    command names the networks, and a network it does not name is one error naming the key, the file and the fix."""
    with pytest.raises(ConfigError, match=r"^model is not set: data=fashion_mnist .*student_fashion_mnist\.yaml\)\. "
                                          r"Add model=<name>"):
        run_config(["data=fashion_mnist", "method=supervised"], tmp_path)
    with pytest.raises(ConfigError, match=r"^teacher is not set: data=fashion_mnist .*for_fashion_mnist\.yaml\)\. "
                                          r"Add teacher=checkpoint model@teacher.net="):
        run_config(["data=fashion_mnist", "model=lenet5_half"], tmp_path)   # method=cckd distills from a teacher
    cfg = compose_config(["data=fashion_mnist", "model=lenet5_half", "teacher=checkpoint", "model@teacher.net=lenet5",
                          "teacher.checkpoint=/t.ckpt"], tmp_path)
    assert (cfg.model._target_, cfg.teacher.net._target_) == ("netcompress.networks.lenet.lenet5_half",
                                                              "netcompress.networks.lenet.LeNet5")
    assert cfg.module.net == cfg.model and cfg.module.teacher == cfg.teacher
    assert compose_config(["data=fashion_mnist", "model=lenet5_half", "method=supervised"], tmp_path).teacher is None
