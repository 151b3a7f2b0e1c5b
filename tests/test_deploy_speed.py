"""Measured speed: netcompress/deploy/speed.py and the SpeedBenchmark callback's keys in metrics.json."""
import json
import time

import pytest
import torch
from helpers import FAST, run_config
from torch import nn

from netcompress.deploy.speed import measure_latency, measure_throughput, time_call


class Sleeper(nn.Module):
    """Sleeps ``ms`` per forward call and records the mode and grad state it ran in."""

    def __init__(self, ms: float):
        super().__init__()
        self.ms, self.seen = ms, []
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        time.sleep(self.ms / 1000)
        return x * self.scale


def test_latency_is_the_median_forward_time_in_eval_and_inference_mode():
    net = Sleeper(4.0).train()
    latency = measure_latency(net, (1, 4, 4), batch_size=1, warmup=2, repeats=5)
    assert 4.0 <= latency < 12.0
    assert len(net.seen) == 7 and set(net.seen) == {(False, False)}   # 2 warm-up + 5 timed, eval, no grad
    assert net.training   # the mode is restored


def test_throughput_is_images_per_second_of_one_batch():
    throughput = measure_throughput(Sleeper(4.0), (1, 4, 4), batch_size=8, warmup=1, repeats=3)
    assert 8 / 0.012 < throughput <= 8 / 0.004   # 8 images per 4 ms (plus overhead) = at most 2000 images/s


TINY = ["method=supervised", "model=lenet5_half", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1", *FAST]   # FAST: few speed repeats, throughput at batch 8


@pytest.mark.e2e
def test_fit_writes_measured_speed_to_metrics_json(tmp_path, monkeypatch):
    import run

    printed = []
    monkeypatch.setattr(run, "rank_zero_info", printed.append)
    metrics = run_config(TINY, tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    for key in ("speed/latency_ms", "speed/throughput", "speed/threads", "speed/throughput_batch"):
        assert written[key] == pytest.approx(metrics[key])
    assert written["speed/threads"] == torch.get_num_threads() and written["speed/throughput_batch"] == 8
    assert written["speed/batch_ms"] == pytest.approx(8000 / written["speed/throughput"])
    assert 0 < written["speed/latency_ms"] < 1000 and written["speed/throughput"] > 1
    done = next(line for line in printed if line.startswith("[done]"))
    assert "speed/latency_ms" in done and "speed/throughput" in done and "model/flops" in done and "test/acc" in done


@pytest.mark.e2e
def test_speed_null_leaves_the_speed_out(tmp_path):
    """callbacks.speed=null: no inference speed; the training throughput is callbacks.train_speed's."""
    run_config([*TINY, "callbacks.speed=null"], tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert "model/flops" in written and [k for k in written if k.startswith("speed/")] == ["speed/train_throughput"]
    run_config([*TINY, "callbacks.speed=null", "callbacks.train_speed=null"], tmp_path / "none")
    written = json.loads((tmp_path / "none" / "metrics.json").read_text())["metrics"]
    assert not any(k.startswith("speed/") for k in written)


def test_min_statistic_is_the_fastest_call():
    sleeps = iter([8, 8, 8, 2, 2] * 2)   # ms; three slow calls of five: the median is slow, the fastest is not
    call = lambda: time.sleep(next(sleeps) / 1000)   # noqa: E731
    assert time_call(call, warmup=0, repeats=5) >= 8.0
    assert 2.0 <= time_call(call, warmup=0, repeats=5, statistic="min") < 6.0
