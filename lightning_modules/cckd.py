"""CCKD (Peng et al., ICCV 2019) and Hinton KD: a student learns from a frozen teacher with the ``loss`` criterion

    L = ce_weight * CE(student, y) + kd_weight * KD_T(student, teacher) [+ beta * CC(embed_s(f_s), embed_t(f_t))]

``loss=kd`` instantiates ``iccv19.losses.kd.KDLoss``; ``loss=cckd`` (and its ``_torchdistill``/``_repdistiller``
variants) a ``_partial_`` of ``iccv19.losses.cckd.CCKDLoss`` that this module completes with the student's and
the teacher's feature sizes: the criterion owns the CC embeddings (see its docstring for the teacher-embedding
choices), and as a submodule they are checkpointed and trained by this module's optimizer.

The teacher backbone never trains: it is a ``iccv19.networks.teacher.FrozenTeacher`` (no gradients, eval mode
forever) and its forward pass runs under ``no_grad``.

SUR sampler: when the datamodule's ``batch_sampler`` is a SUR partial without features, ``setup`` computes the
teacher's penultimate features of the training set (no augmentation, one pass, on the training device) and
binds them to it before the training loader is built. See ``datamodules/samplers.py``.
"""
from collections.abc import Callable
from functools import partial

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader, Subset

from iccv19.core import ConfigError
from iccv19.training.images import log_image
from lightning_modules.distillation import DistillationModule


class CCKDModule(DistillationModule):
    """Student ``net`` distilled from a frozen ``teacher`` with the ``loss`` criterion (KD, CCKD)."""

    method = "method=cckd/kd"

    def __init__(self, net: nn.Module, teacher: nn.Module, optimizer: Callable, loss: nn.Module | Callable,
                 scheduler: Callable | None = None, scheduler_interval: str = "epoch",
                 heatmap_every_n_epochs: int = 5, log_teacher_accuracy: bool = True):
        if isinstance(loss, partial):   # CCKDLoss: its embeddings need the networks' feature sizes
            loss = loss(student_dim=net.feature_dim, teacher_dim=getattr(teacher, "feature_dim", None))
        if not isinstance(loss, nn.Module):
            raise ConfigError(f"loss: {self.method} needs a distillation criterion (loss=cckd, loss=kd, "
                              f"loss=cckd_torchdistill, loss=cckd_repdistiller), got {type(loss).__name__}.")
        super().__init__(net, teacher, optimizer, loss, scheduler, 0.0, scheduler_interval, log_teacher_accuracy)
        self.heatmap_every_n_epochs = heatmap_every_n_epochs

    # -- the loss -------------------------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted total (``loss``), every unweighted term (``loss_<term>``), and the outputs they came from."""
        logits, features = self.net(x, return_features=True)
        with torch.no_grad():
            t_logits, t_features = self.teacher(x, return_features=True)
        total, terms = self.criterion(logits, t_logits, y, features, t_features)
        return {"loss": total, **{f"loss_{k}": v for k, v in terms.items()}, "logits": logits,
                "features": features, "teacher_features": t_features}

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.losses(x, y)
        terms = {name: out[name] for name in ("loss", "loss_ce", "loss_kd", "loss_cc") if name in out}
        self.log_train(terms, len(y), out["logits"], y)   # teacher accuracy: on val/test (it is fixed)
        if batch_idx == 0 and "loss_cc" in out and self.heatmap_every_n_epochs and \
                self.current_epoch % self.heatmap_every_n_epochs == 0 and self.trainer.is_global_zero:
            self.log_correlation_heatmap(out["features"].detach(), out["teacher_features"], y)
        return out["loss"]

    # -- images ---------------------------------------------------------------------------------------------
    def log_correlation_heatmap(self, features, teacher_features, y):
        """Teacher | student | difference correlation matrices of a batch (sorted by label) as one image."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        order = torch.argsort(y.cpu(), stable=True)
        c_t, c_s = (c.float().cpu()[order][:, order] for c in self.criterion.correlation_matrices(features,
                                                                                         teacher_features))
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
