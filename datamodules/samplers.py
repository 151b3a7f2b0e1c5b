"""Rank-aware training batch samplers of CCKD: random, CUR (class-uniform) and SUR (superclass-uniform).

A datamodule builds one per process as
``batch_sampler(labels=..., batch_size=..., num_replicas=world_size, rank=global_rank, seed=...)``
(``batch_sampler`` is a ``_partial_`` config that adds the sampler's own options, e.g. ``k``).

Every process draws the same *global* sequence of batches for an epoch (the generator is seeded with
``(seed, epoch)``; Lightning calls ``set_epoch``) and keeps every ``num_replicas``-th batch starting at its
``rank``. So the ranks read disjoint batches, no index is used twice in one epoch, and every rank yields the
same number of batches (the global sequence is truncated to a multiple of ``num_replicas``: DDP never waits on
a rank that ran out). ``batch_size`` is the per-process batch size, as in a plain DataLoader.

* ``RandomBatchSampler``: a random permutation cut into batches (incomplete last batch dropped).
* ``ClassUniformBatchSampler`` (CUR, Peng et al. Sec. 3.4): each batch holds ``batch_size / k`` groups of
  ``k`` instances of one class. Each class is shuffled and cut into groups of ``k``; the groups are then
  ordered in rounds (round j takes the j-th group of every class that still has one, classes in random order),
  so classes are picked uniformly and every class appears in a batch a multiple of ``k`` times (exactly ``k``
  times when the batch lies inside one round). Instances left over when a class size is not a multiple of
  ``k`` are skipped that epoch (a different remainder each epoch).
* ``SuperclassUniformBatchSampler`` (SUR): CUR on superclasses, found by k-means (scikit-learn) on the
  teacher's penultimate features of the training samples, one feature row per training sample. The features
  come from the teacher, not from the datamodule: ``bind_teacher_features`` (called by every distillation
  method's ``setup``) computes them (one inference pass of the teacher over the training set, no augmentation,
  every rank the same) and binds them to the datamodule's ``batch_sampler`` partial before the training loader is
  built. k-means is seeded with ``seed``, so every
  rank finds the same superclasses.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, Subset

from netcompress.core import ConfigError


class RankBatchSampler(Sampler):
    """Base class: subclasses return the epoch's global list of batches from ``global_batches(rng)``."""

    def __init__(self, labels, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        self.labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size}: the batch size must be a positive integer.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.batch_size, self.num_replicas, self.rank, self.seed = batch_size, num_replicas, rank, seed
        self.epoch = 0
        if len(self) == 0:
            raise ConfigError(
                f"data.batch_size={batch_size}: {len(self.labels)} training samples over {num_replicas} "
                f"process(es) do not fill a single batch with this sampler; lower data.batch_size.")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> _EpochHook:
        """Lightning calls ``set_epoch`` on ``dataloader.sampler`` and ``dataloader.batch_sampler.sampler``,
        never on the batch sampler itself: this is where it finds the hook."""
        return _EpochHook(self)

    def num_global_batches(self) -> int:
        raise NotImplementedError

    def global_batches(self, rng: np.random.Generator) -> np.ndarray:
        """(num_global_batches, batch_size) array of dataset indices for one epoch."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_global_batches() // self.num_replicas

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = self.global_batches(rng)[: len(self) * self.num_replicas]
        for batch in batches[self.rank::self.num_replicas]:
            yield batch.tolist()


class _EpochHook:
    def __init__(self, owner: RankBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class RandomBatchSampler(RankBatchSampler):
    """Uniformly random batches (the usual shuffled loader), rank-aware."""

    def num_global_batches(self) -> int:
        return len(self.labels) // self.batch_size

    def global_batches(self, rng):
        order = rng.permutation(len(self.labels))
        return order[: self.num_global_batches() * self.batch_size].reshape(-1, self.batch_size)


class ClassUniformBatchSampler(RankBatchSampler):
    """CUR: classes picked uniformly, ``k`` instances of each picked class in a batch (paper: k = 2 or 4)."""

    def __init__(self, labels, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 k: int = 4):
        if k < 1 or batch_size % k:
            raise ConfigError(
                f"data.batch_sampler.k={k}: the batch size data.batch_size={batch_size} must be a multiple "
                f"of k (the number of instances per class in a batch); the paper uses k=2 or k=4.")
        self.k = k
        super().__init__(labels, batch_size, num_replicas, rank, seed)

    def group_labels(self) -> np.ndarray:
        """The label each sample is grouped by (the class; SUR overrides it with the superclass)."""
        return self.labels

    def num_global_batches(self) -> int:
        counts = np.bincount(self.group_labels())
        return int((counts // self.k).sum()) // (self.batch_size // self.k)

    def global_batches(self, rng):
        groups, rounds = [], []
        labels = self.group_labels()
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            n_groups = len(members) // self.k
            groups.append(members[: n_groups * self.k].reshape(n_groups, self.k))
            rounds.append(np.arange(n_groups))
        groups, rounds = np.concatenate(groups), np.concatenate(rounds)
        # Round j holds the j-th group of every class, in random order inside the round.
        order = np.lexsort((rng.random(len(groups)), rounds))
        groups_per_batch = self.batch_size // self.k
        n = self.num_global_batches() * groups_per_batch
        return groups[order[:n]].reshape(-1, self.batch_size)


class SuperclassUniformBatchSampler(ClassUniformBatchSampler):
    """SUR: CUR over ``num_superclasses`` k-means clusters of the teacher's features (one row per sample)."""

    needs_teacher_features = True

    def __init__(self, labels, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 k: int = 4, num_superclasses: int = 5, features=None):
        if features is None:
            raise ConfigError(
                "data.batch_sampler: the SUR sampler needs the teacher's features of the training set to "
                "find superclasses; a distillation method (method=cckd, kd, ...) fills them in. Otherwise use "
                "sampler=cur or sampler=random.")
        features = np.asarray(torch.as_tensor(features).detach().float().cpu())
        if len(features) != len(np.asarray(labels)):
            raise ValueError(f"{len(features)} feature rows for {len(labels)} training samples")
        if not 1 <= num_superclasses <= len(features):
            raise ConfigError(f"data.batch_sampler.num_superclasses={num_superclasses}: choose between 1 and "
                              f"the number of training samples ({len(features)}).")
        from sklearn.cluster import KMeans

        self.superclasses = KMeans(num_superclasses, n_init=4, random_state=seed).fit_predict(features)
        super().__init__(labels, batch_size, num_replicas, rank, seed, k)

    def group_labels(self) -> np.ndarray:
        return self.superclasses


@torch.no_grad()
def bind_teacher_features(datamodule, teacher: torch.nn.Module, device: torch.device) -> bool:
    """When ``datamodule.batch_sampler`` is a partial of a sampler that needs the teacher's features (SUR) and has
    none yet, computes the teacher's penultimate features of every training sample (dataset order, no
    augmentation, one pass on ``device``) and binds them to it. Returns whether it did."""
    sampler = getattr(datamodule, "batch_sampler", None)
    if not isinstance(sampler, partial) or "features" in sampler.keywords or \
            not getattr(sampler.func, "needs_teacher_features", False):
        return False
    datamodule.setup("fit")
    dataset = datamodule.build(train=True, augment=False)
    if isinstance(datamodule.train_set, Subset):
        dataset = Subset(dataset, datamodule.train_set.indices)
    teacher.to(device)
    feats = [teacher(x.to(device), return_features=True)[1].cpu() for x, *_ in
             DataLoader(dataset, batch_size=datamodule.eval_batch_size, num_workers=datamodule.num_workers)]
    datamodule.batch_sampler = partial(sampler, features=torch.cat(feats))
    return True
