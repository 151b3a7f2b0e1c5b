"""The CIFAR-10 section of docs/results.md: every method's CPU recipe on real CIFAR-10 (cifar10-dev), the same
ResNet-20 teacher (experiment=teacher_cifar10_cpu) for every row, and the held-out comparisons that chose the settings.

    python bench/cifar10_table.py --data-root ../shared/data/cifar10-dev [--seeds 0 1 2 3 4] [--dafl-seeds 0 1 2]
                                  [--jobs 2] [--workdir DIR] [--write]

Every run is ``python run.py ...`` (bench/common.py, one thread each, ``--jobs`` at a time) in its own folder
``<workdir>/<part>/<name>/seed<S>`` (default workdir: logs/cifar10_table); a run whose ``metrics.json`` is already
there with the same arguments is read back instead of rerun (delete the folder to rerun), so a killed regeneration
resumes. Order: the held-out comparisons (``select/``: data.holdout=500, read on ``val/acc``, the 500 held-out
training images, never the test images), the teacher, then the test rows seed by seed (every row's seed 0 first).
``--write`` replaces the ``cifar10`` section of docs/results.md.
"""
import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cached_run, mean_sd, pm, write_section  # noqa: E402

HOLDOUT = ["data.holdout=500"]
# Teacher settings compared on the held-out split (10 epochs each; the recipe then trains longer on all images).
TEACHER_SELECTION = {
    "teacher_lr0.1_b128": ["experiment=teacher_cifar10_cpu", *HOLDOUT, "trainer.max_epochs=10", "optimizer.lr=0.1",
                           "data.batch_size=128", "logger=csv"],
    "teacher_lr0.05_b64": ["experiment=teacher_cifar10_cpu", *HOLDOUT, "trainer.max_epochs=10", "optimizer.lr=0.05",
                           "data.batch_size=64", "logger=csv"],
}
SELECTION_TEACHER = "teacher_lr0.1_b128"   # the compared teacher the recipe follows: the teacher of the rows below,
#                                            which never saw the held-out images
SELECTION = {   # KD and CCKD settings on the held-out split, the student recipe's optimizer and epochs
    "kd_T4": ["experiment=kd_cifar10_cpu", *HOLDOUT, "loss.temperature=4"],
    "kd_T8": ["experiment=kd_cifar10_cpu", *HOLDOUT, "loss.temperature=8"],
    "cckd_T4_beta1000": ["experiment=cckd_cifar10_cpu", *HOLDOUT, "loss.temperature=4", "loss.beta=1000"],
    "cckd_beta100": ["experiment=cckd_cifar10_cpu", *HOLDOUT, "loss.beta=100"],
    "cckd_beta300": ["experiment=cckd_cifar10_cpu", *HOLDOUT, "loss.beta=300"],
}
TEACHER = ["experiment=teacher_cifar10_cpu", "seed=0"]
ROWS = {   # name: (label, arguments); all but the student from the same teacher
    "student": ("ResNet-8 on the labels alone", ["experiment=student_cifar10_cpu"]),
    "kd": ("KD", ["experiment=kd_cifar10_cpu"]),
    "cckd": ("CCKD (KD + CC)", ["experiment=cckd_cifar10_cpu", "module.heatmap_every_n_epochs=0"]),
    "dafl": ("DAFL, no training images", ["experiment=dafl_cifar10_cpu"]),
}
QUIET = ["logger=none"]


def checkpoint(record: dict) -> str:
    return str(Path(record["run_dir"]) / "checkpoints" / "last.ckpt")


def run_all(jobs: list[tuple[str, list[str], Path]], n: int, run_missing: bool) -> dict:
    """``cached_run`` of each (key, arguments, folder), ``n`` at a time, in order; {key: record or None}."""
    with ThreadPoolExecutor(n) as pool:
        futures = {key: pool.submit(cached_run, args, folder, run_missing) for key, args, folder in jobs}
        return {key: future.result() for key, future in futures.items()}


def acc(record: dict, key: str = "test/acc") -> float:
    return 100 * record["metrics"][key]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="CIFAR-10 in torchvision's layout")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds of student/KD/CCKD")
    parser.add_argument("--dafl-seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--workdir", default=str(ROOT / "logs" / "cifar10_table"))
    parser.add_argument("--no-run", action="store_true", help="only read back finished runs (a partial table)")
    parser.add_argument("--write", action="store_true", help="update the cifar10 section of docs/results.md")
    args = parser.parse_args()
    start, work, run_missing = time.time(), Path(args.workdir), not args.no_run
    root = [f"data.root={Path(args.data_root).resolve()}"]

    compared = run_all([(name, [*a, *root], work / "select" / name) for name, a in TEACHER_SELECTION.items()],
                       args.jobs, run_missing)
    held_out_teacher = [f"teacher.checkpoint={checkpoint(compared[SELECTION_TEACHER])}"]
    compared.update(run_all([(name, [*a, *root, *held_out_teacher, *QUIET], work / "select" / name)
                             for name, a in SELECTION.items()], args.jobs, run_missing))
    teacher = cached_run([*TEACHER, *root, *QUIET], work / "teacher", run_missing)
    teacher_args = [f"teacher.checkpoint={checkpoint(teacher)}"]
    grid = [(name, seed) for seed in sorted(set(args.seeds) | set(args.dafl_seeds)) for name in ROWS
            if seed in (args.dafl_seeds if name == "dafl" else args.seeds)]
    runs = run_all([((name, seed), [*ROWS[name][1], *root, f"seed={seed}",
                                    *([] if name == "student" else teacher_args), *QUIET],
                     work / "test" / name / f"seed{seed}") for name, seed in grid], args.jobs, run_missing)

    lines = ["| held-out comparison (data.holdout=500) | arguments | held-out top-1 (%) | wall (s) |",
             "|---|---|---|---|"]
    for name, a in [*TEACHER_SELECTION.items(), *SELECTION.items()]:
        record = compared.get(name)
        value = f"{acc(record, 'val/acc'):.2f}" if record else "no finished run"
        wall = f"{record['wall_time_s']:.0f}" if record else ""
        lines.append(f"| {name} | `{' '.join(x for x in a if x not in HOLDOUT)}` | {value} | {wall} |")
    selection = "\n".join(lines)

    teacher_acc = acc(teacher)
    lines = ["| row | recipe | test top-1 (%) | seeds | gap to the teacher | wall per run (s) |",
             "|---|---|---|---|---|---|",
             f"| teacher ResNet-20 (seed 0) | `{' '.join(TEACHER)}` | {teacher_acc:.2f} | 1 | | "
             f"{teacher['wall_time_s']:.0f} |"]
    results = {}
    for name, (label, a) in ROWS.items():
        records = [r for (row, _), r in runs.items() if row == name and r is not None]
        if not records:
            lines.append(f"| {label} | `{a[0]}` | no finished run | 0 | | |")
            continue
        values = [r["metrics"]["test/acc"] for r in records]
        results[name] = mean_sd([100 * v for v in values])
        wall = sum(r["wall_time_s"] for r in records) / len(records)
        lines.append(f"| {label} | `{a[0]}` | {pm(values)} | {len(records)} | {results[name][0] - teacher_acc:+.2f} | "
                     f"{wall:.0f} |")
    table = "\n".join(lines)
    goal = "CCKD and KD rows incomplete"
    if "kd" in results and "cckd" in results:
        gap, larger = results["cckd"][0] - results["kd"][0], max(results["kd"][1], results["cckd"][1])
        goal = (f"CCKD - KD = {gap:+.2f} points against a larger sd of {larger:.2f}: "
                + ("**met**" if gap > larger else "**not met**"))
    minutes = (time.time() - start) / 60
    text = (f"## CIFAR-10 (cifar10-dev): every method on a CPU budget\n\n"
            f"Regenerate: `python bench/cifar10_table.py --data-root ../shared/data/cifar10-dev --write` "
            f"(this call: {minutes:.0f} min, runs already in its folders read back). Real CIFAR-10, 3,136 training "
            f"and 508 test images; the teacher ResNet-20 (`teacher_cifar10_cpu`), the student ResNet-8 "
            f"(`student_cifar10_cpu`; KD, CCKD and DAFL use its network). Test top-1, mean ± sample sd over seeds; "
            f"wall time of one run with {args.jobs} single-thread runs at a time on this run's shared 2-core CPU.\n\n"
            f"{table}\n\nGoal (CCKD's mean above KD's by more than the larger sd): {goal}.\n\n"
            f"Settings chosen on 500 training images held out (`data.holdout=500`, `val/acc` of the last epoch, "
            f"seed 42; KD and CCKD from the held-out teacher `{SELECTION_TEACHER}`, which never saw those images):"
            f"\n\n{selection}\n")
    print(text)
    if args.write:
        write_section("cifar10", text)


if __name__ == "__main__":
    main()
