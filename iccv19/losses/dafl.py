"""DAFL's loss terms (Chen et al., "Data-Free Learning of Student Networks", ICCV 2019, Eq. 2-6).

The generator G is trained against a frozen teacher T on generated images x = G(z):

    L_G = oh * L_oh + a * L_a + ie * L_ie
    L_oh = CE(T(x), argmax T(x))                   one-hot: the teacher should be confident      (Eq. 2)
    L_a  = -mean |f_T(x)|                          activation: large penultimate features         (Eq. 3)
    L_ie = sum_k p_k log p_k,  p = mean_i softmax(T(x_i))
                                                   information entropy (negative): balanced classes (Eq. 4)

and the student S learns from the teacher on the same (detached) images:

    L_S = T^2 KL(softmax(T(x)/T) || softmax(S(x)/T)), batchmean, T = 1 by default             (Eq. 6)

``log_base``: the official code computes L_ie with log10, the paper with the natural log; the two differ by
the constant factor ln(10) = 2.30, which is folded into the weight ``ie``. Default 10 (the official recipes'
weights were tuned with it); ``log_base=null`` gives the paper's natural log.
"""
import math

import torch
import torch.nn.functional as F

from iccv19.losses.kd import kd_loss


def one_hot_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the teacher's output against its own argmax (pseudo-labels)."""
    return F.cross_entropy(teacher_logits, teacher_logits.argmax(dim=1))


def activation_loss(teacher_features: torch.Tensor) -> torch.Tensor:
    """Minus the mean absolute value of the teacher's penultimate features (over batch and features)."""
    return -teacher_features.abs().mean()


def information_entropy_loss(teacher_logits: torch.Tensor, log_base: float | None = 10.0) -> torch.Tensor:
    """``sum_k p_k log p_k`` of the batch-mean teacher distribution p: minus its entropy, in base ``log_base``
    (None: natural log). Pass the logits of the global batch to balance classes across DDP ranks."""
    p = F.softmax(teacher_logits, dim=1).mean(dim=0)
    negative_entropy = (p * p.clamp_min(1e-30).log()).sum()  # 0 log 0 = 0, with a finite gradient
    return negative_entropy if log_base is None else negative_entropy / math.log(log_base)


def student_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KD of the student towards the teacher on generated images; no gradient reaches the teacher's output."""
    return kd_loss(student_logits, teacher_logits.detach(), temperature)


def generator_loss(teacher_logits: torch.Tensor, teacher_features: torch.Tensor, oh: float = 1.0, a: float = 0.1,
                   ie: float = 5.0, log_base: float | None = 10.0,
                   entropy_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``oh * L_oh + a * L_a + ie * L_ie`` and the unweighted terms ``{"oh", "a", "ie"}``.

    entropy_logits: the logits L_ie is computed on (e.g. gathered over all DDP ranks); default ``teacher_logits``.
    """
    terms = {
        "oh": one_hot_loss(teacher_logits),
        "a": activation_loss(teacher_features),
        "ie": information_entropy_loss(teacher_logits if entropy_logits is None else entropy_logits, log_base),
    }
    total = oh * terms["oh"] + a * terms["a"] + ie * terms["ie"]
    return total, terms
