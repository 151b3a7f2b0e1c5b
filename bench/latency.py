"""Measured latency of the networks a study retrained (default: latency_digits): every run folder of its ``retrain``
stage under logs/studies/<study>/ is rebuilt from its own config, and the distinct networks are timed alone, one
thread, eval and inference mode, at batch 1 and ``--batch``, interleaved (one network after the other, ``--rounds``
times), the fastest run kept. Prints, per row, the latency, the speed-up over the full network and the FLOP reduction.

    python bench/latency.py [latency_digits] [--batch 32] [--rounds 10] [--repeats 30]
"""
import argparse
import os
import sys
from functools import partial

import torch
from common import ROOT, interleaved  # the repository on the import path
from hydra.utils import instantiate
from omegaconf import OmegaConf

from netcompress.deploy.speed import measure_latency, speed_settings
from netcompress.networks.flops import count_flops


def networks(study: str) -> dict[str, list[tuple[torch.nn.Module, tuple]]]:
    """{row folder: its seeds' networks} of the study's retrain stage (built from each run's .hydra/config.yaml)."""
    os.chdir(ROOT)   # the runs' relative paths (encoding files) are relative to the repository
    found = {}
    for config in sorted((ROOT / "logs" / "studies" / study / "retrain").glob("*/seed*/.hydra/config.yaml")):
        cfg = OmegaConf.load(config)
        found.setdefault(config.parents[2].name, []).append(
            (instantiate(cfg.model).eval(), (cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", default="latency_digits")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = networks(args.study)
    if not rows:
        sys.exit(f"no retrained runs under logs/studies/{args.study}/retrain: run python bench/study.py {args.study}")
    load = os.getloadavg()[0]
    times = interleaved({(label, i, batch): partial(measure_latency, net, shape, batch, "cpu", 5, args.repeats, "min")
                         for label, nets in rows.items() for i, (net, shape) in enumerate(nets)
                         for batch in (1, args.batch)}, args.rounds)
    best = {key: min(values) for key, values in times.items()}
    full = next((label for label in rows if "full" in label), None)

    def mean(label, batch):
        return sum(best[(label, i, batch)] for i in range(len(rows[label]))) / len(rows[label])

    def flops(label):
        return sum(count_flops(net, shape) for net, shape in rows[label]) / len(rows[label])

    print(f"| network | seeds | MFLOPs | ms at batch 1 | ms at batch {args.batch} | speed-up at batch 1 / "
          f"{args.batch} | FLOP reduction |\n|---|---|---|---|---|---|---|")
    for label in rows:
        ratios = (f"{mean(full, 1) / mean(label, 1):.2f} / {mean(full, args.batch) / mean(label, args.batch):.2f} | "
                  f"{flops(full) / flops(label):.2f}" if full else "– | –")
        print(f"| {label} | {len(rows[label])} | {flops(label) / 1e6:.3f} | {mean(label, 1):.3f} | "
              f"{mean(label, args.batch):.2f} | {ratios} |")
    settings = speed_settings("cpu")
    print(f"\n{settings['device_name']}, 1 thread, torch {settings['torch']}; the fastest of {args.rounds} interleaved "
          f"rounds of {args.repeats} passes; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after.")


if __name__ == "__main__":
    main()
