"""MetaPruning's costs, as ratios against a baseline timed in the same run (each side in its own process, alternating
``--rounds`` times): the PruningNet training step (generated and cropped weights, choice BN) against the same network
at full width as an ordinary one (goal <= 1.5), with each one's peak memory; then candidates scored per minute on
digits (BN recalibration + held-out top-1, the search's inner loop). ``--step-ratio``: PruningNetModule's step in a
Trainer against a plain loop of the same PruningNet (a random encoding per step), loss (label smoothing 0.1) and SGD
(goal <= 1.0).

    python bench/bench_metapruning.py [--arch mobilenetv2] [--size small] [--batch 64] [--device cpu|cuda]
    python bench/bench_metapruning.py --step-ratio [--size imagenet --batch 8 --steps 8 --threads 1]
"""
import argparse
import multiprocessing as mp
import random
import resource
import time
from functools import partial

import torch
import torch.nn.functional as F
from common import interleaved, ratios  # the repository on the import path, in spawned processes too


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
    """The median step time of the PruningNet training step: ``plain`` loop or ``lightning`` (PruningNetModule)."""
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["mobilenetv2", "mobilenetv1", "resnet"])
    parser.add_argument("--size", default="small", choices=["small", "imagenet"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--search-seconds", type=float, default=20)
    parser.add_argument("--step-ratio", action="store_true", help="PruningNetModule step vs a plain loop, then exit")
    args = parser.parse_args()
    if args.step_ratio:
        times = interleaved({mode: partial(isolated, step_times, mode, args.size, args.batch, args.steps, args.threads)
                             for mode in ("plain", "lightning")}, args.rounds)
        median, fastest, _ = ratios(times["lightning"], times["plain"])
        print(f"MobileNetV2 PruningNet ({args.size}, batch {args.batch}, {args.threads} thread(s), CPU): plain loop "
              f"{1e3 * min(times['plain']):.0f} ms/step, PruningNetModule {1e3 * min(times['lightning']):.0f} ms/step; "
              f"ratio {median:.3f}, fastest {fastest:.3f} (goal <= 1.0)")
        return
    print(f"device {args.device}, {args.threads} CPU thread(s), size={args.size}, batch {args.batch}, "
          f"{args.rounds} rounds\n| arch | fixed step (ms) | PruningNet step (ms) | ratio (goal <= 1.5) | fastest "
          "| fixed peak MB* | PruningNet peak MB* |\n|---|---|---|---|---|---|---|")
    for arch in args.arch:
        runs = interleaved({pruning: partial(isolated, train_steps, arch, args.size, pruning, args.batch, args.steps,
                                             args.device, args.threads) for pruning in (False, True)}, args.rounds)
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
