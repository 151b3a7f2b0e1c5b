"""What a run logs about training, checked against values computed by hand: ClassifierModule.log_train
accumulates per-step scalars on the device and logs their epoch means (and the training accuracy) once per epoch;
the progress bar is updated every few steps."""
import csv
from unittest import mock

import lightning as L
import torch
import torch.nn.functional as F
from helpers import ROOT
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.classifier import ClassifierModule


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x, return_features=False):
        return (self.fc(x), x) if return_features else self.fc(x)


def test_epoch_means_and_accuracy_equal_the_hand_computed_ones(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(23, 4), torch.randint(0, 6, (23,))   # batches of 8, 8 and 7: the mean weights samples
    net = Linear()
    module = ClassifierModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))   # weights stay as they are
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="", version="")
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=logger, log_every_n_steps=2,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=8))

    with torch.no_grad():
        logits = net(x)
    loss = F.cross_entropy(logits, y)
    top1 = (logits.argmax(1) == y).float().mean()
    top5 = (logits.topk(5, dim=1).indices == y[:, None]).any(1).float().mean()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    epochs = [r for r in rows if r.get("train/loss_epoch")]
    assert len(epochs) == 2
    for row in epochs:
        assert abs(float(row["train/loss_epoch"]) - loss.item()) < 1e-5
        assert abs(float(row["train/acc"]) - top1.item()) < 1e-6
        assert abs(float(row["train/acc_top5"]) - top5.item()) < 1e-6
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert steps == [1, 3, 5], steps   # written every log_every_n_steps=2 of the 6 steps, as Lightning does
    second_batch = F.cross_entropy(logits[8:16], y[8:16])   # step 1 = the second batch
    assert abs(float(next(r for r in rows if r.get("train/loss_step"))["train/loss_step"]) - second_batch.item()) < 1e-5


def test_progress_bar_updates_every_n_batches_and_at_the_epoch_end(tmp_path):
    """conf/callbacks/default.yaml's bar: Lightning's RichProgressBar update runs after batches 10, 20 and the last
    (25th) of each epoch, not after every batch; the bar ends showing every batch done."""
    bar = instantiate(OmegaConf.load(ROOT / "conf" / "callbacks" / "default.yaml").progress_bar)
    updated = []
    original = RichProgressBar.on_train_batch_end

    def record(self, trainer, module, outputs, batch, batch_idx):
        updated.append((trainer.current_epoch, batch_idx + 1))
        original(self, trainer, module, outputs, batch, batch_idx)

    x, y = torch.randn(25, 4), torch.randint(0, 6, (25,))
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, callbacks=[bar], enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    with mock.patch.object(RichProgressBar, "on_train_batch_end", record):
        trainer.fit(ClassifierModule(Linear(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1)),
                    DataLoader(TensorDataset(x, y), batch_size=1))
    assert updated == [(0, 10), (0, 20), (0, 25), (1, 10), (1, 20), (1, 25)]
    assert bar.train_progress_bar.completed == 25
    assert "train/loss_step" in bar.get_metrics(trainer, trainer.lightning_module)   # log_train's, not self.log's


def test_model_summary_has_no_flops_column_and_the_right_totals(tmp_path, caplog):
    """netcompress.reporting.summary.ModelSummary (conf/callbacks/default.yaml) prints Lightning's layer table without
    the FLOPs column that reads 0, and the parameter totals of the network (Linear 4 -> 6: 30 parameters)."""
    import logging

    from netcompress.reporting.summary import ModelSummary

    x, y = torch.randn(4, 4), torch.randint(0, 6, (4,))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[ModelSummary(max_depth=2)],
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="netcompress.reporting.summary"):
        trainer.fit(ClassifierModule(Linear(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1)),
                    DataLoader(TensorDataset(x, y), batch_size=4))
    table = caplog.text
    assert "Params" in table and "net.fc" in table and "FLOPs" not in table
    assert "30         Trainable params" in table and "30         Total params" in table


def test_elapsed_time_is_logged_beside_val_acc_and_goes_on_after_a_resume(tmp_path):
    """conf/callbacks/default.yaml's elapsed_time: each validation of the fit logs the fit's wall time so far; epochs
    of at least 0.2 s give rising times of at least 0.2 s per epoch, and a fit resumed from its checkpoint goes on
    from the checkpoint's time, not from 0."""
    import time

    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    class Slow(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            time.sleep(0.2)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 6, (16,))), batch_size=8)

    def fit(epochs, folder, ckpt_path=None):
        module = ClassifierModule(Linear(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
        elapsed = instantiate(OmegaConf.load(ROOT / "conf" / "callbacks" / "default.yaml").elapsed_time)
        trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=L.pytorch.loggers.CSVLogger(folder, name="",
                            version=""), callbacks=[elapsed, Slow(), ModelCheckpoint(tmp_path / "ckpt", "last")],
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1)
        trainer.fit(module, data, data, ckpt_path=ckpt_path)
        return [(int(r["epoch"]), float(r["time/elapsed_s"])) for r in csv.DictReader(open(folder / "metrics.csv"))
                if r.get("time/elapsed_s")], getattr(module, "model_stats", {})

    first, stats = fit(2, tmp_path / "a")
    assert [e for e, _ in first] == [0, 1] and not stats   # one per validation of the fit, none for the sanity check
    assert 0 < first[0][1] < first[1][1] and first[1][1] - first[0][1] >= 0.2
    [(epoch, seconds)], stats = fit(3, tmp_path / "b", ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert epoch == 2 and seconds >= first[1][1] + 0.2
    assert first[1][1] + 0.2 <= stats["time/before_resume_s"] < seconds   # the checkpoint's time, after its sleep
