"""Accuracy against wall time of data-free runs (DAFL, fast_datafree): one curve per run, read back from finished
run folders, nothing rerun.

    python bench/datafree_curve.py <run dir>[=<label>] ... [--out docs/x.png] [--metric val/acc]

Each run's ``--metric`` per epoch comes from its CSV log (``csv/metrics.csv``); the wall time of an epoch's end is the
modification time of the image grid the module writes at the end of every epoch (``csv/images/train_generated_*.png``)
minus the start of the run (the modification time of ``.hydra/config.yaml``, written before anything is built), so
the times include building, the teacher and validation, as a user waits for them. Prints a Markdown table (first
epoch reaching each accuracy) and draws the curves.
"""
import argparse
import csv
from pathlib import Path


def curve(run_dir: Path, metric: str) -> list[tuple[float, float]]:
    """(seconds since the start, metric) at the end of every epoch of the run."""
    start = (run_dir / ".hydra" / "config.yaml").stat().st_mtime
    logs = sorted(run_dir.glob("csv/**/metrics.csv"))
    values = {}
    for row in csv.DictReader(open(logs[-1])):
        if row.get(metric):
            values[int(row["epoch"])] = float(row[metric])
    images = {int(p.stem.rsplit("_", 1)[1]): p.stat().st_mtime - start
              for p in run_dir.glob("csv/**/images/train_generated_*.png")}
    return [(images[e], values[e]) for e in sorted(values) if e in images]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--metric", default="val/acc")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.85, 0.9])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    curves = {}
    for spec in args.runs:
        path, _, label = spec.partition("=")
        curves[label or Path(path).name] = curve(Path(path), args.metric)
    print(f"| run | epochs | wall s | last {args.metric} | " +
          " | ".join(f"s to {100 * t:.0f}%" for t in args.thresholds) + " |")
    print("|---|---|---|---|" + "---|" * len(args.thresholds))
    for label, points in curves.items():
        reach = [next((f"{s:.0f}" for s, v in points if v >= t), "never") for t in args.thresholds]
        last_s, last = points[-1]
        print(f"| {label} | {len(points)} | {last_s:.0f} | {100 * last:.2f} | " + " | ".join(reach) + " |")
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, points in curves.items():
            ax.plot([s for s, _ in points], [100 * v for _, v in points], marker=".", label=label)
        ax.set_xlabel("wall time (s, one thread on a shared 2-core CPU)")
        ax.set_ylabel(f"{args.metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out, dpi=120)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
