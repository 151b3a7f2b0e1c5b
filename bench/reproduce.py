"""Regenerates the evidence: runs every table script (each runs its rows with their seeds, through
``python run.py``, and writes its section of docs/results.md), then draws the accuracy-vs-FLOPs frontier of all
the runs they made (docs/frontier.png; also logged to wandb with --wandb).

    python bench/reproduce.py --data-root ../shared/data/mnist-dev          # everything but CIFAR-10 (hours)
    python bench/reproduce.py --data-root ../shared/data/mnist-dev --only cckd
    python bench/reproduce.py --cifar-root ../shared/data/cifar10-dev --only cifar10
    python bench/reproduce.py --frontier-only [--runs DIR ...]               # redraw from the runs under logs/

The cifar10 part runs bench/cifar10_table.py (teacher, student, KD, CCKD, DAFL), the CIFAR-10 MetaPruning budgets
and the composition, which trains from the teacher cifar10_table.py trained (its run folder, read back).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import ROOT, cached_run

RUNS = ROOT / "logs"   # each table script keeps its runs under logs/<its folder>/ (the frontier reads them)
CIFAR_BUDGETS = RUNS / "cifar10_metapruning"
# name: the table scripts (with their own seeds and rows) and the folder their runs go to; {data_root} is
# --data-root (rows on real MNIST; without it, the scripts run their digits rows only), {cifar_root} --cifar-root,
# {cifar_teacher} the checkpoint of bench/cifar10_table.py's teacher run (found when the command starts)
TABLES = {
    "cifar10": [["bench/cifar10_table.py", "--data-root", "{cifar_root}", "--workdir", str(RUNS / "cifar10_table"),
                 "--write"],
                ["bench/metapruning_budgets.py", "--data", "cifar10", "--cifar-root", "{cifar_root}", "--budgets",
                 "0.5", "0.25", "--out", str(CIFAR_BUDGETS), "--section", "cifar10_metapruning", "--write"],
                ["bench/metapruning_compose.py", "--data", "cifar10", "--cifar-root", "{cifar_root}", "--budget", "0.5",
                 "--out", str(CIFAR_BUDGETS), "--cifar-teacher", "{cifar_teacher}", "--cifar-table",
                 str(RUNS / "cifar10_table"), "--section", "cifar10_compose", "--write"]],
    "cckd": [["bench/cckd_table.py", "--data-root", "{data_root}", "--workdir", str(RUNS / "cckd_table"), "--write"]],
    "dafl": [["bench/dafl_table.py", "--data-root", "{data_root}", "--jobs", "2", "--write"]],
    "metapruning": [["bench/metapruning_budgets.py", "--data", "digits", "mnist-dev", "--data-root", "{data_root}",
                     "--write"],
                    ["bench/metapruning_compose.py", "--data", "digits", "mnist-dev", "--data-root", "{data_root}",
                     "--write"]],
}
FOLDERS = ["cckd_table", "dafl_table", "bench_metapruning_budgets", "cifar10_table/teacher", "cifar10_table/test",
           "cifar10_metapruning"]   # cifar10_table/select: held-out comparisons (fewer training images), not drawn


def cifar_teacher(cifar_root: str, workdir: Path | None = None) -> str:
    """The ResNet-20 checkpoint of bench/cifar10_table.py's teacher run under its ``workdir`` (default
    logs/cifar10_table, where the cifar10 part runs it first)."""
    from cifar10_table import QUIET, TEACHER, checkpoint

    workdir = workdir or RUNS / "cifar10_table"
    root = f"data.root={Path(cifar_root).resolve()}"
    record = cached_run([*TEACHER, root, *QUIET], workdir / "teacher", run_missing=False)
    if record is None:
        sys.exit(f"no teacher run under {workdir / 'teacher'}: run bench/cifar10_table.py first (--only cifar10)")
    return checkpoint(record)


def runs_under(folders: list[Path]) -> list[dict]:
    """Every metrics.json under ``folders``, labelled ``<method> on <data>`` (the run's task name, the pick of a pruned
    network, ", clipped" when its gradients were clipped; the data set's class or module name)."""
    records = []
    for path in sorted(p for folder in folders for p in folder.rglob("metrics.json")):
        record = json.loads(path.read_text())
        config = yaml.safe_load((path.parent / ".hydra" / "config.yaml").read_text())
        data = str(config["data"].get("dataset") or config["data"]["_target_"]).rsplit(".", 1)[-1]
        data = data.removesuffix("DataModule").removeprefix("Relaxed")
        method = config.get("task_name", "?")
        if str(config["model"].get("_target_", "")).endswith("build_pruned"):   # a MetaPruning narrow network
            encoding = Path(config["model"]["encoding"])   # a search's file (picked from) or a hand-written one
            pick = config["model"].get("pick", "best") if encoding.name == "top_encodings.yaml" else encoding.stem
            method = f"{method}, pruned ({pick})"
        if config.get("trainer", {}).get("gradient_clip_val"):
            method += ", clipped"
        record["method"] = f"{method} on {data}"
        records.append(record)
    return records


def groups(records: list[dict], spread: float = 1.3) -> list[dict]:
    """The runs of each label (``<method> on <data>``) with FLOPs within ``spread`` x of the group's narrowest (the
    seeds of one recipe; a pruned pick at two budgets makes two groups): label, data, method, n, mean and sample sd of
    FLOPs and of test top-1 (%)."""
    from common import mean_sd

    points = sorted((r["method"], r["metrics"]["model/flops"], 100 * r["metrics"]["test/acc"]) for r in records
                    if "model/flops" in r["metrics"] and "test/acc" in r["metrics"])
    out, current = [], []
    for point in points + [None]:
        if current and (point is None or point[0] != current[0][0] or point[1] > spread * current[0][1]):
            method, data = current[0][0].rsplit(" on ", 1)
            (flops, _), (acc, sd) = mean_sd([p[1] for p in current]), mean_sd([p[2] for p in current])
            out.append({"label": current[0][0], "method": method, "data": data, "n": len(current), "flops": flops,
                        "acc": acc, "sd": sd})
            current = []
        if point is not None:
            current.append(point)
    return out


def frontier_figure(records: list[dict]):
    """Test accuracy against FLOPs (multiply-adds): one panel per data set, one point per recipe (mean ± sd over its
    seeds, error bars), one colour per method, the uniform-width pruned networks joined by a line, legends below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = groups(records)
    datasets = sorted({g["data"] for g in found}) or ["no runs"]
    methods = sorted({g["method"] for g in found})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 6.5), squeeze=False)
    for ax, data in zip(axes[0], datasets, strict=True):
        mine = [g for g in found if g["data"] == data]
        uniform = sorted((g["flops"], g["acc"]) for g in mine if "pruned (uniform" in g["method"])
        if len(uniform) > 1:
            ax.plot(*zip(*uniform, strict=True), color="0.6", lw=1, zorder=1, label="uniform widths (joined)")
        for method in sorted({g["method"] for g in mine}):
            gs = [g for g in mine if g["method"] == method]
            ax.errorbar([g["flops"] for g in gs], [g["acc"] for g in gs], yerr=[g["sd"] for g in gs], fmt="o", ms=5,
                        capsize=3, color=plt.cm.tab10(methods.index(method) % 10), zorder=2,
                        label=f"{method} ({', '.join(str(g['n']) for g in gs)} runs)")
        ax.set(xscale="log", xlabel="FLOPs (multiply-adds, log scale)", ylabel="test top-1 (%), mean ± sd",
               title=data)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    fig.suptitle("bench/reproduce.py: accuracy vs FLOPs per recipe")
    fig.tight_layout()
    return fig


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help="MNIST in torchvision's layout (e.g. ../shared/data/mnist-dev)")
    parser.add_argument("--cifar-root", help="CIFAR-10 in torchvision's layout (e.g. ../shared/data/cifar10-dev)")
    parser.add_argument("--only", nargs="+", choices=sorted(TABLES),
                        help="table scripts to run (default: all; cifar10 only with --cifar-root)")
    parser.add_argument("--frontier-only", action="store_true", help="redraw from the runs already under logs/")
    parser.add_argument("--runs", nargs="*", type=Path, help="draw these folders' runs instead of logs/<tables>")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "frontier.png", help="where the picture goes")
    parser.add_argument("--wandb", action="store_true", help="also log the frontier image to wandb")
    args = parser.parse_args()
    started = time.time()
    only = args.only or [name for name in sorted(TABLES) if name != "cifar10" or args.cifar_root]
    if "cifar10" in only and not args.cifar_root:
        parser.error("--only cifar10 needs --cifar-root (CIFAR-10 in torchvision's layout, e.g. "
                     "../shared/data/cifar10-dev)")
    if not args.frontier_only:
        for name in only:
            for command in TABLES[name]:
                if "{data_root}" in command and not args.data_root:   # the digits rows only
                    command = [c for c in command if c not in ("--data-root", "{data_root}", "mnist-dev")]
                if "{cifar_teacher}" in command:   # the teacher the first cifar10 command trained
                    command = [c.replace("{cifar_teacher}", cifar_teacher(args.cifar_root)) for c in command]
                command = [c.replace("{data_root}", str(Path(args.data_root or ".").resolve()))
                           .replace("{cifar_root}", str(Path(args.cifar_root or ".").resolve())) for c in command]
                print(f"[reproduce] python {' '.join(command)}", flush=True)
                step = time.time()
                subprocess.run([sys.executable, *command], check=True, cwd=ROOT)
                print(f"[reproduce] {command[0]}: {time.time() - step:.0f} s", flush=True)
    records = runs_under(args.runs or [RUNS / folder for folder in FOLDERS])
    frontier_figure(records).savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"[reproduce] {len(records)} runs drawn in {args.out}; {time.time() - started:.0f} s")
    if args.wandb:
        import wandb

        from netcompress.reporting.loggers import wandb_api_key_configured

        run = wandb.init(project="netcompress", job_type="reproduce", dir=str(RUNS),
                         mode="online" if wandb_api_key_configured() else "offline")
        run.log({"frontier": wandb.Image(str(args.out))})
        run.finish()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
