"""Regenerates the CCKD section of docs/results.md: CCKD vs KD (and the student from scratch) on real MNIST, two
teacher/student settings, mean ± sample sd of the test top-1 over seeds, every run through ``python run.py`` with
the defaults of ``method=cckd`` / ``method=kd`` (bench/common.py reads each run's metrics.json).

    python bench/cckd_table.py --data-root ../shared/data/mnist-dev            # prints the table (CPU minutes)
    python bench/cckd_table.py --data-root ../shared/data/mnist-dev --write    # and writes it into docs/results.md

Settings (same optimizer, epochs and teacher for every row of a setting):
* the teacher: LeNet-5 trained once by this script (``method=supervised model=lenet5``, 20 epochs, Adam 1e-3,
  batch 64, on all training images), or ``--teacher <checkpoint>``;
* "4000 images": LeNet-5 -> LeNet-5-half on all 4000 training images, 10 epochs;
* "1000 images": the same pair on 1000 training images (``data.holdout=3000`` holds the other 3000 out as the
  validation split the defaults were tuned on), 20 epochs: the student trails the teacher clearly.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cached_run, mean_sd, pm, run_many, write_section  # noqa: E402

SETTINGS = {  # label: overrides
    "4000 images, 10 epochs": ["trainer.max_epochs=10"],
    "1000 images (data.holdout=3000), 20 epochs": ["data.holdout=3000", "trainer.max_epochs=20",
                                                   "trainer.check_val_every_n_epoch=20"],
}
ROWS = {  # label: overrides
    "student from scratch (CE)": ["method=supervised"],
    "KD (`method=kd`)": ["method=kd"],
    "CCKD (`method=cckd`)": ["method=cckd", "module.heatmap_every_n_epochs=0"],
    "DKD (`method=kd loss=dkd`)": ["method=kd", "loss=dkd"],
}
KD, CCKD = "KD (`method=kd`)", "CCKD (`method=cckd`)"
COMMON = ["data=mnist", "model=lenet5_half", "data.batch_size=64", "data.num_workers=0", "optimizer.lr=0.003",
          "logger=none"]


def train_teacher(data_root: str, workdir: Path) -> tuple[str, float]:
    record = cached_run(["method=supervised", "data=mnist", f"data.root={data_root}", "model=lenet5",
                         "data.batch_size=64", "data.num_workers=0", "trainer.max_epochs=20", "optimizer.lr=0.001",
                         "seed=0", "logger=none"], workdir / "teacher")
    return str(Path(record["run_dir"]) / "checkpoints" / "last.ckpt"), record["metrics"]["test/acc"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="MNIST in torchvision's layout (<root>/MNIST/raw)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--teacher", help="a LeNet-5 checkpoint for this data (default: train one first)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--workdir", help="where the runs go (default: a temporary folder); runs already there with "
                                          "the same arguments are read back, not rerun")
    parser.add_argument("--write", action="store_true", help="update the cckd section of docs/results.md")
    args = parser.parse_args()
    start = time.time()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cckd_table_"))
    data_root = str(Path(args.data_root).resolve())
    teacher, teacher_acc = (args.teacher, None) if args.teacher else train_teacher(data_root, workdir)

    grid = [(setting, row, seed) for setting in SETTINGS for row in ROWS for seed in args.seeds]
    records = run_many([[*ROWS[row], *SETTINGS[setting], *COMMON, f"data.root={data_root}", f"seed={seed}",
                         *([] if "method=supervised" in ROWS[row] else [f"teacher.checkpoint={teacher}"])]
                        for setting, row, seed in grid], workdir / "runs", jobs=args.jobs)
    acc = {}
    for (setting, row, _), record in zip(grid, records, strict=True):
        acc.setdefault((setting, row), []).append(record["metrics"]["test/acc"])
        if teacher_acc is None and "test/teacher_acc" in record["metrics"]:
            teacher_acc = record["metrics"]["test/teacher_acc"]

    lines = [f"| MNIST (mnist-dev), LeNet-5 (teacher {100 * teacher_acc:.2f}) -> LeNet-5-half | "
             + " | ".join(ROWS) + " | CCKD - KD | larger sd |", "|---" * (len(ROWS) + 3) + "|"]
    for setting in SETTINGS:
        (kd_mean, kd_sd), (cc_mean, cc_sd) = (mean_sd([100 * a for a in acc[(setting, row)]]) for row in (KD, CCKD))
        lines.append(f"| {setting} | " + " | ".join(pm(acc[(setting, row)]) for row in ROWS)
                     + f" | {cc_mean - kd_mean:+.2f} | {max(kd_sd, cc_sd):.2f} |")
    table = "\n".join(lines)
    command = "python bench/cckd_table.py --data-root ../shared/data/mnist-dev --write"
    text = (f"## CCKD vs KD on MNIST\n\nRegenerate: `{command}` ({(time.time() - start) / 60:.0f} min with "
            f"{args.jobs} single-thread jobs on this run's shared 2-core CPU). Test top-1 (%) on the 1000 test "
            f"images, mean ± sample sd over seeds {', '.join(map(str, args.seeds))}; every row the defaults of its "
            f"method, the same teacher, optimizer (Adam 3e-3, batch 64) and epochs.\n\n{table}\n")
    print(table)
    if args.write:
        write_section("cckd-table", text)


if __name__ == "__main__":
    main()
