"""Fast data-free distillation in the spirit of Fast-Datafree (Fang et al., "Up to 100x Faster Data-free Knowledge
Distillation", AAAI 2022; zju-vipa/Fast-Datafree ``datafree/synthesis/fast_meta.py``): DAFL's machinery (the frozen
teacher, the generator, per-rank noise, logging, divergence stop; lightning_modules/dafl.py) with another loop.

One training step ("iteration" of the DataFreeDataModule):

1. Synthesis. A copy of the persistent generator (the meta generator) is adapted for ``generator_steps`` steps on one
   batch of latent codes (its own optimizer, ``adaptation_optimizer``; with ``latent_lr > 0`` the codes are optimized
   too) with the generator terms of ``loss`` (DAFLLoss: oh / a / ie as DAFL, ``loss.bn`` DeepInversion's BatchNorm
   statistics with ``loss.bn_momentum`` the moving average of past statistics, ``loss.adversarial`` the
   teacher-student discrepancy, off during the warm-up epochs).
2. Meta step (Reptile, first order): the meta generator's gradient is ``theta - theta_adapted``; the generator
   optimizer (``generator_optimizer``) steps on it. The next batch starts from a generator that adapts quickly.
3. Pool. The adapted generator's lowest-loss images of the batch join an image pool (a ring buffer of
   ``pool_size`` images, on the device; the oldest are dropped when it is full).
4. Student. ``student_steps`` KD steps of the student on batches of ``student_batch_size`` images drawn from the whole
   pool (optionally shifted by up to ``pool_crop_padding`` pixels and flipped, ``pool_flip``), the teacher's logits
   computed on the same images. None during the first ``warmup_epochs`` epochs.

Under DDP each process synthesizes its own batch and keeps its own pool; the Reptile gradient and the student's
gradients are averaged over the processes by hand (every backward here is a plain ``backward`` of networks used
directly, not through DDP's forward), so the ranks' weights stay equal: at the end of every training epoch a
fingerprint of the student's and the meta generator's weights is gathered from every rank and printed, and a
difference stops the run (tests/test_fast_datafree.py runs it on 2 CPU processes). The pool is not
saved in checkpoints: a resumed run starts with an empty pool (the generator, the student and the optimizers resume).
"""
import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_modules.dafl import GeneratorThenStudentModule
from netcompress.core import ConfigError
from netcompress.losses.dafl import student_loss


def random_shift_and_flip(images: torch.Tensor, padding: int, flip: bool, rng: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by ``padding`` and cropped back at a random offset; mirrored with probability 1/2."""
    n, _, h, w = images.shape
    if padding:
        padded = F.pad(images, (padding,) * 4)
        dy, dx = (torch.randint(0, 2 * padding + 1, (n,), generator=rng, device=images.device) for _ in range(2))
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        images = padded[torch.arange(n, device=images.device)[:, None, None, None],
                        torch.arange(images.shape[1], device=images.device)[None, :, None, None], rows, cols]
    if flip:
        mirror = torch.rand(n, generator=rng, device=images.device) < 0.5
        images = torch.where(mirror[:, None, None, None], images.flip(3), images)
    return images


class MetaGeneratorModule(GeneratorThenStudentModule):
    """Fast data-free distillation (module doc). The arguments of ``GeneratorThenStudentModule`` plus:

    adaptation_optimizer: ``_partial_`` optimizer of the adapted copy (Fast-Datafree: Adam, betas (0.5, 0.999));
    generator_steps: adaptation steps per batch; latent_lr: learning rate of the latent codes (0: fixed);
    student_steps / student_batch_size: KD steps per synthesized batch and their batch (null: the synthesis batch);
    pool_size: images kept; pool_crop_padding / pool_flip: the student's augmentation of pool images;
    warmup_epochs: epochs that only synthesize (no student step, no adversarial term);
    student_clip_norm: clip the student's gradient norm at this value (null: no clipping).
    """

    unsaved_hyperparameters = GeneratorThenStudentModule.unsaved_hyperparameters + ("adaptation_optimizer",)
    method = "method=fast_datafree"

    def __init__(self, *args, adaptation_optimizer: Callable, generator_steps: int = 5, latent_lr: float = 0.0,
                 student_steps: int = 1, student_batch_size: int | None = None, pool_size: int = 50_000,
                 pool_crop_padding: int = 0, pool_flip: bool = False, warmup_epochs: int = 0,
                 student_clip_norm: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        for key, value, low in (("generator_steps", generator_steps, 1), ("student_steps", student_steps, 1),
                                ("pool_size", pool_size, 2), ("warmup_epochs", warmup_epochs, 0),
                                ("pool_crop_padding", pool_crop_padding, 0)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"module.{key}={value}: must be an integer >= {low}.")
        if student_batch_size is not None and student_batch_size < 2:
            raise ConfigError(f"module.student_batch_size={student_batch_size}: at least 2 (or null: the synthesis "
                              f"batch size).")
        self.adaptation_optimizer_factory = adaptation_optimizer
        self.generator_steps, self.latent_lr = generator_steps, latent_lr
        self.student_steps, self.student_batch_size = student_steps, student_batch_size
        self.pool_size, self.pool_crop_padding, self.pool_flip = pool_size, pool_crop_padding, pool_flip
        self.warmup_epochs, self.student_clip_norm = warmup_epochs, student_clip_norm
        self.pool: torch.Tensor | None = None
        self.pool_count = 0   # images ever added; the pool holds the last min(pool_count, pool_size)

    # -- synthesis --------------------------------------------------------------------------------------------
    def adversarial_on(self) -> bool:
        return bool(self.criterion.adversarial) and self.current_epoch >= self.warmup_epochs

    def generator_terms(self, generator: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The images of ``generator`` on ``z`` and DAFLLoss's generator loss and terms on them."""
        images = generator(z)
        t_logits, t_features, bn_loss = self.teacher_forward(images)
        adversarial_logits = None
        if self.criterion.adversarial:   # the student's function of the images, its weights held fixed
            weights = {name: p.detach() for name, p in self.net.named_parameters()}
            buffers = {name: b for name, b in self.net.named_buffers()}
            training = self.net.training
            self.net.eval()   # its BatchNorm running statistics are not fed synthesis batches
            adversarial_logits = torch.func.functional_call(self.net, {**weights, **buffers}, (images,))
            self.net.train(training)
            if not self.adversarial_on():
                adversarial_logits = t_logits.detach()   # the term is 0 (and has no gradient) during warm-up
        loss, terms = self.criterion.generator_loss(t_logits, t_features, None, adversarial_logits, bn_loss)
        return images, loss, {**terms, "teacher_logits": t_logits}

    def synthesize(self, z: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Adapt a copy of the generator on ``z`` (step 1), set the Reptile meta-gradient (step 2, not stepped);
        returns the lowest-loss images (detached) and the last step's terms."""
        fast = copy.deepcopy(self.generator)
        groups = [{"params": list(fast.parameters())}]
        if self.latent_lr:
            z = z.clone().requires_grad_(True)
            groups.append({"params": [z], "lr": self.latent_lr})
        optimizer = self.adaptation_optimizer_factory(groups)
        best, best_loss = None, None
        for _ in range(self.generator_steps):
            images, loss, terms = self.generator_terms(fast, z)
            if not torch.isfinite(loss.detach()):
                break
            if best_loss is None or loss.item() < best_loss:
                best, best_loss = images.detach(), loss.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if self.bn_statistics is not None:
                self.bn_statistics.update_ema()
        with torch.no_grad():   # Reptile: the meta generator moves towards the adapted one
            for p, q in zip(self.generator.parameters(), fast.parameters(), strict=True):
                p.grad = p.detach() - q.detach()
            self.generator.load_state_dict({**self.generator.state_dict(),
                                            **{k: v for k, v in fast.state_dict().items() if "running" in k
                                               or "num_batches" in k}})
        return (images.detach() if best is None else best), {**terms, "loss_generator_value": loss}

    # -- pool -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def add_to_pool(self, images: torch.Tensor):
        if self.pool is None or self.pool.shape[1:] != images.shape[1:] or self.pool.device != images.device:
            self.pool = images.new_empty((self.pool_size, *images.shape[1:]))
            self.pool_count = 0
        n = images.shape[0]
        index = (self.pool_count + torch.arange(n, device=images.device)) % self.pool_size
        self.pool[index] = images
        self.pool_count += n

    def pool_batch(self, rng: torch.Generator) -> torch.Tensor:
        held = min(self.pool_count, self.pool_size)
        size = self.student_batch_size or self.batch_size
        index = torch.randint(0, held, (size,), generator=rng, device=self.pool.device)
        return random_shift_and_flip(self.pool[index], self.pool_crop_padding, self.pool_flip, rng)

    @torch.no_grad()
    def sample_images(self, n: int | None = None) -> torch.Tensor:
        """The ``n`` most recent pool images (what the student trains on: the adapted generators' images); the
        meta generator's own images (DAFL's ``sample_images``) while the pool is empty."""
        n = n or self.num_images
        if self.pool is None or self.pool_count == 0:
            return super().sample_images(n)
        held = min(self.pool_count, self.pool_size)
        index = (self.pool_count - 1 - torch.arange(min(n, held), device=self.pool.device)) % self.pool_size
        return self.pool[index]

    def fresh_images(self, n: int) -> torch.Tensor:
        """``n`` images from latent codes that no training iteration draws (those of rank -2), each batch made as in
        training (``synthesize``: a copy of the meta generator adapted on it, the lowest-loss images); the meta
        generator (weights, buffers, gradients) and the BatchNorm moving averages are left as they were."""
        state = copy.deepcopy(self.generator.state_dict())
        ema = copy.deepcopy(self.bn_statistics.state_dict()) if self.bn_statistics is not None else None
        training = self.generator.training
        self.generator.train()
        batches = []
        with torch.enable_grad():
            for i in range(-(-n // self.batch_size)):
                batches.append(self.synthesize(self.noise(i, rank=-2))[0])
        for p in self.generator.parameters():
            p.grad = None
        self.generator.load_state_dict(state)
        self.generator.train(training)
        if ema is not None:
            self.bn_statistics.load_state_dict(ema)
        return torch.cat(batches)[:n]

    # -- one iteration ----------------------------------------------------------------------------------------
    def before_student_step(self, step: int):
        """Called before KD step ``step`` (``iteration * student_steps + k``; the same on every rank): a hook for
        subclasses (DataFreePruningNetModule draws the PruningNet's encoding here)."""

    def average_gradients(self, params):
        """Mean of the gradients over DDP processes (the backward passes here run outside DDP's forward)."""
        if self.world_size == 1:
            return
        for p in params:
            if p.grad is not None:
                p.grad = self.trainer.strategy.reduce(p.grad, reduce_op="mean")

    def on_train_epoch_end(self):
        super().on_train_epoch_end()
        if self.trainer.world_size > 1:   # what the averaging must guarantee: every rank holds the same weights
            local = torch.stack([sum(p.detach().double().sum() for p in net.parameters())
                                 for net in (self.net, self.generator)])
            student, generator = self.all_gather(local).view(-1, 2).T.tolist()
            rank_zero_info(f"[fast_datafree] weight fingerprints per rank after epoch {self.current_epoch}: student "
                           f"{', '.join(f'{f:.6f}' for f in student)}; generator "
                           f"{', '.join(f'{f:.6f}' for f in generator)}")
            if len(set(student)) > 1 or len(set(generator)) > 1:
                raise RuntimeError(f"[fast_datafree] DDP ranks' weights differ (student {student}, generator "
                                   f"{generator}): a gradient was not averaged over the processes")

    def training_step(self, batch, batch_idx):
        opt_g, opt_s = self.optimizers()
        iteration = self.current_epoch * self.trainer.num_training_batches + batch_idx
        images, terms = self.synthesize(self.noise(iteration))
        self.stop_if_not_finite({"loss": terms["loss_generator_value"],
                                 **{f"loss_{k}": v for k, v in terms.items() if k not in ("teacher_logits",
                                                                                           "loss_generator_value")}},
                                iteration)
        self.average_gradients(self.generator.parameters())
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        self.add_to_pool(images)

        loss_s = torch.zeros((), device=self.device)
        agreement = torch.zeros((), device=self.device)
        if self.current_epoch >= self.warmup_epochs:
            rng = torch.Generator(device=self.device).manual_seed(
                (self.base_noise_seed() * 7_919 + (self.global_rank + 1) * 104_729 + iteration) % 2**63)
            for k in range(self.student_steps):
                self.before_student_step(iteration * self.student_steps + k)
                x = self.pool_batch(rng)
                with torch.no_grad():
                    t_logits = self.teacher(x)
                s_logits = self.net(x)
                loss_s = student_loss(s_logits, t_logits, self.criterion.temperature)
                opt_s.zero_grad(set_to_none=True)
                loss_s.backward()
                self.average_gradients(self.net.parameters())
                if self.student_clip_norm:
                    self.clip_gradients(opt_s, gradient_clip_val=self.student_clip_norm, gradient_clip_algorithm="norm")
                opt_s.step()
            agreement = (s_logits.argmax(1) == t_logits.argmax(1)).float().mean()
        if self.scheduler_interval == "step" and self.lr_schedulers() is not None:
            self.lr_schedulers().step()

        diversity = images.flatten(1).std(dim=0).mean()
        values = {"loss_generator": terms["loss_generator_value"].detach(), "loss_student": loss_s.detach(),
                  **{f"loss_{k}": v.detach() for k, v in terms.items()
                     if k not in ("teacher_logits", "loss_generator_value")},
                  "diversity": diversity, "agreement": agreement,
                  "pool": torch.tensor(float(min(self.pool_count, self.pool_size)), device=self.device)}
        self.log_train(values, self.batch_size, prog_bar=("loss_generator", "loss_student"))
