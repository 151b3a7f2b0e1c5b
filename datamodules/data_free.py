"""Data-free training (DAFL): there is no training set. An "epoch" is ``iterations_per_epoch`` generator/student
iterations (the official code: 120), and the real datamodule (the chosen ``data`` group, as it is) is used for
validation and test only.

The training loader yields nothing but the iteration number (an int per "batch"); the LightningModule draws its
own noise. Under DDP Lightning's distributed sampler splits the ``iterations_per_epoch * world_size`` numbers
across ranks, so every rank runs ``iterations_per_epoch`` iterations per epoch, each on its own generated batch.

Config: ``method=dafl`` sets ``datamodule: {_target_: ...DataFreeDataModule, real: ${data}, ...}``, so any
``data=<name>`` (and its ``data.*`` overrides) is the real data, and a missing folder still fails naming
``data.root``.
"""
import lightning as L
from torch.utils.data import DataLoader

from datamodules.base import ClassificationDataModule
from netcompress.core import ConfigError


class DataFreeDataModule(L.LightningDataModule):
    def __init__(self, real: ClassificationDataModule, iterations_per_epoch: int = 120):
        super().__init__()
        if iterations_per_epoch < 1:
            raise ConfigError(f"datamodule.iterations_per_epoch={iterations_per_epoch}: an epoch needs at least "
                              f"one iteration (the official DAFL recipes use 120).")
        if not isinstance(real, ClassificationDataModule):
            raise ConfigError(f"datamodule.real={type(real).__name__}: the real data must be a classification "
                              f"datamodule (a data=<name> group); keep datamodule.real=${{data}}.")
        self.real, self.iterations_per_epoch = real, iterations_per_epoch

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
