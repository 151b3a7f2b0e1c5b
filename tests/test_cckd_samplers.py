"""Random / CUR / SUR batch samplers: composition, rank disjointness, equal batch counts, epochs."""
from collections import Counter

import numpy as np
import pytest

from datamodules.samplers import ClassUniformBatchSampler, RandomBatchSampler, SuperclassUniformBatchSampler
from netcompress.core import ConfigError

# 10 classes of unequal sizes (23..41 samples).
LABELS = np.repeat(np.arange(10), [23, 41, 30, 35, 28, 40, 33, 25, 38, 31])


def ranks(cls, world, **kwargs):
    return [list(cls(labels=LABELS, num_replicas=world, rank=r, seed=7, **kwargs)) for r in range(world)]


@pytest.mark.parametrize("k", [2, 4])
def test_cur_k_instances_of_each_sampled_class(k):
    batches = list(ClassUniformBatchSampler(LABELS, batch_size=8 * k // 2, k=k, seed=1))
    assert batches
    exact = 0
    for batch in batches:
        counts = Counter(LABELS[batch].tolist())
        assert all(c % k == 0 for c in counts.values()), counts
        exact += all(c == k for c in counts.values())
    assert exact >= len(batches) // 2  # most batches lie inside one round: exactly k of each class


def test_cur_classes_picked_uniformly():
    # k=2, 10 groups per batch: a round (one group of every class) is exactly one batch. The smallest class
    # has 23 samples = 11 groups, so the first 11 batches hold every class exactly twice, whatever its size.
    sampler = ClassUniformBatchSampler(LABELS, batch_size=20, k=2, seed=3)
    batches = list(sampler)
    for batch in batches[:11]:
        assert np.bincount(LABELS[batch], minlength=10).tolist() == [2] * 10
    used = np.concatenate(batches)
    assert len(used) == len(set(used.tolist()))  # no sample twice in an epoch


@pytest.mark.parametrize("cls, kwargs", [(RandomBatchSampler, {}), (ClassUniformBatchSampler, {"k": 4})])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_disjoint_and_equal_length(cls, kwargs, world):
    per_rank = ranks(cls, world, batch_size=16, **kwargs)
    lengths = {len(b) for b in per_rank}
    assert len(lengths) == 1 and lengths.pop() == len(cls(LABELS, 16, world, 0, 7, **kwargs)) > 0
    seen = [set(i for batch in batches for i in batch) for batches in per_rank]
    for a in range(world):
        for b in range(a + 1, world):
            assert not seen[a] & seen[b]
    assert all(len(batch) == 16 for batches in per_rank for batch in batches)


def test_lightning_sets_the_epoch():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    sampler = ClassUniformBatchSampler(LABELS, 16, k=4)
    _set_sampler_epoch(DataLoader(range(len(LABELS)), batch_sampler=sampler), 3)  # what the fit loop calls
    assert sampler.epoch == 3


def test_epochs_differ_and_are_reproducible():
    a = RandomBatchSampler(LABELS, 16, seed=5)
    first = list(a)
    assert list(a) == first
    a.set_epoch(1)
    assert list(a) != first
    b = ClassUniformBatchSampler(LABELS, 16, seed=5, k=4)
    b.set_epoch(1)
    c = ClassUniformBatchSampler(LABELS, 16, seed=5, k=4)
    c.set_epoch(1)
    assert list(b) == list(c)


def test_sur_groups_by_teacher_feature_clusters():
    rng = np.random.default_rng(0)
    # Two well-separated blobs of features; the labels (10 classes) say nothing about them.
    blob = (np.arange(len(LABELS)) % 2).astype(np.float32)
    features = np.stack([blob * 10, -blob * 10], 1) + rng.normal(0, 0.1, (len(LABELS), 2))
    per_rank = ranks(SuperclassUniformBatchSampler, 2, batch_size=8, k=4, num_superclasses=2,
                     features=features)
    assert len(per_rank[0]) == len(per_rank[1]) > 0
    for batch in per_rank[0] + per_rank[1]:
        counts = Counter(blob[batch].tolist())
        assert sorted(counts.values()) in ([4, 4], [8])
    assert not set(np.concatenate(per_rank[0]).tolist()) & set(np.concatenate(per_rank[1]).tolist())


def test_bad_options_name_the_config_key():
    with pytest.raises(ConfigError, match="data.batch_sampler.k"):
        ClassUniformBatchSampler(LABELS, batch_size=10, k=4)
    with pytest.raises(ConfigError, match="data.batch_size"):
        RandomBatchSampler(LABELS, batch_size=1000)
    with pytest.raises(ConfigError, match="teacher's features"):
        SuperclassUniformBatchSampler(LABELS, batch_size=8)
