"""DAFL (Chen et al., "Data-Free Learning of Student Networks", ICCV 2019): a generator learns to produce
images the frozen teacher finds class-like (one-hot, activation and information-entropy terms, losses/dafl.py),
and the student ``net`` learns to match the teacher on them. Real data is used only to evaluate the student.

One iteration, as the official code runs it: draw z, x = G(z); L_G on T(x); L_S = KD(S(x.detach()), T(x));
one backward of L_G + L_S, then the generator optimizer steps and the student optimizer steps. The student
sees a detached batch and the teacher is frozen, so L_G only reaches G's parameters and L_S only S's: this is
exactly "a generator step, then a student step on the same generated batch", in one backward, which also
keeps DDP happy (every trained parameter gets a gradient in the one backward: no unused parameters).

Noise. z of iteration i on rank r comes from its own ``torch.Generator`` seeded by (noise_seed, r, i):
ranks draw different noise (Lightning seeds every rank alike) and a resumed run draws exactly the noise the
uninterrupted run would have drawn. ``noise_seed=null`` takes the run's seed (``seed=``).

Batch. ``global_batch_size``: generated images per iteration over all ranks (the official single-GPU recipes: 512
MNIST, 1024 CIFAR), split evenly across the DDP processes at fit start (an error if it does not divide);
``batch_size`` is the per-rank batch used when it is null. Gradients are averaged by DDP. ``loss.global_ie=true``
computes the information-entropy term on the global batch: the teacher's logits are all-gathered with gradient, so the
class balance is enforced across ranks rather than per rank (the per-rank default is what a single-GPU run of
the same per-rank batch does). On one process both are the same.

BatchNorm statistics (``loss.bn > 0``, an option, not DAFL): the teacher's forward on the generated batch runs with
hooks on its BatchNorm layers (netcompress/losses/bn_statistics.py, registered for that call only) and DeepInversion's
distance between the batch statistics and the running ones joins the generator loss, logged as ``train/loss_bn``.
Per rank: each process compares its own batch's statistics (see that module).

Safety. A generated batch whose images are (nearly) identical is a collapsed generator: ``train/diversity``
(mean over pixels of the standard deviation across the batch; 0 for identical images) is logged every
iteration and a warning is printed when its epoch mean falls below ``collapse_threshold``. A NaN/inf loss
stops the run before any optimizer steps on it, with a message naming the settings to change; the last
checkpoint written (end of the previous epoch) is left as it was, so ``ckpt_path=`` resumes from it.
"""
import warnings
from collections.abc import Callable

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchvision.utils import make_grid

from lightning_modules.distillation import DistillationModule
from netcompress.core import ConfigError
from netcompress.losses.bn_statistics import BatchNormStatistics, batchnorm_layers
from netcompress.losses.dafl import DAFLLoss
from netcompress.reporting.images import log_image


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf: the run stops with a traceback (a training-time failure, not a config mistake); the
    last checkpoint is kept."""


class GeneratorThenStudentModule(DistillationModule):
    """DAFL: ``generator`` trained against the frozen ``teacher``; the student ``net`` distilled on its images.

    loss: a ``DAFLLoss`` (conf/loss/dafl*.yaml). optimizer / scheduler: the student's (``_partial_``);
    generator_optimizer: the generator's. global_batch_size: generated images per iteration over all ranks (split
    across them); batch_size: per rank, used when global_batch_size is null.
    ``val/acc_best``: the best ``val/acc`` over the epochs so far, logged beside the last. With ``data.holdout=0``
    validation is the test set, as in the official script, which reports that best test accuracy; ``test/acc``
    is the last epoch's. image_every_n_epochs: a grid of ``num_images``
    generated images (fixed noise) is logged as ``train/generated`` every that many epochs (0: never).
    """

    unsaved_hyperparameters = DistillationModule.unsaved_hyperparameters + ("generator", "generator_optimizer")
    method = "method=dafl"

    def __init__(self, net: nn.Module, teacher: nn.Module, generator: nn.Module, optimizer: Callable,
                 generator_optimizer: Callable, loss: DAFLLoss | None = None, scheduler: Callable | None = None,
                 scheduler_interval: str = "epoch", batch_size: int | None = None,
                 global_batch_size: int | None = None, noise_seed: int | None = None,
                 image_every_n_epochs: int = 1, num_images: int = 64, collapse_threshold: float = 0.05,
                 log_teacher_accuracy: bool = True):
        if not isinstance(loss, DAFLLoss):
            raise ConfigError(f"loss={type(loss).__name__}: method=dafl needs DAFL's criterion; choose loss=dafl "
                              f"(or dafl_cifar10, dafl_cifar100), which instantiate netcompress.losses.dafl.DAFLLoss.")
        super().__init__(net, teacher, optimizer, loss, scheduler, 0.0, scheduler_interval, log_teacher_accuracy)
        self.world_size = 1   # training processes, set in setup
        for key, value in (("batch_size", batch_size), ("global_batch_size", global_batch_size)):
            if value is not None and (not isinstance(value, int) or value < 2):
                raise ConfigError(f"module.{key}={value}: the generator's BatchNorm and the entropy term need "
                                  f"batches of at least 2 images (official: 512 MNIST, 1024 CIFAR).")
        if batch_size is None and global_batch_size is None:
            raise ConfigError("module.global_batch_size=null and module.batch_size=null: set the generated images "
                              "per iteration, module.global_batch_size=<over all processes> (official: 512 MNIST, "
                              "1024 CIFAR) or module.batch_size=<per process>.")
        self.automatic_optimization = False
        self.generator = generator
        self.generator_optimizer_factory = generator_optimizer
        self.batch_size, self.global_batch_size, self.noise_seed = batch_size, global_batch_size, noise_seed
        self.best_val_acc = None
        self.image_every_n_epochs, self.num_images = image_every_n_epochs, num_images
        self.collapse_threshold = collapse_threshold
        self.bn_statistics = None
        if self.criterion.bn:
            if not batchnorm_layers(self.teacher):
                raise ConfigError(
                    f"loss.bn={self.criterion.bn}: the BatchNorm-statistics term needs a teacher with BatchNorm "
                    f"layers, and {type(getattr(self.teacher, 'net', self.teacher)).__name__} has none. Set "
                    f"loss.bn=0 for this teacher (e.g. LeNet-5), or choose a teacher with BatchNorm.")
            self.bn_statistics = BatchNormStatistics(self.criterion.bn_momentum)

    # -- noise ----------------------------------------------------------------------------------------------
    def base_noise_seed(self) -> int:
        if self.noise_seed is None:  # resolved once, at fit start, from the run's seed; stored in checkpoints
            self.noise_seed = int(torch.initial_seed()) % 2**31
        return self.noise_seed

    def noise(self, iteration: int, rank: int | None = None, batch_size: int | None = None) -> torch.Tensor:
        """The latent codes of ``iteration`` on ``rank`` (default: this process's), reproducibly."""
        rank = self.global_rank if rank is None else rank
        seed = (self.base_noise_seed() * 1_000_003 + (rank + 1) * 7_919 + iteration * 104_729) % 2**63
        rng = torch.Generator(device=self.device).manual_seed(seed)
        return torch.randn(batch_size or self.batch_size, self.generator.latent_dim, generator=rng,
                           device=self.device)

    # -- one iteration ----------------------------------------------------------------------------------------
    def teacher_forward(self, images: torch.Tensor):
        """The teacher's logits and features on generated ``images``, and its BatchNorm-statistics distance
        (``loss.bn``; None when off), recorded by hooks that live only during this call."""
        if self.bn_statistics is None:
            return (*self.teacher(images, return_features=True), None)
        with self.bn_statistics.recording(self.teacher):
            t_logits, t_features = self.teacher(images, return_features=True)
        return t_logits, t_features, self.bn_statistics.loss()

    def losses(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term of one DAFL iteration on the latent codes ``z``."""
        images = self.generator(z)
        t_logits, t_features, bn_loss = self.teacher_forward(images)
        entropy_logits = None
        if self.criterion.global_ie and self.world_size > 1:
            entropy_logits = self.all_gather(t_logits, sync_grads=True).flatten(0, 1)
        s_logits = self.net(images.detach())
        adversarial_logits = None
        if self.criterion.adversarial:   # the student's function of the images, its weights held fixed
            weights = {name: p.detach() for name, p in self.net.named_parameters()}
            adversarial_logits = torch.func.functional_call(self.net, weights, (images,))
        loss, terms = self.criterion(t_logits, t_features, s_logits, entropy_logits, adversarial_logits, bn_loss)
        return {"images": images, "teacher_logits": t_logits, "student_logits": s_logits, "loss": loss,
                **{f"loss_{name}": value for name, value in terms.items()}}

    def training_step(self, batch, batch_idx):
        opt_g, opt_s = self.optimizers()
        iteration = self.current_epoch * self.trainer.num_training_batches + batch_idx
        out = self.losses(self.noise(iteration))
        self.stop_if_not_finite(out, iteration)
        opt_g.zero_grad()
        opt_s.zero_grad()
        self.manual_backward(out["loss"])
        opt_g.step()
        opt_s.step()
        if self.bn_statistics is not None:
            self.bn_statistics.update_ema()
        if self.scheduler_interval == "step" and self.lr_schedulers() is not None:
            self.lr_schedulers().step()

        diversity = out["images"].detach().flatten(1).std(dim=0).mean()
        agreement = (out["student_logits"].argmax(1) == out["teacher_logits"].argmax(1)).float().mean()
        losses = {name: value for name, value in out.items() if name.startswith("loss")}
        self.log_train({**losses, "diversity": diversity, "agreement": agreement}, self.batch_size,
                       prog_bar=("loss_generator", "loss_student"))

    def stop_if_not_finite(self, out: dict, iteration: int):
        bad = not bool(torch.isfinite(out["loss"].detach()))
        if self.trainer.world_size > 1:  # every rank must stop together
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.items() if k.startswith("loss"))
        ckpt = getattr(self.trainer.checkpoint_callback, "dirpath", None)
        raise TrainingDiverged(
            f"DAFL diverged: a loss became NaN/inf at epoch {self.current_epoch}, iteration {iteration} ({terms}). "
            f"No optimizer stepped on it and the last good checkpoint ({ckpt}/last.ckpt, end of the previous "
            f"epoch) is kept. Lower generator_optimizer.lr or optimizer.lr, or the loss weights "
            f"(loss.oh, loss.a, loss.ie), then rerun or resume with ckpt_path=<that checkpoint>.")

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        # Epoch-wise schedules step here, up to the epoch about to run: the checkpoint of an epoch is written
        # before on_train_epoch_end, so a resumed run catches up the same way.
        scheduler = self.lr_schedulers()
        with warnings.catch_warnings():   # after warm-up epochs (fast_datafree) the optimizer has not stepped yet
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before")
            while self.scheduler_interval == "epoch" and scheduler is not None and \
                    scheduler.last_epoch < self.current_epoch:
                scheduler.step()

    def on_train_epoch_end(self):
        super().on_train_epoch_end()
        if "diversity" in self.train_epoch_means:
            diversity = float(self.train_epoch_means["diversity"])
            if diversity < self.collapse_threshold:
                rank_zero_warn(f"[dafl] epoch {self.current_epoch}: the generator collapsed: generated images "
                               f"are nearly identical (diversity {diversity:.4f} < collapse_threshold "
                               f"{self.collapse_threshold}). Try a lower generator_optimizer.lr, a "
                               f"larger loss.ie or module.batch_size.")
        every = self.image_every_n_epochs
        if every and self.current_epoch % every == 0 and self.trainer.is_global_zero:
            log_image(self, "train/generated", self.sample_grid(), step=self.current_epoch)

    @torch.no_grad()
    def sample_images(self, n: int | None = None) -> torch.Tensor:
        """``n`` images from fixed noise, the generator in training mode as it is used (batch statistics);
        its BatchNorm running statistics are left untouched."""
        buffers = {k: v.clone() for k, v in self.generator.named_buffers()}
        images = self.generator(self.noise(-1, rank=-1, batch_size=n or self.num_images))
        self.generator.load_state_dict(buffers, strict=False)
        return images

    def sample_grid(self, n: int | None = None) -> torch.Tensor:
        """A CHW grid in [0, 1] of ``sample_images(n)``, each image scaled to its own range."""
        images = self.sample_images(n).float().cpu()
        return make_grid(images, nrow=8, normalize=True, scale_each=True, pad_value=1.0)

    # -- set-up ---------------------------------------------------------------------------------------------
    def setup(self, stage: str):
        self.world_size = world_size = self.trainer.world_size
        if self.global_batch_size is None:
            return
        if self.global_batch_size % world_size:
            raise ConfigError(f"module.global_batch_size={self.global_batch_size} does not divide over the "
                              f"{world_size} training processes: choose a multiple of {world_size} (or set "
                              f"module.global_batch_size=null and module.batch_size=<per process>).")
        self.batch_size = self.global_batch_size // world_size

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking or "val__top1" not in self.metrics:
            return
        acc = float(self.metrics["val__top1"].compute())
        self.best_val_acc = acc if self.best_val_acc is None else max(self.best_val_acc, acc)
        self.log("val/acc_best", self.best_val_acc)

    def on_fit_start(self):
        super().on_fit_start()
        rank_zero_info(f"[dafl] noise seed {self.base_noise_seed()} (per rank and iteration); "
                       f"{self.batch_size} generated images per iteration and rank")
        if self.trainer.world_size > 1:  # check what DDP must guarantee: every rank draws its own noise
            fingerprints = self.all_gather(self.noise(0).sum()).flatten().tolist()
            rank_zero_info(f"[dafl] noise fingerprints of the first iteration per rank: "
                           f"{', '.join(f'{f:.4f}' for f in fingerprints)}")
            if len(set(fingerprints)) < len(fingerprints):
                raise RuntimeError(f"[dafl] DDP ranks draw the same noise ({fingerprints}): per-rank seeding broke")

    def configure_optimizers(self):
        opt_g = self.generator_optimizer_factory(list(self.generator.parameters()))
        opt_s = self.optimizer_factory([p for p in self.net.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return [opt_g, opt_s]
        return [opt_g, opt_s], [{"scheduler": self.scheduler_factory(opt_s), "interval": self.scheduler_interval}]

    def on_save_checkpoint(self, checkpoint: dict):
        checkpoint["dafl_noise_seed"] = self.base_noise_seed()
        checkpoint["dafl_best_val_acc"] = self.best_val_acc
        if self.bn_statistics is not None:
            checkpoint["bn_statistics"] = self.bn_statistics.state_dict()

    def on_load_checkpoint(self, checkpoint: dict):
        self.noise_seed = checkpoint.get("dafl_noise_seed", self.noise_seed)
        self.best_val_acc = checkpoint.get("dafl_best_val_acc", self.best_val_acc)
        if self.bn_statistics is not None and "bn_statistics" in checkpoint:
            self.bn_statistics.load_state_dict(checkpoint["bn_statistics"])

