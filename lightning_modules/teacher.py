"""Building the frozen teacher a student learns from: a checkpoint, torchvision weights, or (for the embedded
digits default) trained on first use and cached, so that a fresh machine runs ``python run.py`` as is."""
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lightning_modules.classifier import ClassifierModule
from netcompress.core import atomic_torch_save
from netcompress.networks.teacher import FrozenTeacher, load_weights


def build_teacher(net: nn.Module, checkpoint: str | None = None, train_if_missing: dict | None = None,
                  datamodule: L.LightningDataModule | None = None) -> FrozenTeacher:
    """``net`` with weights from ``checkpoint`` (Lightning .ckpt or plain state_dict), frozen.

    checkpoint=None keeps the network's own weights (torchvision ``model.weights=...``).
    train_if_missing: ``{path, max_epochs, lr, seed}``: with checkpoint=None, the teacher cached at ``path``,
    trained on ``datamodule`` with ClassifierModule and written there (atomically) when it is not there yet. A
    ``checkpoint`` the user names is never trained: a mistyped path is an error, not a new teacher.
    """
    if not checkpoint and train_if_missing:
        train_if_missing = dict(train_if_missing)
        checkpoint = train_if_missing.pop("path")
        if not Path(checkpoint).is_file():
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{checkpoint}.lock"):   # runs started together (jobs, DDP ranks, test workers) train it once
                if not Path(checkpoint).is_file():
                    _train_and_cache(net, Path(checkpoint), datamodule, **train_if_missing)
    if checkpoint:
        load_weights(net, checkpoint, key="teacher.checkpoint")
    elif not getattr(net, "pretrained", False):
        rank_zero_warn(f"[teacher] {type(net).__name__} has random weights (no teacher.checkpoint, no "
                       f"teacher.net.weights): distilling from it only tests the pipeline.")
    return FrozenTeacher(net)


def _train_and_cache(net, path: Path, datamodule, max_epochs: int, lr: float, seed: int = 0):

    if datamodule is None:
        raise ValueError("teacher.train_if_missing needs teacher.datamodule")
    rank_zero_info(f"[teacher] {path} not found: training {type(net).__name__} on {type(datamodule).__name__} "
          f"for {max_epochs} epochs and caching it (once per machine)")
    with torch.random.fork_rng():
        L.seed_everything(seed, workers=True, verbose=False)
        for m in net.modules():   # the same initial weights whatever the run's seed was when net was built
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        module = ClassifierModule(net, optimizer=lambda params: torch.optim.Adam(params, lr=lr))
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, datamodule=datamodule)
        acc = trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/acc"]
    rank_zero_info(f"[teacher] cached teacher test accuracy {acc:.4f}")
    atomic_torch_save(net.state_dict(), path)
