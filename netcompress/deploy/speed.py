"""Measured inference speed of a plain ``nn.Module``: median latency of one batch and throughput in images/s.

Measured as deployed: eval mode, ``torch.inference_mode``, on ``device``, with ``torch.get_num_threads()`` intra-op
threads (the caller states it next to the number; ``speed_settings`` returns it). The network's training/eval mode
is restored afterwards."""
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA), so a clock read after it times that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


STATISTICS = {"median": statistics.median, "min": min}


def time_call(fn: Callable[[], object], device: str | torch.device = "cpu", warmup: int = 10,
              repeats: int = 50, statistic: str = "median") -> float:
    """Wall time of ``fn()`` in milliseconds over ``repeats`` calls after ``warmup`` calls (CUDA work is
    synchronized before each clock read): their median, or with ``statistic="min"`` the fastest (the time without
    the interruptions of other processes: what a latency model of a shared machine should predict)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * STATISTICS[statistic](times)


def time_forward(net: nn.Module, inputs: torch.Tensor, warmup: int = 10, repeats: int = 50,
                 statistic: str = "median") -> float:
    """Milliseconds of ``net(inputs)`` in eval and inference mode on the inputs' device (``time_call``)."""
    was_training = getattr(net, "training", False)   # a frozen TorchScript module has no mode
    if was_training:
        net.eval()
    try:
        with torch.inference_mode():
            return time_call(lambda: net(inputs), inputs.device, warmup, repeats, statistic)
    finally:
        if was_training:
            net.train()


def example_input(input_shape: Sequence[int], batch_size: int, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """A fixed random batch of ``batch_size`` images of ``input_shape`` (C, H, W)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, *input_shape), generator=generator)
    return x.to(device=device, dtype=dtype or torch.get_default_dtype())


def _net_dtype(net: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in net.parameters() if p.is_floating_point()), None)


def measure_latency(net: nn.Module, input_shape: Sequence[int], batch_size: int = 1,
                    device: str | torch.device = "cpu", warmup: int = 10, repeats: int = 50,
                    statistic: str = "median") -> float:
    """Milliseconds of one forward pass of a ``batch_size`` batch (latency: ``batch_size=1``), the median of
    ``repeats`` (or the fastest: ``statistic="min"``). ``net`` must already be on ``device``."""
    x = example_input(input_shape, batch_size, device, _net_dtype(net))
    return time_forward(net, x, warmup, repeats, statistic)


def measure_throughput(net: nn.Module, input_shape: Sequence[int], batch_size: int = 64,
                       device: str | torch.device = "cpu", warmup: int = 3, repeats: int = 10) -> float:
    """Images per second at ``batch_size``: ``batch_size`` / the median time of one batch."""
    return 1000 * batch_size / measure_latency(net, input_shape, batch_size, device, warmup, repeats)


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the platform's processor string, else 'cpu'."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def speed_settings(device: str | torch.device) -> dict:
    """What a measured speed depends on besides the network: the device (its model) and intra-op threads."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu: {cpu_name()}"
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "torch": torch.__version__}
