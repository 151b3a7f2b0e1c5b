"""The DAFL digits table of docs/results.md: teacher vs data-free student (DAFL) vs the same student trained on the
real digits training set, over seeds; copies the last grid of generated images to docs/dafl_digits_generated.png.

    python bench/dafl_digits_table.py [--seeds 0 1 2] [--jobs 2] [-- extra run.py overrides for the DAFL runs]

Every run is ``python run.py ...`` in a subprocess (one thread each, ``--jobs`` at a time) under logs/dafl_table/.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["callbacks.progress_bar=null", "callbacks.model_summary=null", "logger=csv"]


def run(name: str, args: list[str], out: Path) -> dict[str, float]:
    run_dir = out / name
    cmd = [sys.executable, str(ROOT / "run.py"), *args, *COMMON, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    done = re.search(r"\[done\](.*)", text).group(1)
    metrics = {k: float(v) for k, v in re.findall(r"(test/[a-z_0-9]+) ([0-9.]+)", done)}
    print(f"{name}: {done.strip()}", flush=True)
    return metrics


def mean_std(values: list[float]) -> str:
    values = [100 * v for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f} ({', '.join(f'{v:.2f}' for v in values)})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra run.py overrides for the DAFL runs")
    args = parser.parse_args()
    out = ROOT / "logs" / "dafl_table"
    jobs = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        # the cached digits teacher is trained by the first run that needs it: train it before the others start
        jobs[("dafl", args.seeds[0])] = pool.submit(run, f"dafl_seed{args.seeds[0]}",
                                                    ["method=dafl", "experiment=dafl_digits",
                                                     f"seed={args.seeds[0]}", *args.overrides], out)
        jobs[("dafl", args.seeds[0])].result()
        for seed in args.seeds[1:]:
            jobs[("dafl", seed)] = pool.submit(run, f"dafl_seed{seed}", ["method=dafl", "experiment=dafl_digits",
                                                                        f"seed={seed}", *args.overrides], out)
        for seed in args.seeds:
            jobs[("real", seed)] = pool.submit(run, f"real_seed{seed}", ["method=supervised", "model=lenet5_half",
                                                                        f"seed={seed}"], out)
    results = {key: job.result() for key, job in jobs.items()}
    teacher = results[("dafl", args.seeds[0])]["test/teacher_acc"]
    rows = [("teacher LeNet-5 (cached digits teacher, trained on the 1257 training images)", f"{100 * teacher:.2f}"),
            ("LeNet-5-half trained on the real training images (method=supervised)",
             mean_std([results[("real", s)]["test/acc"] for s in args.seeds])),
            ("LeNet-5-half by DAFL, no training images (method=dafl experiment=dafl_digits)",
             mean_std([results[("dafl", s)]["test/acc"] for s in args.seeds]))]
    print("\n| network | test top-1 % (360 test images; mean ± std over seeds " +
          ", ".join(map(str, args.seeds)) + ") |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    grids = sorted((out / f"dafl_seed{args.seeds[0]}" / "csv" / "images").glob("train_generated_*.png"))
    if grids:
        shutil.copy(grids[-1], ROOT / "docs" / "dafl_digits_generated.png")
        print(f"\nwrote docs/dafl_digits_generated.png (from {grids[-1].relative_to(ROOT)})")


if __name__ == "__main__":
    main()
