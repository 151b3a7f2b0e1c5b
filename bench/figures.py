"""The pictures of the studies. A study's ``figure: {draw: <name>, <params>}`` calls ``<name>(records, keys,
**params)`` (``records``: every ``stage/label``'s records, as bench/stats.py gets them; ``keys``: the table's rows)
and the runner saves the matplotlib figure it returns as docs/<study>.png."""
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def threads_of(records: dict) -> str:
    """The threads the runs' speed was measured with (their first record's)."""
    found = (r["metrics"].get("speed/threads", r.get("threads")) for rs in records.values() for r in rs)
    return next((f"{t:.0f}" for t in found if t is not None), "?")


def accuracy_against_time(records: dict, keys: list[str], x: str = "val_time_curve", y: str = "val_acc_curve",
                          ylabel: str = "test top-1 (%)", scale: float = 100, reference: str | None = None):
    """One line per seed of each row: the per-validation ``y`` against ``x``, the fit's wall time then (minutes);
    ``reference``: a metric drawn as a dashed level (its mean over the records that have it; e.g. the teacher's)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    levels = [r["metrics"][reference] for rs in records.values() for r in rs if reference in r["metrics"]]
    if levels:
        ax.axhline(scale * statistics.mean(levels), color="gray", linestyle="--", label=reference)
    for key, colour in zip(keys, plt.cm.tab10.colors, strict=False):
        curves = [(r["metrics"][x], r["metrics"][y]) for r in records.get(key, [])
                  if len(r["metrics"].get(x) or []) == len(r["metrics"].get(y) or []) > 0]
        for i, (times, values) in enumerate(curves):
            ax.plot([t / 60 for t in times], [scale * v for v in values], color=colour, alpha=0.8,
                    label=f"{key.split('/', 1)[1]} ({len(curves)} seeds)" if i == 0 else None)
    ax.set(xlabel=f"wall time of the fit (min; {threads_of(records)} thread(s) per run)", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")   # the least covered place
    return fig


DEPLOY = (("batch 1 ms", "speed/latency_ms_{l}"), ("batch 32 ms", "speed/latency_ms_b32_{l}"),
          ("size MB", "export/size_mb_{p}"))


def deploy(records: dict, keys: list[str], colours: tuple = ("black", "tab:red", "tab:gray")):
    """A deployment study's export stage: each network's test top-1 in fp32 (o) and int8 (^; hollow: not kept, over
    export.max_accuracy_drop) against onnxruntime latency at batch 1 and 32 and size on disk, means over seeds; an
    arrow from each network's fp32 to its int8. ``colours``: of the rows, in order (then matplotlib's)."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4), dpi=100, sharey=True)
    for key, colour in zip(keys, (*colours, *plt.cm.tab10.colors), strict=False):
        metrics = [r["metrics"] for r in records.get(key, [])]
        for ax, (_, metric) in zip(axes, DEPLOY, strict=True):
            points = {}
            for precision, marker, latency in (("fp32", "o", "onnxruntime"), ("int8", "^", "int8")):
                found = [m for m in metrics if f"export/test_acc_{precision}" in m]
                if found:
                    kept = precision == "fp32" or min(m.get("export/int8_kept", 1) for m in found) == 1
                    points[precision] = (statistics.mean(m[metric.format(l=latency, p=precision)] for m in found),
                                         statistics.mean(100 * m[f"export/test_acc_{precision}"] for m in found))
                    ax.scatter(*points[precision], marker=marker, s=60, edgecolors=colour,
                               facecolors=colour if kept else "none", label=f"{key.split('/', 1)[1]} {precision}")
            if len(points) == 2:
                ax.annotate("", xy=points["int8"], xytext=points["fp32"],
                            arrowprops={"arrowstyle": "->", "color": colour, "alpha": 0.6})
    threads = threads_of(records)
    for ax, (header, _) in zip(axes, DEPLOY, strict=True):
        ax.set(xscale="log", xlabel=header if header == "size MB" else f"onnxruntime latency, {header} ({threads} "
               "thread(s))")
    axes[0].set_ylabel("test top-1 (%)")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))   # beside the panels, covering none
    fig.tight_layout()
    return fig
