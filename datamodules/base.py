"""What every classification datamodule shares: splits, the held-out validation subset, dataloaders."""
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from datamodules.samplers import bind_teacher_features
from netcompress.core import ConfigError


class ClassificationDataModule(L.LightningDataModule):
    """Subclasses set ``num_classes``, ``in_channels``, ``image_size`` and implement ``build(train, eval_tf)``.

    holdout: size of a fixed, stratified subset of the training set held out as the validation split (never
        trained on; MetaPruning searches on it). 0: validation uses the test set.
    batch_sampler: optional ``_partial_`` called as
        ``batch_sampler(labels=, batch_size=, num_replicas=, rank=, seed=)`` for the training loader.
    batch_size: training images per step and device. global_batch_size: per step over all devices (as the
        papers state it); when set it wins, and is split evenly across the DDP processes (an error if it
        does not divide).
    """

    num_classes: int
    in_channels: int
    image_size: int

    def __init__(self, root: str | None = None, batch_size: int = 128, eval_batch_size: int | None = None,
                 num_workers: int = 0, holdout: int = 0, holdout_seed: int = 0, download: bool = False,
                 batch_sampler: Callable | None = None, pin_memory: bool = False,
                 global_batch_size: int | None = None, **shape):
        super().__init__()
        # data.num_classes / in_channels / image_size are in the YAML for models to read; they must agree.
        for key, value in shape.items():
            if key not in ("num_classes", "in_channels", "image_size"):
                raise ConfigError(f"data.{key}={value}: {type(self).__name__} takes no {key}. Remove it (the data "
                                  f"group's keys are in conf/data/).")
            if value != getattr(self, key):
                raise ConfigError(f"data.{key}={value}, but {type(self).__name__} has {key}={getattr(self, key)}: "
                                  f"remove the override.")
        for key, value in (("batch_size", batch_size), ("global_batch_size", global_batch_size),
                           ("eval_batch_size", eval_batch_size)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"data.{key}={value}: a batch needs at least one image (a positive integer).")
        for key, value in (("holdout", holdout), ("num_workers", num_workers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"data.{key}={value}: must be an integer >= 0.")
        self.root, self.download = root, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.global_batch_size = global_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.holdout, self.holdout_seed = holdout, holdout_seed
        self.batch_sampler = batch_sampler
        self.train_set = self.val_set = self.test_set = None

    # -- to implement -------------------------------------------------------------------------------------
    def build(self, train: bool, augment: bool) -> Dataset:
        """The train (``train=True``) or test split, with training augmentation or evaluation transforms."""
        raise NotImplementedError

    def collate(self, augment: bool) -> Callable | None:
        """The loaders' collate function (None: PyTorch's default); ``augment``: for the training loader. Data sets
        that augment whole batches (``ImageFolderDataModule``) return theirs."""
        return None

    @staticmethod
    def labels_of(dataset: Dataset) -> np.ndarray:
        if hasattr(dataset, "targets"):
            return np.asarray(dataset.targets)
        if hasattr(dataset, "tensors"):
            return dataset.tensors[1].numpy()
        raise TypeError(f"cannot read labels of {type(dataset).__name__}")

    # -- shared ----------------------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    def setup(self, stage: str | None = None):
        if self.train_set is not None:
            return
        train_aug = self.build(train=True, augment=True)
        self.test_set = self.build(train=False, augment=False)
        labels = self.labels_of(train_aug)
        indices = np.arange(len(labels))
        if self.holdout:
            if not self.num_classes <= self.holdout <= len(labels) - self.num_classes:
                raise ConfigError(
                    f"data.holdout={self.holdout}: the training set of {type(self).__name__} has {len(labels)} "
                    f"images; the held-out validation split takes between {self.num_classes} (one per class) and "
                    f"{len(labels) - self.num_classes} of them. Choose a value in that range, or 0 to validate "
                    f"on the test set.")
            train_idx, val_idx = train_test_split(indices, test_size=self.holdout, random_state=self.holdout_seed,
                                                  stratify=labels)
            self.train_set = Subset(train_aug, np.sort(train_idx).tolist())
            self.val_set = Subset(self.build(train=True, augment=False), np.sort(val_idx).tolist())
        else:
            self.train_set, self.val_set = train_aug, self.test_set

    def train_labels(self) -> np.ndarray:
        self.setup()
        if isinstance(self.train_set, Subset):
            return self.labels_of(self.train_set.dataset)[self.train_set.indices]
        return self.labels_of(self.train_set)

    def use_teacher(self, teacher, device) -> bool:
        """Called by the distillation methods before the training loader is built: a sampler that needs the
        teacher (SUR: its features of the training set) gets it. Returns whether it used it."""
        return bind_teacher_features(self, teacher, device)

    def _loader(self, dataset, batch_size, shuffle=False, augment=False, **kwargs):
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
                          collate_fn=self.collate(augment), **kwargs)

    def device_batch_size(self) -> int:
        """Training images per step on this device: ``global_batch_size / world size`` when the global size is
        set, else ``batch_size``."""
        if self.global_batch_size is None:
            return self.batch_size
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.global_batch_size % world:
            raise ConfigError(f"data.global_batch_size={self.global_batch_size} does not split evenly over "
                              f"{world} processes (devices x nodes): choose a multiple of {world} or another "
                              f"number of devices.")
        return self.global_batch_size // world

    def train_dataloader(self):
        if self.batch_sampler is None:
            trainer, seed = self.trainer, int(torch.initial_seed()) % 2**31
            world = trainer.world_size if trainer is not None else 1
            sampler = (EpochShuffle(self.train_set, seed=seed) if world == 1 else
                       EpochShuffleShard(self.train_set, seed=seed, num_replicas=world, rank=trainer.global_rank))
            return self._loader(self.train_set, self.device_batch_size(), augment=True, drop_last=True,
                                sampler=sampler)
        trainer = self.trainer
        sampler = self.batch_sampler(labels=self.train_labels(), batch_size=self.device_batch_size(),
                                     num_replicas=trainer.world_size if trainer else 1,
                                     rank=trainer.global_rank if trainer else 0,
                                     seed=int(torch.initial_seed()) % 2**31)
        return DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
                          collate_fn=self.collate(True))

    def val_dataloader(self):
        return self._eval_loader(self.val_set)

    def test_dataloader(self):
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset):
        """Evaluation batches in one fixed random order: image folders list their images class by class, and a
        network that normalizes with each batch's own statistics (a PruningNet's validation) needs mixed batches."""
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
        return self._loader(Subset(dataset, order), self.eval_batch_size)


class EpochShuffle(RandomSampler):
    """A random order drawn from ``(seed, epoch)`` (Lightning calls ``set_epoch``), so a run resumed from
    ``last.ckpt`` at epoch e reads exactly the batches an uninterrupted run reads. A ``RandomSampler``: under DDP
    Lightning replaces it by its ``DistributedSampler``, which is seeded the same way."""

    def __init__(self, data_source, seed: int = 0):
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        yield from epoch_order(len(self.data_source), self.seed, self.epoch)


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    rng = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=rng).tolist()


class EpochShuffleShard(DistributedSampler):
    """Under DDP: rank ``r`` of ``W`` reads every ``W``-th index of :class:`EpochShuffle`'s order from ``r`` (the
    tail that does not split evenly is dropped), so the ranks' batches of a step together are the batch of one
    process with the same global batch: DDP over ``W`` processes of ``B`` images computes the steps of one process of
    ``W * B`` images. (Lightning's own DistributedSampler draws another order.)"""

    def __init__(self, data_source, seed: int, num_replicas: int, rank: int):
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)

    def __iter__(self):
        order = epoch_order(len(self.dataset), self.seed, self.epoch)
        yield from order[self.rank:self.num_samples * self.num_replicas:self.num_replicas]
