"""Building what every stage needs from the config: loggers and callbacks, a check of the trainer settings, and a
Fabric for stages that run their own loop (the MetaPruning search) from the same ``trainer`` config as ``Trainer``
stages."""
import inspect

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from iccv19.core import ConfigError


def instantiate_all(group: DictConfig | None) -> list:
    """Every entry of a ``logger``/``callbacks`` group that has a ``_target_``."""
    return [instantiate(c) for c in (group or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def check_trainer_config(trainer: DictConfig) -> None:
    """Settings this machine cannot honour, as clear errors before anything starts."""
    accelerator, devices = trainer.get("accelerator"), trainer.get("devices")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator}: no GPU is visible on this machine. Use trainer=cpu "
                          f"(or trainer=ddp_cpu for 2 CPU processes), or run where a GPU is.")
    if (isinstance(devices, int) and devices < 1) or devices in ("0", "", []):
        raise ConfigError(f"trainer.devices={devices}: give a number of devices >= 1 (or auto).")


# model and teacher default to the data set's own (conf/config.yaml: optional model: student_${data}, optional
# teacher: for_${data}); a data set without them leaves them ??? until the command names one.
DATA_DEFAULTS = {  # key: (what the data set lacks, the file that would choose it, what the command adds instead)
    "model": ("student", "model/student", "model=<name> (a file of conf/model/, e.g. lenet5_half, resnet20)"),
    "teacher": ("teacher", "teacher/for", "teacher=checkpoint model@teacher.net=<its network> "
                                          "teacher.checkpoint=<its last.ckpt>"),
}


def check_data_defaults(cfg: DictConfig) -> None:
    """A ``model`` or ``teacher`` that the data set does not choose and the command does not name: a clear error."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    data = choices.get("data", "<data>")
    for key, (what, file, fix) in DATA_DEFAULTS.items():
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is not set: data={data} has no {what} of its own (conf/{file}_{data}.yaml). "
                              f"Add {fix} to the command, or write that file.")


FABRIC_KEYS = tuple(inspect.signature(L.Fabric.__init__).parameters)


def fabric_from_trainer_config(trainer: DictConfig) -> L.Fabric:
    """``L.Fabric`` with every setting the ``trainer`` config and Fabric share (accelerator, strategy, devices,
    num_nodes, precision, plugins), so ``trainer=gpu`` / ``trainer=ddp`` mean the same in every stage.
    ``deterministic`` is applied as Trainer does; loop settings (max_epochs, ...) do not apply."""
    settings = OmegaConf.to_container(trainer, resolve=True)
    kwargs = {k: v for k, v in settings.items() if k in FABRIC_KEYS}
    if kwargs.get("plugins"):
        kwargs["plugins"] = [instantiate(p) for p in kwargs["plugins"]]
    if settings.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=settings["deterministic"] == "warn")
    return L.Fabric(**kwargs)
