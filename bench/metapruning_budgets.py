"""MetaPruning vs uniform width vs random encodings at equal FLOPs, at budgets where accuracy is not saturated
(issue 12 item 2). Per data set and seed: train the PruningNet once, then per budget search it inside the window
[0.9 x budget, budget] (candidates near the budget: search.min_flops) and retrain four networks from scratch: the
searched best, the widest uniform-width one within the budget, the next uniform width (over the budget), and a
random encoding of the window (the search's first, unselected generation). Every stage is a ``python run.py``
command (bench/common.run).

    python bench/metapruning_budgets.py [--data digits mnist-dev cifar10] [--budgets 0.1 0.25] [--seeds 0 1 2]
        [--jobs 2] [--data-root MNIST] [--cifar-root CIFAR-10] [--write] [--out DIR]
        [--extra k=v ...] [--train-extra k=v ...] [--search-extra k=v ...]   (overrides per stage)

cifar10: the cifar10-dev images (--cifar-root, 500 training images held out for the search) and the
metapruning_cifar10_cpu{,_search,_retrain} recipes; digits and mnist-dev: the metapruning_digits recipes. Every
seed's PruningNet is trained before any search starts (``<out>/<data>/seed<S>/train.json`` names its run folder).
The table gives, per budget, how far the searched network lies above the straight line between the two uniform
widths (interpolated at the searched FLOPs), and per data set the Spearman rank correlation between the search's
held-out scores of the retrained encodings (best, uniform, random) and their test accuracies.

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
from common import ROOT, mean_sd, pm, run, spearman, write_section  # noqa: E402

MNIST_DEV = ROOT.parent / "shared" / "data" / "mnist-dev"   # the default --data-root
CIFAR10_DEV = ROOT.parent / "shared" / "data" / "cifar10-dev"   # the default --cifar-root
DATA = ("digits", "mnist-dev", "cifar10")
# the three stages' recipes (train the PruningNet, search it, retrain a picked encoding) per data set
RECIPES = {"digits": "metapruning_digits", "mnist-dev": "metapruning_digits", "cifar10": "metapruning_cifar10_cpu"}


def data_args(data: str, root: Path = MNIST_DEV) -> list[str]:
    """run.py overrides of a data set: digits (embedded), mnist-dev (MNIST at ``root``, 500 held out) or cifar10
    (CIFAR-10 at ``root``, 500 held out; its recipes set the batch)."""
    if data == "digits":
        return []
    if data == "cifar10":
        return [f"data.root={Path(root).resolve()}", "data.holdout=500"]
    return ["data=mnist", f"data.root={Path(root).resolve()}", "data.holdout=500", "data.batch_size=64",
            "data.num_workers=0"]


def root_of(data: str, args) -> Path:
    """The data root a bench's ``--data-root`` (MNIST) or ``--cifar-root`` gives ``data``."""
    return args.cifar_root if data == "cifar10" else args.data_root


def above_line(row: dict) -> float:
    """How far the searched network's test accuracy lies above the straight line through the two uniform widths
    (uniform: under the budget, uniform_next: over it) at the searched network's FLOPs."""
    (x0, y0), (x1, y1) = [(row[p]["flops"], row[p]["test"]) for p in ("uniform", "uniform_next")]
    line = y0 + (y1 - y0) * (row["best"]["flops"] - x0) / (x1 - x0)
    return row["best"]["test"] - line


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


def train_pruningnet(data: str, seed: int, out: Path, extra: list[str], train_extra=(), root: Path = MNIST_DEV) -> dict:
    """Stage 1 of one (data set, seed): the PruningNet's run record (``run_dir``: its checkpoints/last.ckpt)."""
    d = out / data / f"seed{seed}"
    return cached(d / "train.json", [f"experiment={RECIPES[data]}", "test=false", *data_args(data, root),
                                     f"seed={seed}", *extra, *train_extra], d / "work")


def one_seed(data: str, seed: int, budgets, out: Path, extra: list[str], train_extra=(), search_extra=(),
             root: Path = MNIST_DEV) -> list[dict]:
    base = [*data_args(data, root), f"seed={seed}", *extra]
    d = out / data / f"seed{seed}"
    train = train_pruningnet(data, seed, out, extra, train_extra, root)   # cached: trained before any search
    ckpt = Path(train["run_dir"]) / "checkpoints" / "last.ckpt"
    rows = []
    for budget in budgets:
        b = d / f"budget{budget}"
        search = cached(b / "search.json", [f"experiment={RECIPES[data]}_search", *base,
                                            f"search.pruningnet_ckpt={ckpt}", f"search.max_flops={budget}",
                                            f"search.min_flops={0.9 * budget:.4f}",
                                            f"search.random_choices={RANDOM_CHOICES.get(budget, 'null')}",
                                            *search_extra], d / "work")
        encodings = Path(search["run_dir"]) / "top_encodings.yaml"
        top = yaml.safe_load(encodings.read_text())
        row = {"data": data, "seed": seed, "budget": budget, "full_flops": top["budget"]["full_flops"],
               "scores": {"best": top["top"][0]["val_acc"], "uniform": top["uniform"]["val_acc"],
                          "random": top["random"][0]["val_acc"]}}   # the search's held-out scores
        for pick in PICKS:
            source = [f"model.encoding={encodings}", f"model.pick={pick}"]
            if pick == "uniform_next":   # a hand-written encoding file: every gene one choice wider than uniform
                genes = [g + 1 for g in top["uniform"]["encoding"]]
                path = b / "uniform_next.yaml"
                if not path.exists():   # written once, beside the search it derives from
                    path.write_text(yaml.safe_dump({"arch": top["arch"], "arch_kwargs": top["arch_kwargs"],
                                                    "encoding": genes}))
                source = [f"model.encoding={path}"]
            rec = cached(b / f"retrain_{pick}.json", [f"experiment={RECIPES[data]}_retrain", *base, *source],
                         d / "work")
            row[pick] = {"test": rec["metrics"]["test/acc"], "flops": rec["metrics"]["model/flops"],
                         "params": rec["metrics"]["model/params"], "wall": rec["wall_time_s"]}
        row["search_wall"] = search["wall_time_s"]
        row["train_wall"] = train["wall_time_s"]
        rows.append(row)
        print(f"[bench] {data} seed {seed} budget {budget}: " + ", ".join(
            f"{p} {100 * row[p]['test']:.2f}% @ {row[p]['flops'] / 1e6:.3f}M" for p in PICKS), flush=True)
    return rows


def ranking(rows: list[dict]) -> dict:
    """Per data set: Spearman's correlation between the search's scores of the retrained encodings (best, uniform,
    random; pooled over budgets and seeds) and their test accuracies, with the number of pairs."""
    pairs = {}
    for r in rows:
        for pick, score in r.get("scores", {}).items():
            pairs.setdefault(r["data"], []).append((score, r[pick]["test"]))
    return {data: (spearman(*zip(*p, strict=True)), len(p)) for data, p in pairs.items()}


def table(rows: list[dict]) -> str:
    lines = ["| data | budget (of full FLOPs) | seeds | searched: test top-1 | MFLOPs | uniform: test top-1 | MFLOPs "
             "| next uniform width (over budget) | MFLOPs | random: test top-1 | MFLOPs | searched - uniform "
             "| searched - next uniform | searched - the uniform line at its FLOPs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["data"], r["budget"]), []).append(r)
    for (data, budget), rs in groups.items():
        cells = []
        for pick in PICKS:
            cells += [pm([r[pick]["test"] for r in rs]),
                      f"{mean_sd([r[pick]['flops'] / 1e6 for r in rs])[0]:.3f}"]
        gaps = [pm([r["best"]["test"] - r[pick]["test"] for r in rs]) for pick in ("uniform", "uniform_next")]
        gaps.append(pm([above_line(r) for r in rs]))
        lines.append(f"| {data} | {budget:.0%} of {rs[0]['full_flops'] / 1e6:.2f}M | {len(rs)} | "
                     + " | ".join(cells + gaps) + " |")
    rho = ranking(rows)
    if rho:
        lines.append("\nRanking quality of the PruningNet (Spearman's rank correlation between the search's held-out "
                     "scores of the retrained encodings, best / uniform / random, and their test top-1; pooled over "
                     "budgets and seeds): " + "; ".join(f"{d} {v:+.2f} ({n} encodings)" for d, (v, n) in rho.items())
                     + ".")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", nargs="+", default=["digits"], choices=DATA)
    parser.add_argument("--data-root", type=Path, default=MNIST_DEV, help="MNIST for mnist-dev (torchvision layout)")
    parser.add_argument("--cifar-root", type=Path, default=CIFAR10_DEV, help="CIFAR-10 (torchvision layout)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench_metapruning_budgets")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every stage")
    parser.add_argument("--train-extra", nargs="*", default=[], help="overrides of the PruningNet training only")
    parser.add_argument("--search-extra", nargs="*", default=[], help="overrides of the search only")
    parser.add_argument("--jobs", type=int, default=2, help="(data set, seed) pairs at a time, one thread each")
    parser.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    parser.add_argument("--section", default="metapruning_budgets", help="the docs/results.md section --write replaces")
    args = parser.parse_args()
    args.out = args.out.resolve()   # the runs get absolute paths (each run.py starts in its own folder)
    if "mnist-dev" in args.data and not args.data_root.is_dir():
        sys.exit(f"--data-root {args.data_root} not found: mnist-dev is the 4000/1000-image slice of MNIST "
                 "(torchvision layout)")
    if "cifar10" in args.data and not args.cifar_root.is_dir():
        sys.exit(f"--cifar-root {args.cifar_root} not found: cifar10 is CIFAR-10 in torchvision's layout "
                 "(e.g. ../shared/data/cifar10-dev)")
    start = time.time()
    pairs = [(data, seed) for data in args.data for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:   # each pair in its own work folder (bench/common.run)
        list(pool.map(lambda pair: train_pruningnet(*pair, args.out, args.extra, args.train_extra,
                                                    root_of(pair[0], args)), pairs))   # every PruningNet first
        done = pool.map(lambda pair: one_seed(*pair, args.budgets, args.out, args.extra, args.train_extra,
                                              args.search_extra, root_of(pair[0], args)), pairs)
        rows = [row for pair in done for row in pair]
    text = table(rows)
    print(f"\n{text}\n\n(total {time.time() - start:.0f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    if args.write:
        write_section(args.section, text)


if __name__ == "__main__":
    main()
