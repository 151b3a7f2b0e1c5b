"""data=fashion_mnist, a torchvision data set added as one YAML (conf/data/fashion_mnist.yaml): read from files
written in its real on-disk format, and a network trained and tested on them (a copy of this file tests the next
data set)."""
import pytest
import torch
from data_files import write_mnist
from helpers import FAST, compose_config, run_config
from hydra.utils import instantiate

from netcompress.core import ConfigError

MEAN, STD = 0.2860, 0.3530   # the normalization the YAML states


def test_fashion_mnist_reads_its_idx_files(tmp_path):
    root = write_mnist(tmp_path / "data", n_train=40, n_test=20, name="FashionMNIST", learnable=True)
    cfg = compose_config(["method=supervised", "data=fashion_mnist", f"data.root={root}", "data.holdout=10",
                          "data.num_workers=0"], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 20)
    assert sorted(set(dm.train_labels().tolist())) == list(range(10))
    x, y = dm.test_set[7]                   # label 7: the white block in the lower band, third column
    assert x.shape == (1, 32, 32) and y == 7
    assert x.max().item() == pytest.approx((1 - MEAN) / STD, abs=1e-5)   # white, normalized
    assert x.min().item() == pytest.approx(-MEAN / STD, abs=1e-5)        # black, normalized
    rows, cols = torch.nonzero(x[0] > 0, as_tuple=True)
    assert rows.float().mean() > 16 and 10 < cols.float().mean() < 16    # rows 16-23, cols 11-15 of 28, scaled
    with pytest.raises(ConfigError, match=r"data.root=.*nonexistent: FashionMNIST not found.*<root>/FashionMNIST/raw/"):
        instantiate(cfg.data, root=str(tmp_path / "nonexistent")).setup()


@pytest.mark.e2e
def test_fashion_mnist_trains_and_tests_a_network(tmp_path):
    root = write_mnist(tmp_path / "data", n_train=640, n_test=100, name="FashionMNIST", learnable=True)
    metrics = run_config(["data=fashion_mnist", f"data.root={root}", "model=lenet5_half", "trainer.max_epochs=1",
                          "method=supervised", "data.batch_size=16", "data.num_workers=0", "logger=none",
                          "callbacks=none", *FAST[2:]], tmp_path)
    assert metrics["test/acc"] > 0.8   # chance: 0.1 (the same run on noise images: 0.1)
