"""Supervised training of any network on any datamodule: teachers, baselines, retraining of pruned networks."""
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from iccv19.networks.flops import count_flops, count_params


class ClassifierModule(L.LightningModule):
    """``self.net`` trained with cross-entropy (optionally label-smoothed); top-1/top-5 on val and test.

    optimizer: ``_partial_`` optimizer, called with the parameters to train.
    scheduler: ``_partial_`` LR scheduler called with the optimizer (or None); stepped every
        ``scheduler_interval`` ("epoch" or "step").
    """

    # Init arguments kept out of the checkpoint's hyper_parameters: networks, and factories Lightning's
    # torch.load(weights_only=True) refuses on resume. Subclasses extend it; the run saves the full config anyway.
    unsaved_hyperparameters = ("net", "optimizer", "scheduler")

    def __init__(self, net: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 label_smoothing: float = 0.0, scheduler_interval: str = "epoch"):
        super().__init__()
        # collects the init arguments of the subclass too (Lightning walks the __init__ frames)
        self.save_hyperparameters(ignore=list(self.unsaved_hyperparameters), logger=False)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing, self.scheduler_interval = label_smoothing, scheduler_interval
        self.metrics = nn.ModuleDict()  # built lazily: the number of classes is read off the logits

    def forward(self, x: torch.Tensor, return_features: bool = False):
        return self.net(x, return_features=return_features)

    # -- metrics ------------------------------------------------------------------------------------------
    def accuracy(self, name: str, num_classes: int, top_k: int = 1) -> str:
        """The attribute path of a (lazily built) top-k accuracy metric."""
        key = f"{name}_top{top_k}"
        if key not in self.metrics:
            self.metrics[key] = MulticlassAccuracy(num_classes, top_k=min(top_k, num_classes),
                                                   average="micro").to(self.device)
        return f"metrics.{key}"

    def log_accuracy(self, stage: str, logits: torch.Tensor, y: torch.Tensor, prefix: str = ""):
        """Logs ``{stage}/{prefix}acc`` and ``{stage}/{prefix}acc_top5`` as epoch-level metrics."""
        for k, suffix in ((1, ""), (5, "_top5")):
            attribute = self.accuracy(f"{stage}_{prefix}", logits.shape[1], k)
            metric = self.get_submodule(attribute)
            metric(logits, y)
            self.log(f"{stage}/{prefix}acc{suffix}", metric, on_step=False, on_epoch=True,
                     prog_bar=(k == 1 and stage != "train"), metric_attribute=attribute)

    # -- steps ----------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log_accuracy("train", logits.detach(), y)
        return loss

    def evaluate(self, batch, stage: str):
        x, y = batch
        logits = self.net(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        self.log_accuracy(stage, logits, y)

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test")

    # -- set-up ---------------------------------------------------------------------------------------------
    def on_fit_start(self):
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "input_shape"):
            return
        stats = {"model/params": count_params(self.net), "model/flops": count_flops(self.net, dm.input_shape)}
        self.model_stats = stats   # run.py writes them to metrics.json
        rank_zero_info(f"[model] {type(self.net).__name__}: {stats['model/params']:,} parameters, "
                       f"{stats['model/flops'] / 1e6:.2f}M FLOPs (multiply-adds) at input {dm.input_shape}")
        for logger in self.loggers:
            logger.log_metrics(stats, step=0)

    def trainable_parameters(self):
        """What the optimizer trains; subclasses add embeddings etc. Frozen parameters are left out."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
