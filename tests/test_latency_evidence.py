"""bench/latency_evidence.py: which runs it asks for (the search windows, the FLOPs search at the uniform network's
FLOPs), the measure-only step's timing (interleaved, fastest kept) and the numbers of its table, on hand-computed
values. The runs themselves (minutes each) are not started here."""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import latency_evidence as ev  # noqa: E402

TINY = dict(num_classes=10, in_channels=1, stem_width=8, stem_stride=2, stage_widths=[4, 8], stage_repeats=[1, 2],
            stage_strides=[1, 2], expand=6, last_channels=8)
GENES = 6   # stem, 2 stage outputs, 3 block middles


def test_window_is_the_budget_and_nine_tenths_of_it():
    assert ev.window(0.5) == ("0.5", "0.45")
    assert ev.window(0.35) == ("0.35", "0.315")


def test_speed_vs_flops_hand_computed():
    full = {"flops": 1000, "ms1": 1.0, "ms_batch": 10.0}
    net = {"flops": 250, "ms1": 0.8, "ms_batch": 4.0}
    s = ev.speed_vs_flops(full, net, 32)
    assert s["speedup1"] == pytest.approx(1.25) and s["speedup"] == pytest.approx(2.5)
    assert s["flop_reduction"] == pytest.approx(4.0) and s["throughput"] == pytest.approx(8000.0)


def test_equal_latency_gaps_pair_the_seeds():
    searched = [{"acc": 0.95, "ms_batch": 5.0}, {"acc": 0.90, "ms_batch": 6.0}]
    uniform = [{"acc": 0.93, "ms_batch": 5.0}, {"acc": 0.91, "ms_batch": 5.0}]
    g = ev.equal_latency_gaps(searched, uniform)
    assert g["gaps"] == pytest.approx([0.02, -0.01]) and g["ratios"] == pytest.approx([1.0, 1.2])
    assert g["gap"][0] == pytest.approx(0.005) and g["gap"][1] == pytest.approx(0.0212132, abs=1e-6)
    with pytest.raises(ValueError):   # a seed missing on one side is an error, not a silently shorter mean
        ev.equal_latency_gaps(searched, uniform[:1])


def test_cell_shows_a_single_value_when_all_rows_agree():
    assert ev.cell([{"x": 2.0}, {"x": 2.0}], "x", 1, 2) == "2.00"
    assert ev.cell([{"x": 0.5}, {"x": 0.7}], "x", 100, 1) == "60.0 ± 14.1"


def test_measure_interleaves_networks_and_keeps_the_fastest(monkeypatch):
    calls = []
    clock = iter([5.0, 3.0, 9.0, 7.0, 4.0, 8.0, 6.0, 10.0])   # two rounds x two networks x batches 1 and 4

    def fake(net, shape, batch, device, warmup, repeats, statistic):
        calls.append((sum(p.numel() for p in net.parameters()), batch, statistic))
        return next(clock)

    monkeypatch.setattr(ev, "measure_latency", fake)
    top = {"arch": "mobilenetv2", "arch_kwargs": TINY, "input_shape": [1, 32, 32]}
    wide, narrow = [30] * GENES, [0] * GENES
    best = ev.measure([wide, narrow], top, [1, 4], rounds=2, repeats=3)
    sizes = [c[0] for c in calls]
    assert sizes[0] == sizes[1] == sizes[4] == sizes[5] > sizes[2] == sizes[3]   # round 1 both, then round 2
    assert [c[1] for c in calls] == [1, 4] * 4 and {c[2] for c in calls} == {"min"}
    assert best == {(1, tuple(wide)): 4.0, (4, tuple(wide)): 3.0, (1, tuple(narrow)): 6.0, (4, tuple(narrow)): 7.0}


def fake_runs(tmp_path, monkeypatch, finished=None):
    """bench/common.cached_run replaced: every search writes a top_encodings.yaml with a uniform network of
    300,000 FLOPs; records which argument lists were asked for."""
    asked = []

    def fake(args, folder, run_missing=True):
        if finished is not None and len(asked) >= finished and not run_missing:
            return None
        asked.append(args)
        run_dir = tmp_path / f"run{len(asked)}"
        run_dir.mkdir()
        if args[0].endswith("_search"):
            latency = any(a.startswith("search.max_latency") for a in args)
            record = {"encoding": [5 + len(asked)] * GENES, "flops": 290_000, "latency_ms": 4.0 if latency else None}
            (run_dir / "top_encodings.yaml").write_text(yaml.safe_dump({
                "arch": "mobilenetv2", "arch_kwargs": TINY, "input_shape": [1, 32, 32], "gene_names": list("abcdef"),
                "budget": {}, "top": [record], "uniform": {"encoding": [9] * GENES, "flops": 300_000}}))
        return {"run_dir": str(run_dir), "metrics": {"test/acc": 0.9, "model/flops": 1, "model/params": 1},
                "wall_time_s": 1.0}

    monkeypatch.setattr(ev, "cached_run", fake)
    a = SimpleNamespace(out=tmp_path, data="digits", data_root=None, budgets=[0.5], batch=32, pruningnets=[],
                        seeds=[0, 1], train_exp="experiment=t", search_exp="experiment=s_search",
                        retrain_exp="experiment=r", train_extra=[], search_extra=[], retrain_extra=[])
    return asked, a


def test_seed_runs_search_the_latency_window_then_the_uniform_networks_flops(tmp_path, monkeypatch):
    (tmp_path / "digits").mkdir()
    asked, a = fake_runs(tmp_path, monkeypatch)
    runs = ev.seed_runs(1, a, run_missing=True)
    latency, flops = asked[1], asked[2]
    assert {"search.max_flops=null", "search.max_latency=0.5", "search.min_latency=0.45",
            "search.latency.batch_size=32", "seed=1"} <= set(latency)
    assert {"search.max_flops=300000", "search.min_flops=270000", "seed=1"} <= set(flops)
    assert not any(x.startswith("search.max_latency") for x in flops)
    picks = [(Path(x.split("=", 1)[1]).parent.name, y) for x, y in (r[2:4] for r in asked[3:6])]
    assert picks == [("run2", "model.pick=uniform"), ("run2", "model.pick=best"), ("run3", "model.pick=best")]
    full = yaml.safe_load(Path(asked[6][2].split("=", 1)[1]).read_text())
    assert full["encoding"] == [30] * GENES and full["arch_kwargs"] == TINY
    assert runs[(0.5, "uniform")]["encoding"] == [9] * GENES and runs[(0.5, "flops")]["encoding"] == [8] * GENES
    assert len(asked) == 7


def test_measure_only_leaves_out_a_seed_with_unfinished_runs(tmp_path, monkeypatch):
    (tmp_path / "digits").mkdir()
    asked, a = fake_runs(tmp_path, monkeypatch, finished=4)
    assert ev.seed_runs(0, a, run_missing=False) is None and len(asked) == 4


def test_pruningnets_trained_elsewhere_skip_the_training_stage(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    asked, a = fake_runs(tmp_path, monkeypatch)
    a.data, a.data_root, a.pruningnets = "cifar10", tmp_path, ["/x/seed0.ckpt", "/x/seed1.ckpt"]
    ev.seed_runs(1, a, run_missing=True)
    assert len(asked) == 6 and not any(r[0] == "experiment=t" for r in asked)
    assert f"search.pruningnet_ckpt={Path('/x/seed1.ckpt').resolve()}" in asked[0]
    assert {"data=cifar10", f"data.root={tmp_path.resolve()}", "data.holdout=500"} <= set(asked[0])
