"""Decoupled knowledge distillation (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022), ``loss=dkd``::

    L = ce_weight * CE(s, y) + min((epoch + 1) / warmup, 1) * (alpha * TCKD + beta * NCKD)

KD's KL divided in two (the paper's Eq. 1-4): TCKD, the KL between teacher and student of the binary "target class
or not" probabilities ``[p_y, 1 - p_y]``, and NCKD, the KL between the softmax over the non-target classes only;
both at temperature T and scaled by T^2, batch mean. Classic KD is TCKD + (1 - p_y^teacher) NCKD per sample: DKD
drops that weight and gives the two their own, ``alpha`` and ``beta``. The warm-up ramps the distillation terms in
linearly over the first ``warmup`` epochs, as mdistiller's ``DKD.forward_train`` does with its 1-based epoch (here
``context.epoch + 1``). Defaults and recipe values: conf/loss/dkd.yaml."""
import torch
import torch.nn.functional as F
from torch import nn

from netcompress.core import ConfigError


def dkd_terms(logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each T^2 * KL(teacher || student) averaged over the batch."""
    t = temperature
    target = F.one_hot(targets, logits.shape[1]).bool()
    log_p_s, log_p_t = F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1)

    def binary(log_p):   # log [p_y, 1 - p_y], stable for p_y near 1
        log_target = log_p[target]
        return torch.stack([log_target, torch.log1p(-log_target.exp().clamp(max=1 - 1e-7))], dim=1)

    tckd = F.kl_div(binary(log_p_s), binary(log_p_t), reduction="batchmean", log_target=True)

    def others(z):   # log-softmax over the non-target classes (the target's logit pushed far below: weight 0)
        return F.log_softmax((z / t).masked_fill(target, -1e4), dim=1)

    nckd = F.kl_div(others(logits), others(teacher_logits), reduction="batchmean", log_target=True)
    return tckd * t * t, nckd * t * t


class DKDLoss(nn.Module):
    """The ``KDModule`` criterion ``loss=dkd`` (module docstring). ``forward`` returns the weighted total and the
    unweighted terms ``{"ce", "tckd", "nckd"}``; it reads the epoch from ``context`` (``LossContext``) for the
    warm-up (no context: epoch 0)."""

    def __init__(self, ce_weight: float, alpha: float, beta: float, temperature: float, warmup: int):
        super().__init__()
        for key, value in (("ce_weight", ce_weight), ("alpha", alpha), ("beta", beta), ("warmup", warmup)):
            if value < 0:
                raise ConfigError(f"loss.{key}={value}: must be >= 0.")
        if temperature <= 0:
            raise ConfigError(f"loss.temperature={temperature}: the temperature must be > 0 (DKD: 4).")
        self.ce_weight, self.alpha, self.beta = float(ce_weight), float(alpha), float(beta)
        self.temperature, self.warmup = float(temperature), int(warmup)

    @property
    def config(self) -> dict:
        return {"ce_weight": self.ce_weight, "alpha": self.alpha, "beta": self.beta,
                "temperature": self.temperature, "warmup": self.warmup}

    def forward(self, logits, teacher_logits, targets, features=None, teacher_features=None, context=None):
        epoch = context.epoch if context is not None else 0
        ramp = min((epoch + 1) / self.warmup, 1.0) if self.warmup else 1.0
        tckd, nckd = dkd_terms(logits, teacher_logits, targets, self.temperature)
        terms = {"ce": F.cross_entropy(logits, targets), "tckd": tckd, "nckd": nckd}
        return self.ce_weight * terms["ce"] + ramp * (self.alpha * tckd + self.beta * nckd), terms
