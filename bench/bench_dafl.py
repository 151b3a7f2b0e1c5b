"""DAFL iteration speed: GeneratorThenStudentModule under a Lightning Trainer vs a plain PyTorch loop of the
same iteration (same networks, losses and optimizers; noise from the global RNG, no logging), on CPU.

    python bench/bench_dafl.py [--batch-size 64] [--width 16] [--iterations 30] [--rounds 3] [--threads 1]

Prints per-iteration time of both, their ratio (goal <= 1.05) and generated images per second. The two are
measured alternately, ``--rounds`` times, in this one process; medians are reported. Lightning's time is taken
between the ends of the first and last training batches (set-up and validation excluded).
"""
import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from datamodules.data_free import DataFreeDataModule
from datamodules.digits import DigitsDataModule
from iccv19.networks.generator import DAFLGenerator
from iccv19.networks.lenet import LeNet5, lenet5_half
from iccv19.networks.teacher import FrozenTeacher
from lightning_modules.dafl import GeneratorThenStudentModule


def criterion():
    """DAFL's criterion with the defaults of conf/loss/dafl.yaml."""
    return instantiate(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "loss" / "dafl.yaml"))


def networks(args):
    torch.manual_seed(0)
    return lenet5_half(), FrozenTeacher(LeNet5()), DAFLGenerator(latent_dim=100, width=args.width)


def plain_loop(args) -> float:
    student, teacher, generator = networks(args)
    opt_g = torch.optim.Adam(generator.parameters(), lr=0.02)
    opt_s = torch.optim.Adam(student.parameters(), lr=0.002)
    loss_fn = criterion()

    def iteration():
        images = generator(torch.randn(args.batch_size, 100))
        t_logits, t_features = teacher(images, return_features=True)
        loss, _ = loss_fn(t_logits, t_features, student(images.detach()))
        opt_g.zero_grad()
        opt_s.zero_grad()
        loss.backward()
        opt_g.step()
        opt_s.step()

    iteration()
    start = time.perf_counter()
    for _ in range(args.iterations - 1):
        iteration()
    return (time.perf_counter() - start) / (args.iterations - 1)


class BatchEndTimes(L.Callback):
    def __init__(self):
        self.times = []

    def on_train_batch_end(self, *args):
        self.times.append(time.perf_counter())


def lightning_loop(args) -> float:
    student, teacher, generator = networks(args)
    module = GeneratorThenStudentModule(student, teacher, generator, optimizer=partial(torch.optim.Adam, lr=0.002),
                                        generator_optimizer=partial(torch.optim.Adam, lr=0.02), loss=criterion(),
                                        batch_size=args.batch_size, image_every_n_epochs=0)
    timer = BatchEndTimes()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[timer])
    datamodule = DataFreeDataModule(DigitsDataModule(), iterations_per_epoch=args.iterations)
    trainer.fit(module, datamodule=datamodule)
    return (timer.times[-1] - timer.times[0]) / (len(timer.times) - 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plain, lightning = [], []
    for _ in range(args.rounds):
        plain.append(plain_loop(args))
        lightning.append(lightning_loop(args))
    p, q = statistics.median(plain), statistics.median(lightning)
    print(f"batch {args.batch_size}, generator width {args.width}, {args.iterations} iterations x {args.rounds} "
          f"rounds, {args.threads} thread(s)")
    print(f"plain PyTorch loop      : {p * 1e3:8.1f} ms/iteration  {args.batch_size / p:8.1f} images/s")
    print(f"GeneratorThenStudent    : {q * 1e3:8.1f} ms/iteration  {args.batch_size / q:8.1f} images/s")
    print(f"ratio lightning / plain : {q / p:.3f}  (goal <= 1.05; rounds: "
          f"{', '.join(f'{b / a:.3f}' for a, b in zip(plain, lightning, strict=False))})")


if __name__ == "__main__":
    main()
