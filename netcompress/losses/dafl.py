"""DAFL's loss (Chen et al., "Data-Free Learning of Student Networks", ICCV 2019, Eq. 2-6), as a criterion.

The generator G is trained against a frozen teacher T on generated images x = G(z):

    L_G = oh * L_oh + a * L_a + ie * L_ie
    L_oh = CE(T(x), argmax T(x))                   one-hot: the teacher should be confident      (Eq. 2)
    L_a  = -mean_i ||f_T(x_i)||_1  (paper)         activation: large penultimate features         (Eq. 3)
         = -mean_{i,j} |f_T(x_i)_j|  (official code, the default: ``activation=mean``)
    L_ie = sum_k p_k log p_k,  p = mean_i softmax(T(x_i))
                                                   information entropy (negative): balanced classes (Eq. 4)

and the student S learns from the teacher on the same (detached) images:

    L_S = T^2 KL(softmax(T(x)/T) || softmax(S(x)/T)), batchmean, T = 1 officially                (Eq. 6)

``activation``: the paper's Eq. 3 sums |f| over the features of an image (an L1 norm) and averages over the batch;
the official code averages over features too. The two differ by the feature dimension (120 for LeNet-5, 512 for
the CIFAR ResNets), so ``activation=sum`` with the official weight ``a`` makes the activation term dominate; the
official weights were tuned with ``mean``.

``log_base``: the official code computes L_ie with log10, the paper with the natural log; the two differ by the
constant factor ln(10) = 2.30, which is folded into the weight ``ie``. 10 in every recipe; ``null``: natural log.

``global_ie``: under DDP, L_ie on the logits all-gathered over ranks (the module gathers them).

``adversarial`` (an option, not DAFL: 0 in every DAFL recipe): the generator also maximizes the teacher-student
discrepancy, ``L_G -= adversarial * mean |S(x) - T(x)|`` over logits, as DFAD (Fang et al., "Data-Free Adversarial
Distillation", 2019) trains its generator: images where the student is still wrong. The student's logits for this
term come from the module with the student's weights held fixed (``adversarial_logits``), so the term moves the
generator only; the student keeps learning by KD.

``bn`` (an option, not DAFL: 0 in every DAFL recipe): DeepInversion's BatchNorm-statistics term
(netcompress/losses/bn_statistics.py), ``L_G += bn * L_bn``: the generated batch's per-channel mean and variance at the
input of every BatchNorm of the teacher against that layer's running statistics. The module records ``L_bn`` with
forward hooks on the teacher and passes it in (``bn_loss``); ``bn_momentum`` blends in a moving average of past
batches' statistics (Fast-Datafree). A teacher without BatchNorm layers is a configuration error (the module's).

Every weight and setting comes from ``conf/loss/dafl*.yaml`` (the one source of truth of the defaults).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from netcompress.core import ConfigError
from netcompress.losses.kd import kd_loss

ACTIVATIONS = ("mean", "sum")


def one_hot_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the teacher's output against its own argmax (pseudo-labels)."""
    return F.cross_entropy(teacher_logits, teacher_logits.argmax(dim=1))


def activation_loss(teacher_features: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Minus the absolute penultimate features: ``mean`` over batch and features (official code) or ``sum`` over
    the features of each image, mean over the batch (the paper's L1 norm, Eq. 3)."""
    per_image = teacher_features.abs().flatten(1)
    return -(per_image.mean() if reduction == "mean" else per_image.sum(dim=1).mean())


def information_entropy_loss(teacher_logits: torch.Tensor, log_base: float | None = 10.0) -> torch.Tensor:
    """``sum_k p_k log p_k`` of the batch-mean teacher distribution p: minus its entropy, in base ``log_base``
    (None: natural log). Pass the logits of the global batch to balance classes across DDP ranks."""
    p = F.softmax(teacher_logits, dim=1).mean(dim=0)
    negative_entropy = (p * p.clamp_min(1e-30).log()).sum()  # 0 log 0 = 0, with a finite gradient
    return negative_entropy if log_base is None else negative_entropy / math.log(log_base)


def student_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KD of the student towards the teacher on generated images; no gradient reaches the teacher's output."""
    return kd_loss(student_logits, teacher_logits.detach(), temperature)


class DAFLLoss(nn.Module):
    """DAFL's generator loss ``oh * L_oh + a * L_a + ie * L_ie`` and the student's KD loss (see the module doc).

    ``forward(teacher_logits, teacher_features, student_logits, entropy_logits=None, adversarial_logits=None)``
    returns ``L_G + L_S`` (one backward trains both: L_G reaches only the generator, L_S only the student, who sees
    detached images) and the terms ``{"oh", "a", "ie", "generator", "student"}`` (and ``"adv"``). ``entropy_logits``:
    the logits L_ie is computed on (the batch gathered over DDP ranks); default ``teacher_logits``.
    ``adversarial_logits``: the student's logits on the (not detached) images through its fixed weights, needed
    when ``adversarial > 0``. ``bn_loss``: the teacher's BatchNorm-statistics distance, needed when ``bn > 0``.
    """

    def __init__(self, oh: float, a: float, ie: float, log_base: float | None, temperature: float,
                 activation: str, global_ie: bool, adversarial: float, bn: float, bn_momentum: float):
        super().__init__()
        if min(oh, a, ie, adversarial, bn) < 0:
            raise ConfigError(f"loss.oh={oh}, loss.a={a}, loss.ie={ie}, loss.adversarial={adversarial}, loss.bn={bn}: "
                              f"the weights must be >= 0 (the signs are in the terms).")
        if not 0 <= bn_momentum < 1:
            raise ConfigError(f"loss.bn_momentum={bn_momentum}: the weight of the moving average of past batch "
                              f"statistics must be in [0, 1) (0: none, DeepInversion; Fast-Datafree uses 0.9).")
        if temperature <= 0 or (log_base is not None and log_base <= 1):
            raise ConfigError(f"loss.temperature={temperature}, loss.log_base={log_base}: the temperature must be "
                              f"> 0 and the log base > 1 (or null for the natural log).")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"loss.activation={activation}: choose mean (official code) or sum (paper, Eq. 3).")
        self.oh, self.a, self.ie, self.log_base = oh, a, ie, log_base
        self.temperature, self.activation, self.global_ie = temperature, activation, global_ie
        self.adversarial, self.bn, self.bn_momentum = adversarial, bn, bn_momentum
        self.config = dict(oh=oh, a=a, ie=ie, log_base=log_base, temperature=temperature, activation=activation,
                           global_ie=global_ie, adversarial=adversarial, bn=bn, bn_momentum=bn_momentum)

    def generator_loss(self, teacher_logits, teacher_features, entropy_logits=None, adversarial_logits=None,
                       bn_loss=None):
        terms = {
            "oh": one_hot_loss(teacher_logits),
            "a": activation_loss(teacher_features, self.activation),
            "ie": information_entropy_loss(teacher_logits if entropy_logits is None else entropy_logits,
                                           self.log_base),
        }
        loss = self.oh * terms["oh"] + self.a * terms["a"] + self.ie * terms["ie"]
        if self.adversarial:
            if adversarial_logits is None:
                raise ValueError("loss.adversarial > 0 needs the student's logits on the generated images "
                                 "(adversarial_logits), computed with its weights held fixed")
            terms["adv"] = (adversarial_logits - teacher_logits).abs().mean()
            loss = loss - self.adversarial * terms["adv"]
        if self.bn:
            if bn_loss is None:
                raise ValueError("loss.bn > 0 needs the teacher's BatchNorm-statistics distance (bn_loss)")
            terms["bn"] = bn_loss
            loss = loss + self.bn * bn_loss
        return loss, terms

    def forward(self, teacher_logits, teacher_features, student_logits, entropy_logits=None,
                adversarial_logits=None, bn_loss=None):
        loss_g, terms = self.generator_loss(teacher_logits, teacher_features, entropy_logits, adversarial_logits,
                                            bn_loss)
        loss_s = student_loss(student_logits, teacher_logits, self.temperature)
        return loss_g + loss_s, {**terms, "generator": loss_g, "student": loss_s}
