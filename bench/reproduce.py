"""Regenerates the evidence: runs every table script (each runs its rows with their seeds, through
``python run.py``, and writes its section of docs/results.md), then draws the accuracy-vs-FLOPs frontier of all
the runs they made (docs/frontier.png; also logged to wandb with --wandb).

    python bench/reproduce.py --data-root ../shared/data/mnist-dev          # everything (hours on 2 CPU cores)
    python bench/reproduce.py --data-root ../shared/data/mnist-dev --only cckd
    python bench/reproduce.py --frontier-only --workdir bench_runs           # redraw from runs already made
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT

# name: its table script; each takes --workdir, --write and --data-root (its real-MNIST rows), and names its rows
TABLES = {
    "cckd": "bench/cckd_table.py",
    "dafl": "bench/dafl_table.py",
    "metapruning": "bench/metapruning_table.py",
}


def runs_under(workdir: Path) -> list[dict]:
    """Every metrics.json under ``workdir`` with the method (the run folder's task name) added."""
    records = []
    for path in sorted(workdir.rglob("metrics.json")):
        record = json.loads(path.read_text())
        parts = path.parts
        record["method"] = parts[parts.index("logs") + 1] if "logs" in parts else path.parent.name
        records.append(record)
    return records


def frontier_figure(records: list[dict]):
    """Test accuracy against FLOPs (multiply-adds) of every run, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = sorted({r["method"] for r in records})
    for method in methods:
        points = [(r["metrics"]["model/flops"], 100 * r["metrics"]["test/acc"]) for r in records
                  if r["method"] == method and "model/flops" in r["metrics"] and "test/acc" in r["metrics"]]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, label=f"{method} ({len(points)} runs)", alpha=0.7, s=18)
    ax.set(xscale="log", xlabel="FLOPs (multiply-adds, log scale)", ylabel="test top-1 (%)",
           title="Every run of bench/reproduce.py: accuracy vs FLOPs")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help="MNIST in torchvision's layout (e.g. ../shared/data/mnist-dev)")
    parser.add_argument("--workdir", default="bench_runs", help="where the runs go (kept for the frontier)")
    parser.add_argument("--only", nargs="+", choices=sorted(TABLES), default=sorted(TABLES))
    parser.add_argument("--frontier-only", action="store_true")
    parser.add_argument("--wandb", action="store_true", help="also log the frontier image to wandb")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    started = time.time()
    if not args.frontier_only:
        for name in args.only:
            command = [sys.executable, str(ROOT / TABLES[name]), "--workdir", str(workdir / name), "--write"]
            if args.data_root:
                command += ["--data-root", str(Path(args.data_root).resolve())]
            print(f"[reproduce] {' '.join(command)}", flush=True)
            subprocess.run(command, check=True, cwd=ROOT)
    records = runs_under(workdir)
    figure = frontier_figure(records)
    out = ROOT / "docs" / "frontier.png"
    figure.savefig(out, dpi=120)
    print(f"[reproduce] {len(records)} runs drawn in {out}; {time.time() - started:.0f} s")
    if args.wandb:
        import wandb

        from iccv19.training.loggers import wandb_api_key_configured

        run = wandb.init(project="iccv19-compression", job_type="reproduce",
                         mode="online" if wandb_api_key_configured() else "offline", dir=str(workdir))
        run.log({"frontier": wandb.Image(str(out))})
        run.finish()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
