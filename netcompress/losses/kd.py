"""Hinton knowledge distillation: the pure function and the ``loss=kd`` criterion (``conf/loss/kd.yaml``)."""
import torch
import torch.nn.functional as F
from torch import nn

from netcompress.core import ConfigError


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch (``batchmean``)."""
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t


class KDLoss(nn.Module):
    """``ce_weight * CE(s, y) + kd_weight * T^2 KL(softmax(t/T) || softmax(s/T))`` (batch mean).

    torchdistill's ``KDLoss(temperature, alpha, beta)`` is ``alpha * CE + beta * T^2 * KL`` (our ``ce_weight``,
    ``kd_weight``), except that with ``alpha=0`` it returns the KL *without* the T^2 factor: set
    ``kd_weight=1/T^2`` to reproduce that case at T != 1 (its CCKD recipe uses T = 1, where both agree).

    ``forward(logits, teacher_logits, targets, features=None, teacher_features=None, context=None)`` (the
    ``KDModule`` criterion interface; ``context``: ``netcompress.losses.context.LossContext``) returns the weighted
    total and the unweighted terms ``{"ce": .., "kd": ..}`` (logged as ``train/loss_ce``, ``train/loss_kd``).
    ``config``: the init arguments as plain values (saved as the module's ``hparams["loss"]``).
    """

    def __init__(self, ce_weight: float, kd_weight: float, temperature: float, label_smoothing: float = 0.0):
        super().__init__()
        if ce_weight < 0 or kd_weight < 0:
            raise ConfigError(f"loss.ce_weight={ce_weight}, loss.kd_weight={kd_weight}: the weights must be >= 0.")
        if temperature <= 0:
            raise ConfigError(f"loss.temperature={temperature}: the KD temperature must be > 0 (e.g. 4).")
        self.ce_weight, self.kd_weight, self.temperature = float(ce_weight), float(kd_weight), float(temperature)
        self.label_smoothing = float(label_smoothing)

    @property
    def config(self) -> dict:
        return {"ce_weight": self.ce_weight, "kd_weight": self.kd_weight, "temperature": self.temperature,
                "label_smoothing": self.label_smoothing}

    def forward(self, logits, teacher_logits, targets, features=None, teacher_features=None, context=None):
        terms = {"ce": F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing),
                 "kd": kd_loss(logits, teacher_logits, self.temperature)}
        return self.ce_weight * terms["ce"] + self.kd_weight * terms["kd"], terms
