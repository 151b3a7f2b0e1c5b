"""MetaPruning's costs: the PruningNet training step (generated and cropped weights, choice BN) at full width against
the same network as an ordinary one (goal <= 1.5), each side in its own process, alternating ``--rounds`` times, with
each one's peak memory; then candidates scored per minute on digits (BN recalibration + held-out top-1, the search's
inner loop). PruningNetModule's step in a Trainer against a plain loop: bench/bench_overhead.py.

    python bench/bench_metapruning.py [--arch mobilenetv2] [--size small] [--batch 64] [--device cpu|cuda]
"""
import argparse
import multiprocessing as mp
import random
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import torch
import torch.nn.functional as F
from common import interleaved, ratios  # the repository on the import path, in spawned processes too

from netcompress.networks.pruningnet import build_pruningnet


def train_steps(arch, size, pruning, batch, steps, device, threads):
    """The median time of ``steps`` SGD steps (after 2 more) and the peak memory: CUDA max allocated, or on CPU the
    growth of the process's max RSS from before the network exists."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shape, classes = ((1, 32, 32), 10) if size == "small" else ((3, 224, 224), 1000)
    net = build_pruningnet(arch, size, num_classes=classes, in_channels=shape[0])
    net = (net if pruning else net.narrow(net.full_encoding())).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, *shape, device=device), torch.randint(0, classes, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    times = []
    for _ in range(steps + 2):
        if pruning:
            net.set_encoding(net.full_encoding())
        sync()
        start = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
    return statistics.median(times[2:]), peak


def isolated(*args):
    """``train_steps(*args)`` in a fresh spawned process: its own memory peak and threads."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as process:
        return process.submit(train_steps, *args).result()


def candidates_per_minute(arch, seconds, threads):
    from datamodules.digits import DigitsDataModule  # not in the spawned processes
    from netcompress.search.evaluate import CandidateEvaluator

    torch.set_num_threads(threads)
    dm = DigitsDataModule(batch_size=128, holdout=180)
    dm.setup()
    net = build_pruningnet(arch, "small", 10, 1)
    calib = [x for x, _ in torch.utils.data.DataLoader(dm.train_set, batch_size=128)][:4]   # the digits recipe
    evaluator = CandidateEvaluator(net, calib, dm.val_dataloader())
    rng, count, start = random.Random(0), 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        evaluator([net.random_encoding(rng)])
        count += 1
    return 60 * count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["mobilenetv2", "mobilenetv1", "resnet"])
    parser.add_argument("--size", default="small", choices=["small", "imagenet"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--search-seconds", type=float, default=20)
    args = parser.parse_args()
    print(f"device {args.device}, {args.threads} CPU thread(s), size={args.size}, batch {args.batch}, "
          f"{args.rounds} rounds\n| arch | fixed step (ms) | PruningNet step (ms) | ratio (goal <= 1.5) | fastest "
          "| fixed peak MB* | PruningNet peak MB* |\n|---|---|---|---|---|---|---|")
    for arch in args.arch:
        runs = interleaved({pruning: partial(isolated, arch, args.size, pruning, args.batch, args.steps, args.device,
                                             args.threads) for pruning in (False, True)}, args.rounds)
        (fixed, fixed_mem), (meta, meta_mem) = (list(zip(*runs[pruning], strict=True)) for pruning in (False, True))
        median, fastest, _ = ratios(meta, fixed)
        print(f"| {arch} | {1e3 * min(fixed):.1f} | {1e3 * min(meta):.1f} | {median:.2f} | {fastest:.2f} | "
              f"{max(fixed_mem) / 2**20:.0f} | {max(meta_mem) / 2**20:.0f} |", flush=True)
    print("*peak memory of the training steps: CUDA max allocated, or on CPU the growth of the process's max RSS")
    for arch in args.arch if args.search_seconds > 0 else []:
        rate = candidates_per_minute(arch, args.search_seconds, args.threads)
        print(f"search on digits ({arch} small, 4x128 calibration images, 180 held-out): {rate:.0f} candidates/minute",
              flush=True)


if __name__ == "__main__":
    main()
