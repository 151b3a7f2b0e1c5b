"""The CCKD criterion (``loss=cckd``, ``loss=cckd_torchdistill``, ``loss=cckd_repdistiller``)::

    L = ce_weight * CE(s, y) + kd_weight * T^2 KL(t_T || s_T) + beta * CC(embed_s(f_s), embed_t(f_t))

(the paper's ``alpha``, ``1 - alpha`` and ``beta``; the CC forms, kernels and scales: ``correlation.py``).

Embeddings. The criterion owns the two linear embeddings that bring the student's and the teacher's penultimate
features ``f_s``, ``f_t`` to a common ``embed_dim``; their input sizes are the networks' feature sizes, so the
``loss`` config is a ``_partial_`` that ``KDModule`` completes with ``student_dim``/``teacher_dim``. Being
submodules of the LightningModule, they are saved in its checkpoints and trained by its optimizer (the teacher's
only when ``train_teacher_embedding``). Options:

* ``embed_bias``, ``embed_init`` (``"default"``: ``nn.Linear``'s own init; ``"orthogonal"``: (semi-)orthogonal
  weights) and ``train_teacher_embedding``. torchdistill's ``Linear4CCKD`` and RepDistiller's ``Embed`` are
  ``nn.Linear`` with bias, default init, both trained: ``loss=cckd_torchdistill``/``cckd_repdistiller`` use that.
* ``loss=cckd`` (the paper's form, our default) uses a bias-free orthogonal teacher embedding that is frozen: a
  trainable teacher embedding lets the optimizer move the *target* and collapse the teacher's embeddings onto
  the student's (C_t constant), so the CC term can vanish without teaching anything
  (tests/test_cckd_module.py shows it). Frozen and orthogonal, it is an isometry when ``embed_dim >= f_t dim``
  (C_t is exactly the teacher's own feature correlation) and a Johnson-Lindenstrauss projection otherwise.
* ``embed_dim=null``: no embeddings, the features as they are (their sizes must then agree).
"""
import torch
import torch.nn.functional as F
from torch import nn

from netcompress.core import ConfigError
from netcompress.losses.correlation import (
    KERNELS,
    REDUCTIONS,
    VARIANTS,
    correlation_congruence_loss,
    correlation_matrix,
)
from netcompress.losses.kd import KDLoss

EMBED_INITS = ("default", "orthogonal")


class CCKDLoss(KDLoss):
    """KD plus ``beta`` times the correlation congruence of the embedded features (module docstring).

    ``forward(logits, teacher_logits, targets, features, teacher_features, context=None)`` returns the weighted total
    and the unweighted terms ``{"ce", "kd", "cc"}`` (``cc`` only when ``beta > 0``). ``figure`` draws the batch's
    correlation matrices (``KDModule`` logs it as ``train/correlation``).
    """

    figure_name = "correlation"

    def __init__(self, student_dim: int, teacher_dim: int, ce_weight: float, kd_weight: float, temperature: float,
                 beta: float, kernel: str, gamma: float, order: int, normalize: bool, variant: str,
                 reduction: str, embed_dim: int | None, embed_bias: bool, embed_init: str,
                 train_teacher_embedding: bool, label_smoothing: float = 0.0):
        super().__init__(ce_weight, kd_weight, temperature, label_smoothing)
        for key, value, choices in (("kernel", kernel, KERNELS), ("variant", variant, VARIANTS),
                                    ("reduction", reduction, REDUCTIONS), ("embed_init", embed_init, EMBED_INITS)):
            if value not in choices:
                raise ConfigError(f"loss.{key}={value}: choose one of {', '.join(choices)}.")
        if beta < 0:
            raise ConfigError(f"loss.beta={beta}: the CC weight must be >= 0 (0: plain KD).")
        self.beta, self.kernel, self.gamma, self.order = float(beta), kernel, float(gamma), int(order)
        self.normalize, self.variant, self.reduction = bool(normalize), variant, reduction
        self.embed_dim, self.embed_bias, self.embed_init = embed_dim, bool(embed_bias), embed_init
        self.train_teacher_embedding = bool(train_teacher_embedding)
        self.student_dim, self.teacher_dim = int(student_dim), int(teacher_dim)
        self.student_embed, self.teacher_embed = self._embeddings()

    def _embeddings(self) -> tuple[nn.Module, nn.Module]:
        s_dim, t_dim, dim = self.student_dim, self.teacher_dim, self.embed_dim
        if dim is None:
            if s_dim != t_dim:
                raise ConfigError(f"loss.embed_dim=null, but the student has {s_dim}-d and the teacher {t_dim}-d "
                                  f"features: set loss.embed_dim (e.g. 128) to embed both to a common size.")
            return nn.Identity(), nn.Identity()
        student = nn.Linear(s_dim, dim, bias=self.embed_bias)
        teacher = nn.Linear(t_dim, dim, bias=self.embed_bias)
        if self.embed_init == "orthogonal":
            nn.init.orthogonal_(teacher.weight)
            if teacher.bias is not None:
                nn.init.zeros_(teacher.bias)
        teacher.requires_grad_(self.train_teacher_embedding)
        return student, teacher

    @property
    def config(self) -> dict:
        return {**super().config, "beta": self.beta, "kernel": self.kernel, "gamma": self.gamma,
                "order": self.order, "normalize": self.normalize, "variant": self.variant,
                "reduction": self.reduction, "embed_dim": self.embed_dim, "embed_bias": self.embed_bias,
                "embed_init": self.embed_init, "train_teacher_embedding": self.train_teacher_embedding,
                "student_dim": self.student_dim, "teacher_dim": self.teacher_dim}

    def embed(self, features: torch.Tensor, teacher_features: torch.Tensor):
        return self.student_embed(features), self.teacher_embed(teacher_features)

    def forward(self, logits, teacher_logits, targets, features=None, teacher_features=None, context=None):
        total, terms = super().forward(logits, teacher_logits, targets)
        if self.beta > 0:
            emb_s, emb_t = self.embed(features, teacher_features)
            terms["cc"] = correlation_congruence_loss(emb_s, emb_t, self.kernel, self.gamma, self.order,
                                                      self.normalize, self.variant, self.reduction)
            total = total + self.beta * terms["cc"]
        return total, terms

    @torch.no_grad()
    def correlation_matrices(self, features: torch.Tensor, teacher_features: torch.Tensor):
        """(C_t, C_s) of a batch as the CC term sees them (RepDistiller's form has no matrix: bilinear shown)."""
        emb_s, emb_t = self.embed(features, teacher_features)
        if self.normalize:
            emb_s, emb_t = F.normalize(emb_s, dim=1), F.normalize(emb_t, dim=1)
        kernel = "bilinear" if self.variant == "repdistiller" else self.kernel
        return (correlation_matrix(emb_t, kernel, self.gamma, self.order),
                correlation_matrix(emb_s, kernel, self.gamma, self.order))

    def figure(self, features: torch.Tensor, teacher_features: torch.Tensor, targets: torch.Tensor, epoch: int):
        """Teacher | student | difference correlation matrices of a batch (sorted by label), a matplotlib figure."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        order = torch.argsort(targets.cpu(), stable=True)
        c_t, c_s = (c.float().cpu()[order][:, order] for c in self.correlation_matrices(features, teacher_features))
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.4))
        low, high = float(min(c_t.min(), c_s.min())), float(max(c_t.max(), c_s.max()))
        for ax, matrix, title in ((axes[0], c_t, "teacher C_t"), (axes[1], c_s, "student C_s")):
            im = ax.imshow(matrix, vmin=low, vmax=high, cmap="viridis")
            ax.set_title(title)
        fig.colorbar(im, ax=axes[:2].tolist(), shrink=0.8)
        diff = axes[2].imshow((c_s - c_t).abs(), cmap="magma")
        axes[2].set_title("|C_s - C_t|")
        fig.colorbar(diff, ax=axes[2], shrink=0.8)
        fig.suptitle(f"epoch {epoch}: batch sorted by label", fontsize=9)
        return fig
