"""8-bit integers: post-training static quantization of an exported ONNX network with onnxruntime, and what a
deployment checks of the result (top-1 on labelled images, latency of a batch), in plain onnxruntime and torch.

The quantized network is QDQ ONNX (QuantizeLinear/DequantizeLinear pairs around each quantized operator, which
onnxruntime fuses into integer kernels): weights int8 per output channel, activations uint8 with ranges calibrated
(min/max) on the images given. It was chosen over torch.ao's x86 path by a measurement on the same network
(docs/notes/int8.md)."""
import contextlib
import io
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from netcompress.core import atomic_output
from netcompress.deploy.speed import time_call

INPUT = "images"   # the input name netcompress.deploy.export.to_onnx gives


def session(path: str | Path, threads: int):
    """An onnxruntime CPU session of the file with ``threads`` intra-op threads (full graph optimizations)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, images: torch.Tensor, batch_size: int = 32,
                  activations: str = "uint8") -> None:
    """Writes ``int8_path`` (atomically): ``fp32_path``'s network with int8 weights (per channel) and
    ``activations`` (uint8 | int8) whose ranges are the min/max seen on ``images`` (N, C, H, W), fed ``batch_size``
    at a time. Raises what onnxruntime raises for a network it cannot quantize."""
    from onnxruntime import quantization as ort

    class Reader(ort.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([b.numpy() for b in images.float().split(batch_size)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"   # shapes inferred, graph optimized: what the quantizer expects
        try:
            with contextlib.redirect_stdout(io.StringIO()):   # its progress print
                ort.quant_pre_process(str(fp32_path), str(prepared))
        except Exception:   # a graph its shape inference cannot read: quantized as exported
            prepared = Path(fp32_path)
        activation_type = {"uint8": ort.QuantType.QUInt8, "int8": ort.QuantType.QInt8}[activations]
        with atomic_output(int8_path) as out:
            ort.quantize_static(str(prepared), str(out), Reader(), quant_format=ort.QuantFormat.QDQ, per_channel=True,
                                activation_type=activation_type, weight_type=ort.QuantType.QInt8,
                                calibrate_method=ort.CalibrationMethod.MinMax)


def accuracy(onnx_session, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 (a fraction) of the session's network on (images, labels) batches."""
    correct = total = 0
    for x, y in batches:
        logits = onnx_session.run(None, {INPUT: x.float().numpy()})[0]
        correct += int((np.argmax(logits, axis=1) == y.numpy()).sum())
        total += len(y)
    return correct / max(total, 1)


def latency_ms(onnx_session, x: torch.Tensor, warmup: int = 10, repeats: int = 50) -> float:
    """Median milliseconds of one run of the session on the batch ``x``."""
    feed = {INPUT: x.float().numpy()}
    return time_call(lambda: onnx_session.run(None, feed), "cpu", warmup, repeats)


def latencies_ms(sessions: dict, x: torch.Tensor, warmup: int = 10, repeats: int = 50, rounds: int = 5) -> dict:
    """``latency_ms`` of each session, timed in turns (``rounds`` rounds of ``repeats // rounds`` runs each, the
    median of the rounds' medians), so that load from other processes falls on all of them alike."""
    times = {name: [] for name in sessions}
    for session in sessions.values():
        latency_ms(session, x, warmup, 1)
    for _ in range(rounds):
        for name, session in sessions.items():
            times[name].append(latency_ms(session, x, 0, max(1, repeats // rounds)))
    return {name: float(np.median(t)) for name, t in times.items()}


def size_mb(path: str | Path) -> float:
    return Path(path).stat().st_size / 2**20
