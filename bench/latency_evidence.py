"""Latency-searched vs FLOPs-searched vs uniform-width MetaPruning networks at equal measured latency (issue 23
item 4). Per seed: train the small MobileNetV2 PruningNet (``--train-exp``), then per latency budget (a fraction of
the full network's latency at ``--batch``, as predicted by the lookup table of netcompress/search/latency.py, which the
search builds once and caches in ``<out>/<data>/.cache``):

- a latency search in the window [0.9 x budget, budget] (``search.max_latency`` / ``search.min_latency``, the table
  at batch ``--batch``); its file also holds the widest uniform width within the budget (``model.pick=uniform``);
- a FLOPs search in the window [0.9 x, 1 x] the uniform network's FLOPs (``search.max_flops`` / ``search.min_flops``);

and four kinds of network retrained from scratch (``--retrain-exp``): the full network, the uniform width, the
latency-searched best and the FLOPs-searched best. Every stage is a ``python run.py`` command (bench/common.py),
cached under ``--out``: a rerun resumes where a killed one stopped.

The measurement is a separate step (``--measure-only`` reads the finished runs and starts none): every distinct
network is rebuilt from its encoding and timed alone, one thread, eval and inference mode, at batch 1 and at
``--batch``, interleaved (one network after the other, ``--rounds`` times) and the fastest of all its runs kept,
as the table's entries. It prints the load average before and after, and writes ``measured.json`` beside the runs.

    python bench/latency_evidence.py [--data digits] [--seeds 0 1 2] [--budgets 0.7 0.62] [--batch 32] [--write]
    python bench/latency_evidence.py --measure-only [--rounds 10] [--write]     (under a minute: timing only)
    python bench/latency_evidence.py --data cifar10 --data-root DIR ...           (data=cifar10, 500 held out)
        [--pruningnets CKPT ...]   (PruningNets trained elsewhere, one per seed: no training stage)

Why batch 32: at batch 1 this network is dispatch-bound on a CPU (the narrowest network, 3% of the FLOPs, takes
87% of the full one's time, docs/results.md), so no budget below 87% is feasible; at batch 32 it measures 18-47%.
Why 0.7 and 0.62: the budgets are fractions of the full network's *predicted* latency (what search.max_latency=0.7
means), and the table at batch 32 predicts the narrowest network at 55% of the full one, so 50% and 35% are
infeasible for the search; docs/results.md gives the measured fractions.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, cached_run, mean_sd, pm, write_section  # noqa: E402

from netcompress.deploy.speed import measure_latency, speed_settings  # noqa: E402
from netcompress.networks.pruningnet import MAX_CHOICE, narrow_network  # noqa: E402

# random candidates of the search's first generation: choice ids whose predicted latency at batch 32 averages
# inside the window (ids 2..18: 66% of the full network's, 0..10: 61%; all 31 ids: 72%)
RANDOM_CHOICES = {0.7: "[2,18]", 0.62: "[0,10]"}
KINDS = ("uniform", "latency", "flops")   # per budget, besides the full network
LABELS = {"full": "full network", "uniform": "uniform width", "latency": "latency-searched",
          "flops": "FLOPs-searched (at uniform's FLOPs)"}


def data_args(data: str, root: Path | None) -> list[str]:
    if data == "digits":
        return []
    return [f"data={data}", f"data.root={Path(root).resolve()}", "data.holdout=500"]


def window(budget: float, low: float = 0.9) -> tuple[str, str]:
    """The (max, min) values of a search window [low x budget, budget], as run.py arguments."""
    return f"{budget:g}", f"{low * budget:.4g}"


def top_file(record: dict) -> Path:
    return Path(record["run_dir"]) / "top_encodings.yaml"


def full_file(folder: Path, top: dict) -> Path:
    """A hand-written encoding file of the full network (every gene at the widest choice), for retraining."""
    path = folder / "full.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump({"arch": top["arch"], "arch_kwargs": top["arch_kwargs"],
                                        "encoding": [MAX_CHOICE] * len(top["gene_names"])}))
    return path


def seed_runs(seed: int, a, run_missing: bool) -> dict | None:
    """The runs of one seed: {'full': retrain record, (budget, kind): {'retrain': record, 'encoding': [...],
    'search': {...}}} or None when one is missing and ``run_missing`` is false."""
    folder = a.out / a.data
    base = [*data_args(a.data, a.data_root), f"seed={seed}"]

    def go(args):
        return cached_run(args, folder, run_missing)

    if a.pruningnets:   # trained elsewhere, one per seed in --seeds order
        train, ckpt = None, Path(a.pruningnets[a.seeds.index(seed)]).resolve()
    else:
        train = go([a.train_exp, "test=false", *base, *a.train_extra])
        if train is None:
            return None
        ckpt = Path(train["run_dir"]) / "checkpoints" / "last.ckpt"
    out, top = {"train": train}, None
    for budget in a.budgets:
        search = [a.search_exp, *base, f"search.pruningnet_ckpt={ckpt}",
                  f"search.random_choices={RANDOM_CHOICES.get(budget, 'null')}", *a.search_extra]
        hi, lo = window(budget)
        lat = go([*search, "search.max_flops=null", f"search.max_latency={hi}", f"search.min_latency={lo}",
                  f"search.latency.batch_size={a.batch}"])
        if lat is None:
            return None
        top = yaml.safe_load(top_file(lat).read_text())
        uniform_flops = top["uniform"]["flops"]
        flo = go([*search, f"search.max_flops={uniform_flops}", f"search.min_flops={int(0.9 * uniform_flops)}"])
        if flo is None:
            return None
        flops_top = yaml.safe_load(top_file(flo).read_text())
        sources = {"uniform": (top_file(lat), "uniform", top["uniform"]), "latency": (top_file(lat), "best",
                                                                                     top["top"][0]),
                   "flops": (top_file(flo), "best", flops_top["top"][0])}
        for kind, (path, pick, record) in sources.items():
            retrain = go([a.retrain_exp, *base, f"model.encoding={path}", f"model.pick={pick}", *a.retrain_extra])
            if retrain is None:
                return None
            out[(budget, kind)] = {"retrain": retrain, "encoding": record["encoding"], "search": record,
                                   "budget": top["budget"]}
    out["top"] = top
    full = go([a.retrain_exp, *base, f"model.encoding={full_file(folder, top)}", *a.retrain_extra])
    if full is None:
        return None
    out["full"] = {"retrain": full, "encoding": [MAX_CHOICE] * len(top["gene_names"]), "search": {}}
    return out


def measure(encodings: list[list[int]], top: dict, batches: list[int], rounds: int, repeats: int) -> dict:
    """{(batch, encoding tuple): fastest ms} of every network, timed interleaved: ``rounds`` passes over all
    networks and both batch sizes, each ``repeats`` forward passes after 5 untimed ones."""
    shape = tuple(top["input_shape"])
    nets = {tuple(e): narrow_network(top["arch"], top["arch_kwargs"], list(e)).eval() for e in encodings}
    best: dict = {}
    for _ in range(rounds):
        for key, net in nets.items():
            for batch in batches:
                ms = measure_latency(net, shape, batch, "cpu", 5, repeats, "min")
                best[(batch, key)] = min(ms, best.get((batch, key), float("inf")))
    return best


def speed_vs_flops(full: dict, net: dict, batch: int) -> dict:
    """The measured speed-up of ``net`` over ``full`` (latency ratio full / net) at batch 1 and ``batch``, its FLOP
    reduction (full / net) and its throughput at ``batch`` (images/s); the arguments hold 'flops', 'ms1' and
    'ms_batch'."""
    return {"speedup1": full["ms1"] / net["ms1"], "speedup": full["ms_batch"] / net["ms_batch"],
            "flop_reduction": full["flops"] / net["flops"], "throughput": 1000 * batch / net["ms_batch"]}


def equal_latency_gaps(searched: list[dict], uniform: list[dict]) -> dict:
    """Per seed (paired lists), the latency-searched network's test accuracy minus the uniform network's and its
    measured latency at the bench's batch over the uniform one's (1.0 = equal; > 1: the searched is slower)."""
    gaps = [s["acc"] - u["acc"] for s, u in zip(searched, uniform, strict=True)]
    ratios = [s["ms_batch"] / u["ms_batch"] for s, u in zip(searched, uniform, strict=True)]
    return {"gaps": gaps, "ratios": ratios, "gap": mean_sd(gaps), "ratio": mean_sd(ratios)}


def rows_of(runs: dict[int, dict], timings: dict, a) -> list[dict]:
    """One row per (seed, budget or 'full', kind): accuracy, FLOPs, params, measured and predicted latency."""
    rows = []
    for seed, r in runs.items():
        keys = [("full", "full")] + [(b, k) for b in a.budgets for k in KINDS]
        for budget, kind in keys:
            item = r["full"] if kind == "full" else r[(budget, kind)]
            m = item["retrain"]["metrics"]
            enc = tuple(item["encoding"])
            rows.append({"seed": seed, "budget": budget, "kind": kind, "acc": m["test/acc"],
                         "flops": m["model/flops"], "params": m["model/params"], "encoding": list(enc),
                         "ms1": timings[(1, enc)], "ms_batch": timings[(a.batch, enc)],
                         "predicted_ms": item["search"].get("latency_ms"), "wall_s": item["retrain"]["wall_time_s"]})
    for row in rows:
        full = next(f for f in rows if f["seed"] == row["seed"] and f["kind"] == "full")
        row.update(speed_vs_flops(full, row, a.batch))
    return rows


def cell(rows: list[dict], key: str, scale: float, digits: int) -> str:
    """``mean ± sd`` of ``key`` over ``rows`` times ``scale``; the value alone when every row has the same."""
    values = [scale * r[key] for r in rows]
    return f"{values[0]:.{digits}f}" if len(set(values)) == 1 else pm(values, 1.0, digits)


def table(rows: list[dict], budgets: list[float], batch: int) -> str:
    lines = [f"| budget (of the full network's predicted latency at batch {batch}) | network | seeds | test top-1 % "
             f"| MFLOPs | params | latency batch 1 ms | latency batch {batch} ms | images/s at batch {batch} "
             f"| speed-up batch 1 | speed-up batch {batch} | FLOP reduction |", "|---" * 12 + "|"]
    for budget in ["full", *budgets]:
        for kind in (["full"] if budget == "full" else KINDS):
            rs = [r for r in rows if r["budget"] == budget and r["kind"] == kind]
            name = "full" if budget == "full" else f"{budget:.0%}"
            cells = [cell(rs, "acc", 100, 2), cell(rs, "flops", 1e-6, 3), cell(rs, "params", 1, 0),
                     cell(rs, "ms1", 1, 3), cell(rs, "ms_batch", 1, 2), cell(rs, "throughput", 1, 0),
                     cell(rs, "speedup1", 1, 2), cell(rs, "speedup", 1, 2), cell(rs, "flop_reduction", 1, 2)]
            lines.append(f"| {name} | {LABELS[kind]} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gaps_text(rows: list[dict], budgets: list[float], batch: int) -> str:
    lines = [f"| budget | latency-searched - uniform: test top-1 (per seed) | latency at batch {batch}: searched / "
             f"uniform (per seed) | FLOPs-searched - uniform | predicted / measured latency at batch {batch}: "
             "searched, uniform |", "|---|---|---|---|---|"]
    for budget in budgets:
        by = {k: sorted((r for r in rows if r["budget"] == budget and r["kind"] == k), key=lambda r: r["seed"])
              for k in KINDS}
        lat, flo = equal_latency_gaps(by["latency"], by["uniform"]), equal_latency_gaps(by["flops"], by["uniform"])
        pred = [statistics.median(r["predicted_ms"] / r["ms_batch"] for r in by[k]) for k in ("latency", "uniform")]
        lines.append(f"| {budget:.0%} | {pm(lat['gaps'])} ({', '.join(f'{100 * g:+.2f}' for g in lat['gaps'])}) | "
                     f"{pm(lat['ratios'], 1.0, 2)} ({', '.join(f'{x:.2f}' for x in lat['ratios'])}) | "
                     f"{pm(flo['gaps'])} | {pred[0]:.2f}, {pred[1]:.2f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="digits", choices=["digits", "cifar10"])
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.7, 0.62])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train-exp", default="experiment=metapruning_digits")
    p.add_argument("--search-exp", default="experiment=metapruning_digits_search")
    p.add_argument("--retrain-exp", default="experiment=metapruning_digits_retrain")
    p.add_argument("--pruningnets", nargs="*", default=[], help="trained PruningNet checkpoints, one per seed")
    p.add_argument("--train-extra", nargs="*", default=[])
    p.add_argument("--search-extra", nargs="*", default=[])
    p.add_argument("--retrain-extra", nargs="*", default=[])
    p.add_argument("--out", type=Path, default=ROOT / "logs" / "bench_latency_evidence")
    p.add_argument("--measure-only", action="store_true", help="time the finished runs' networks; start no run")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--write", action="store_true", help="write the tables into docs/results.md")
    a = p.parse_args()
    a.out = a.out.resolve()
    if a.data != "digits" and a.data_root is None:
        sys.exit("--data-root is required for --data cifar10")
    if a.pruningnets and len(a.pruningnets) != len(a.seeds):
        sys.exit(f"--pruningnets: {len(a.pruningnets)} checkpoints for {len(a.seeds)} seeds; give one per seed")
    torch.set_num_threads(1)
    start = time.time()
    runs = {}
    for seed in a.seeds:
        r = seed_runs(seed, a, run_missing=not a.measure_only)
        if r is None:
            print(f"[bench] seed {seed}: runs not finished, left out", flush=True)
            continue
        runs[seed] = r
    if not runs:
        sys.exit(f"no finished runs under {a.out / a.data}")
    encodings = sorted({tuple(item["encoding"]) for r in runs.values() for k, item in r.items()
                        if k == "full" or isinstance(k, tuple)})
    encodings.append(tuple([0] * len(encodings[0])))   # the narrowest: how far the latency can go down at all
    top = next(iter(runs.values()))["top"]
    load_before = os.getloadavg()
    t0 = time.time()
    timings = measure([list(e) for e in encodings], top, [1, a.batch], a.rounds, a.repeats)
    measure_s, load_after = time.time() - t0, os.getloadavg()
    rows = rows_of(runs, timings, a)
    narrow = {b: timings[(b, encodings[-1])] / timings[(b, tuple([MAX_CHOICE] * len(encodings[0])))]
              for b in (1, a.batch)}
    settings = speed_settings("cpu")
    note = (f"Measured {len(encodings)} networks in {measure_s:.0f} s ({a.rounds} interleaved rounds of {a.repeats} "
            f"passes, fastest kept), {settings['device_name']}, 1 thread, torch {settings['torch']}; load average "
            f"{load_before[0]:.2f} before, {load_after[0]:.2f} after. Narrowest network: {narrow[1]:.0%} of the full "
            f"network's latency at batch 1, {narrow[a.batch]:.0%} at batch {a.batch}.")
    text = f"{table(rows, a.budgets, a.batch)}\n\n{gaps_text(rows, a.budgets, a.batch)}\n\n{note}"
    print(f"\n{text}\n\n(total {time.time() - start:.0f} s)")
    (a.out / a.data / "measured.json").write_text(json.dumps(
        {"rows": rows, "load_before": load_before, "load_after": load_after, "settings": settings,
         "narrowest_fraction": narrow, "measure_s": measure_s}, indent=1, default=str))
    if a.write:
        write_section(f"latency_evidence_{a.data}", text)


if __name__ == "__main__":
    main()
