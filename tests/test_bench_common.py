"""bench/common.py: the timing benches' interleaving of a baseline and candidates, and the ratios they print."""
import sys

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402


def test_rounds_alternate_their_order_and_ratios_are_read_per_round():
    calls, clock = [], iter([1.0, 2.0, 4.0, 2.0, 1.0, 3.0])

    def measure(name):
        def run():
            calls.append(name)
            return next(clock)
        return run

    values = common.interleaved({"base": measure("base"), "new": measure("new")}, rounds=3)
    assert calls == ["base", "new", "new", "base", "base", "new"]   # drift hits both sides alike
    assert values == {"base": [1.0, 2.0, 1.0], "new": [2.0, 4.0, 3.0]}
    # rounds 2/1, 4/2, 3/1: median 2; fastest round 2 over fastest baseline round 1
    assert common.ratios(values["new"], values["base"]) == (2.0, 2.0, [2.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        common.ratios([1.0], [1.0, 2.0])   # rounds of different runs are not compared
