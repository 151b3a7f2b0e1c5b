"""MetaPruning vs uniform width vs random encodings at equal FLOPs, at budgets where accuracy is not saturated
(issue 12 item 2). Per data set and seed: train the PruningNet once, then per budget search it inside the window
[0.9 x budget, budget] (candidates near the budget: search.min_flops) and retrain four networks from scratch: the
searched best, the widest uniform-width one within the budget, the next uniform width (over the budget), and a
random encoding of the window (the search's first, unselected generation). Every stage is a ``python run.py``
command (bench/common.run).

    python bench/metapruning_budgets.py [--data digits mnist-dev] [--budgets 0.1 0.25] [--seeds 0 1 2] [--jobs 2]
        [--write] [--out DIR] [--extra k=v ...] [--train-extra k=v ...] [--search-extra k=v ...]   (overrides per stage)

--write puts the table into the metapruning section of docs/results.md. Runs are cached under --out: rerunning
resumes where a killed bench stopped. ``--jobs`` (data set, seed) pairs run at a time, one thread each; the stages
of one pair run in order.
"""
import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, mean_sd, pm, run, write_section  # noqa: E402

MNIST_DEV = ROOT.parent / "shared" / "data" / "mnist-dev"   # the default --data-root


def data_args(data: str, root: Path = MNIST_DEV) -> list[str]:
    """run.py overrides of a data set: digits (embedded) or mnist-dev (MNIST at ``root``, 500 held out)."""
    if data == "digits":
        return []
    return ["data=mnist", f"data.root={Path(root).resolve()}", "data.holdout=500", "data.batch_size=64",
            "data.num_workers=0"]


# random candidates draw choice ids in a range that reaches the budget (uniform 0..30 averages 35% of the FLOPs)
RANDOM_CHOICES = {0.1: "[0,9]", 0.25: "[2,18]", 0.5: "null"}
# best: the searched network; uniform: the widest uniform width within the budget; uniform_next: the next uniform
# width (over the budget: the uniform network can rarely use the budget exactly); random: a random encoding
PICKS = ("best", "uniform", "uniform_next", "random")


def cached(path: Path, args: list[str], workdir: Path) -> dict:
    """``run`` once; the record is kept in ``path`` so a rerun of the bench skips finished stages."""
    if path.is_file():
        return json.loads(path.read_text())
    start = time.time()
    record = run(args, workdir)
    print(f"[bench] python run.py {' '.join(args)}  ({time.time() - start:.0f} s)", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


def one_seed(data: str, seed: int, budgets, out: Path, extra: list[str], train_extra=(), search_extra=(),
             root: Path = MNIST_DEV) -> list[dict]:
    base = [*data_args(data, root), f"seed={seed}", *extra]
    d = out / data / f"seed{seed}"
    train = cached(d / "train.json", ["experiment=metapruning_digits", "test=false", *base, *train_extra], d / "work")
    ckpt = Path(train["run_dir"]) / "checkpoints" / "last.ckpt"
    rows = []
    for budget in budgets:
        b = d / f"budget{budget}"
        search = cached(b / "search.json", ["experiment=metapruning_digits_search", *base,
                                            f"search.pruningnet_ckpt={ckpt}", f"search.max_flops={budget}",
                                            f"search.min_flops={0.9 * budget:.4f}",
                                            f"search.random_choices={RANDOM_CHOICES.get(budget, 'null')}",
                                            *search_extra], d / "work")
        encodings = Path(search["run_dir"]) / "top_encodings.yaml"
        top = yaml.safe_load(encodings.read_text())
        row = {"data": data, "seed": seed, "budget": budget, "full_flops": top["budget"]["full_flops"]}
        for pick in PICKS:
            source = [f"model.encoding={encodings}", f"model.pick={pick}"]
            if pick == "uniform_next":   # a hand-written encoding file: every gene one choice wider than uniform
                genes = [g + 1 for g in top["uniform"]["encoding"]]
                path = b / "uniform_next.yaml"
                if not path.exists():   # written once, beside the search it derives from
                    path.write_text(yaml.safe_dump({"arch": top["arch"], "arch_kwargs": top["arch_kwargs"],
                                                    "encoding": genes}))
                source = [f"model.encoding={path}"]
            rec = cached(b / f"retrain_{pick}.json", ["experiment=metapruning_digits_retrain", *base, *source],
                         d / "work")
            row[pick] = {"test": rec["metrics"]["test/acc"], "flops": rec["metrics"]["model/flops"],
                         "params": rec["metrics"]["model/params"], "wall": rec["wall_time_s"]}
        row["search_wall"] = search["wall_time_s"]
        row["train_wall"] = train["wall_time_s"]
        rows.append(row)
        print(f"[bench] {data} seed {seed} budget {budget}: " + ", ".join(
            f"{p} {100 * row[p]['test']:.2f}% @ {row[p]['flops'] / 1e6:.3f}M" for p in PICKS), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| data | budget (of full FLOPs) | seeds | searched: test top-1 | MFLOPs | uniform: test top-1 | MFLOPs "
             "| next uniform width (over budget) | MFLOPs | random: test top-1 | MFLOPs | searched - uniform "
             "| searched - next uniform |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["data"], r["budget"]), []).append(r)
    for (data, budget), rs in groups.items():
        cells = []
        for pick in PICKS:
            cells += [pm([r[pick]["test"] for r in rs]),
                      f"{mean_sd([r[pick]['flops'] / 1e6 for r in rs])[0]:.3f}"]
        gaps = [pm([r["best"]["test"] - r[pick]["test"] for r in rs]) for pick in ("uniform", "uniform_next")]
        lines.append(f"| {data} | {budget:.0%} of {rs[0]['full_flops'] / 1e6:.2f}M | {len(rs)} | "
                     + " | ".join(cells + gaps) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", nargs="+", default=["digits"], choices=["digits", "mnist-dev"])
    parser.add_argument("--data-root", type=Path, default=MNIST_DEV, help="MNIST for mnist-dev (torchvision layout)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench_metapruning_budgets")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every stage")
    parser.add_argument("--train-extra", nargs="*", default=[], help="overrides of the PruningNet training only")
    parser.add_argument("--search-extra", nargs="*", default=[], help="overrides of the search only")
    parser.add_argument("--jobs", type=int, default=2, help="(data set, seed) pairs at a time, one thread each")
    parser.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    args = parser.parse_args()
    args.out = args.out.resolve()   # the runs get absolute paths (each run.py starts in its own folder)
    if "mnist-dev" in args.data and not args.data_root.is_dir():
        sys.exit(f"--data-root {args.data_root} not found: mnist-dev is the 4000/1000-image slice of MNIST "
                 "(torchvision layout)")
    start = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:   # each pair in its own work folder (bench/common.run)
        pairs = pool.map(lambda pair: one_seed(*pair, args.budgets, args.out, args.extra, args.train_extra,
                                               args.search_extra, args.data_root),
                         [(data, seed) for data in args.data for seed in args.seeds])
        rows = [row for pair in pairs for row in pair]
    text = table(rows)
    print(f"\n{text}\n\n(total {time.time() - start:.0f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    if args.write:
        write_section("metapruning_budgets", text)


if __name__ == "__main__":
    main()
