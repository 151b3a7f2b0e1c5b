"""CCKD step-time benchmark; prints ratios against a baseline measured in the same run (no absolute claims).

CCKD / KD-only training-step time at batch 64, 256 and 1024 (same student, teacher, optimizer; CCKD adds the
embeddings and the n x n correlation matrices). Goal: <= 1.10 at batch 256. The Lightning module against a plain
loop: bench/bench_overhead.py.

    python bench/bench_cckd.py                       # digits-sized LeNet-5 -> LeNet-5-half, CPU
    python bench/bench_cckd.py --pair resnet --device cuda   # CIFAR ResNet-56 -> ResNet-20
Timings interleave the compared variants and report medians, so a busy machine biases both sides alike.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import criterion  # noqa: E402

from lightning_modules.kd import KDModule  # noqa: E402
from netcompress.networks.cifar_resnet import he_resnet  # noqa: E402
from netcompress.networks.lenet import LeNet5, lenet5_half  # noqa: E402
from netcompress.networks.teacher import FrozenTeacher  # noqa: E402

PAIRS = {  # name: (student factory, teacher factory, input shape)
    "lenet": (lambda: lenet5_half(10, 1), lambda: LeNet5(10, 1), (1, 32, 32)),
    "resnet": (lambda: he_resnet(20, 100, 3), lambda: he_resnet(56, 100, 3), (3, 32, 32)),
}


def make_module(pair: str, loss: str, device) -> KDModule:
    student, teacher, _ = PAIRS[pair]
    torch.manual_seed(0)
    optimizer = lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9)  # noqa: E731
    module = KDModule(student(), FrozenTeacher(teacher()), optimizer=optimizer, loss=criterion(loss),
                        heatmap_every_n_epochs=0)
    return module.to(device)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def step_time(module: KDModule, x, y, steps: int) -> float:
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
    print(f"CCKD / KD-only step time ({pair}, {device}); goal <= 1.10 at batch 256")
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


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=sorted(PAIRS), default="lenet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a busy CPU)")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    bench_cc_overhead(args.pair, args.device, args.batches, args.steps, args.repeats)


if __name__ == "__main__":
    main()
