"""MetaPruning benchmarks; every number is a ratio to, or a rate next to, a baseline measured in the same run.

1. PruningNet training step (generate + crop weights, choice BN) vs the same network as an ordinary fixed
   network, both at full width: time ratio (goal <= 1.5) and peak memory of each (own process each).
2. Candidates scored per minute on digits (BN recalibration + held-out top-1), the search's inner loop.
3. ``--step-ratio``: ``PruningNetModule``'s training step in a Lightning Trainer vs a plain PyTorch loop of the same
   PruningNet (a random encoding per step), loss (label smoothing 0.1) and SGD optimizer (
   MobileNetV2 PruningNet, batch 8, 224x224; goal <= 1.0). Own process each; median step time after warm-up.

    python bench/bench_metapruning.py [--arch mobilenetv2] [--size small] [--batch 64] [--device cpu|cuda]
    python bench/bench_metapruning.py --step-ratio [--size imagenet --batch 8 --steps 8 --threads 1]
    python bench/bench_metapruning.py --bn-recal <digits PruningNet run>/checkpoints/last.ckpt
"""
import argparse
import multiprocessing as mp
import random
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repository root, in spawned processes too


def build(arch, size, pruning, device):
    from netcompress.networks.pruningnet import build_pruningnet

    shape = (1, 32, 32) if size == "small" else (3, 224, 224)
    classes = 10 if size == "small" else 1000
    net = build_pruningnet(arch, size, num_classes=classes, in_channels=shape[0])
    if not pruning:
        net = net.narrow(net.full_encoding())
    return net.to(device), shape, classes


def train_steps(arch, size, pruning, batch, steps, device, threads, queue):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # the process before the network exists
    net, shape, classes = build(arch, size, pruning, device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    times = []
    for _step in range(steps + 2):
        if pruning:
            net.set_encoding(net.full_encoding())
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
    queue.put((sorted(times[2:])[len(times[2:]) // 2], peak))   # median, after two warm-up steps


def isolated(target, *args):
    """``target(*args, queue)`` in a fresh spawned process (its own memory peak and threads); what it puts."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def step_times(mode, size, batch, steps, threads, queue):
    """Per-step wall times of the PruningNet training step: ``plain`` loop or ``lightning`` (PruningNetModule)."""
    from functools import partial

    import lightning as L

    from lightning_modules.pruningnet import PruningNetModule

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, shape, classes = build("mobilenetv2", size, True, "cpu")
    x = torch.randn(batch, *shape)
    y = torch.randint(0, classes, (batch,))
    optimizer = partial(torch.optim.SGD, lr=0.01, momentum=0.9)
    times, total = [], steps + 2
    if mode == "plain":
        opt = optimizer(net.parameters())
        for step in range(total):
            start = time.perf_counter()
            net.set_encoding(net.random_encoding(random.Random(step)))
            loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
    else:
        class Timer(L.Callback):
            def on_train_batch_start(self, *_):
                self.start = time.perf_counter()

            def on_train_batch_end(self, *_):
                times.append(time.perf_counter() - self.start)

        module = PruningNetModule(net, optimizer, label_smoothing=0.1)
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.repeat(total, 1, 1, 1), y.repeat(total)),
                                           batch_size=batch)
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            callbacks=[Timer()])
        trainer.fit(module, data)
    queue.put(sorted(times[2:])[len(times[2:]) // 2])


def bn_recalibration(ckpt: str, candidates: int, threads: int) -> None:
    """Both BN recalibrations on a trained digits PruningNet (``--bn-recal <last.ckpt>``): held-out top-1 of random
    encodings, and how much a score moves when the same encoding is scored again (the official reshuffles)."""
    from datamodules.digits import DigitsDataModule
    from netcompress.core import read_state_dict
    from netcompress.networks.pruningnet import build_pruningnet
    from netcompress.search.evaluate import CandidateEvaluator

    torch.set_num_threads(threads)
    dm = DigitsDataModule(batch_size=64, holdout=180)
    dm.setup()
    net = build_pruningnet("mobilenetv2", "small", 10, 1)
    net.load_state_dict(read_state_dict(ckpt, "--bn-recal"))
    fixed = torch.utils.data.Subset(dm.train_set, torch.randperm(len(dm.train_set),
                                    generator=torch.Generator().manual_seed(0))[:512].tolist())
    ours = CandidateEvaluator(net, torch.utils.data.DataLoader(fixed, batch_size=128), dm.val_dataloader())
    rng = random.Random(0)
    encodings = [net.random_encoding(rng) for _ in range(candidates)]
    mean = lambda v: sum(v) / len(v)   # noqa: E731
    moved = lambda x, y: mean([abs(p - q) for p, q in zip(x, y, strict=True)])   # noqa: E731
    a, a2 = ours(encodings), ours(encodings)
    print(f"BN recalibration on digits ({candidates} random encodings, 180 held-out images): cumulative (ours, "
          f"4 x 128 fixed images) mean top-1 {100 * mean(a):.2f}%, |change| when rescored {100 * moved(a, a2):.2f}")
    for batches, size in ((4, 128), (40, 32)):
        shuffled = torch.utils.data.DataLoader(dm.train_set, batch_size=size, shuffle=True,
                                               generator=torch.Generator().manual_seed(0))
        official = CandidateEvaluator(net, shuffled, dm.val_dataloader(), calib_batches=batches, momentum=0.1)
        b, b2 = official(encodings), official(encodings)
        print(f"  official (momentum 0.1, {batches} x {size} reshuffled images): mean top-1 {100 * mean(b):.2f}%, "
              f"|change| when rescored {100 * moved(b, b2):.2f}", flush=True)


def candidates_per_minute(arch, seconds, threads):
    from datamodules.digits import DigitsDataModule
    from netcompress.networks.pruningnet import build_pruningnet
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
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", nargs="+", default=["mobilenetv2", "mobilenetv1", "resnet"])
    parser.add_argument("--size", default="small", choices=["small", "imagenet"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--search-seconds", type=float, default=20)
    parser.add_argument("--step-ratio", action="store_true", help="PruningNetModule step vs a plain loop, then exit")
    parser.add_argument("--bn-recal", metavar="CKPT", help="compare the BN recalibrations on a digits PruningNet")
    args = parser.parse_args()
    if args.bn_recal:
        bn_recalibration(args.bn_recal, 30, args.threads)
        return
    if args.step_ratio:
        plain = isolated(step_times, "plain", args.size, args.batch, args.steps, args.threads)
        lightning = isolated(step_times, "lightning", args.size, args.batch, args.steps, args.threads)
        print(f"MobileNetV2 PruningNet ({args.size}, batch {args.batch}, {args.threads} thread(s), CPU): plain loop "
              f"{1e3 * plain:.0f} ms/step, PruningNetModule {1e3 * lightning:.0f} ms/step, ratio "
              f"{lightning / plain:.3f} (goal <= 1.0)")
        return
    print(f"device {args.device}, {args.threads} CPU thread(s), size={args.size}, batch {args.batch}")
    print("| arch | fixed step (ms) | PruningNet step (ms) | ratio (goal <= 1.5) | fixed peak MB* "
          "| PruningNet peak MB* |")
    print("|---|---|---|---|---|---|")
    for arch in args.arch:
        common = (args.batch, args.steps, args.device, args.threads)
        fixed, fixed_mem = isolated(train_steps, arch, args.size, False, *common)
        meta, meta_mem = isolated(train_steps, arch, args.size, True, *common)
        print(f"| {arch} | {1e3 * fixed:.1f} | {1e3 * meta:.1f} | {meta / fixed:.2f} | {fixed_mem / 2**20:.0f} | "
              f"{meta_mem / 2**20:.0f} |", flush=True)
    print("*peak memory of the training steps: CUDA max allocated, or on CPU the growth of the process's max RSS")
    if args.search_seconds > 0:
        for arch in args.arch:
            rate = candidates_per_minute(arch, args.search_seconds, args.threads)
            print(f"search on digits ({arch} small, 4x128 calibration images, 180 held-out): "
                  f"{rate:.0f} candidates/minute", flush=True)


if __name__ == "__main__":
    main()
