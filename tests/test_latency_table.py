"""MetaPruning's latency lookup table (netcompress/search/latency.py) and the search's latency budget, on a tiny
MobileNetV2 family (6 genes: stem, 2 stages, 3 blocks; at most 48 channels)."""
import itertools
import json
import shutil
import time

import pytest
import torch
import yaml
from helpers import run_config
from torch import nn

from netcompress.core import ConfigError
from netcompress.networks.pruningnet import build_pruningnet
from netcompress.search.evolution import Budget, resolve_budget
from netcompress.search.latency import LatencyTable, covering_encodings, fit_correction, fit_line, trace_layers

TINY = dict(stem_width=8, stage_widths=(4, 8), stage_repeats=(1, 2), stage_strides=(1, 2), last_channels=8)
SHAPE = (1, 32, 32)   # the digits' images, as the search below sees them
QUICK = dict(warmup=1, repeats=2, references=4, rounds=1)
OVERHEAD = 0.25


def tiny_net():
    return build_pruningnet("mobilenetv2", "small", num_classes=10, in_channels=1, **TINY)


def fake_layer_ms(table, module, shape):
    """A stand-in for timing a layer: 0.01 ms plus 1e-4 ms per parameter (grows with every width)."""
    return 0.01 + 1e-4 * sum(p.numel() for p in module.parameters())


def fake_network_ms(table, narrow):
    """A stand-in for timing a whole network: its layers plus OVERHEAD."""
    return sum(fake_layer_ms(table, m, shape) for _, m, shape in trace_layers(narrow, SHAPE)) + OVERHEAD


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny family's table, built with deterministic stand-in timings (real timing: its own test below)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(LatencyTable, "_time_layer", fake_layer_ms)
        m.setattr(LatencyTable, "_time_network", fake_network_ms)
        return LatencyTable(tiny_net(), SHAPE, cache, **QUICK).load_or_build(), cache


def test_covering_encodings_hold_every_pair_of_choices_at_every_pair_of_genes():
    rows = covering_encodings(6)
    assert len(rows) == 31 * 31 and all(len(r) == 6 for r in rows)
    for i, j in itertools.combinations(range(6), 2):
        assert {(r[i], r[j]) for r in rows} == set(itertools.product(range(31), repeat=2))


def test_table_is_built_once_and_cached_under_its_key(built, monkeypatch):
    table, cache = built
    assert table.built and table.path.parent == cache / "latency" and table.path.is_file()
    saved = json.loads(table.path.read_text())
    assert saved["key"]["threads"] == torch.get_num_threads() and saved["key"]["batch_size"] == 1
    assert saved["key"]["torch"] == torch.__version__ and saved["key"]["input_shape"] == list(SHAPE)
    assert saved["entries"] == table.entries and len(table.entries) > 20
    # whole networks measured at (their layers + OVERHEAD): the fitted line is 1 x layers + OVERHEAD
    assert saved["scale"] == pytest.approx(1.0) and saved["overhead_ms"] == pytest.approx(OVERHEAD)
    # every layer of every narrow network is in it: the covering found each convolution's (in, out) widths
    net = tiny_net()
    for encoding in ([0] * 6, [30] * 6, [7, 30, 0, 19, 4, 12]):
        assert all(sig in table.entries for sig, _, _ in trace_layers(net.narrow(encoding), SHAPE))

    def no_timing(*args):
        raise AssertionError("a cached table is read, not measured")

    monkeypatch.setattr(LatencyTable, "_time_layer", no_timing)
    monkeypatch.setattr(LatencyTable, "_time_network", no_timing)
    again = LatencyTable(tiny_net(), SHAPE, cache, **QUICK).load_or_build()
    assert not again.built and again.entries == table.entries
    assert (again.scale, again.overhead) == (table.scale, table.overhead)
    for other in (dict(threads=torch.get_num_threads() + 1), dict(batch_size=4)):
        changed = LatencyTable(tiny_net(), SHAPE, cache, **QUICK, **other)
        assert changed.path != table.path and not changed.load()
    assert LatencyTable(tiny_net(), (1, 16, 16), cache, **QUICK).path != table.path


def test_prediction_is_the_sum_of_the_layers_plus_the_overhead(built):
    table, _ = built
    narrow = tiny_net().narrow([3, 30, 10, 0, 30, 5])
    layers = trace_layers(narrow, SHAPE)
    # stem conv + BN + ReLU6, 3 blocks of 3 x (conv, BN) and 2 ReLU6, last conv + BN + ReLU6, pool, flatten, fc
    assert len(layers) == 3 + 3 * 8 + 3 + 3
    # the stem: 8 channels at ratio 0.19 (choice 3) = 1 channel (9 weights), on the 1x32x32 input
    assert layers[0][0].startswith("Conv2d(1, 1, kernel_size=(3, 3), stride=(2, 2)") and layers[0][2] == SHAPE
    assert table.entries[layers[0][0]] == pytest.approx(0.01 + 9e-4)
    expected = sum(fake_layer_ms(table, m, shape) for _, m, shape in layers) + OVERHEAD
    table.scale, table.overhead = 2.0, 0.5   # the fitted line applies to the layers' sum
    assert table.predict(narrow) == pytest.approx(2 * (expected - OVERHEAD) + 0.5)
    table.scale, table.overhead = 1.0, OVERHEAD
    assert table.predict(narrow) == pytest.approx(expected)
    assert table.predict_encoding([3, 30, 10, 0, 30, 5]) == pytest.approx(expected)


def test_a_layer_the_table_lacks_is_timed_and_saved(built, monkeypatch):
    table, _ = built
    narrow = tiny_net().narrow([30] * 6)
    first = trace_layers(narrow, SHAPE)[0][0]
    del table.entries[first]
    monkeypatch.setattr(LatencyTable, "_time_layer", fake_layer_ms)
    table.predict(narrow)
    assert first in json.loads(table.path.read_text())["entries"]


class Sleeper(nn.Module):
    def forward(self, x):
        time.sleep(0.003)
        return x


def test_a_layer_is_timed_alone_in_inference_mode(tmp_path):
    table = LatencyTable(tiny_net(), SHAPE, tmp_path, warmup=1, repeats=3)
    assert 3.0 <= table._time_layer(Sleeper(), (4, 8, 8)) < 9.0
    conv = nn.Conv2d(4, 8, 3)
    assert 0 < table._time_layer(conv, (4, 8, 8)) < 50 and conv.weight.grad is None


def test_fit_line():
    assert fit_line([1, 2, 3], [5, 7, 9]) == pytest.approx((2.0, 3.0))
    assert fit_line([2, 2, 2], [3, 4, 9]) == pytest.approx((1.0, 2.0))   # no spread in x: the median gap
    assert fit_line([1, 2, 3], [9, 7, 5]) == pytest.approx((1.0, 5.0))   # falling: no latency model; gaps 8, 5, 2


def test_fit_correction_keeps_an_offset_unless_a_line_predicts_better():
    # batch 1 on a CPU: layer sums hardly differ, the measured networks scatter; a slope would fit the noise
    flat_x, flat_y = [0.80, 0.82, 0.85, 0.88, 0.92], [1.40, 1.10, 1.30, 1.20, 1.26]
    assert fit_correction(flat_x, flat_y) == pytest.approx((1.0, 0.34))   # gaps .60 .28 .45 .32 .34: median .34
    # layers that cost 3x more inside the network: the line (3x - 1, measured +-0.1)
    wide_x, wide_y = [2.0, 3.0, 4.0, 5.0, 6.0], [5.1, 7.9, 11.0, 14.1, 16.9]
    assert fit_correction(wide_x, wide_y) == pytest.approx(fit_line(wide_x, wide_y))
    assert fit_line(wide_x, wide_y) == pytest.approx((2.98, -0.92))   # Sxy 29.8 / Sxx 10; 11 - 4 x 2.98
    assert fit_correction(wide_x, [v + 0.5 for v in wide_x]) == pytest.approx((1.0, 0.5))   # a tie: the offset


def test_latency_bounds_as_typed():
    def parse(value, key="search.max_latency"):
        return resolve_budget(value, 10.0, key, latency=True)

    assert parse("2.5ms") == 2.5 and parse("800us") == pytest.approx(0.8) and parse("0.01s") == 10.0
    assert parse(0.5) == 5.0 and parse("0.5") == 5.0 and parse(None) is None
    with pytest.raises(ConfigError, match=r"search.max_latency=3(\.0)?: a bare number is a fraction.*=2.5ms"):
        parse(3)
    with pytest.raises(ConfigError, match=r"search.min_latency='fast'.*2.5ms"):
        parse("fast", "search.min_latency")
    with pytest.raises(ConfigError, match=r"search.max_latency='2.5M'"):
        parse("2.5M")
    assert resolve_budget("330M", 1e9, "search.max_flops") == 330e6   # FLOPs keep their forms
    assert resolve_budget(0.5, 1e9, "search.max_flops") == 5e8 and resolve_budget(2e6, 1e9, "search.max_flops") == 2e6


def test_latency_budget_accepts_and_rejects_candidates(built):
    table, _ = built
    net = tiny_net()
    budget = Budget(lambda e: (sum(e), len(e), table.predict_encoding(e)))
    narrow, full = budget.cost([0] * 6)[2], budget.cost([30] * 6)[2]
    assert OVERHEAD < narrow < full
    middle = (narrow + full) / 2
    bounded = Budget(budget.measure, max_latency=middle)
    assert bounded.feasible([0] * 6) and not bounded.feasible([30] * 6)
    window = Budget(budget.measure, max_latency=full, min_latency=middle)
    assert window.feasible([30] * 6) and not window.feasible([0] * 6)
    with pytest.raises(ConfigError, match=r"search.max_latency=.*no encoding meets it.*narrowest"):
        Budget(budget.measure, max_latency=0.5 * narrow).check_attainable([0] * 6, net.full_encoding())
    with pytest.raises(ConfigError, match=r"search.min_latency=.*above the full network"):
        Budget(budget.measure, min_latency=2 * full).check_attainable([0] * 6, net.full_encoding())


@pytest.mark.e2e
def test_search_under_a_latency_budget_reads_the_cached_table(built, tmp_path, monkeypatch):
    table, _ = built
    cache = tmp_path / "cache"
    (cache / "latency").mkdir(parents=True)
    shutil.copy(table.path, cache / "latency" / table.path.name)   # the search's key: the same family and settings
    monkeypatch.setenv("COMPRESSION_CACHE", str(cache))

    def no_timing(*args):
        raise AssertionError("the cached table is read, not measured")

    monkeypatch.setattr(LatencyTable, "_time_layer", no_timing)
    monkeypatch.setattr(LatencyTable, "_time_network", no_timing)
    ckpt = tmp_path / "pruningnet.ckpt"
    torch.save(tiny_net().state_dict(), ckpt)
    model = [f"+model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    run_config(["experiment=metapruning_digits_search", f"search.pruningnet_ckpt={ckpt}", *model,
                "search.max_flops=null", "search.max_latency=0.8", "search.population=4", "search.generations=2",
                "search.parents=2", "search.mutations=2", "search.crossovers=2", "search.calib_batches=1",
                "search.calib_batch_size=32", "search.val_batches=1", "logger=none"], tmp_path / "run")
    top = yaml.safe_load((tmp_path / "run" / "top_encodings.yaml").read_text())
    budget = top["budget"]
    assert budget["latency_table"] == str(cache / "latency" / table.path.name)
    assert budget["full_latency_ms"] == pytest.approx(table.predict_encoding([30] * 6), abs=1e-6)
    assert budget["max_latency_ms"] == pytest.approx(0.8 * budget["full_latency_ms"])
    records = [*top["top"], *top["random"], top["uniform"]]
    for record in records:
        assert record["latency_ms"] == pytest.approx(table.predict_encoding(record["encoding"]), abs=1e-3)
        assert record["latency_ms"] <= budget["max_latency_ms"]
    assert top["uniform"]["ratio"] < 1.0   # the full width is over the budget
    with pytest.raises(ConfigError, match=r"search.max_latency=.*no encoding meets it"):
        run_config(["experiment=metapruning_digits_search", f"search.pruningnet_ckpt={ckpt}", *model,
                    "search.max_latency=0.001ms", "logger=none"], tmp_path / "bad")
