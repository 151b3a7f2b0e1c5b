"""The statistics of the studies' tables. ``±`` is the sample standard deviation (n - 1) over seeds.

A column ``{header, stat: <name>, <params>}`` of a study calls ``<name>(records, key, **params)``: ``records`` maps
every ``stage/label`` of the study to its runs' records (metrics.json's ``metrics`` and the study's ``outputs``, by
seed), ``key`` is the table row's ``stage/label``; it returns the cell's text.
"""
import statistics

from scipy.interpolate import interp1d
from scipy.stats import spearmanr


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± sd`` of ``values`` times ``scale`` (the value alone for one seed)."""
    mean, sd = mean_sd([scale * v for v in values])
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def by_seed(records: dict, key: str) -> dict[int, dict]:
    return {r["seed"]: r for r in records.get(key, [])}


def above_line(records: dict, key: str, uniform: list[str], metric: str = "test/acc", flops: str = "model/flops",
               scale: float = 100, digits: int = 2) -> str:
    """How far the row's ``metric`` lies above the piecewise-linear line through the uniform-width rows (``uniform``:
    their ``stage/label``; extended along its end segments) at the row's FLOPs, per seed (the seed's own uniform
    networks), as ``mean ± sd``."""
    gaps = []
    for seed, record in by_seed(records, key).items():
        points = [(r["metrics"][flops], r["metrics"][metric]) for u in uniform if (r := by_seed(records, u).get(seed))]
        if len(points) >= 2:
            line = interp1d(*zip(*points, strict=True), fill_value="extrapolate")
            gaps.append(record["metrics"][metric] - float(line(record["metrics"][flops])))
    return pm(gaps, scale, digits) if gaps else "–"


def rank_agreement(records: dict, key: str, stage: str = "retrain", score: str = "model/search_score",
                   metric: str = "test/acc", within: list[str] = ()) -> str:
    """Spearman's correlation between the score the search gave each network of ``stage`` (its record's ``score``)
    and its ``metric``, pooled over the stage's rows and seeds, then among the rows whose label holds each of
    ``within`` (a budget); written in the stage's first row with records."""
    rows = [k for k in records if k.split("/", 1)[0] == stage]
    if key != next(iter(rows), None):
        return ""

    def pairs(part: str = "") -> list[tuple[float, float]]:
        return [(r["metrics"][score], r["metrics"][metric]) for k in rows if part in k.split("/", 1)[1]
                for r in records[k] if score in r["metrics"]]

    def rho(found: list) -> str:   # Spearman's rank correlation, ties ranked by their average rank
        if len(found) < 3:
            return "–"
        x, y = zip(*found, strict=True)
        flat = len(set(x)) == 1 or len(set(y)) == 1   # no ranking on that side
        return "–" if flat else f"{spearmanr(x, y).statistic:+.2f}"

    pooled = pairs()
    return f"{rho(pooled)} ({len(pooled)} networks)" + "".join(f"; {part}: {rho(pairs(part))}" for part in within)


def minus(records: dict, key: str, base: str, metric: str = "test/acc", scale: float = 100, digits: int = 2,
          rows: list[str] | None = None) -> str:
    """The row's ``metric`` minus row ``base``'s (a ``stage/label`` or a label of the row's stage), in ``rows`` only
    (default: all): ``mean ± sd`` of the per-seed differences over the seeds both ran, when they share all or at least
    two; else the difference of their means."""
    if rows is not None and key not in rows:
        return ""
    base = base if base in records or "/" in base else f"{key.split('/', 1)[0]}/{base}"
    mine, theirs = by_seed(records, key), by_seed(records, base)
    if not mine or not theirs or key == base:
        return "–" if key != base else ""
    shared = sorted(mine.keys() & theirs.keys())
    if len(shared) > 1 or mine.keys() == theirs.keys():
        mean, sd = mean_sd([scale * (mine[s]["metrics"][metric] - theirs[s]["metrics"][metric]) for s in shared])
        return f"{mean:+.{digits}f}" + (f" ± {sd:.{digits}f}" if len(shared) > 1 else "")
    means = [mean_sd(r["metrics"][metric] for r in side.values())[0] for side in (mine, theirs)]
    return f"{scale * (means[0] - means[1]):+.{digits}f}"


def collapsed(records: dict, key: str, diversity: str = "train/diversity_epoch",
              threshold: str = "collapse_threshold") -> str:
    """The seeds whose generator ended collapsed: the last epoch's ``diversity`` below the run's own threshold."""
    found = [r for r in records.get(key, []) if diversity in r["metrics"] and threshold in r["metrics"]]
    if not found:
        return "–"
    return ", ".join(str(r["seed"]) for r in found if r["metrics"][diversity] < r["metrics"][threshold]) or "none"


def time_to(records: dict, key: str, threshold: float, relative_to: str | None = None, curve: str = "val_acc_curve",
            times: str = "val_time_curve") -> str:
    """Seconds until the per-validation ``curve`` first reaches ``threshold`` (plus the record's ``relative_to``
    metric, when named: -0.05 and ``test/teacher_acc`` is 5 points below the teacher), mean over seeds: the fit's
    wall time then (``times``, logged beside it), or for a record without it the epoch's share of the run's."""
    found, runs = [], records.get(key, [])
    for r in runs:
        values, at = r["metrics"].get(curve) or [], r["metrics"].get(times) or []
        goal = threshold + (r["metrics"][relative_to] if relative_to else 0)
        first = next((i for i, v in enumerate(values) if v >= goal), None)
        if first is not None:
            found.append(at[first] if len(at) == len(values) else r["wall_time_s"] * (first + 1) / len(values))
    if not found:
        return "never" if runs else "–"
    return f"{mean_sd(found)[0]:.0f}" + (f" ({len(found)} of {len(runs)} seeds)" if len(found) < len(runs) else "")
