"""Correlation congruence (CC) loss of CCKD (Peng et al., ICCV 2019, arXiv 1904.01802).

The paper's loss compares the n x n sample-to-sample correlation matrices of a batch of teacher and student
embeddings ``f_t, f_s`` (one row per sample, same dimension)::

    C[i, j] = k(f_i, f_j)        L_CC = 1/n^2 * sum_ij (C_s[i, j] - C_t[i, j])^2  (= 1/n^2 ||C_s - C_t||_F^2)

Kernels ``k`` (``kernel=``):

* ``"rbf_taylor"`` (the paper's default): Gaussian RBF ``exp(-gamma ||x - y||^2)`` approximated, on
  L2-normalized features where ``||x - y||^2 = 2 - 2 x.y``, by its Taylor series of order ``order`` (P)::

      k(x, y) = sum_{p=0..P} exp(-2 gamma) (2 gamma)^p / p! * (x.y)^p          (paper: gamma 0.4, P 2)

* ``"rbf"``: the exact Gaussian RBF ``exp(-gamma ||x - y||^2)`` (what the Taylor series approximates).
* ``"bilinear"``: ``x.y`` (bilinear pool).
* ``"mmd"``: the paper's "naive MMD", ``|mean(x) - mean(y)|``: the difference of the first moments (mean over
  the feature dimension) of the two samples.

Variants of the loss (``variant=``), so published baselines can be reproduced:

* ``"paper"``: the formula above: squared differences summed over the n x n entries, then (``reduction``)
  divided by n^2 (``"mean"``, the paper's 1/n^2) or not (``"sum"``).
* ``"torchdistill"``: torchdistill's ``CCKDLoss``: the *unsquared* Frobenius norm ``||C_s - C_t||_F``, divided by
  n^2 with ``reduction="mean"`` (its ``batchmean``); torchdistill also does not L2-normalize, so use it with
  ``normalize=False`` to reproduce its recipes.
* ``"repdistiller"``: RepDistiller's ``Correlation`` (the simplification its authors were given):
  ``d = |f_s - f_t|``, ``L = mean_i sum_k d[i, k] * d[i + 1, k]`` over consecutive samples of the batch; no
  kernel and no matrix (``kernel``/``gamma``/``order`` are ignored). RepDistiller does not normalize either.

``normalize`` (default True, as in the paper) L2-normalizes each embedding before the kernel.

Scale. With ``normalize=True`` every Taylor-RBF entry lies in [exp(-2 gamma)(1 - 2 gamma + 2 gamma^2), exp(-2 gamma)
(1 + 2 gamma + 2 gamma^2)] = [0.23, 0.95] at gamma 0.4, so the mean squared difference of two such matrices is
small (docs/parity.md lists the values measured between a trained teacher and a student) and the paper-form
weight must be large for the term to matter; ``reduction="sum"`` multiplies it by n^2.
On unnormalized embeddings the entries grow with ``(x.y)^P`` and the term is orders of magnitude larger, which
is the scale torchdistill's weight 0.003 was set for.
"""
import math

import torch
import torch.nn.functional as F

KERNELS = ("rbf_taylor", "rbf", "bilinear", "mmd")
VARIANTS = ("paper", "torchdistill", "repdistiller")
REDUCTIONS = ("mean", "sum")


def correlation_matrix(features: torch.Tensor, kernel: str = "rbf_taylor", gamma: float = 0.4,
                       order: int = 2) -> torch.Tensor:
    """The (n, n) matrix ``k(f_i, f_j)`` of a batch of features (n, d), taken as given (not normalized)."""
    if kernel == "bilinear":
        return features @ features.t()
    if kernel == "rbf_taylor":
        dots = features @ features.t()
        # Horner form of sum_p c^p/p! * dots^p (c = 2 gamma): one matmul, P multiply-adds.
        c, series = 2.0 * gamma, torch.ones_like(dots)
        for p in range(order, 0, -1):
            series = 1.0 + series * dots * (c / p)
        return math.exp(-c) * series
    if kernel == "rbf":
        sq_norms = features.pow(2).sum(dim=1, keepdim=True)
        sq_dists = (sq_norms + sq_norms.t() - 2.0 * features @ features.t()).clamp_min(0.0)
        return torch.exp(-gamma * sq_dists)
    if kernel == "mmd":
        means = features.mean(dim=1, keepdim=True)
        return (means - means.t()).abs()
    raise ValueError(f"loss.kernel={kernel!r} is not a CC kernel; choose one of {', '.join(KERNELS)}")


def correlation_congruence_loss(student: torch.Tensor, teacher: torch.Tensor, kernel: str = "rbf_taylor",
                                gamma: float = 0.4, order: int = 2, normalize: bool = True,
                                variant: str = "paper", reduction: str = "mean") -> torch.Tensor:
    """CC loss between student and teacher embeddings, both (n, d); options: see the module docstring."""
    if student.shape != teacher.shape:
        raise ValueError(f"student embeddings {tuple(student.shape)} and teacher embeddings "
                         f"{tuple(teacher.shape)} must have the same shape (set loss.embed_dim)")
    if variant not in VARIANTS:
        raise ValueError(f"loss.variant={variant!r} is not a CC variant; choose one of {', '.join(VARIANTS)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss.reduction={reduction!r}: choose one of {', '.join(REDUCTIONS)}")
    if normalize:
        student, teacher = F.normalize(student, dim=1), F.normalize(teacher, dim=1)
    if variant == "repdistiller":
        delta = (student - teacher).abs()
        return (delta[:-1] * delta[1:]).sum(dim=1).mean()
    n = student.shape[0]
    c_s = correlation_matrix(student, kernel, gamma, order)
    diff = c_s - correlation_matrix(teacher, kernel, gamma, order)
    loss = torch.linalg.matrix_norm(diff) if variant == "torchdistill" else diff.pow(2).sum()
    return loss / n**2 if reduction == "mean" else loss
