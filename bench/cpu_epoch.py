"""How fast a CIFAR ResNet-20 trains on this CPU, end to end (data included), option by option: data path, precision,
memory format, torch.compile, the bare step, and the project's own ``Trainer.fit`` epoch (its images/s as
``callbacks.TrainThroughput`` measures it); as ratios against today's path (torchvision ImageFolder, PIL per image,
fp32) timed in the same run, ``--rounds`` times alternating; and each one's share of the CPU's matmul rate (a step
counted as 3 forward passes of 2 x multiply-adds). Each option trains ``--steps`` SGD steps after 2 untimed ones.

    python bench/cpu_epoch.py --root ../shared/data/cifar10-jpeg [--steps 20] [--batch 256] [--threads 2]
"""
import argparse
import contextlib
import itertools
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from common import interleaved, ratios  # the repository on the import path
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from datamodules.image_folder import ImageFolderDataModule
from netcompress.networks.cifar_resnet import he_resnet
from netcompress.networks.flops import count_flops

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
OPTIONS = {  # option: (batches, bf16 autocast, channels_last, torch.compile); the first is the baseline
    "today: ImageFolder + PIL per image, fp32": ("today", False, False, False),
    "decoded once + batch augmentation, fp32": ("decoded", False, False, False),
    "decoded once + batch augmentation, channels_last": ("decoded", False, True, False),
    "decoded once + batch augmentation, bf16 autocast": ("decoded", True, False, False),
    "decoded once + batch augmentation, bf16 + channels_last": ("decoded", True, True, False),
    "decoded once, bf16 + channels_last + torch.compile": ("decoded", True, True, True),
    "bare step, fp32 (no data loading)": ("bare", False, False, False),
    "bare step, bf16 + channels_last": ("bare", True, True, False),
}
EPOCH = "Trainer.fit epoch: data, augmentation, logging (bf16 + channels_last)"


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def train_rate(source, steps: int, bf16: bool, channels_last: bool, compile_: bool) -> float:
    """Images/s of ``steps`` training steps of a fresh ResNet-20 on the batches of ``source()``, 2 untimed first."""
    torch.manual_seed(0)
    batches = source()
    net = he_resnet(20, 10, 3)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    step_net = torch.compile(net) if compile_ else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    images, start = 0, None
    for i in range(steps + 2):
        if i == 2:
            start, images = time.perf_counter(), 0
        x, y = next(batches)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = F.cross_entropy(step_net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        images += len(y)
    return images / (time.perf_counter() - start)


def lightning_rate(datamodule, steps: int) -> float:
    import lightning as L

    from lightning_modules.classifier import ClassifierModule
    from netcompress.callbacks import ChannelsLast, ProgressBar, TrainThroughput

    module = ClassifierModule(he_resnet(20, 10, 3), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True))
    speed = TrainThroughput()
    with tempfile.TemporaryDirectory() as folder:
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=steps + 2,
                            limit_val_batches=0, precision="bf16-mixed", default_root_dir=folder,
                            callbacks=[speed, ChannelsLast(), ProgressBar(every_n_batches=10)],
                            logger=L.pytorch.loggers.CSVLogger(folder), log_every_n_steps=10,
                            enable_model_summary=False)
        trainer.fit(module, datamodule=datamodule)
    return speed.images / speed.seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="an ImageFolder tree of CIFAR-10 (train/, test/)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "cpu_epoch_cache"))
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first step takes minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    today = datasets.ImageFolder(str(Path(args.root) / "train"), transform=T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]))
    dm = ImageFolderDataModule(root=args.root, num_classes=10, mean=MEAN, std=STD, random_shift=4,
                               cache_dir=args.cache, batch_size=args.batch)
    dm.setup()
    def forever(loader):   # epoch after epoch
        return lambda: itertools.chain.from_iterable(itertools.repeat(loader))

    sources = {"today": forever(DataLoader(today, batch_size=args.batch, shuffle=True, drop_last=True)),
               "decoded": forever(dm.train_dataloader()),
               "bare": partial(itertools.repeat, next(iter(dm.train_dataloader())))}
    rows = {name: partial(train_rate, sources[data], args.steps, *flags) for name, (data, *flags) in OPTIONS.items()
            if not (flags[2] and args.no_compile)}
    rows[EPOCH] = partial(lightning_rate, dm, args.steps)
    flops = count_flops(he_resnet(20, 10, 3), (3, 32, 32))
    fp32_peak, bf16_peak = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"{args.threads} threads, batch {args.batch}, {args.steps} timed steps; ResNet-20 {flops / 1e6:.1f}M "
          f"multiply-adds; 2048x2048 matmul: {fp32_peak:.0f} GFLOP/s fp32, {bf16_peak:.0f} GFLOP/s bf16")
    rates = interleaved(rows, args.rounds)
    print(f"| option | images/s | x today | epoch of {len(dm.train_set)} (s) | GFLOP/s | % of matmul |")
    print("|---|---|---|---|---|---|")
    results = {name: max(values) for name, values in rates.items()}
    for name, rate in results.items():
        gflops = rate * 6 * flops / 1e9
        peak = bf16_peak if "bf16" in name else fp32_peak
        print(f"| {name} | {rate:.0f} | {ratios(rates[name], rates[next(iter(OPTIONS))])[0]:.2f} | "
              f"{len(dm.train_set) / rate:.0f} | {gflops:.0f} | {100 * gflops / peak:.0f} |")
    step = results["bare step, bf16 + channels_last"]
    print(f"the project's epoch runs at {100 * results[EPOCH] / step:.0f}% of the bare step's rate (same precision)")


if __name__ == "__main__":
    main()
