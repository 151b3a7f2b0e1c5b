"""The BatchNorm-statistics term of data-free synthesis (DeepInversion, Yin et al., CVPR 2020, Eq. 4; the form of
NVlabs/DeepInversion ``DeepInversionFeatureHook`` and zju-vipa/Fast-Datafree ``DeepInversionHook``).

For every BatchNorm layer l of the frozen teacher, with mu_l, sigma2_l the per-channel mean and (biased) variance of
the generated batch at that layer's *input* and the layer's running statistics:

    L_bn = sum_l ( ||sigma2_l - running_var_l||_2 + ||mu_l - running_mean_l||_2 )

(the Euclidean norms, not squared, summed over the layers, with no weight per layer: the official form).

``momentum`` (Fast-Datafree's ``bn_mmt``): with m > 0 the batch statistics are blended with an exponential moving
average of the statistics of past synthesized batches before they are compared: mu_l is replaced by
``(1 - m) mu_l + m ema_mu_l`` (the same for sigma2_l); ``update_ema()`` folds the last batch in
(``ema = m ema + (1 - m) last``, detached). The first batch, with no history, is compared as it is.

DDP: each process compares the statistics of its own generated batch (per-rank statistics, as DeepInversion and
Fast-Datafree do on several GPUs); the generator's gradients are then averaged by DDP. Per-rank statistics of a
per-rank batch are what the teacher's BatchNorms saw in training (each GPU normalized its own batch).

Hooks are registered only for the duration of a ``with stats.recording(teacher):`` block and removed when it exits
(also on an exception): nothing stays attached to the teacher between steps or across fits.
"""
import contextlib

import torch
from torch import nn

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batchnorm_layers(net: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``net`` that keep running statistics, in module order."""
    return [m for m in net.modules() if isinstance(m, BATCHNORMS) and m.running_mean is not None]


def batch_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of a BatchNorm input (N, C, ...), over every dim but the channels."""
    dims = [0, *range(2, x.dim())]
    return x.mean(dim=dims), x.var(dim=dims, unbiased=False)


def statistics_distance(mean, var, running_mean, running_var) -> torch.Tensor:
    """DeepInversion's per-layer distance: ||var - running_var||_2 + ||mean - running_mean||_2."""
    return torch.linalg.vector_norm(var - running_var.to(var.dtype)) + \
        torch.linalg.vector_norm(mean - running_mean.to(mean.dtype))


class BatchNormStatistics:
    """Records ``L_bn`` (module doc) while the teacher runs inside ``recording(teacher)``; ``loss()`` returns it.

    momentum: Fast-Datafree's moving average of past batch statistics (0: DeepInversion's plain form)."""

    def __init__(self, momentum: float = 0.0):
        self.momentum = momentum
        self.terms: list[torch.Tensor] = []
        self.last: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # layer index -> the last batch statistics
        self.ema: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @contextlib.contextmanager
    def recording(self, teacher: nn.Module):
        self.terms = []
        handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(batchnorm_layers(teacher))]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, index: int):
        def hook(layer, inputs, output):
            mean, var = batch_statistics(inputs[0])
            self.last[index] = (mean.detach(), var.detach())
            if self.momentum and index in self.ema:
                m, (ema_mean, ema_var) = self.momentum, (t.to(mean) for t in self.ema[index])
                mean, var = (1 - m) * mean + m * ema_mean, (1 - m) * var + m * ema_var
            self.terms.append(statistics_distance(mean, var, layer.running_mean, layer.running_var))
        return hook

    def loss(self) -> torch.Tensor:
        if not self.terms:
            raise RuntimeError("no BatchNorm statistics recorded: run the teacher inside recording(teacher)")
        return torch.stack(self.terms).sum()

    @torch.no_grad()
    def update_ema(self):
        """Fold the last recorded batch statistics into the moving average (a no-op with momentum 0)."""
        if not self.momentum:
            return
        m = self.momentum
        for index, (mean, var) in self.last.items():
            old = self.ema.get(index)
            self.ema[index] = (mean, var) if old is None else \
                (m * old[0].to(mean) + (1 - m) * mean, m * old[1].to(var) + (1 - m) * var)

    def state_dict(self) -> dict:
        return {"ema": {k: (v[0].cpu(), v[1].cpu()) for k, v in self.ema.items()}}

    def load_state_dict(self, state: dict):
        """The moving average of a checkpoint (moved to the statistics' device when next used)."""
        self.ema = {int(k): tuple(v) for k, v in state.get("ema", {}).items()}
