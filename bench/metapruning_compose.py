"""Composition rows (issue 12 item 3): the narrow networks MetaPruning found (bench/metapruning_budgets.py, digits,
10% of the FLOPs) trained three ways from the same encoding file, next to their parts:
supervised retraining (metapruning_digits_retrain), CCKD from the digits teacher (experiment=metapruning_then_cckd)
and DAFL without data (experiment=metapruning_then_dafl), plus DAFL's own student (experiment=dafl_digits) and the
teacher. Run bench/metapruning_budgets.py first (its cached runs are read, not redone).

    python bench/metapruning_compose.py [--budget 0.1] [--seeds 0 1 2] [--write]
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, pm, write_section  # noqa: E402
from metapruning_budgets import cached  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(ROOT / "logs" / "bench_metapruning_budgets"))
    parser.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    args = parser.parse_args()
    rows = {k: [] for k in ("retrain", "cckd", "dafl", "dafl_lenet5_half", "teacher")}
    flops = []
    for seed in args.seeds:
        b = Path(args.out) / "digits" / f"seed{seed}" / f"budget{args.budget}"
        search = json.loads((b / "search.json").read_text())
        retrain = json.loads((b / "retrain_best.json").read_text())
        encodings = Path(search["run_dir"]) / "top_encodings.yaml"
        work = b.parent / "work"
        common = [f"seed={seed}", f"model.encoding={encodings}"]
        cckd = cached(b / "compose_cckd.json", ["experiment=metapruning_then_cckd", *common], work)
        dafl = cached(b / "compose_dafl.json", ["experiment=metapruning_then_dafl", *common], work)
        base = cached(b.parent / "dafl_digits.json", ["experiment=dafl_digits", f"seed={seed}"], work)
        rows["retrain"].append(retrain["metrics"]["test/acc"])
        rows["cckd"].append(cckd["metrics"]["test/acc"])
        rows["dafl"].append(dafl["metrics"]["test/acc"])
        rows["dafl_lenet5_half"].append(base["metrics"]["test/acc"])
        rows["teacher"].append(cckd["metrics"].get("test/teacher_acc", float("nan")))
        flops.append(retrain["metrics"]["model/flops"])
        print(f"[bench] seed {seed}: " + ", ".join(f"{k} {100 * v[-1]:.2f}" for k, v in rows.items()), flush=True)
    mflops = sum(flops) / len(flops) / 1e6
    text = "\n".join([
        f"| network (digits test, {len(args.seeds)} seeds) | trained by | test top-1 (%) |",
        "|---|---|---|",
        f"| teacher LeNet-5 (digits_lenet5) | labels | {pm(rows['teacher'])} |",
        f"| MetaPruning {args.budget:.0%} ({mflops:.3f} MFLOPs) | labels (metapruning_digits_retrain) | "
        f"{pm(rows['retrain'])} |",
        f"| MetaPruning {args.budget:.0%} | CCKD from the teacher (metapruning_then_cckd) | {pm(rows['cckd'])} |",
        f"| MetaPruning {args.budget:.0%} | DAFL, no data (metapruning_then_dafl) | {pm(rows['dafl'])} |",
        f"| LeNet-5-half | DAFL, no data (dafl_digits) | {pm(rows['dafl_lenet5_half'])} |",
    ])
    print("\n" + text)
    if args.write:
        write_section("metapruning_compose", text)


if __name__ == "__main__":
    main()
