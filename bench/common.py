"""What the timing benches share: the repository on the import path, and the timing of candidates against a baseline,
interleaved in one process and read as ratios."""
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def interleaved(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """``rounds`` values (seconds, or any cost) of every measure, in an order reversed every other round, so that
    drift and other processes' load hit them alike."""
    values = {name: [] for name in measures}
    for i in range(rounds):
        for name in list(measures)[:: -1 if i % 2 else 1]:
            values[name].append(measures[name]())
    return values


def ratios(values: list[float], baseline: list[float]) -> tuple[float, float, list[float]]:
    """A cost against the baseline's of the same rounds: the median of the rounds' ratios, the fastest round's over
    the baseline's fastest (interference only adds time: the least disturbed rounds, as ``timeit`` reasons), and
    every round's ratio."""
    each = [v / b for v, b in zip(values, baseline, strict=True)]
    return statistics.median(each), min(values) / min(baseline), each
