"""CCKD step-time benchmarks; prints ratios against baselines measured in the same run (no absolute claims).

1. CCKD / KD-only training-step time at batch 64, 256 and 1024 (same student, teacher, optimizer; CCKD adds
   the embeddings and the n x n correlation matrices). Goal: <= 1.10 at batch 256.
2. CCKDModule under a Lightning Trainer / the same step in a plain PyTorch loop (same data, same loss code,
   no logger, no checkpoints, no validation, heatmap off). Goal: <= 1.05.

    python bench/bench_cckd.py                       # digits-sized LeNet-5 -> LeNet-5-half, CPU
    python bench/bench_cckd.py --pair resnet --device cuda   # CIFAR ResNet-56 -> ResNet-20
Timings interleave the compared variants and report medians, so a busy machine biases both sides alike.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iccv19.networks.cifar_resnet import he_resnet  # noqa: E402
from iccv19.networks.lenet import LeNet5, lenet5_half  # noqa: E402
from iccv19.networks.teacher import FrozenTeacher  # noqa: E402
from lightning_modules.cckd import CCKDModule  # noqa: E402

PAIRS = {  # name: (student factory, teacher factory, input shape)
    "lenet": (lambda: lenet5_half(10, 1), lambda: LeNet5(10, 1), (1, 32, 32)),
    "resnet": (lambda: he_resnet(20, 100, 3), lambda: he_resnet(56, 100, 3), (3, 32, 32)),
}


def criterion(loss: str):
    """The criterion of ``conf/loss/<loss>.yaml`` (its defaults: the YAML is their one source), as run.py builds it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return instantiate(compose("config", overrides=[f"loss={loss}"]).loss)


def make_module(pair: str, loss: str, device) -> CCKDModule:
    student, teacher, _ = PAIRS[pair]
    torch.manual_seed(0)
    optimizer = lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9)  # noqa: E731
    module = CCKDModule(student(), FrozenTeacher(teacher()), optimizer=optimizer, loss=criterion(loss),
                        heatmap_every_n_epochs=0)
    return module.to(device)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def step_time(module: CCKDModule, x, y, steps: int) -> float:
    """Median seconds of one plain training step (forward, all loss terms, backward, optimizer step)."""
    optimizer = module.configure_optimizers()
    module.train()
    times = []
    for _ in range(steps):
        sync(x.device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        module.losses(x, y)["loss"].backward()
        optimizer.step()
        sync(x.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def bench_cc_overhead(pair, device, batches, steps, repeats):
    print(f"\n[1] CCKD / KD-only step time ({pair}, {device}); goal <= 1.10 at batch 256")
    print(f"{'batch':>6} {'KD ms':>9} {'CCKD ms':>9} {'ratio':>7}")
    kd, cckd = make_module(pair, "kd", device), make_module(pair, "cckd", device)
    shape = PAIRS[pair][2]
    for n in batches:
        x, y = torch.randn(n, *shape, device=device), torch.randint(0, 10, (n,), device=device)
        t_kd, t_cc = [], []
        for _ in range(repeats):  # interleaved
            t_kd.append(step_time(kd, x, y, steps))
            t_cc.append(step_time(cckd, x, y, steps))
        a, b = statistics.median(t_kd), statistics.median(t_cc)
        print(f"{n:>6} {a * 1e3:>9.2f} {b * 1e3:>9.2f} {b / a:>7.3f}", flush=True)


class Timer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of training."""

    def __init__(self, warmup):
        self.warmup, self.start, self.seconds = warmup, None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            sync(module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        sync(module.device)
        self.seconds = time.perf_counter() - self.start


def lightning_time(pair, device, loader, steps, warmup) -> float:
    module = make_module(pair, "cckd", device)
    timer = Timer(warmup)
    trainer = L.Trainer(accelerator="gpu" if torch.device(device).type == "cuda" else "cpu", devices=1,
                        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, train_dataloaders=loader)
    return timer.seconds


def plain_time(pair, device, loader, steps, warmup) -> float:
    module = make_module(pair, "cckd", device)
    optimizer = module.configure_optimizers()
    module.train()
    step, start = 0, None
    while step < steps:
        for x, y in loader:
            if step == warmup:
                sync(device)
                start = time.perf_counter()
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            module.losses(x, y)["loss"].backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    sync(device)
    return time.perf_counter() - start


def bench_lightning_overhead(pair, device, batch, steps, repeats):
    print(f"\n[2] CCKDModule in Lightning / plain PyTorch loop ({pair}, {device}, batch {batch}, "
          f"{steps} steps); goal <= 1.05")
    shape = PAIRS[pair][2]
    n = batch * (steps + 1)  # one epoch: per-epoch set-up is not what this compares
    data = TensorDataset(torch.randn(n, *shape), torch.randint(0, 10, (n,)))
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    plain, light = [], []
    for _ in range(repeats):
        plain.append(plain_time(pair, device, loader, steps, warmup=5))
        light.append(lightning_time(pair, device, loader, steps, warmup=5))
    a, b = statistics.median(plain), statistics.median(light)
    print(f"plain {a:.3f} s, Lightning {b:.3f} s, ratio {b / a:.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=sorted(PAIRS), default="lenet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-batch", type=int, default=64)
    parser.add_argument("--loop-steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a busy CPU)")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    bench_cc_overhead(args.pair, args.device, args.batches, args.steps, args.repeats)
    bench_lightning_overhead(args.pair, args.device, args.loop_batch, args.loop_steps, args.repeats)


if __name__ == "__main__":
    main()
