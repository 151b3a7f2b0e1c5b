"""What the timing benches share: the repository on the import path, a loss criterion built as run.py builds it, and
the timing of candidates against a baseline, interleaved in one process and read as ratios."""
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def criterion(loss: str):
    """The criterion of ``conf/loss/<loss>.yaml`` (its defaults: the YAML is their one source), as run.py builds it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return instantiate(compose("config", overrides=[f"loss={loss}"]).loss)


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
