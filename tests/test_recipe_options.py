"""Switching ``loss=`` or ``optimizer=`` on any recipe works as typed: the recipe's tuned values live in the option
file it chooses (conf/optimizer/sgd_cifar.yaml, conf/loss/kd_cifar10_cpu.yaml, ...), so another option replaces them
with its own defaults. Composed in-process; nothing is trained."""
import pytest
import torch
from helpers import ROOT, compose_config
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from netcompress.config import check_arguments, check_optimizers

CONF = ROOT / "conf"
RECIPES = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
OPTIMIZERS = ["adam", "adamw", "sgd"]   # the plain options; the tuned ones are composed by the recipes that choose them
KD_LOSSES = ["kd", "dkd", "cckd", "cckd_repdistiller", "cckd_torchdistill"]
DAFL_LOSSES = ["dafl", "dafl_cifar10", "dafl_cifar100"]


def losses_of(cfg) -> list[str]:
    """The loss options the recipe's method takes: KD's criteria for KDModule, DAFL's for the data-free modules."""
    target = OmegaConf.select(cfg, "module._target_")   # the search stage builds no module
    names = [c.__name__ for c in get_object(target).__mro__] if target else []
    return KD_LOSSES if "KDModule" in names else DAFL_LOSSES if "GeneratorThenStudentModule" in names else []


def builds(cfg) -> None:
    """Every ``_target_`` node fits its target's signature (the module, its networks, the criterion), the optimizers
    and scheduler build on a parameter, and the criterion instantiates."""
    check_arguments(cfg)
    check_optimizers(cfg)
    if OmegaConf.select(cfg, "loss._target_"):
        assert instantiate(cfg.loss) is not None


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_loss_and_optimizer_option_switches_on_every_recipe(tmp_path, recipe):
    base = [f"experiment={recipe}"]
    cfg = compose_config(base, tmp_path)
    for loss in losses_of(cfg):
        switched = compose_config([*base, f"loss={loss}"], tmp_path)
        builds(switched)
        own = OmegaConf.load(CONF / "loss" / f"{loss}.yaml")
        for key, value in own.items():   # the option's own values, not the recipe's
            if key != "defaults" and not OmegaConf.is_interpolation(own, key):
                assert switched.loss[key] == value, (recipe, loss, key)
    for optimizer in OPTIMIZERS:
        switched = compose_config([*base, f"optimizer={optimizer}"], tmp_path)
        builds(switched)
        own = OmegaConf.load(CONF / "optimizer" / f"{optimizer}.yaml")
        assert OmegaConf.to_container(switched.optimizer) == OmegaConf.to_container(own), (recipe, optimizer)


def test_adam_on_an_sgd_recipe_is_adams_own(tmp_path):
    """experiment=kd_cifar10_cpu runs SGD at lr 0.05 with momentum; optimizer=adam is Adam at its lr 0.001, and
    loss=dkd is DKD with its own weights (the recipe's CE/KD weights belong to loss=kd)."""
    recipe = compose_config(["experiment=kd_cifar10_cpu"], tmp_path)
    assert recipe.optimizer._target_ == "torch.optim.SGD" and recipe.optimizer.lr == 0.05
    adam = compose_config(["experiment=kd_cifar10_cpu", "optimizer=adam"], tmp_path)
    built = instantiate(adam.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(built, torch.optim.Adam) and built.param_groups[0]["lr"] == 0.001
    assert "momentum" not in adam.optimizer
    dkd = compose_config(["experiment=kd_cifar10_cpu", "loss=dkd"], tmp_path)
    assert dkd.loss._target_.endswith("DKDLoss") and "kd_weight" not in dkd.loss
    assert dkd.loss.temperature == OmegaConf.load(CONF / "loss" / "dkd.yaml").temperature
