"""Regenerates the evidence: runs every table script (each runs its rows with their seeds, through
``python run.py``, and writes its section of docs/results.md), then draws the accuracy-vs-FLOPs frontier of all
the runs they made (docs/frontier.png; also logged to wandb with --wandb).

    python bench/reproduce.py --data-root ../shared/data/mnist-dev          # everything (hours on 2 CPU cores)
    python bench/reproduce.py --data-root ../shared/data/mnist-dev --only cckd
    python bench/reproduce.py --frontier-only                                # redraw from the runs under logs/
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import ROOT

RUNS = ROOT / "logs"   # each table script keeps its runs under logs/<its folder>/ (the frontier reads them)
# name: the table scripts (with their own seeds and rows) and the folder their runs go to; {data_root} is
# --data-root (rows on real MNIST; without it, the scripts run their digits rows only)
TABLES = {
    "cckd": [["bench/cckd_table.py", "--data-root", "{data_root}", "--workdir", str(RUNS / "cckd_table"), "--write"]],
    "dafl": [["bench/dafl_table.py", "--data-root", "{data_root}", "--jobs", "2", "--write"]],
    "metapruning": [["bench/metapruning_budgets.py", "--data", "digits", "mnist-dev", "--data-root", "{data_root}",
                     "--write"],
                    ["bench/metapruning_compose.py", "--data", "digits", "mnist-dev", "--data-root", "{data_root}",
                     "--write"]],
}
FOLDERS = ["cckd_table", "dafl_table", "bench_metapruning_budgets"]


def runs_under(folders: list[Path]) -> list[dict]:
    """Every metrics.json under ``folders``, labelled ``<method> on <data>`` (the run's task name and data set)."""
    records = []
    for path in sorted(p for folder in folders for p in folder.rglob("metrics.json")):
        record = json.loads(path.read_text())
        config = yaml.safe_load((path.parent / ".hydra" / "config.yaml").read_text())
        data = config["data"]["_target_"].rsplit(".", 1)[-1].removesuffix("DataModule")
        method = config.get("task_name", "?")
        if str(config["model"].get("_target_", "")).endswith("build_pruned"):   # a MetaPruning narrow network
            encoding = Path(config["model"]["encoding"])   # a search's file (picked from) or a hand-written one
            pick = config["model"].get("pick", "best") if encoding.name == "top_encodings.yaml" else encoding.stem
            method = f"{method}, pruned ({pick})"
        record["method"] = f"{method} on {data}"
        records.append(record)
    return records


def frontier_figure(records: list[dict]):
    """Test accuracy against FLOPs (multiply-adds) of every run: one colour per method, one marker per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = sorted({r["method"] for r in records})   # "<method> on <data>"
    methods = sorted({label.rsplit(" on ", 1)[0] for label in labels})
    datasets = sorted({label.rsplit(" on ", 1)[1] for label in labels})
    for label in labels:
        method, data = label.rsplit(" on ", 1)
        points = [(r["metrics"]["model/flops"], 100 * r["metrics"]["test/acc"]) for r in records
                  if r["method"] == label and "model/flops" in r["metrics"] and "test/acc" in r["metrics"]]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, label=f"{label} ({len(points)} runs)", alpha=0.7, s=22,
                       marker="os^Dv"[datasets.index(data) % 5], color=plt.cm.tab20(methods.index(method) % 20))
    ax.set(xscale="log", xlabel="FLOPs (multiply-adds, log scale)", ylabel="test top-1 (%)",
           title="Every run of bench/reproduce.py: accuracy vs FLOPs")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help="MNIST in torchvision's layout (e.g. ../shared/data/mnist-dev)")
    parser.add_argument("--only", nargs="+", choices=sorted(TABLES), default=sorted(TABLES))
    parser.add_argument("--frontier-only", action="store_true", help="redraw from the runs already under logs/")
    parser.add_argument("--runs", nargs="*", type=Path, help="draw these folders' runs instead of logs/<tables>")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "frontier.png", help="where the picture goes")
    parser.add_argument("--wandb", action="store_true", help="also log the frontier image to wandb")
    args = parser.parse_args()
    started = time.time()
    if not args.frontier_only:
        for name in args.only:
            for command in TABLES[name]:
                if "{data_root}" in command and not args.data_root:   # the digits rows only
                    command = [c for c in command if c not in ("--data-root", "{data_root}", "mnist-dev")]
                command = [c.replace("{data_root}", str(Path(args.data_root or ".").resolve())) for c in command]
                print(f"[reproduce] python {' '.join(command)}", flush=True)
                step = time.time()
                subprocess.run([sys.executable, *command], check=True, cwd=ROOT)
                print(f"[reproduce] {command[0]}: {time.time() - step:.0f} s", flush=True)
    records = runs_under(args.runs or [RUNS / folder for folder in FOLDERS])
    frontier_figure(records).savefig(args.out, dpi=120)
    print(f"[reproduce] {len(records)} runs drawn in {args.out}; {time.time() - started:.0f} s")
    if args.wandb:
        import wandb

        from iccv19.training.loggers import wandb_api_key_configured

        run = wandb.init(project="iccv19-compression", job_type="reproduce", dir=str(RUNS),
                         mode="online" if wandb_api_key_configured() else "offline")
        run.log({"frontier": wandb.Image(str(args.out))})
        run.finish()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
