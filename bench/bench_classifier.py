"""Per-step time of ClassifierModule under the Lightning Trainer vs a plain PyTorch loop (same model, data,
optimizer), measured in the same run and printed as a ratio; plus the peak memory of `python run.py`.

    python bench/bench_classifier.py [--steps 60] [--rounds 3] [--batch 128] [--skip-run]

Goal: ratio <= 1.05 at CIFAR ResNet-20 size on CPU. Rounds alternate the two loops so that load from other
processes hits both alike; the median over rounds is reported.
"""
import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from iccv19.networks.cifar_resnet import he_resnet  # noqa: E402
from lightning_modules.classifier import ClassifierModule  # noqa: E402

WARMUP = 5


def make_data(batch, steps):
    g = torch.Generator().manual_seed(0)
    x = torch.randn((steps + WARMUP) * batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 100, ((steps + WARMUP) * batch,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False, drop_last=True)


def optimizer(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def plain_loop(loader) -> float:
    torch.manual_seed(0)
    net = he_resnet(20, 100)
    opt = optimizer(net.parameters())
    net.train()
    for i, (x, y) in enumerate(loader):
        if i == WARMUP:
            start = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / (len(loader) - WARMUP)


class StepTimer(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == WARMUP:
            self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.per_step = (time.perf_counter() - self.start) / (trainer.num_training_batches - WARMUP)


def lightning_loop(loader) -> float:
    torch.manual_seed(0)
    module = ClassifierModule(he_resnet(20, 100), optimizer=optimizer)
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[timer])
    trainer.fit(module, train_dataloaders=loader)
    return timer.per_step


def peak_memory_of_run() -> float:
    """Peak resident memory (MiB) of `python run.py` on digits (2 epochs, cached teacher)."""
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(root / "run.py"), "trainer.max_epochs=2", "callbacks.progress_bar=null",
                    "logger=none", "hydra.run.dir=/tmp/bench_classifier_run"], cwd=root, check=True,
                   capture_output=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--skip-run", action="store_true", help="skip the peak-memory run of run.py")
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    loader = make_data(args.batch, args.steps)
    ratios = []
    for r in range(args.rounds):
        plain = plain_loop(loader)
        light = lightning_loop(loader)
        ratios.append(light / plain)
        print(f"round {r}: plain {plain * 1e3:.1f} ms/step, Lightning ClassifierModule {light * 1e3:.1f} ms/step, "
              f"ratio {light / plain:.3f}")
    print(f"CIFAR ResNet-20, batch {args.batch}, CPU ({torch.get_num_threads()} threads): "
          f"Lightning / plain = {statistics.median(ratios):.3f} (median of {args.rounds}; goal <= 1.05)")
    if not args.skip_run:
        print(f"peak memory of `python run.py` (digits, 2 epochs): {peak_memory_of_run():.0f} MiB")


if __name__ == "__main__":
    main()
