"""MetaPruning fidelity: each ImageNet recipe composes to the official values, and the
behaviours behind them (weight-decay groups, affine BNs, epoch-start schedules, cal_FLOPs counting, search range,
BN recalibration, lighting) do what the official code does. See docs/parity.md."""
import random

import numpy as np
import pytest
import torch
from helpers import compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from netcompress.core import ConfigError
from netcompress.networks.flops import count_flops
from netcompress.networks.pruningnet import build_pruningnet, official_weight_decay
from netcompress.schedules import linear_epoch_start, quarters_epoch_start
from netcompress.search.evaluate import recalibrate_bn
from netcompress.search.evolution import Budget, EvolutionarySearch, SearchConfig

# recipe: (global batch, lr, weight decay, label smoothing, epochs, official_weight_decay groups)
TRAINING = {
    "metapruning_mbv2_imagenet": (512, 0.25, 0.0, 0.1, 64, False),
    "metapruning_mbv1_imagenet": (512, 0.25, 4e-5, 0.1, 64, True),
    "metapruning_resnet50_imagenet": (256, 0.1, 1e-4, 0.1, 32, False),
    "metapruning_mbv2_imagenet_retrain": (1024, 0.5, 4e-5, 0.1, 256, True),
    "metapruning_mbv1_imagenet_retrain": (1024, 0.5, 4e-5, 0.1, 256, True),
    "metapruning_resnet50_imagenet_retrain": (512, 0.2, 1e-4, 0.1, 128, True),
}
SEARCH = {   # recipe: (max, min FLOPs, counter, random choice range)
    "metapruning_mbv2_imagenet_search": ("330M", None, "official", None),
    "metapruning_mbv1_imagenet_search": ("330M", None, "official", None),
    "metapruning_resnet50_imagenet_search": ("2050M", "1950M", "official", [12, 23]),
}


def schedule_kind(recipe: str) -> str:
    """The official schedule of a recipe: MultiStep for ResNet-50, linear for the MobileNets."""
    return "multistep" if "resnet" in recipe else "linear"


def official_lrs(lr, epochs, kind):
    """The lr of each epoch in the official scripts: the scheduler is stepped once at the start of every epoch."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 - e / epochs) if kind == "linear" else
             torch.optim.lr_scheduler.MultiStepLR(opt, [epochs // 4, epochs // 2, epochs // 4 * 3], 0.1))
    lrs = []
    for _ in range(epochs):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def our_lrs(cfg):
    """The lr of each epoch as Lightning runs the recipe's scheduler (stepped at the end of an epoch)."""
    p = nn.Parameter(torch.zeros(1))
    opt = instantiate(cfg.optimizer)([p])
    sched = instantiate(cfg.scheduler)(opt)
    lrs = []
    for _ in range(cfg.trainer.max_epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("recipe", sorted(TRAINING))
def test_training_recipes_compose_to_the_official_values(recipe, tmp_path):
    batch, lr, wd, smoothing, epochs, grouped = TRAINING[recipe]
    cfg = compose_config([f"experiment={recipe}"], tmp_path)
    raw = OmegaConf.to_container(cfg.module, resolve=False)
    assert cfg.data.global_batch_size == batch and cfg.optimizer.lr == lr and cfg.optimizer.momentum == 0.9
    assert cfg.optimizer.weight_decay == pytest.approx(wd) and cfg.module.label_smoothing == smoothing
    assert cfg.trainer.max_epochs == epochs and cfg.data.lighting == 0.1 and list(cfg.data.crop_scale) == [0.08, 1.0]
    assert (raw["optimizer"] == "${weight_decay_groups}") == grouped
    assert our_lrs(cfg) == pytest.approx(official_lrs(lr, epochs, schedule_kind(recipe)), abs=1e-9)
    assert cfg.data.holdout == (0 if recipe.endswith("retrain") else 50000)


@pytest.mark.parametrize("recipe", sorted(TRAINING))
def test_recipe_schedules_follow_max_epochs(recipe, tmp_path):
    cfg = compose_config([f"experiment={recipe}", "trainer.max_epochs=12"], tmp_path)
    lrs = our_lrs(cfg)
    assert lrs == pytest.approx(official_lrs(cfg.optimizer.lr, 12, schedule_kind(recipe)), abs=1e-9)
    if schedule_kind(recipe) == "linear":
        assert lrs[-1] == pytest.approx(0.0, abs=1e-12)   # the official last epoch trains at lr 0


@pytest.mark.parametrize(("schedule", "epochs", "least"), [(linear_epoch_start, 1, 2), (quarters_epoch_start, 3, 4)])
def test_official_schedules_refuse_too_few_epochs(schedule, epochs, least):
    with pytest.raises(ConfigError, match=rf"scheduler.epochs={epochs}: .*trainer.max_epochs >= {least}"):
        schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), epochs)


@pytest.mark.parametrize("recipe", sorted(SEARCH))
def test_search_recipes_compose_to_the_official_values(recipe, tmp_path):
    max_flops, min_flops, counter, choices = SEARCH[recipe]
    s = compose_config([f"experiment={recipe}"], tmp_path).search
    assert (s.max_flops, s.min_flops, s.flops_counter) == (max_flops, min_flops, counter)
    assert (list(s.random_choices) if s.random_choices else None) == choices
    assert (s.population, s.generations, s.parents, s.mutations, s.crossovers, s.mutation_prob) == (50, 20, 10, 25,
                                                                                                      25, 0.1)
    assert (s.calib_batches, s.calib_batch_size) == (100, 1000)


def test_mbv1_recipe_decays_generators_not_batchnorm(tmp_path):
    cfg = compose_config(["experiment=metapruning_mbv1_imagenet", "model.size=small", "data.num_classes=10"], tmp_path)
    net = build_pruningnet("mobilenetv1", "small", 10, 3)
    opt = instantiate(cfg.module.optimizer)(list(net.parameters()))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == pytest.approx(4e-5) and plain["weight_decay"] == 0.0
    bn_params = {id(p) for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in plain["params"]} == bn_params and bn_params
    decayed_ids = {id(p) for p in decayed["params"]}
    assert id(net.fc.weight) in decayed_ids and id(net.stem.generator[2].weight) in decayed_ids


def test_mbv1_pruningnet_batchnorms_affine_as_official():
    net = build_pruningnet("mobilenetv1", "small", 10, 1)
    assert all(bn.affine for bn in net.bns[0]) and all(bn.affine for bns in net.dw_bns for bn in bns)
    assert not any(bn.affine for bns in net.bns[1:] for bn in bns)   # the pointwise ones
    ours = build_pruningnet("mobilenetv1", "small", 10, 1, affine_bn=False)
    assert not any(m.affine for m in ours.modules() if isinstance(m, nn.BatchNorm2d))
    net.batch_statistics(True)   # the eval-mode batch-statistics path applies the affine parameters too
    net.eval()
    with torch.no_grad():
        net.dw_bns[0][30].bias.fill_(5.0)
        a = net(torch.randn(4, 1, 32, 32))
        net.dw_bns[0][30].bias.fill_(0.0)
        b = net(torch.randn(4, 1, 32, 32))
    assert not torch.allclose(a, b)


def decay_map(net):
    return {name: not getattr(p, "no_weight_decay", False) for name, p in net.named_parameters()}


def test_retraining_weight_decay_groups_as_official():
    mbv2 = build_pruningnet("mobilenetv2", "small", 10, 1)
    narrow = mbv2.narrow(mbv2.full_encoding())
    d = decay_map(narrow)
    block = narrow.body[1].conv   # expansion 1x1, depthwise, projection
    names = {id(p): n for n, p in narrow.named_parameters()}
    assert d[names[id(narrow.body[0][0].weight)]] and d[names[id(block[0][0].weight)]]       # stem, expansion
    assert not d[names[id(block[1][0].weight)]] and not d[names[id(block[2][0].weight)]]     # depthwise, projection
    assert d[names[id(narrow.body[-1][0].weight)]] and d["fc.weight"] and d["fc.bias"]       # last 1x1, classifier
    assert not any(d[n] for n in d if ".1.weight" in n and n.startswith("body.0"))           # stem BN
    resnet = build_pruningnet("resnet", "small", 10, 1)
    narrow = resnet.narrow(resnet.full_encoding())
    d = decay_map(narrow)
    assert all(d[n] for n in d if ".conv." in n and n.endswith("0.weight")) and d["fc.weight"]
    assert not any(d[n] for n in d if "shortcut" in n)
    bn = {n for n, m in narrow.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert not any(d[n] for n in d if n.rsplit(".", 1)[0] in bn)
    opt = official_weight_decay(narrow.parameters(), lambda groups: torch.optim.SGD(groups, lr=0.1, weight_decay=1e-4))
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]


def test_official_flops_counter_adds_bias_bn_relu_pooling_by_hand():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=True), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    conv, linear = 2 * 9 * 8 * 8, 2 * 3       # multiply-adds: torch's count
    assert count_flops(net, (1, 8, 8)) == conv + linear
    extras = 2 * 8 * 8 + 2 * 8 * 8 + 2 * 8 * 8 + 2 * 4 * 4 * 4 + 2 * 4 * 4 + 3   # bias, BN, ReLU, maxpool, avg, fc bias
    assert count_flops(net, (1, 8, 8), counter="official") == conv + linear + extras
    relu6 = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU6())
    assert count_flops(relu6, (1, 4, 4), counter="official") == 16   # ReLU6 is not counted by cal_FLOPs either


def test_random_candidates_draw_from_the_choice_range():
    budget = Budget(lambda e: (sum(e), 0))
    search = EvolutionarySearch(6, 31, budget, lambda es: [0.0] * len(es),
                                SearchConfig(population=40, random_choices=(12, 23)))
    population = search.next_population([], random.Random(0))
    assert len(population) == 40 and all(12 <= c <= 23 for e in population for c in e)
    assert {c for e in population for c in e} == set(range(12, 24))


def test_bn_recalibration_cumulative_vs_official_momentum():
    bn = nn.BatchNorm2d(1)
    net = nn.Sequential(bn)
    batches = [torch.full((2, 1, 1, 1), float(v)) for v in (1.0, 3.0)]
    recalibrate_bn(net, batches)
    assert bn.running_mean.item() == pytest.approx(2.0) and bn.momentum == 0.1   # mean of the batch means
    recalibrate_bn(net, batches, momentum=0.1)
    assert bn.running_mean.item() == pytest.approx(0.9 * 0.1 * 1.0 + 0.1 * 3.0)   # from 0, momentum 0.1


def test_lighting_shifts_at_most_one_gray_level_as_official():
    from datamodules.vision import Lighting

    img = Image.fromarray(np.full((4, 4, 3), 100, np.uint8), "RGB")
    torch.manual_seed(0)
    out = [np.asarray(Lighting(0.1)(img)).astype(int) - 100 for _ in range(20)]
    assert all(set(np.unique(o)) <= {-1, 0} for o in out) and any((o == -1).any() for o in out)
    assert Lighting(0.0)(img) is img


def test_imagenet_crop_scale_is_checked():
    from datamodules.vision import ImageNetDataModule
    from netcompress.core import ConfigError

    with pytest.raises(ConfigError, match="data.crop_scale"):
        ImageNetDataModule(root="/nowhere", crop_scale=[0.5, 0.1])


ENCODING = {"arch": "mobilenetv2", "size": "small", "encoding": [5] * 11}


@pytest.mark.parametrize("recipe, module", [
    ("metapruning_then_cckd", "lightning_modules.kd.KDModule"),
    ("metapruning_then_dafl", "lightning_modules.dafl.GeneratorThenStudentModule")])
def test_composition_recipes_put_the_pruned_network_under_the_method(recipe, module, tmp_path):
    import yaml

    path = tmp_path / "enc.yaml"
    path.write_text(yaml.safe_dump(ENCODING))
    cfg = compose_config([f"experiment={recipe}", f"model.encoding={path}"], tmp_path)
    assert cfg.module._target_ == module and cfg.model._target_ == "netcompress.networks.pruningnet.build_pruned"
    net = instantiate(cfg.model)
    assert net.encoding == [5] * 11 and net(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    if recipe == "metapruning_then_cckd":
        # the retraining recipe's optimizer, schedule and epochs, gradients clipped; method=supervised gives the
        # labels-only row with the same settings (the composition table's fair part)
        retrain = compose_config(["experiment=metapruning_digits_retrain", f"model.encoding={path}"], tmp_path)
        labels = compose_config([f"experiment={recipe}", "method=supervised", f"model.encoding={path}"], tmp_path)
        assert cfg.optimizer == retrain.optimizer and cfg.scheduler == retrain.scheduler
        assert cfg.trainer.max_epochs == retrain.trainer.max_epochs == 30 and cfg.trainer.gradient_clip_val == 1.0
        assert labels.module._target_ == "lightning_modules.classifier.ClassifierModule" and not labels.teacher
        assert labels.optimizer == cfg.optimizer and labels.scheduler == cfg.scheduler
        assert labels.trainer.gradient_clip_val == 1.0
        assert labels.trainer.max_epochs == 30 and labels.model == cfg.model


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["metapruning_then_cckd", "metapruning_then_dafl"])
def test_composition_recipes_run_from_the_command_line(recipe, tmp_path):
    import json

    import yaml
    from helpers import run_cli

    path = tmp_path / "enc.yaml"
    path.write_text(yaml.safe_dump(ENCODING))
    proc = run_cli([f"experiment={recipe}", f"model.encoding={path}", "trainer.max_epochs=1",
                    "+trainer.limit_train_batches=2", "callbacks.progress_bar=null"], tmp_path / "work")
    metrics = json.loads((proc.run_dir / "metrics.json").read_text())["metrics"]
    assert 0 <= metrics["test/acc"] <= 1 and metrics["model/flops"] > 0
