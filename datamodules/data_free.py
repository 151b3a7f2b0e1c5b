"""Data-free training (DAFL): there is no training set. An "epoch" is ``iterations_per_epoch`` generator/student
iterations (the official code: 120), and the real datamodule is used for validation and test only.

The training loader yields nothing but the iteration number (an int per "batch"); the LightningModule draws its
own noise. Under DDP Lightning's distributed sampler splits the ``iterations_per_epoch * world_size`` numbers
across ranks, so every rank runs ``iterations_per_epoch`` iterations per epoch, each on its own generated batch.

Config (``method=dafl`` sets it): the keys of the chosen ``data`` group are passed on to the real datamodule,
whose class is ``data.real_target`` (the ``_target_`` of the data group). The experiment recipes set it; with
another ``data=...`` set ``data.real_target`` to that group's ``_target_`` (e.g.
``datamodules.vision.CIFAR10DataModule``).
"""
import lightning as L
from hydra.utils import get_class
from torch.utils.data import DataLoader

from datamodules.base import ClassificationDataModule
from training.errors import ConfigError


class DataFreeDataModule(L.LightningDataModule):
    def __init__(self, real_target: str, iterations_per_epoch: int = 120, **real_kwargs):
        super().__init__()
        if iterations_per_epoch < 1:
            raise ConfigError(f"data.iterations_per_epoch={iterations_per_epoch}: an epoch needs at least one "
                              f"iteration (the official DAFL recipes use 120).")
        try:
            real_class = get_class(real_target)
        except Exception:
            real_class = None
        if real_class is None or not issubclass(real_class, ClassificationDataModule):
            raise ConfigError(f"data.real_target={real_target} is not a ClassificationDataModule class. Set it to "
                              f"the _target_ of the data group you chose (conf/data/<name>.yaml), e.g. "
                              f"data.real_target=datamodules.vision.MNISTDataModule with data=mnist.")
        try:
            self.real = real_class(**real_kwargs)
        except (TypeError, ConfigError) as e:
            raise ConfigError(f"data.real_target={real_target} does not accept the data group's settings ({e}). "
                              f"When you pick data=<name>, set data.real_target to the _target_ in "
                              f"conf/data/<name>.yaml (the dafl_* experiments do).") from None
        self.iterations_per_epoch = iterations_per_epoch

    # the real datamodule's shape, for networks and FLOPs counting
    num_classes = property(lambda self: self.real.num_classes)
    in_channels = property(lambda self: self.real.in_channels)
    image_size = property(lambda self: self.real.image_size)
    input_shape = property(lambda self: self.real.input_shape)

    def setup(self, stage: str | None = None):
        self.real.setup(stage)

    def train_dataloader(self):
        world_size = self.trainer.world_size if self.trainer is not None else 1
        return DataLoader(range(self.iterations_per_epoch * world_size), batch_size=None, shuffle=False)

    def val_dataloader(self):
        return self.real.val_dataloader()

    def test_dataloader(self):
        return self.real.test_dataloader()
