"""Composition rows (issue 12 item 3): the narrow networks MetaPruning found (bench/metapruning_budgets.py, 10% of
the FLOPs) trained from the same encoding file by labels (metapruning_digits_retrain; and with the gradient clipping
of the CCKD row, experiment=metapruning_then_cckd method=supervised), by CCKD from the data set's teacher
(experiment=metapruning_then_cckd: the same SGD, epochs and schedule, gradients clipped) and, on digits,
DAFL without data (experiment=metapruning_then_dafl), plus DAFL's own student (experiment=dafl_digits) and the
teacher. Run bench/metapruning_budgets.py first with the same --data (its cached runs are read, not redone).

    python bench/metapruning_compose.py [--data digits mnist-dev cifar10] [--data-root DIR] [--budget 0.1]
        [--seeds 0 1 2] [--jobs 2] [--cifar-root DIR --cifar-teacher CKPT --cifar-table DIR] [--write]

mnist-dev: the teacher is LeNet-5 of experiment=teacher_mnist_lenet5_small (seed 0, trained once here); no DAFL
rows (the DAFL recipe for MNIST, dafl_mnist_cpu, takes 13 minutes a run; digits shows what DAFL does to these
networks).
cifar10 (cifar10-dev, --cifar-root): the search's network at --budget (bench/metapruning_budgets.py --data cifar10)
trained by labels and by CCKD (experiment=metapruning_then_cckd_cifar10_cpu: cckd_cifar10_cpu's loss) from the
ResNet-20 of --cifar-teacher (bench/cifar10_table.py's teacher run), next to the ResNet-8 rows of --cifar-table (that
script's workdir: its runs are read back, not redone).
"""
import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, pm, write_section  # noqa: E402
from metapruning_budgets import CIFAR10_DEV, DATA, MNIST_DEV, cached, data_args, root_of  # noqa: E402

TEACHER = {"digits": "LeNet-5 (digits_lenet5, cached)", "mnist-dev": "LeNet-5 (experiment=teacher_mnist_lenet5_small, "
           "seed 0)", "cifar10": "ResNet-20 (experiment=teacher_cifar10_cpu, seed 0, bench/cifar10_table.py's run)"}
RECIPE = {"digits": "metapruning_then_cckd", "mnist-dev": "metapruning_then_cckd",
          "cifar10": "metapruning_then_cckd_cifar10_cpu"}
RETRAIN = {"digits": "metapruning_digits_retrain", "mnist-dev": "metapruning_digits_retrain",
           "cifar10": "metapruning_cifar10_cpu_retrain"}
# the ResNet-8 rows of bench/cifar10_table.py (its folders <workdir>/test/<name>/seed<S>) shown next to them
CIFAR_TABLE_ROWS = {"student": "labels (student_cifar10_cpu)", "kd": "KD from the teacher (kd_cifar10_cpu)",
                    "cckd": "CCKD from the teacher (cckd_cifar10_cpu)"}


def table_rows(workdir: Path) -> dict[str, list[float]]:
    """Test top-1 of every finished seed of bench/cifar10_table.py's ResNet-8 rows under ``workdir``."""
    return {name: [json.loads(m.read_text())["metrics"]["test/acc"]
                   for m in sorted((workdir / "test" / name).glob("seed*/logs/*/runs/*/metrics.json"))]
            for name in CIFAR_TABLE_ROWS}


def one_seed(data: str, seed: int, args, teacher: list[str]) -> dict:
    """The composed runs of one seed (cached), in order, in the seed's own work folder."""
    b = args.out / data / f"seed{seed}" / f"budget{args.budget}"
    search = json.loads((b / "search.json").read_text())
    retrain = json.loads((b / "retrain_best.json").read_text())
    work = b.parent / "work"
    encodings = Path(search["run_dir"]) / "top_encodings.yaml"
    common = [*data_args(data, root_of(data, args)), f"seed={seed}", f"model.encoding={encodings}"]
    labels = cached(b / "compose_labels_clip.json", [f"experiment={RECIPE[data]}", "method=supervised", *common], work)
    cckd = cached(b / "compose_cckd.json", [f"experiment={RECIPE[data]}", *common, *teacher], work)
    row = {"labels_clip": labels, "retrain": retrain, "cckd": cckd}
    if data == "digits":
        row["dafl"] = cached(b / "compose_dafl.json", ["experiment=metapruning_then_dafl", *common], work)
        row["dafl_lenet5_half"] = cached(b.parent / "dafl_digits.json",
                                         ["experiment=dafl_digits", f"seed={seed}"], work)
    print(f"[bench] {data} seed {seed}: " + ", ".join(
        f"{k} {100 * r['metrics']['test/acc']:.2f}" for k, r in row.items()), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", nargs="+", default=["digits"], choices=DATA)
    parser.add_argument("--data-root", type=Path, default=MNIST_DEV, help="MNIST for mnist-dev (torchvision layout)")
    parser.add_argument("--cifar-root", type=Path, default=CIFAR10_DEV, help="CIFAR-10 (torchvision layout)")
    parser.add_argument("--cifar-teacher", type=Path, help="cifar10: the ResNet-20 teacher_cifar10_cpu checkpoint")
    parser.add_argument("--cifar-table", type=Path, help="cifar10: bench/cifar10_table.py's --workdir (ResNet-8 rows)")
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench_metapruning_budgets")
    parser.add_argument("--jobs", type=int, default=2, help="seeds at a time, one thread each")
    parser.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    parser.add_argument("--section", default="metapruning_compose", help="the docs/results.md section --write replaces")
    args = parser.parse_args()
    args.out = args.out.resolve()   # the runs get absolute paths (each run.py starts in its own folder)
    if "cifar10" in args.data and not (args.cifar_teacher and args.cifar_teacher.is_file()):
        sys.exit(f"--cifar-teacher {args.cifar_teacher}: cifar10 needs the ResNet-20 checkpoint of "
                 "experiment=teacher_cifar10_cpu (bench/cifar10_table.py's <workdir>/teacher run)")
    lines = ["| data | network (seeds) | trained by | test top-1 (%) |", "|---|---|---|---|"]
    for data in args.data:
        rows = {k: [] for k in ("teacher", "retrain", "labels_clip", "cckd", "dafl", "dafl_lenet5_half")}
        flops, teacher = [], []
        if data == "mnist-dev":
            command = ["experiment=teacher_mnist_lenet5_small", f"data.root={args.data_root.resolve()}", "seed=0"]
            record = cached(args.out / data / "teacher.json", command, args.out / data / "teacher")
            teacher = [f"teacher.checkpoint={Path(record['run_dir']) / 'checkpoints' / 'last.ckpt'}"]
        if data == "cifar10":
            teacher = [f"teacher.checkpoint={args.cifar_teacher.resolve()}"]
        with ThreadPoolExecutor(args.jobs) as pool:
            for row in pool.map(partial(one_seed, data, args=args, teacher=teacher), args.seeds):
                for key, record in row.items():
                    rows[key].append(record["metrics"]["test/acc"])
                rows["teacher"].append(row["cckd"]["metrics"]["test/teacher_acc"])
                flops.append(row["retrain"]["metrics"]["model/flops"])
        net = f"MetaPruning {args.budget:.0%} ({sum(flops) / len(flops) / 1e6:.3f} MFLOPs)"
        lines += [f"| {data} | teacher {TEACHER[data]} | labels | {pm(rows['teacher'])} |",
                  f"| {data} | {net} | labels ({RETRAIN[data]}) | {pm(rows['retrain'])} |",
                  f"| {data} | {net} | labels, gradients clipped ({RECIPE[data]} method=supervised) | "
                  f"{pm(rows['labels_clip'])} |",
                  f"| {data} | {net} | CCKD from the teacher, gradients clipped ({RECIPE[data]}) | "
                  f"{pm(rows['cckd'])} |"]
        if data == "cifar10" and args.cifar_table:
            lines += [f"| {data} | ResNet-8 (12.50 MFLOPs; {len(values)} seeds, bench/cifar10_table.py) | "
                      f"{CIFAR_TABLE_ROWS[name]} | {pm(values)} |"
                      for name, values in table_rows(args.cifar_table).items() if values]
        if rows["dafl"]:
            lines += [f"| {data} | {net} | DAFL, no data (metapruning_then_dafl) | {pm(rows['dafl'])} |",
                      f"| {data} | LeNet-5-half | DAFL, no data (dafl_digits) | {pm(rows['dafl_lenet5_half'])} |"]
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        write_section(args.section, text)


if __name__ == "__main__":
    main()
