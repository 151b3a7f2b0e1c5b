"""Every logit/feature distillation method (KD, CCKD, DKD, ...): a student learns from a frozen teacher with the
``loss`` criterion, an ``nn.Module`` from ``netcompress/losses/`` called as

    total, terms = criterion(logits, teacher_logits, targets, features, teacher_features, context=LossContext(...))

``terms`` are the unweighted terms, each logged as ``train/loss_<name>`` (``_step`` and ``_epoch``); ``context``
(``netcompress.losses.context.LossContext``) holds the epoch, the global step and the batch's sample indices where the
data gives them. A ``_partial_`` criterion (e.g. ``CCKDLoss``, which owns embeddings) is completed here with
``student_dim`` and ``teacher_dim`` (the networks' feature sizes); as a submodule its parameters are checkpointed and
trained by this module's optimizer. A criterion with a ``figure(features, teacher_features, targets, epoch)``
method (CCKD's correlation heatmap) has it logged as ``train/<criterion.figure_name>`` every
``heatmap_every_n_epochs`` epochs.

The teacher backbone never trains: it is a ``netcompress.networks.teacher.FrozenTeacher`` (no gradients, eval mode
forever) and its forward pass runs under ``no_grad``. Samplers that need the teacher (SUR) get it from
``DistillationModule.setup``.
"""
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from lightning_modules.distillation import DistillationModule
from netcompress.core import ConfigError
from netcompress.losses.context import LossContext
from netcompress.reporting.images import log_image


class KDModule(DistillationModule):
    """Student ``net`` distilled from a frozen ``teacher`` with the ``loss`` criterion (module docstring)."""

    method = "method=kd/cckd"

    def __init__(self, net: nn.Module, teacher: nn.Module, optimizer: Callable, loss: nn.Module | Callable,
                 scheduler: Callable | None = None, scheduler_interval: str = "epoch",
                 heatmap_every_n_epochs: int = 5, log_teacher_accuracy: bool = True):
        if isinstance(loss, partial):   # CCKDLoss: its embeddings need the networks' feature sizes
            loss = loss(student_dim=net.feature_dim, teacher_dim=getattr(teacher, "feature_dim", None))
        if not isinstance(loss, nn.Module):
            raise ConfigError(f"loss: {self.method} needs a distillation criterion (loss=kd, loss=cckd, loss=dkd, "
                              f"... from conf/loss/), got {type(loss).__name__}.")
        super().__init__(net, teacher, optimizer, loss, scheduler, 0.0, scheduler_interval, log_teacher_accuracy)
        self.heatmap_every_n_epochs = heatmap_every_n_epochs

    # -- the loss -------------------------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, y: torch.Tensor, context: LossContext | None = None) -> dict:
        """The weighted total (``loss``), every unweighted term (``loss_<term>``), and the outputs they came from."""
        logits, features = self.net(x, return_features=True)
        with torch.no_grad():
            t_logits, t_features = self.teacher(x, return_features=True)
        total, terms = self.criterion(logits, t_logits, y, features, t_features, context=context or LossContext())
        return {"loss": total, **{f"loss_{k}": v for k, v in terms.items()}, "logits": logits,
                "features": features, "teacher_features": t_features}

    def training_step(self, batch, batch_idx):
        x, y, *indices = batch
        context = LossContext(self.current_epoch, self.trainer.max_epochs, self.global_step,
                              indices[0] if indices else None)
        out = self.losses(x, y, context)
        self.log_train({k: v for k, v in out.items() if k.startswith("loss")}, len(y), out["logits"], y)
        figure = getattr(self.criterion, "figure", None)
        if figure is not None and batch_idx == 0 and self.heatmap_every_n_epochs and \
                self.current_epoch % self.heatmap_every_n_epochs == 0 and self.trainer.is_global_zero:
            image = figure(out["features"].detach(), out["teacher_features"], y, self.current_epoch)
            log_image(self, f"train/{self.criterion.figure_name}", image, step=self.global_step)
        return out["loss"]
