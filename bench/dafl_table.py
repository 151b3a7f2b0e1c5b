"""The DAFL tables of docs/results.md, one per data set: teacher, the student trained on real data, DAFL (the CPU
recipe) and DAFL with the official generator output, over seeds; plus the generated-vs-real picture and statistics.

    python bench/dafl_table.py [--data-root ../shared/data/mnist-dev] [--seeds 0 1 2] [--jobs 1] [--write]

digits always; MNIST when ``--data-root`` is given (an MNIST-layout folder: ``<root>/MNIST/raw``). Every run is
``python run.py ...`` (bench/common.py, one thread each, ``--jobs`` at a time) under ``logs/dafl_table/<data>/<row>/
seed<S>``; a run whose ``metrics.json`` is already there with the same command is read back instead of rerun
(delete the folder to rerun). ``--rows`` picks rows by name. ``--write`` replaces the ``dafl-table`` section of
docs/results.md and writes docs/dafl_<data>_generated_vs_real.png.
"""
import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT, cached_run, mean_sd, pm, write_section
from omegaconf import OmegaConf

OUT = ROOT / "logs" / "dafl_table"
ROWS = {   # data -> [(row name, label, run.py arguments; {root} and {teacher} are filled in)]
    "digits": [
        ("real", "LeNet-5-half trained on the real training images", ["method=supervised", "model=lenet5_half"]),
        ("dafl_official_output", "DAFL, official generator output (non-affine BatchNorm)",
         ["experiment=dafl_digits", "generator.output=batchnorm"]),
        ("dafl", "DAFL, generator output in the pixel range (the recipe)", ["experiment=dafl_digits"]),
    ],
    "mnist": [
        ("real", "LeNet-5-half trained on the real training images",
         ["experiment=teacher_mnist_lenet5_small", "model=lenet5_half", "data.root={root}"]),
        ("dafl_official_output", "DAFL, official generator output (non-affine BatchNorm)",
         ["experiment=dafl_mnist_cpu", "generator.output=batchnorm", "data.root={root}",
          "teacher.checkpoint={teacher}"]),
        ("dafl", "DAFL, generator output in the pixel range (the recipe)",
         ["experiment=dafl_mnist_cpu", "data.root={root}", "teacher.checkpoint={teacher}"]),
    ],
}
TEACHER = {"digits": None,   # the cached digits teacher: its accuracy is read from the DAFL runs
           "mnist": ["experiment=teacher_mnist_lenet5_small", "data.root={root}", "seed=0"]}


def fill(args: list[str], **values) -> list[str]:
    return [a.format(**values) for a in args]


def collapsed(record: dict) -> bool:
    """The run's generator ended collapsed: the last epoch's ``train/diversity`` below the run's own
    ``module.collapse_threshold`` (where the run warned)."""
    config = OmegaConf.load(Path(record["run_dir"]) / ".hydra" / "config.yaml")
    return record["metrics"]["train/diversity_epoch"] < config.module.collapse_threshold


def table(data: str, seeds: list[int], rows: list[str] | None, root: str | None, jobs: int,
          teacher_checkpoint: str | None = None, run_missing: bool = True) -> tuple[str, list]:
    """The markdown of one data set's table and the DAFL run folders (for the picture)."""
    values = {"root": root, "teacher": teacher_checkpoint}
    lines, dafl_runs = [], []
    if TEACHER[data] and teacher_checkpoint:
        lines.append(f"| teacher LeNet-5 (given: {Path(teacher_checkpoint).parent.parent.name}) | {{teacher_acc}} | "
                     f"| | | `python run.py {' '.join(fill(TEACHER[data], root='<mnist root>'))}` |")
    elif TEACHER[data]:
        teacher_args = fill(TEACHER[data], **values)
        teacher = cached_run(teacher_args, OUT / data / "teacher")
        values["teacher"] = str(Path(teacher["run_dir"]) / "checkpoints" / "last.ckpt")
        lines.append(f"| teacher LeNet-5 (seed 0) | {100 * teacher['metrics']['test/acc']:.2f} | | | "
                     f"{teacher['wall_time_s']:.0f} | `python run.py "
                     f"{' '.join(fill(TEACHER[data], root='<mnist root>'))}` |")
    chosen = [r for r in ROWS[data] if rows is None or r[0] in rows]
    with ThreadPoolExecutor(jobs) as pool:
        futures = {(name, seed): pool.submit(cached_run, [*fill(args, **values), f"seed={seed}"],
                                             OUT / data / name / f"seed{seed}", run_missing)
                   for name, _, args in chosen for seed in seeds}
        records = {key: f.result() for key, f in futures.items() if f.result() is not None}
    first = next(r for (name, _), r in records.items() if name.startswith("dafl"))
    teacher_acc = f"{100 * first['metrics']['test/teacher_acc']:.2f}"
    if not TEACHER[data]:
        lines.append(f"| teacher LeNet-5 (`teacher=digits_lenet5`, cached) | {teacher_acc} | | | | "
                     f"trained on first use |")
    lines = [line.replace("{teacher_acc}", teacher_acc) for line in lines]
    for name, label, args in chosen:
        done = [s for s in seeds if (name, s) in records]
        if not done:
            continue
        recs = [records[(name, s)] for s in done]
        if done != seeds:
            label = f"{label} (seeds {', '.join(map(str, done))} only)"
        last = pm([r["metrics"]["test/acc"] for r in recs])
        best = pm([r["metrics"]["val/acc_best"] for r in recs]) if "val/acc_best" in recs[0]["metrics"] else ""
        wall = mean_sd([r["wall_time_s"] for r in recs])[0]
        collapses = ""
        if name.startswith("dafl"):
            collapses = ", ".join(str(s) for s in done if collapsed(records[(name, s)])) or "none"
            dafl_runs.append((f"{name}, seed {done[0]}", Path(recs[0]["run_dir"])))
        command = " ".join(fill(args, root=root or "", teacher="<teacher run>/checkpoints/last.ckpt"))
        if root:
            command = command.replace(f"data.root={root}", "data.root=<mnist root>")
        lines.append(f"| {label} | {last} | {best} | {collapses} | {wall:.0f} | "
                     f"`python run.py {command} seed=<0,1,2>` |")
    header = (f"| {data}: LeNet-5 -> LeNet-5-half | test/acc % (last epoch), mean ± sd over seeds "
              f"{', '.join(map(str, seeds))} | val/acc_best % (best epoch) | seeds whose generator ended collapsed "
              f"| wall s per run | command |\n"
              "|---|---|---|---|---|---|")
    return header + "\n" + "\n".join(lines), dafl_runs


def images(data: str, runs: list[tuple[str, Path]], root: str | None, write: bool) -> str:
    """Statistics table (and, with ``write``, the picture) of generated vs real images (bench/dafl_images.py)."""
    out = ROOT / "docs" / f"dafl_{data}_generated_vs_real.png"
    cmd = [sys.executable, str(ROOT / "bench" / "dafl_images.py"), *(str(path) for _, path in runs),
           "--labels", *(label for label, _ in runs)]
    cmd += ["--data-root", root] if root else []
    cmd += ["--out", str(out)] if write else []
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="MNIST-layout folder: adds the MNIST table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    names = sorted({row[0] for rows in ROWS.values() for row in rows})
    parser.add_argument("--rows", nargs="+", help=f"rows to run (default all): {', '.join(names)}")
    parser.add_argument("--data", nargs="+", default=["digits", "mnist"])
    parser.add_argument("--teacher-checkpoint", help="MNIST: use this LeNet-5 instead of training one")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each)")
    parser.add_argument("--cached-only", action="store_true", help="run nothing: tabulate the runs already there")
    parser.add_argument("--write", action="store_true", help="write docs/results.md (dafl-table) and the pictures")
    args = parser.parse_args()
    if args.data_root:   # every run starts in its own folder under logs/dafl_table/
        args.data_root = str(Path(args.data_root).resolve())
    sections = []
    for data in args.data:
        if data == "mnist" and not args.data_root:
            continue
        text, runs = table(data, args.seeds, args.rows, args.data_root, args.jobs,
                           args.teacher_checkpoint if data == "mnist" else None, not args.cached_only)
        stats = images(data, runs, args.data_root if data == "mnist" else None, args.write)
        sections.append(f"{text}\n\nGenerated (512, the last generator) vs real test images, statistics of "
                        f"bench/dafl_images.py (see its doc); the picture: one row per DAFL row, generated | "
                        f"real:\n\n{stats}\n\n"
                        f"![{data}: generated (left) vs real (right)](dafl_{data}_generated_vs_real.png)")
    body = "\n\n".join(sections)
    print(body)
    if args.write:
        write_section("dafl-table", f"Regenerate: `python bench/dafl_table.py --data-root <mnist root> --write` "
                                    f"(runs under logs/dafl_table/).\n\n{body}")


if __name__ == "__main__":
    main()
