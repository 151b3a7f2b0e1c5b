"""The report of a deployment study (bench/studies/deploy_pipeline*.yaml): each network of its export stage (the
teacher, the network the latency-budgeted search found, the uniform-width network of the same budget), fp32 and
int8, as test top-1 against measured latency (onnxruntime, batch 1 and 32) and size on disk, read from the study's
records alone (docs/records/<study>/export/<row>/seed<k>.json). Prints a markdown table; draws the picture.

    python bench/deploy_report.py deploy_pipeline [--records docs/records] [--out docs/deploy_pipeline.png]
"""
import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("teacher", "uniform", "found")
COLUMNS = (("top-1 %", "export/test_acc_{p}", 100, 2), ("batch 1 ms", "speed/latency_ms_{l}", 1, 3),
           ("batch 32 ms", "speed/latency_ms_b32_{l}", 1, 3), ("size MB", "export/size_mb_{p}", 1, 3))


def deploy_points(records_dir: Path) -> list[dict]:
    """One point per (network, precision) with a record: its label, precision, and the mean over seeds of top-1
    (%), latency at batch 1 and 32 (ms), size (MB), params; the threads the latency was measured with."""
    points = []
    for row in ROWS:
        records = [json.loads(p.read_text()) for p in sorted((records_dir / "export" / row).glob("seed*.json"))]
        for precision, latency in (("fp32", "onnxruntime"), ("int8", "int8")):
            found = [r["metrics"] for r in records if f"export/test_acc_{precision}" in r["metrics"]]
            if not found:
                continue
            point = {"network": row, "precision": precision, "seeds": len(found),
                     "kept": precision == "fp32" or min(m.get("export/int8_kept", 1) for m in found) == 1,
                     "threads": found[0].get("speed/threads"), "params": found[0].get("model/params")}
            for header, key, scale, _ in COLUMNS:
                values = [m[key.format(p=precision, l=latency)] for m in found
                          if key.format(p=precision, l=latency) in m]
                point[header] = scale * statistics.mean(values) if values else None
            points.append(point)
    return points


def markdown(points: list[dict]) -> str:
    lines = ["| network | precision | params | " + " | ".join(c[0] for c in COLUMNS) + " |",
             "|---|---|---:|" + "---:|" * len(COLUMNS)]
    for p in points:
        cells = [f"{p[c[0]]:.{c[3]}f}" if p[c[0]] is not None else "–" for c in COLUMNS]
        note = "" if p["kept"] else " (not kept: over export.max_accuracy_drop)"
        lines.append(f"| {p['network']} | {p['precision']}{note} | {p['params']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(points: list[dict], title: str):
    """Top-1 against batch-1 latency, batch-32 latency and size: one colour per network, o fp32, ^ int8 (hollow: not
    kept, over export.max_accuracy_drop), an arrow from each network's fp32 to its int8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"teacher": "black", "uniform": "tab:gray", "found": "tab:red"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), dpi=100, sharey=True)
    threads = next((p["threads"] for p in points if p["threads"]), "?")
    for ax, x in zip(axes, ("batch 1 ms", "batch 32 ms", "size MB"), strict=True):
        for network in ROWS:
            mine = {p["precision"]: p for p in points if p["network"] == network and p[x] is not None}
            for precision, marker in (("fp32", "o"), ("int8", "^")):
                if precision in mine:
                    p = mine[precision]
                    ax.scatter(p[x], p["top-1 %"], marker=marker, s=60, edgecolors=colours[network],
                               facecolors=colours[network] if p["kept"] else "none",
                               label=f"{network} {precision}")
            if len(mine) == 2:
                ax.annotate("", xy=(mine["int8"][x], mine["int8"]["top-1 %"]),
                            xytext=(mine["fp32"][x], mine["fp32"]["top-1 %"]),
                            arrowprops={"arrowstyle": "->", "color": colours[network], "alpha": 0.6})
        ax.set_xscale("log")
        ax.set(xlabel=x if x == "size MB" else f"onnxruntime latency, {x} ({threads} thread(s))")
    axes[0].set_ylabel("test top-1 (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", help="the study's name (bench/studies/<name>.yaml)")
    p.add_argument("--records", type=Path, default=ROOT / "docs" / "records", help="where the study's records are")
    p.add_argument("--out", type=Path, help="the picture (default docs/<study>.png)")
    args = p.parse_args(argv)
    points = deploy_points(args.records / args.study)
    if not points:
        raise SystemExit(f"error: study={args.study}: no export records under {args.records / args.study}/export; "
                         f"run python bench/study.py {args.study} first")
    print(markdown(points))
    out = args.out or ROOT / "docs" / f"{args.study}.png"
    figure(points, f"{args.study}: test top-1 against measured latency and size").savefig(out, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
