"""The CCKD/KD recipes compose to the official values that change results (docs/parity.md, CCKD rows): loss
weights and forms, embeddings, sampler, optimizer, schedule, epochs, batch, precision."""
import pytest
from helpers import compose_config
from hydra.utils import instantiate

TORCHDISTILL_LOSS = {"ce_weight": 0.0, "kd_weight": 1.0, "temperature": 1.0, "beta": 0.003,
                     "kernel": "rbf_taylor", "gamma": 0.4, "order": 2, "normalize": False, "variant": "torchdistill",
                     "reduction": "mean", "embed_dim": 128, "embed_bias": True, "embed_init": "default",
                     "train_teacher_embedding": True}
REPDISTILLER_LOSS = {"ce_weight": 1.0, "kd_weight": 0.0, "beta": 0.02, "normalize": False,
                     "variant": "repdistiller", "embed_dim": 128, "embed_bias": True, "embed_init": "default",
                     "train_teacher_embedding": True}


def subset(node, keys):
    return {k: node[k] for k in keys}


def test_imagenet_torchdistill_recipe_is_torchdistills(tmp_path):
    # configs/sample/ilsvrc2012/cckd/resnet18_from_resnet50.yaml
    cfg = compose_config(["experiment=cckd_imagenet_torchdistill"], tmp_path)
    assert subset(cfg.loss, TORCHDISTILL_LOSS) == TORCHDISTILL_LOSS
    assert cfg.data.batch_sampler._target_.endswith("RandomBatchSampler")
    assert subset(cfg.optimizer, ["_target_", "lr", "momentum", "weight_decay", "nesterov"]) == {
        "_target_": "torch.optim.SGD", "lr": 1e-4, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}
    assert cfg.scheduler._target_.endswith("MultiStepLR") and list(cfg.scheduler.milestones) == [5, 15]
    assert cfg.scheduler.gamma == 0.1 and "step_size" not in cfg.scheduler
    assert (cfg.trainer.max_epochs, cfg.trainer.precision, cfg.data.global_batch_size) == (20, "32-true", 32)
    assert cfg.module.scheduler_interval == "epoch"
    assert (cfg.model.arch, cfg.teacher.net.arch, cfg.teacher.net.weights) == ("resnet18", "resnet50",
                                                                                 "IMAGENET1K_V1")


def test_imagenet_paper_recipe(tmp_path):
    cfg = compose_config(["experiment=cckd_imagenet_resnet50_resnet18"], tmp_path)
    assert subset(cfg.loss, ["ce_weight", "kd_weight", "normalize", "variant", "reduction", "kernel", "gamma",
                             "order"]) == {"ce_weight": 0.1, "kd_weight": 0.9, "normalize": True,
                                           "variant": "paper", "reduction": "mean", "kernel": "rbf_taylor",
                                           "gamma": 0.4, "order": 2}
    assert cfg.data.batch_sampler._target_.endswith("ClassUniformBatchSampler") and cfg.data.batch_sampler.k == 4
    assert subset(cfg.optimizer, ["lr", "momentum", "weight_decay"]) == {"lr": 0.1, "momentum": 0.9,
                                                                         "weight_decay": 1e-4}
    assert cfg.scheduler._target_.endswith("StepLR") and (cfg.scheduler.step_size, cfg.scheduler.gamma) == (30, 0.1)
    assert (cfg.trainer.max_epochs, cfg.data.global_batch_size, cfg.trainer.strategy) == (100, 256, "ddp")


def test_cifar100_repdistiller_recipe(tmp_path):
    # RepDistiller train_student.py --distill correlation -r 1 -a 0 -b 0.02, its CIFAR-100 schedule
    cfg = compose_config(["experiment=cckd_cifar100_resnet110_resnet20"], tmp_path)
    assert subset(cfg.loss, REPDISTILLER_LOSS) == REPDISTILLER_LOSS
    assert cfg.data.batch_sampler._target_.endswith("RandomBatchSampler")
    assert subset(cfg.optimizer, ["_target_", "lr", "momentum", "weight_decay"]) == {
        "_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    assert list(cfg.scheduler.milestones) == [150, 180, 210] and cfg.scheduler.gamma == 0.1
    assert (cfg.trainer.max_epochs, cfg.data.global_batch_size, cfg.trainer.precision) == (240, 64, "32-true")
    assert (cfg.model.depth, cfg.teacher.net.depth) == (20, 110)


@pytest.mark.parametrize("experiment", ["cckd_imagenet_torchdistill", "cckd_imagenet_resnet50_resnet18",
                                        "cckd_cifar100_resnet110_resnet20"])
def test_recipe_criterion_and_sampler_instantiate(tmp_path, experiment):
    cfg = compose_config([f"experiment={experiment}"], tmp_path)
    loss = instantiate(cfg.loss)(student_dim=512, teacher_dim=2048)
    assert loss.student_embed.in_features == 512 and loss.teacher_embed.in_features == 2048
    sampler = instantiate(cfg.data.batch_sampler)(labels=list(range(100)) * 4, batch_size=32, num_replicas=1,
                                                  rank=0, seed=0)
    assert all(len(batch) == 32 for batch in sampler)
