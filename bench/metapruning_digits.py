"""MetaPruning on digits, the three stages from the command line for several seeds; prints the markdown table of
docs/results.md (searched network vs the uniform-width baseline in the same FLOPs budget, both retrained).

    python bench/metapruning_digits.py --seeds 0 1 2 [--model pruningnet_mbv2_small] [--out logs/metapruning_digits]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]


def run(args, run_dir: Path) -> str:
    cmd = [sys.executable, str(ROOT / "run.py"), *args, *QUIET, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def test_acc(stdout: str) -> float:
    return float(re.search(r"\[done\].*test/acc ([0-9.]+)", stdout).group(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="pruningnet_mbv2_small")
    parser.add_argument("--out", default=str(ROOT / "logs" / "metapruning_digits"))
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every stage")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        base = [f"seed={seed}", *args.extra]
        d = out / f"seed{seed}"
        if not (d / "train" / "checkpoints" / "last.ckpt").is_file():
            run(["experiment=metapruning_digits", f"model={args.model}", "test=false", *base], d / "train")
        if not (d / "search" / "top_encodings.yaml").is_file():
            run(["experiment=metapruning_digits_search", f"model={args.model}", *base,
                 f"search.pruningnet_ckpt={d / 'train' / 'checkpoints' / 'last.ckpt'}"], d / "search")
        top = yaml.safe_load((d / "search" / "top_encodings.yaml").read_text())
        row = {"seed": seed, "full_flops": top["budget"]["full_flops"], "budget": top["budget"]["max_flops"]}
        for pick, entry in (("best", top["top"][0]), ("uniform", top["uniform"])):
            done = d / f"retrain_{pick}" / "test_acc.txt"
            if not done.is_file():
                stdout = run(["experiment=metapruning_digits_retrain", f"model.pick={pick}", *base,
                              f"model.encoding={d / 'search' / 'top_encodings.yaml'}"], d / f"retrain_{pick}")
                done.write_text(str(test_acc(stdout)))
            row[pick] = {"flops": entry["flops"], "params": entry["params"], "val": entry["val_acc"],
                         "test": float(done.read_text())}
        rows.append(row)
        print(f"seed {seed}: searched {row['best']} | uniform {row['uniform']}", flush=True)

    print(f"\nMetaPruning on digits ({args.model}, budget {rows[0]['budget'] / 1e6:.3f}M FLOPs = 50% of "
          f"{rows[0]['full_flops'] / 1e6:.3f}M), retrained from scratch, test top-1 (%):\n")
    print("| seed | searched MFLOPs | searched params | searched test | uniform MFLOPs | uniform params "
          "| uniform test |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b, u = r["best"], r["uniform"]
        print(f"| {r['seed']} | {b['flops'] / 1e6:.3f} | {b['params']:,} | {100 * b['test']:.2f} | "
              f"{u['flops'] / 1e6:.3f} | {u['params']:,} | {100 * u['test']:.2f} |")
    mean = lambda key, pick: statistics.mean(r[pick][key] for r in rows)   # noqa: E731
    sd = lambda pick: statistics.pstdev(100 * r[pick]["test"] for r in rows)   # noqa: E731
    print(f"| mean | {mean('flops', 'best') / 1e6:.3f} | {mean('params', 'best'):,.0f} | "
          f"{100 * mean('test', 'best'):.2f} "
          f"± {sd('best'):.2f} | {mean('flops', 'uniform') / 1e6:.3f} | {mean('params', 'uniform'):,.0f} | "
          f"{100 * mean('test', 'uniform'):.2f} ± {sd('uniform'):.2f} |")


if __name__ == "__main__":
    main()
