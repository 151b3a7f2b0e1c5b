"""MetaPruning's latency lookup table: the measured latency of every layer of a PruningNet family's narrow
networks at every channel choice, on the target device, so a search can predict any candidate's latency.

A *layer* is a leaf module of the narrow network (a convolution, a BatchNorm, an activation, the pooling, the
classifier) together with the shape of its input; its signature, e.g. ``Conv2d(16, 96, kernel_size=(1, 1), ...)
@(16, 16, 16)``, is the table's key. A network's predicted latency is ``scale * (sum of its layers' entries) +
overhead``, fitted to a few whole reference networks measured on the device (the full, the narrowest, a uniform
width and random encodings): ``overhead`` holds what the layers alone do not run (module calls, residual adds),
``scale`` what a layer costs inside a network more than alone (at larger batches its input and weights no longer sit
in the cache that repeated isolated timing keeps them in). ``fit_correction`` keeps scale 1 unless a line predicts the
reference networks better (leave-one-out): with little spread in the layer sums (batch 1 on a CPU, where call
overhead dominates) a slope would fit the measuring noise.

The table is built once: the narrow networks of a covering set of encodings (every pair of choices at every pair of
genes, an orthogonal array of 31 x 31 rows, so every convolution's (in, out) widths occur) are traced, and each
distinct layer is timed alone in eval and inference mode (``netcompress.deploy.speed``). Every time in the table is the
fastest of its repeats: on a shared machine the median of a millisecond-long network absorbs other processes'
time slices far more often than that of a 20-microsecond layer, and the two would not add up. It is cached
atomically as JSON under ``<cache_dir>/latency/`` keyed by the family (arch and its widths), input shape, device,
threads, batch size and torch version; a layer a prediction meets that the table lacks is timed then and the file
rewritten."""
import copy
import hashlib
import json
import random
import statistics
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from netcompress.core import atomic_write_text
from netcompress.deploy.speed import example_input, measure_latency, speed_settings, time_forward
from netcompress.networks.pruningnet import NUM_CHOICES

PRIME = 31   # NUM_CHOICES: the orthogonal array (a + g * b) mod 31 covers every pair of choices at any 2 of 32 genes


def covering_encodings(num_genes: int) -> list[list[int]]:
    """Encodings in which every pair of genes takes every pair of choices (exactly for up to 32 genes)."""
    assert NUM_CHOICES == PRIME
    rows = []
    for a in range(PRIME):
        for b in range(PRIME):
            columns = [(a + g * b) % PRIME for g in range(PRIME)] + [b]
            rows.append([columns[g % len(columns)] for g in range(num_genes)])
    return rows


def trace_layers(net: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, nn.Module, tuple]]:
    """(signature, module, input shape without the batch) of every leaf module ``net`` runs, in call order."""
    found = []

    def record(module, args):
        found.append((module, tuple(args[0].shape[1:])))

    hooks = [m.register_forward_pre_hook(record) for m in net.modules() if next(m.children(), None) is None]
    was_training = net.training
    try:
        with torch.inference_mode():
            net.eval()(example_input(input_shape, 1, next(net.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return [(f"{type(m).__name__}({m.extra_repr()})@{tuple(shape)}", m, shape) for m, shape in found]


class LatencyTable:
    """Per-layer latency of the narrow networks of ``net`` (a PruningNet) at ``input_shape`` on ``device`` with
    ``threads`` intra-op threads and batch ``batch_size``; ``load_or_build()`` then ``predict(narrow_net)`` (ms)."""

    def __init__(self, net, input_shape: Sequence[int], cache_dir: str | Path, device: str = "cpu",
                 batch_size: int = 1, threads: int | None = None, warmup: int = 3, repeats: int = 20,
                 references: int = 8, rounds: int = 3):
        self.net, self.input_shape = net, tuple(int(s) for s in input_shape)
        self.device, self.batch_size = torch.device(device), int(batch_size)
        self.threads = int(threads or torch.get_num_threads())
        self.warmup, self.repeats, self.references, self.rounds = warmup, repeats, references, rounds
        settings = speed_settings(self.device)
        self.key = {"arch": net.arch, "arch_kwargs": {k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in sorted(net.arch_kwargs.items())},
                    "input_shape": list(self.input_shape), "device": settings["device_name"],
                    "threads": self.threads, "batch_size": self.batch_size, "torch": settings["torch"]}
        digest = hashlib.sha1(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / "latency" / f"{net.arch}-{digest}.json"
        self.entries: dict[str, float] = {}
        self.scale, self.overhead = 1.0, 0.0
        self.ready = False   # built or loaded
        self.built = False   # measured by this object (False: read from the cache file)

    # -- measuring ------------------------------------------------------------------------------------------
    @contextmanager
    def _threads(self):
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _time_layer(self, module: nn.Module, shape: tuple) -> float:
        layer = copy.deepcopy(module).to(self.device)
        x = example_input(shape, self.batch_size, self.device)
        return time_forward(layer, x, max(1, self.warmup), self.repeats, "min")   # the first call allocates

    def _time_network(self, narrow: nn.Module) -> float:
        return measure_latency(narrow.to(self.device), self.input_shape, self.batch_size, self.device,
                               max(self.warmup, 5), max(self.repeats, 20), "min")

    def layer_sum(self, narrow: nn.Module) -> float:
        """The sum of the table's entries over ``narrow``'s layers; layers the table lacks are timed now (and the
        cache file rewritten once the table is complete)."""
        layers = trace_layers(narrow, self.input_shape)
        missing = {sig: (m, shape) for sig, m, shape in layers if sig not in self.entries}
        if missing:
            with self._threads():
                for sig, (m, shape) in missing.items():
                    self.entries[sig] = self._time_layer(m, shape)
            if self.ready:
                self.save()
        return sum(self.entries[sig] for sig, _, _ in layers)

    def predict(self, narrow: nn.Module) -> float:
        """Predicted milliseconds of one forward pass of the narrow network ``narrow`` (on the table's device)."""
        return self.scale * self.layer_sum(narrow) + self.overhead

    def predict_encoding(self, encoding: Sequence[int]) -> float:
        return self.predict(self.net.narrow(encoding))

    def reference_encodings(self) -> list[list[int]]:
        """The full, the narrowest and the middle uniform width, then random encodings: ``references`` in all."""
        rng = random.Random(0)
        genes = self.net.num_genes
        fixed = [self.net.full_encoding(), [0] * genes, [NUM_CHOICES // 2] * genes]
        return fixed[:self.references] + [self.net.random_encoding(rng) for _ in range(self.references - 3)]

    def build(self) -> None:
        """Time every layer of the covering encodings' narrow networks, then the whole reference networks, and fit
        ``scale`` and ``overhead``; save."""
        for encoding in covering_encodings(self.net.num_genes):
            self.layer_sum(self.net.narrow(encoding))
        networks = [self.net.narrow(encoding) for encoding in self.reference_encodings()]
        sums = [self.layer_sum(narrow) for narrow in networks]
        with self._threads():   # interleaved rounds: a busy spell of the machine does not hit one network only
            times = [[self._time_network(narrow) for narrow in networks] for _ in range(self.rounds)]
        measured = [min(column) for column in zip(*times, strict=True)]
        self.scale, self.overhead = fit_correction(sums, measured)
        self.ready = self.built = True
        self.save()

    # -- the cache file --------------------------------------------------------------------------------------
    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"key": self.key, "scale": self.scale, "overhead_ms": self.overhead,
                                                 "entries": self.entries}, indent=0, sort_keys=True))

    def load(self) -> bool:
        """Read the cached table; False when there is none (or one of another key, which is rebuilt)."""
        if not self.path.is_file():
            return False
        try:
            content = json.loads(self.path.read_text())
        except (ValueError, UnicodeDecodeError):
            return False
        if (not isinstance(content, dict) or content.get("key") != json.loads(json.dumps(self.key))
                or not {"entries", "scale", "overhead_ms"} <= content.keys()):
            return False
        self.entries = dict(content["entries"])
        self.scale, self.overhead = float(content["scale"]), float(content["overhead_ms"])
        self.ready = True
        return True

    def load_or_build(self) -> "LatencyTable":
        if not self.load():
            self.build()
        return self

    def describe(self) -> str:
        return (f"{self.net.arch} at {self.input_shape}, batch {self.batch_size}, {self.threads} threads on "
                f"{self.key['device']} (torch {self.key['torch']}): {len(self.entries)} layers, network = "
                f"{self.scale:.3f} x layers + {self.overhead:.3f} ms; {self.path}")


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(scale, offset)`` of ``y = scale * x + offset``; scale 1 and the median offset when the x
    hardly differ or the slope comes out non-positive."""
    mx, my = statistics.fmean(x), statistics.fmean(y)
    var = sum((a - mx) ** 2 for a in x)
    if var > 1e-12 * max(1.0, mx * mx):
        scale = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / var
        if scale > 0:
            return scale, my - scale * mx
    return 1.0, statistics.median(b - a for a, b in zip(x, y, strict=True))


def fit_correction(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """``(scale, overhead)`` mapping layer sums ``x`` to measured whole networks ``y``: an offset alone (scale 1, the
    median gap) or a least-squares line, whichever has the smaller leave-one-out median relative error (the offset
    on ties)."""
    def offset(xs, ys):
        return 1.0, statistics.median(b - a for a, b in zip(xs, ys, strict=True))

    def loo_error(model) -> float:
        errors = []
        for i in range(len(x)):
            scale, shift = model(x[:i] + x[i + 1:], y[:i] + y[i + 1:])
            errors.append(abs(scale * x[i] + shift - y[i]) / y[i])
        return statistics.median(errors)

    x, y = list(x), list(y)
    if len(x) < 3:
        return offset(x, y)
    return min((offset, fit_line), key=loo_error)(x, y)
