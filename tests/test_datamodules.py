import numpy as np
import pytest
import torch
from data_files import write_cifar, write_image_folder, write_mnist
from helpers import compose_config
from hydra.utils import instantiate

from datamodules.digits import DigitsDataModule
from datamodules.vision import ImageNetDataModule
from netcompress.core import ConfigError, find_config_error


def first_batch(loader):
    return next(iter(loader))


def data_module(name, tmp_path, **overrides):
    """The datamodule ``data=<name>`` builds (no batch sampler, no loader processes), with ``data.<key>=<value>``
    overrides."""
    overrides = {"num_workers": 0, **overrides}
    cfg = compose_config(["method=supervised", f"data={name}", *(f"data.{k}={v}" for k, v in overrides.items())],
                         tmp_path)
    try:
        return instantiate(cfg.data)
    except Exception as e:   # Hydra wraps what the constructor raised; run.py reports the ConfigError inside
        raise (find_config_error(e) or e) from None


def test_digits_split_is_stratified_deterministic_and_disjoint():
    dm = DigitsDataModule(batch_size=32, holdout=180)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1437 - 180, 180, 360)
    assert set(dm.train_set.indices).isdisjoint(dm.val_set.indices)
    # stratified: each of the 10 classes has 18 validation images (180 / 10), give or take one
    val_labels = dm.labels_of(dm.val_set.dataset)[dm.val_set.indices]
    assert np.bincount(val_labels, minlength=10).min() >= 17
    again = DigitsDataModule(batch_size=32, holdout=180)
    again.setup()
    assert again.val_set.indices == dm.val_set.indices
    x, y = first_batch(dm.train_dataloader())
    assert x.shape == (32, 1, 32, 32) and y.dtype == torch.long
    # normalized with the training pool's statistics
    pool = dm.train_set.dataset.tensors[0]
    assert abs(pool.mean().item()) < 1e-4 and abs(pool.std().item() - 1) < 1e-3


def test_digits_without_holdout_validates_on_test_set():
    dm = DigitsDataModule(holdout=0)
    dm.setup()
    assert dm.val_set is dm.test_set and len(dm.train_set) == 1437


def test_mnist_reads_idx_files_at_32x32(tmp_path):
    write_mnist(tmp_path, n_train=40, n_test=20)
    dm = data_module("mnist", tmp_path, root=tmp_path, batch_size=8, holdout=10)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 20)
    x, y = first_batch(dm.train_dataloader())
    assert x.shape == (8, 1, 32, 32)
    assert sorted(set(dm.train_labels().tolist())) == list(range(10))


def test_mnist_random_shift_moves_training_images_only(tmp_path):
    write_mnist(tmp_path, n_train=40, n_test=20)
    plain = data_module("mnist", tmp_path, root=tmp_path).build(train=True, augment=True)
    shifted = data_module("mnist", tmp_path, root=tmp_path, random_shift=1)
    torch.manual_seed(0)
    views = torch.stack([shifted.build(train=True, augment=True)[0][0] for _ in range(12)])
    assert all(torch.equal(shifted.build(train=True, augment=False)[0][0], plain[0][0]) for _ in range(2))
    assert len({v.sum().item() for v in views}) > 1          # the crops differ: the ink moves in and out
    assert views.amin().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-4)   # the padding: black, normalized
    with pytest.raises(ConfigError, match="data.random_shift=-1"):
        data_module("mnist", tmp_path, root=tmp_path, random_shift=-1)


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_python_pickles(tmp_path, name, classes):
    write_cifar(tmp_path, classes=classes, per_batch=20)
    dm = data_module(name, tmp_path, root=tmp_path, batch_size=4)
    dm.setup()
    n_train = 100 if classes == 10 else 20
    assert (len(dm.train_set), len(dm.test_set)) == (n_train, 20)
    x, _ = first_batch(dm.train_dataloader())
    assert x.shape == (4, 3, 32, 32)
    # evaluation transform is deterministic, training transform (crop + flip) is not
    assert torch.equal(dm.test_set[0][0], dm.test_set[0][0])


def test_imagenet_image_folder_train_and_eval_transforms(tmp_path):
    write_image_folder(tmp_path, classes=3, per_class=4, size=40)
    dm = ImageNetDataModule(root=str(tmp_path), num_classes=3, image_size=32, batch_size=2, holdout=3)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (9, 3, 12)
    x, y = first_batch(dm.train_dataloader())
    assert x.shape == (2, 3, 32, 32)
    loader = dm.test_dataloader()   # the class-by-class listing in one fixed random order
    x, y = first_batch(loader)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [i // 4 for i in loader.dataset.indices[:2]]
    with pytest.raises(ConfigError, match="data.num_classes=1000"):
        ImageNetDataModule(root=str(tmp_path), image_size=32).setup()


@pytest.mark.parametrize("name, layout", [
    ("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python"), ("imagenet", "train/<class>")])
def test_missing_data_folder_names_data_root_and_layout(tmp_path, name, layout):
    with pytest.raises(ConfigError) as error:
        data_module(name, tmp_path, root=tmp_path / "nonexistent").setup()
    message = str(error.value)
    assert "data.root=" in message and layout in message


def test_shape_override_that_disagrees_is_an_error():
    with pytest.raises(ConfigError, match="data.num_classes=100"):
        DigitsDataModule(num_classes=100)


@pytest.mark.parametrize("recipe", ["dafl_cifar10", "dafl_cifar100", "teacher_cifar10_resnet34",
                                    "teacher_cifar100_resnet34"])
def test_cifar_recipes_normalize_as_their_data_set(tmp_path, recipe):
    """One normalization per data set: a teacher trained by one recipe sees the inputs every other recipe gives."""
    cfg = compose_config([f"experiment={recipe}", f"data.root={tmp_path}"], tmp_path)
    name = "cifar100" if cfg.data.num_classes == 100 else "cifar10"
    own = compose_config([f"data={name}"], tmp_path).data
    assert (list(cfg.data.mean), list(cfg.data.std)) == (list(own.mean), list(own.std))
    write_cifar(tmp_path, classes=cfg.data.num_classes, per_batch=400 if cfg.data.num_classes == 100 else 20)
    dm = instantiate(cfg.data)
    dm.setup()
    x, _ = dm.test_set[0]
    raw = torch.tensor(dm.test_set.data[0], dtype=torch.float32).permute(2, 0, 1) / 255
    mean, std = (torch.tensor(list(v)).view(3, 1, 1) for v in (own.mean, own.std))
    expected = (raw - mean) / std
    assert torch.allclose(x, expected, atol=1e-6)


def test_ddp_ranks_read_the_one_process_batches_between_them():
    """Under DDP (rank r of W) each step's batches of B images, together, are the one-process batch of W * B images
    of the same epoch; the tail that does not split evenly is dropped; set_epoch reorders."""
    from datamodules.base import EpochShuffle, EpochShuffleShard

    data, world, batch = list(range(103)), 2, 4
    one = EpochShuffle(data, seed=5)
    one.set_epoch(3)
    order = list(one)
    assert sorted(order) == data
    shards = [EpochShuffleShard(data, seed=5, num_replicas=world, rank=r) for r in range(world)]
    for shard in shards:
        shard.set_epoch(3)
    ranks = [list(s) for s in shards]
    assert [len(r) for r in ranks] == [51, 51]
    for step in range(51 // batch):
        together = [i for r in ranks for i in r[step * batch:(step + 1) * batch]]
        assert sorted(together) == sorted(order[step * world * batch:(step + 1) * world * batch])
    shards[0].set_epoch(4)
    assert list(shards[0]) != ranks[0]
