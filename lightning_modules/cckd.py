"""CCKD (Peng et al., ICCV 2019): a student learns from a frozen teacher with

    L = alpha * CE(student, y) + (1 - alpha) * KD_T(student, teacher) + beta * CC(embed_s(f_s), embed_t(f_t))

``method=kd`` is the same module with ``beta = 0`` (Hinton KD; no embeddings are built then).

Embeddings. ``f_s``/``f_t`` are the penultimate features (``net(x, return_features=True)``). With
``loss.embed_dim`` set (128 by default, the common dimension of torchdistill's and RepDistiller's recipes) the
student gets a trainable ``Linear(f_s dim, embed_dim)``; the teacher gets a bias-free ``Linear(f_t dim,
embed_dim)`` that is **frozen by default** (``loss.train_teacher_embedding=false``), initialized
(semi-)orthogonal. Why frozen: a trainable teacher embedding lets the optimizer move the *target*: it can
collapse the teacher embeddings onto whatever the student produces (e.g. all equal, C_t constant), and the CC
term then vanishes without teaching the student anything (tests/test_cckd_module.py shows it for the paper's
and RepDistiller's forms). Frozen and orthogonal, the embedding is an isometry when ``embed_dim >= f_t dim``
(C_t is exactly the teacher's own feature correlation) and a random (Johnson-Lindenstrauss) projection
otherwise, which preserves inner products approximately. The CC loss then compares against a fixed target and
can only be lowered by the student reproducing the teacher's structure. torchdistill and RepDistiller train
the teacher's linear layer: ``loss.train_teacher_embedding=true`` reproduces them. ``loss.embed_dim=null``
uses the features as they are (their dimensions must then agree).

The teacher backbone never trains: it is a ``iccv19.networks.teacher.FrozenTeacher`` (no gradients, eval mode
forever) and its forward pass runs under ``no_grad``.

SUR sampler: when the datamodule's ``batch_sampler`` is a SUR partial without features, ``setup`` computes the
teacher's penultimate features of the training set (no augmentation, one pass, on the training device) and
binds them to it before the training loader is built. See ``datamodules/samplers.py``.
"""
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader, Subset

from iccv19.core import ConfigError, options_from_config
from iccv19.losses.correlation import KERNELS, VARIANTS, correlation_congruence_loss, correlation_matrix
from iccv19.losses.kd import kd_loss
from iccv19.training.images import log_image
from lightning_modules.distillation import DistillationModule


@dataclass
class CCKDLossOptions:
    """The ``loss`` config group of method=cckd / method=kd (see conf/loss/cckd.yaml for each key)."""

    alpha: float = 0.1                   # weight of cross-entropy; KD gets 1 - alpha
    temperature: float = 4.0             # KD temperature T (KD is scaled by T^2)
    beta: float = 0.003                  # weight of the correlation congruence term (0: plain KD)
    kernel: str = "rbf_taylor"           # rbf_taylor | rbf | bilinear | mmd
    gamma: float = 0.4                   # RBF gamma
    order: int = 2                       # Taylor order P
    normalize: bool = True               # L2-normalize embeddings before the kernel (paper)
    variant: str = "paper"               # paper | torchdistill | repdistiller
    embed_dim: int | None = 128          # common embedding dimension; null: raw features
    train_teacher_embedding: bool = False

    @classmethod
    def from_config(cls, loss) -> "CCKDLossOptions":
        options = options_from_config(cls, loss, "loss", " (method=cckd/kd; see conf/loss/cckd.yaml).")
        if not 0.0 <= options.alpha <= 1.0:
            raise ConfigError(f"loss.alpha={options.alpha}: the cross-entropy weight must lie in [0, 1] "
                              f"(KD gets 1 - alpha).")
        if options.beta < 0 or options.temperature <= 0:
            raise ConfigError(f"loss.beta={options.beta}, loss.temperature={options.temperature}: beta must "
                              f"be >= 0 and the temperature > 0.")
        if options.kernel not in KERNELS:
            raise ConfigError(f"loss.kernel={options.kernel}: choose one of {', '.join(KERNELS)}.")
        if options.variant not in VARIANTS:
            raise ConfigError(f"loss.variant={options.variant}: choose one of {', '.join(VARIANTS)}.")
        return options


class CCKDModule(DistillationModule):
    """Student ``net`` distilled from a frozen ``teacher`` with KD and correlation congruence."""

    method = "method=cckd/kd"

    def __init__(self, net: nn.Module, teacher: nn.Module, optimizer: Callable, loss=None,
                 scheduler: Callable | None = None, label_smoothing: float = 0.0,
                 scheduler_interval: str = "epoch",
                 heatmap_every_n_epochs: int = 5, log_teacher_accuracy: bool = True):
        super().__init__(net, teacher, optimizer, None, scheduler, label_smoothing, scheduler_interval,
                         log_teacher_accuracy)
        self.opts = CCKDLossOptions.from_config(loss)
        self.hparams["loss"] = asdict(self.opts)
        self.heatmap_every_n_epochs = heatmap_every_n_epochs
        self.student_embed = self.teacher_embed = None
        if self.opts.beta > 0:
            self.student_embed, self.teacher_embed = self._build_embeddings(net, teacher)

    def _build_embeddings(self, net, teacher):
        s_dim, t_dim, dim = net.feature_dim, teacher.feature_dim, self.opts.embed_dim
        if dim is None:
            if s_dim != t_dim:
                raise ConfigError(f"loss.embed_dim=null, but the student has {s_dim}-d and the teacher "
                                  f"{t_dim}-d features: set loss.embed_dim (e.g. 128) to embed both to a "
                                  f"common dimension.")
            return nn.Identity(), nn.Identity()
        student_embed = nn.Linear(s_dim, dim)
        teacher_embed = nn.Linear(t_dim, dim, bias=False)
        nn.init.orthogonal_(teacher_embed.weight)
        teacher_embed.requires_grad_(self.opts.train_teacher_embedding)
        return student_embed, teacher_embed

    # -- the loss -------------------------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term of the loss on a batch, and the logits/embeddings they came from."""
        opts = self.opts
        logits, features = self.net(x, return_features=True)
        with torch.no_grad():
            t_logits, t_features = self.teacher(x, return_features=True)
        out = {"logits": logits, "teacher_logits": t_logits,
               "loss_ce": F.cross_entropy(logits, y, label_smoothing=self.label_smoothing),
               "loss_kd": kd_loss(logits, t_logits, opts.temperature)}
        loss = opts.alpha * out["loss_ce"] + (1.0 - opts.alpha) * out["loss_kd"]
        if opts.beta > 0:
            out["emb_s"], out["emb_t"] = self.student_embed(features), self.teacher_embed(t_features)
            out["loss_cc"] = correlation_congruence_loss(out["emb_s"], out["emb_t"], opts.kernel, opts.gamma,
                                                         opts.order, opts.normalize, opts.variant)
            loss = loss + opts.beta * out["loss_cc"]
        out["loss"] = loss
        return out

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.losses(x, y)
        self.log("train/loss", out["loss"], on_step=True, on_epoch=True, prog_bar=True)
        if batch_idx % self.trainer.log_every_n_steps == 0:  # each self.log costs ~1 ms on a CPU: terms every n
            for name in ("loss_ce", "loss_kd", "loss_cc"):
                if name in out:
                    self.log(f"train/{name}", out[name], on_step=True, on_epoch=False)
        self.log_accuracy("train", out["logits"].detach(), y)  # teacher accuracy: on val/test (it is fixed)
        if batch_idx == 0 and "emb_s" in out and self.heatmap_every_n_epochs and \
                self.current_epoch % self.heatmap_every_n_epochs == 0 and self.trainer.is_global_zero:
            self.log_correlation_heatmap(out["emb_s"].detach(), out["emb_t"].detach(), y)
        return out["loss"]

    # -- images ---------------------------------------------------------------------------------------------
    def correlation_matrices(self, emb_s: torch.Tensor, emb_t: torch.Tensor):
        opts = self.opts
        if opts.normalize:
            emb_s, emb_t = F.normalize(emb_s, dim=1), F.normalize(emb_t, dim=1)
        kernel = "bilinear" if opts.variant == "repdistiller" else opts.kernel
        return (correlation_matrix(emb_t, kernel, opts.gamma, opts.order),
                correlation_matrix(emb_s, kernel, opts.gamma, opts.order))

    def log_correlation_heatmap(self, emb_s, emb_t, y):
        """Teacher | student | difference correlation matrices of a batch (sorted by label) as one image."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        order = torch.argsort(y.cpu(), stable=True)
        c_t, c_s = (c.float().cpu()[order][:, order] for c in self.correlation_matrices(emb_s, emb_t))
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.4))
        low, high = float(min(c_t.min(), c_s.min())), float(max(c_t.max(), c_s.max()))
        for ax, matrix, title in ((axes[0], c_t, "teacher C_t"), (axes[1], c_s, "student C_s")):
            im = ax.imshow(matrix, vmin=low, vmax=high, cmap="viridis")
            ax.set_title(title)
        fig.colorbar(im, ax=axes[:2].tolist(), shrink=0.8)
        diff = axes[2].imshow((c_s - c_t).abs(), cmap="magma")
        axes[2].set_title("|C_s - C_t|")
        fig.colorbar(diff, ax=axes[2], shrink=0.8)
        fig.suptitle(f"epoch {self.current_epoch}: batch sorted by label", fontsize=9)
        log_image(self, "train/correlation", fig, step=self.global_step)

    # -- set-up ---------------------------------------------------------------------------------------------
    def setup(self, stage: str):
        dm = self.trainer.datamodule
        sampler = getattr(dm, "batch_sampler", None)
        if stage != "fit" or not isinstance(sampler, partial) or "features" in sampler.keywords or \
                not getattr(sampler.func, "needs_teacher_features", False):
            return
        rank_zero_info("[cckd] SUR sampler: computing the teacher's features of the training set for k-means")
        dm.batch_sampler = partial(sampler, features=self.teacher_features(dm))

    @torch.no_grad()
    def teacher_features(self, dm) -> torch.Tensor:
        """The teacher's penultimate features of every training sample, in dataset order, not augmented."""
        dm.setup("fit")
        dataset = dm.build(train=True, augment=False)
        if isinstance(dm.train_set, Subset):
            dataset = Subset(dataset, dm.train_set.indices)
        device = self.trainer.strategy.root_device
        self.teacher.to(device)
        feats = [self.teacher(x.to(device), return_features=True)[1].cpu()
                 for x, _ in DataLoader(dataset, batch_size=dm.eval_batch_size, num_workers=dm.num_workers)]
        return torch.cat(feats)
