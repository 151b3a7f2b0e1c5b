"""How well MetaPruning's latency lookup table (netcompress/search/latency.py) predicts the measured latency of whole
networks (issue 23 item 1). Trains the digits PruningNet once, then per batch size builds the table (on this CPU,
one thread, in the folder the search reads it from), runs a search under ``search.max_latency`` = midway between the
narrowest and the full network's predicted latency, and times every network the search wrote to
``top_encodings.yaml`` (its top-k, the random encodings of its first generation and the uniform-width baseline)
plus the full and the narrowest network, alone, with the same batch size and thread: the fastest of ``--rounds``
interleaved rounds of ``--repeats`` forward passes (the table's entries are fastest runs too). Prints the prediction
error (predicted / measured - 1) and the measured speed-up against the FLOP reduction. Every stage is a ``python
run.py`` command (bench/common.py), cached under --out.

    python bench/latency_table.py [--batch-sizes 1 32] [--seed 0] [--rounds 3] [--write] [--train-extra k=v ...]
    python bench/latency_table.py --batch-sizes 32 --fresh-table    (re-measure only: minutes, see below)

--write puts the table into the latency section of docs/results.md (between its latency_table markers).
--fresh-table re-measures the prediction error alone, for a quieter moment of a shared machine: it reuses the cached
PruningNet and search of --out (and runs them when missing), builds a new table in ``<out>/fresh_batch<b>/``
(replacing the one an earlier --fresh-table built), predicts every network of the search's file with it, and times
them; the load average is printed before and after.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, cached_run, write_section  # noqa: E402

from netcompress.core import ConfigError  # noqa: E402
from netcompress.deploy.speed import measure_latency, speed_settings  # noqa: E402
from netcompress.networks.flops import count_flops  # noqa: E402
from netcompress.networks.pruningnet import narrow_network  # noqa: E402
from netcompress.search.latency import LatencyTable  # noqa: E402


def load_pruningnet_of(train: dict):
    """The PruningNet of the training run (its family is what the table is keyed by; the weights do not matter)."""
    config = OmegaConf.load(Path(train["run_dir"]) / ".hydra" / "config.yaml")
    return instantiate(config.model)


def search_once(ckpt: Path, batch: int, budget: str, seed: int, out: Path, extra: list[str]) -> dict:
    args = ["experiment=metapruning_digits_search", f"search.pruningnet_ckpt={ckpt}", "search.max_flops=null",
            f"search.max_latency={budget}", f"search.latency.batch_size={batch}", f"seed={seed}", *extra]
    try:
        return cached_run(args, out / f"search_batch{batch}")
    except RuntimeError as e:   # an infeasible target: the error line run.py printed
        error = next((line for line in str(e).splitlines() if line.startswith("error:")), str(e)[-300:])
        return {"error": error}


def measure_networks(top: dict, rounds: int, repeats: int, table: LatencyTable | None = None) -> list[dict]:
    """Every network of the search's file (and the full and narrowest ones), timed in interleaved rounds; predicted
    by ``table`` when given, else as the search recorded them."""
    genes = len(top["gene_names"])
    nets = [("searched", r) for r in top["top"]] + [("random", r) for r in top["random"]]
    nets += [("uniform", top["uniform"]), ("full", {"encoding": [30] * genes}),
             ("narrowest", {"encoding": [0] * genes})]
    batch, shape = top["budget"]["latency_batch_size"], tuple(top["input_shape"])
    rows = []
    for group, record in nets:
        net = narrow_network(top["arch"], top["arch_kwargs"], record["encoding"]).eval()
        rows.append({"group": group, "encoding": record["encoding"], "net": net, "times": [],
                     "flops": count_flops(net, shape),
                     "predicted": table.predict(net) if table is not None else record.get("latency_ms")})
    for _ in range(rounds):
        for row in rows:
            row["times"].append(measure_latency(row["net"], shape, batch, "cpu", 5, repeats, "min"))
    for row in rows:
        row["measured"] = min(row.pop("times"))   # the fastest run, as the table's entries
        del row["net"]
    return rows


def summarize(batch: int, top: dict, rows: list[dict]) -> dict:
    by = {g: [r for r in rows if r["group"] == g] for g in ("searched", "random", "uniform", "full", "narrowest")}
    scored = by["searched"] + by["random"]
    errors = [r["predicted"] / r["measured"] - 1 for r in scored]
    full, best = by["full"][0], by["searched"][0]
    b = top["budget"]
    return {"batch": batch, "n": len(scored), "median_abs_error": statistics.median(abs(e) for e in errors),
            "median_error": statistics.median(errors), "max_abs_error": max(abs(e) for e in errors),
            "full_predicted": full["predicted"] or b["full_latency_ms"], "full_measured": full["measured"],
            "narrowest_measured_fraction": by["narrowest"][0]["measured"] / full["measured"],
            "budget_ms": b["max_latency_ms"], "best_measured_fraction": best["measured"] / full["measured"],
            "best_flops_fraction": best["flops"] / full["flops"], "best_val_acc": top["top"][0]["val_acc"],
            "uniform_measured_fraction": by["uniform"][0]["measured"] / full["measured"],
            "uniform_flops_fraction": by["uniform"][0]["flops"] / full["flops"],
            "uniform_val_acc": top["uniform"]["val_acc"], "device": b["latency_device"],
            "threads": b["latency_threads"]}


def table(summaries: list[dict], infeasible: list[tuple]) -> str:
    lines = ["| batch | search.max_latency | networks | median abs. error | median error | max abs. error "
             "| full: predicted / measured ms | narrowest (measured, of full) | searched best: measured latency, "
             "FLOPs (of full) | uniform: measured latency, FLOPs | held-out acc. searched / uniform |",
             "|---" * 11 + "|"]
    for s in summaries:
        lines.append(f"| {s['batch']} | {s['budget_ms']:.3f} ms (midway) | {s['n']} | "
                     f"{s['median_abs_error']:.1%} | {s['median_error']:+.1%} | "
                     f"{s['max_abs_error']:.1%} | {s['full_predicted']:.3f} / {s['full_measured']:.3f} | "
                     f"{s['narrowest_measured_fraction']:.0%} | {s['best_measured_fraction']:.0%}, "
                     f"{s['best_flops_fraction']:.0%} | {s['uniform_measured_fraction']:.0%}, "
                     f"{s['uniform_flops_fraction']:.0%} | {100 * s['best_val_acc']:.1f} / "
                     f"{100 * s['uniform_val_acc']:.1f} |")
    text = "\n".join(lines)
    for batch, budget, error in infeasible:
        text += f"\n\nBatch {batch}, search.max_latency={budget}: infeasible. {error}"
    return text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench_latency_table")
    parser.add_argument("--train-extra", nargs="*", default=[])
    parser.add_argument("--search-extra", nargs="*", default=[])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--fresh-table", action="store_true", help="rebuild the table, re-predict and re-measure")
    args = parser.parse_args()
    args.out = args.out.resolve()
    torch.set_num_threads(1)   # as the searches' tables (bench/common runs run.py with one thread)
    start = time.time()
    train = cached_run(["experiment=metapruning_digits", "test=false", f"seed={args.seed}", *args.train_extra],
                       args.out / "train")
    ckpt = Path(train["run_dir"]) / "checkpoints" / "last.ckpt"
    summaries, infeasible = [], []
    for batch in args.batch_sizes:
        table_ = LatencyTable(load_pruningnet_of(train), (1, 32, 32), args.out / f"search_batch{batch}" / ".cache",
                              batch_size=batch).load_or_build()
        narrowest = table_.predict_encoding([0] * table_.net.num_genes)
        budget = f"{(narrowest + table_.predict_encoding(table_.net.full_encoding())) / 2:.4f}ms"
        search = search_once(ckpt, batch, budget, args.seed, args.out, args.search_extra)
        if "error" in search:
            infeasible.append((batch, budget, search["error"]))
            print(f"[bench] batch {batch}: {search['error']}", flush=True)
            continue
        top = yaml.safe_load((Path(search["run_dir"]) / "top_encodings.yaml").read_text())
        if top["budget"]["latency_threads"] != torch.get_num_threads():
            raise ConfigError(f"the table was built with {top['budget']['latency_threads']} threads, this process "
                              f"runs {torch.get_num_threads()}")
        fresh = None
        if args.fresh_table:
            load, begun = os.getloadavg()[0], time.time()
            fresh = LatencyTable(load_pruningnet_of(train), (1, 32, 32), args.out / f"fresh_batch{batch}",
                                 batch_size=batch)
            fresh.path.unlink(missing_ok=True)
            fresh.build()
            print(f"[bench] batch {batch}: fresh table in {time.time() - begun:.0f} s (load average {load:.2f} "
                  f"before, {os.getloadavg()[0]:.2f} after): {fresh.describe()}", flush=True)
        load = os.getloadavg()[0]
        rows = measure_networks(top, args.rounds, args.repeats, fresh)
        print(f"[bench] batch {batch}: measured {len(rows)} networks (load average {load:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after)", flush=True)
        summaries.append({**summarize(batch, top, rows), "budget": budget})
        for r in rows:
            print(f"[bench] batch {batch} {r['group']:9s} predicted {r['predicted'] or float('nan'):8.3f} ms, "
                  f"measured {r['measured']:8.3f} ms, {r['flops'] / 1e6:.3f}M FLOPs", flush=True)
    settings = speed_settings("cpu")
    text = table(summaries, infeasible)
    print(f"\n{text}\n\n({settings['device_name']}, {torch.get_num_threads()} thread, torch {settings['torch']}; "
          f"total {time.time() - start:.0f} s)")
    if args.write:
        write_section("latency_table", text)   # the table only, inside the latency section


if __name__ == "__main__":
    main()
