"""Training-step time of every method: its LightningModule under a Trainer set up as run.py sets it up (CSV logger,
conf/callbacks' progress bar, conf/trainer's ``log_every_n_steps``) against the same step in a plain PyTorch loop (same
networks, loss code, optimizers, batches); with ``--baseline <method>``, each method's plain step against that one's.

    python bench/bench_overhead.py [--methods bare supervised kd cckd dafl pruningnet] [--sizes lenet resnet20]
                                   [--steps 100] [--rounds 5] [--threads 1]
    python bench/bench_overhead.py --baseline kd --methods cckd --batches 64 256 1024 [--sizes resnet20]
    python bench/bench_overhead.py --sizes imagenet --methods pruningnet --batches 4 --steps 9 --rounds 3
    python bench/bench_overhead.py --baseline fixed --methods pruningnet [--sizes lenet imagenet]

Sizes: ``lenet`` (LeNet-5 -> LeNet-5-half, 1x32x32; the 32x32 MobileNetV2 PruningNet), ``resnet20`` (ResNet-56 ->
ResNet-20, 3x32x32, 100 classes), ``imagenet`` (the 224x224 MobileNetV2 PruningNet alone). Goals: Lightning / plain
<= 1.10 at LeNet size, <= 1.05 at ResNet-20 size, <= 1.0 for the ImageNet PruningNet; CCKD / KD <= 1.10 at batch 256;
PruningNet / fixed <= 1.5 (``fixed``: the PruningNet's full-width network with ordinary convolutions; against it the
PruningNet runs at full width too, its weights generated every step).
A round times the steps after the first 5. Printed: the median of the rounds' ratios, the fastest rounds' ratio and
every round's; ``plain/plain`` times the first row's plain loop against itself (the resolution of the others);
``bare`` is the supervised step in a LightningModule with nothing of ours (Lightning's own cost).
"""
import argparse
import logging
import statistics
import tempfile
import time
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from common import ROOT, interleaved, ratios  # the repository on the import path
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.classifier import ClassifierModule
from lightning_modules.dafl import GeneratorThenStudentModule
from lightning_modules.kd import KDModule
from lightning_modules.pruningnet import PruningNetModule
from netcompress.networks.cifar_resnet import he_resnet
from netcompress.networks.generator import DAFLGenerator
from netcompress.networks.lenet import LeNet5, lenet5_half
from netcompress.networks.pruningnet import build_pruningnet

WARMUP = 5
SIZES = {  # size: (student, teacher, input shape, classes, DAFL generator width, PruningNet size); None: not measured
    "lenet": (lenet5_half, LeNet5, (1, 32, 32), 10, 16, "small"),
    "resnet20": (partial(he_resnet, 20), partial(he_resnet, 56), (3, 32, 32), 100, 64, None),
    "imagenet": (None, None, (3, 224, 224), 1000, None, "imagenet"),
}
SGD = partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=5e-4)
LOG_EVERY = OmegaConf.load(ROOT / "conf" / "trainer" / "default.yaml").log_every_n_steps


class BareModule(L.LightningModule):
    """The supervised step with nothing of ours around it (no metrics, no logging): Lightning's own loop cost."""

    def __init__(self, net, optimizer):
        super().__init__()
        self.net, self.optimizer_factory = net, optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return self.optimizer_factory(self.net.parameters())


def criterion(loss: str):
    """The criterion of ``conf/loss/<loss>.yaml``, with the defaults written there (their one source)."""
    return instantiate(OmegaConf.load(ROOT / "conf" / "loss" / f"{loss}.yaml"))


def build(method: str, size: str, batch: int):
    """(module, input shape, classes) of ``method`` at ``size``."""
    student, teacher, shape, classes, width, pruningnet = SIZES[size]
    torch.manual_seed(0)
    if method in ("supervised", "bare"):
        module = (ClassifierModule if method == "supervised" else BareModule)(student(classes, shape[0]), optimizer=SGD)
    elif method in ("kd", "cckd"):
        module = KDModule(student(classes, shape[0]), teacher(classes, shape[0]), optimizer=SGD,
                          loss=criterion(method), heatmap_every_n_epochs=0)
    elif method == "dafl":
        generator = DAFLGenerator(latent_dim=100, image_size=shape[1], channels=shape[0], width=width)
        module = GeneratorThenStudentModule(student(classes, shape[0]), teacher(classes, shape[0]), generator,
                                            optimizer=partial(torch.optim.Adam, lr=2e-3),
                                            generator_optimizer=partial(torch.optim.Adam, lr=0.02),
                                            loss=criterion("dafl"), batch_size=batch, image_every_n_epochs=0)
    elif method in ("pruningnet", "fixed"):
        net = build_pruningnet("mobilenetv2", pruningnet, classes, shape[0])
        module = (PruningNetModule(net, optimizer=SGD) if method == "pruningnet"
                  else ClassifierModule(net.narrow(net.full_encoding()), optimizer=SGD))
    else:
        raise ValueError(method)
    return module, shape, classes


def batches(method, shape, classes, steps, batch):
    if method == "dafl":   # the data-free loader yields the iteration number; the module draws its noise
        return DataLoader(range(steps), batch_size=None)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(steps * batch, *shape, generator=g),
                         torch.randint(0, classes, (steps * batch,), generator=g))
    return DataLoader(data, batch_size=batch)


def plain_step(method, module, optimizers, batch, step, full_width=False):
    """One training step, as a plain loop writes it, with the module's networks and loss code (the PruningNet at a
    sampled encoding, or at ``full_width``)."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    if method == "dafl":
        loss = module.losses(module.noise(step))["loss"]
    elif method in ("kd", "cckd"):
        loss = module.losses(*batch)["loss"]
    else:
        if method == "pruningnet":
            module.net.set_encoding(module.net.full_encoding() if full_width else module.sample_encoding(step))
        x, y = batch
        loss = F.cross_entropy(module.net(x), y)
    loss.backward()
    for opt in optimizers:
        opt.step()


def plain_time(method, size, steps, batch, full_width=False) -> float:
    module, shape, classes = build(method, size, batch)
    module.noise_seed = 0   # DAFL: what Lightning resolves at fit start
    configured = module.configure_optimizers()
    optimizers = configured if isinstance(configured, list) else [configured]
    module.train()
    if method == "pruningnet":
        module.net.batch_statistics(False)
    for step, data in enumerate(batches(method, shape, classes, steps, batch)):
        if step == WARMUP:
            start = time.perf_counter()
        plain_step(method, module, optimizers, data, step, full_width)
    return time.perf_counter() - start


class Timer(L.Callback):
    """Seconds from the start of batch ``WARMUP`` to the end of training (the epoch-end logging included)."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == WARMUP:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.start


def lightning_time(method, size, steps, batch, logdir) -> float:
    module, shape, classes = build(method, size, batch)
    timer = Timer()
    bar = instantiate(OmegaConf.load(ROOT / "conf" / "callbacks" / "default.yaml").progress_bar)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=L.pytorch.loggers.CSVLogger(logdir),
                        log_every_n_steps=LOG_EVERY, callbacks=[bar, timer], enable_checkpointing=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, batches(method, shape, classes, steps, batch))
    return timer.seconds


def measures(method: str, size: str, batch: int, args, logdir: str, first: str) -> dict:
    """The row's baseline and candidate: the method's plain loop and its Lightning step, or with ``--baseline <m>``,
    m's plain loop and the method's; ``plain/plain``: the baseline of the ``first`` row's method against itself."""
    plain = partial(plain_time, size=size, steps=args.steps, batch=batch)
    base = partial(plain, first if args.baseline == "plain" else args.baseline)
    if method == "plain/plain":
        return {"baseline": base, "candidate": base}
    if args.baseline == "plain":
        return {"baseline": partial(plain, method),
                "candidate": partial(lightning_time, method, size, args.steps, batch, logdir)}
    return {"baseline": base, "candidate": partial(plain, method, full_width=args.baseline == "fixed")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["bare", "supervised", "kd", "cckd", "dafl", "pruningnet"])
    parser.add_argument("--sizes", nargs="+", default=["lenet", "resnet20"], choices=sorted(SIZES))
    parser.add_argument("--baseline", default="plain", help="plain (each method's own plain loop) or a method")
    parser.add_argument("--batches", type=int, nargs="+", default=[64])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = [(size, batch, method) for size in args.sizes for batch in args.batches for method in args.methods
            if SIZES[size][5 if method in ("pruningnet", "fixed") else 0] is not None]
    if not rows:
        parser.error(f"--methods {' '.join(args.methods)} are not measured at --sizes {' '.join(args.sizes)}")
    first = rows[0][2]
    rows.insert(0, (*rows[0][:2], "plain/plain"))
    lines = [(f"Lightning (CSV logger, progress bar, log every {LOG_EVERY} steps) / plain loop" if args.baseline ==
              "plain" else f"plain step / {args.baseline}'s plain step") + f", {args.steps - WARMUP} timed steps x "
             f"{args.rounds} rounds, {args.threads} thread(s)",
             f"{'size':<9} {'batch':>5} {'method':<11} {'baseline ms/step':>16} {'ratio':>6} {'fastest':>7}  rounds"]
    with tempfile.TemporaryDirectory() as logdir:
        for size, batch, method in rows:
            times = interleaved(measures(method, size, batch, args, logdir, first), args.rounds)
            median, fastest, each = ratios(times["candidate"], times["baseline"])
            per_step = 1e3 * statistics.median(times["baseline"]) / (args.steps - WARMUP)
            lines.append(f"{size:<9} {batch:>5} {method:<11} {per_step:>16.2f} {median:>6.3f} {fastest:>7.3f}  "
                         + ", ".join(f"{r:.3f}" for r in each))
    print("\n" + "\n".join(lines))   # after the runs' progress bars


if __name__ == "__main__":
    main()
