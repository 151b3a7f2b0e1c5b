"""Per-step overhead of every method's LightningModule: its training step under a Lightning Trainer set up as run.py
sets it up (a CSV logger, conf/callbacks/default.yaml's progress bar, conf/trainer/default.yaml's
``log_every_n_steps``: the information a user's run logs) against the same step in a plain PyTorch loop (same
networks, loss code, optimizers and batches; nothing logged). Prints the ratio per method and size.

    python bench/bench_overhead.py [--methods bare supervised kd cckd dafl pruningnet] [--sizes lenet resnet20]
                                   [--steps 100] [--rounds 5] [--threads 1]

Sizes: ``lenet``: the digits/MNIST pair (LeNet-5 -> LeNet-5-half, 1x32x32, batch 64; DAFL: generator width 16, 64
images; PruningNet: the 32x32 MobileNetV2 PruningNet of experiment=metapruning_digits). ``resnet20``: CIFAR
ResNet-56 -> ResNet-20 (3x32x32, 100 classes, batch 64; DAFL: generator width 64; PruningNet: not measured).
Goals: <= 1.10 at LeNet size, <= 1.05 at ResNet-20 size. The plain and the Lightning loop alternate,
``--rounds`` times, in this one process, in alternating order; each round's ratio is of the same steps (after 5
warm-up steps), and the median over rounds is printed, with every round's ratio, so load from other processes shows
as spread; ``fastest``: the fastest Lightning round over the fastest plain round (interference only adds time, so
the fastest rounds are the least disturbed ones, as ``timeit`` reasons). The first row, ``plain/plain``, times the
plain supervised loop against itself: the resolution of the other rows on this machine. ``bare`` is the supervised
step in a LightningModule with nothing of ours (no metrics, no logging): what Lightning's loop costs by itself, the
floor of every other row.
"""
import argparse
import logging
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import criterion  # noqa: E402  (conf/loss/<name>.yaml, composed as run.py does)

from lightning_modules.classifier import ClassifierModule  # noqa: E402
from lightning_modules.dafl import GeneratorThenStudentModule  # noqa: E402
from lightning_modules.kd import KDModule  # noqa: E402
from lightning_modules.pruningnet import PruningNetModule  # noqa: E402
from netcompress.networks.cifar_resnet import he_resnet  # noqa: E402
from netcompress.networks.generator import DAFLGenerator  # noqa: E402
from netcompress.networks.lenet import LeNet5, lenet5_half  # noqa: E402
from netcompress.networks.pruningnet import build_pruningnet  # noqa: E402

WARMUP, BATCH = 5, 64
SIZES = {  # size: (student, teacher, input shape, classes, DAFL generator width)
    "lenet": (lenet5_half, LeNet5, (1, 32, 32), 10, 16),
    "resnet20": (partial(he_resnet, 20), partial(he_resnet, 56), (3, 32, 32), 100, 64),
}
SGD = partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=5e-4)


def conf(path: str):
    return OmegaConf.load(ROOT / "conf" / path)


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


def build(method: str, size: str):
    """(module, plain step function, batch source) of ``method`` at ``size``; the step function runs one plain
    training step of the module's own networks, loss code and optimizers."""
    student, teacher, shape, classes, width = SIZES[size]
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
                                            loss=criterion("dafl"), batch_size=BATCH, image_every_n_epochs=0)
    elif method == "pruningnet":
        module = PruningNetModule(build_pruningnet("mobilenetv2", "small", classes, shape[0]), optimizer=SGD)
    else:
        raise ValueError(method)
    return module, shape, classes


def batches(method, shape, classes, steps):
    if method == "dafl":   # the data-free loader yields the iteration number; the module draws its noise
        return DataLoader(range(steps), batch_size=None)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(steps * BATCH, *shape, generator=g),
                         torch.randint(0, classes, (steps * BATCH,), generator=g))
    return DataLoader(data, batch_size=BATCH)


def plain_step(method, module, optimizers, batch, step):
    """One training step, as a plain loop writes it, with the module's networks and loss code."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    if method == "dafl":
        loss = module.losses(module.noise(step))["loss"]
    elif method in ("kd", "cckd"):
        loss = module.losses(*batch)["loss"]
    else:
        if method == "pruningnet":
            module.net.set_encoding(module.sample_encoding(step))
        x, y = batch
        loss = F.cross_entropy(module.net(x), y)
    loss.backward()
    for opt in optimizers:
        opt.step()


def plain_time(method, size, steps) -> float:
    module, shape, classes = build(method, size)
    module.noise_seed = 0   # DAFL: what Lightning resolves at fit start
    if method == "dafl":
        module.batch_size = BATCH
    configured = module.configure_optimizers()
    optimizers = configured if isinstance(configured, list) else [configured]
    module.train()
    if method == "pruningnet":
        module.net.batch_statistics(False)
    for step, batch in enumerate(batches(method, shape, classes, steps)):
        if step == WARMUP:
            start = time.perf_counter()
        plain_step(method, module, optimizers, batch, step)
    return time.perf_counter() - start


class Timer(L.Callback):
    """Seconds from the start of batch ``WARMUP`` to the end of training (the epoch-end logging included)."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == WARMUP:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.start


def lightning_time(method, size, steps, logdir) -> float:
    module, shape, classes = build(method, size)
    timer = Timer()
    bar = instantiate(conf("callbacks/default.yaml").progress_bar)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=L.pytorch.loggers.CSVLogger(logdir),
                        log_every_n_steps=conf("trainer/default.yaml").log_every_n_steps, callbacks=[bar, timer],
                        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, batches(method, shape, classes, steps))
    return timer.seconds


def compare(first, second, rounds: int) -> tuple[list[float], list[float]]:
    """``rounds`` timings of ``first()`` and of ``second()``, in alternating order: drift hits both sides alike."""
    a, b = [], []
    for round_ in range(rounds):
        for f, out in ((first, a), (second, b))[:: 1 if round_ % 2 == 0 else -1]:
            out.append(f())
    return a, b


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["bare", "supervised", "kd", "cckd", "dafl", "pruningnet"])
    parser.add_argument("--sizes", nargs="+", default=["lenet", "resnet20"], choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-noise-floor", action="store_true", help="skip the plain-vs-plain row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        pairs = [(size, method) for size in args.sizes for method in args.methods
                 if method != "pruningnet" or size == "lenet"]
        if not args.no_noise_floor:   # the resolution of every ratio below: the plain loop against itself
            pairs.insert(0, (args.sizes[0], "plain/plain"))
        for size, method in pairs:
            baseline = partial(plain_time, method if method != "plain/plain" else "supervised", size, args.steps)
            other = baseline if method == "plain/plain" else partial(lightning_time, method, size, args.steps, logdir)
            plain, light = compare(baseline, other, args.rounds)
            ratios = [b / a for a, b in zip(plain, light, strict=True)]
            per_step = 1e3 * statistics.median(plain) / (args.steps - WARMUP)
            rows.append((size, method, per_step, statistics.median(ratios), min(light) / min(plain), ratios))
    goal = {"lenet": 1.10, "resnet20": 1.05}
    print(f"\nLightning (CSV logger, progress bar, log every {conf('trainer/default.yaml').log_every_n_steps} steps) / "
          f"plain loop, {args.steps - WARMUP} timed steps x {args.rounds} rounds, {args.threads} thread(s)")
    print(f"{'size':<9} {'method':<11} {'plain ms/step':>13} {'ratio':>6} {'fastest':>7} {'goal':>5}  rounds")
    for size, method, per_step, ratio, fastest, ratios in rows:
        print(f"{size:<9} {method:<11} {per_step:>13.2f} {ratio:>6.3f} {fastest:>7.3f} {goal[size]:>5.2f}  "
              f"{', '.join(f'{r:.3f}' for r in ratios)}")


if __name__ == "__main__":
    main()
