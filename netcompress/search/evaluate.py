"""Scoring a candidate encoding with the trained PruningNet: recalibrate BatchNorm, then top-1 accuracy.

As in the official search: reset the BN running statistics, run training batches in train mode (no gradient) to
recompute them for this encoding, then measure top-1 on a validation split held out of the training set.

Two recalibrations (``search.bn_recalibration``):

* ``cumulative`` (ours, default): a cumulative average (momentum=None) over one fixed set of calibration batches,
  the same for every candidate, so a score does not depend on which candidates were scored before it.
* ``official``: running statistics with momentum 0.1 over the first ``calib_batches`` of a reshuffled training
  loader, as liuzechun/MetaPruning's ``infer`` (each candidate sees other batches).

Under DDP each rank scores a slice of the population and the accuracies are gathered.
"""
import itertools
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _take(batches: Iterable, limit: int | None) -> Iterable:
    return batches if not limit else itertools.islice(batches, limit)


@torch.no_grad()
def recalibrate_bn(net: nn.Module, batches: Iterable, device="cpu", momentum: float | None = None) -> None:
    """Recompute every BatchNorm's running statistics over ``batches`` (images, or (images, labels) pairs):
    a cumulative average (``momentum=None``) or exponential averaging with ``momentum`` from reset statistics."""
    bns = [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = momentum
    was_training = net.training
    net.train()
    for x in batches:
        net((x[0] if isinstance(x, (tuple, list)) else x).to(device))
    net.train(was_training)
    for bn, momentum in zip(bns, momenta, strict=False):
        bn.momentum = momentum


@torch.no_grad()
def top1(net: nn.Module, batches: Iterable, device="cpu") -> float:
    was_training = net.training
    net.eval()
    correct = total = 0
    for x, y, *_ in batches:
        x, y = x.to(device), y.to(device)
        correct += (net(x).argmax(1) == y).sum().item()
        total += len(y)
    net.train(was_training)
    return correct / max(total, 1)


class CandidateEvaluator:
    """``evaluator(encodings) -> accuracies`` for a PruningNet; splits the work across DDP ranks when running.

    ``calib`` and ``val`` are re-iterable (lists or DataLoaders) yielding the same batches every time; batches are
    moved to ``device`` one at a time, so ImageNet-sized splits stream from their loaders.
    """

    def __init__(self, pruningnet, calib, val, device="cpu", calib_batches: int | None = None,
                 val_batches: int | None = None, momentum: float | None = None):
        self.net = pruningnet.to(device)
        self.calib, self.val, self.device = calib, val, device
        self.calib_batches, self.val_batches, self.momentum = calib_batches, val_batches, momentum

    def score(self, encoding) -> float:
        self.net.set_encoding(encoding)
        recalibrate_bn(self.net, _take(self.calib, self.calib_batches), self.device, self.momentum)
        return top1(self.net, _take(self.val, self.val_batches), self.device)

    def __call__(self, encodings: list) -> list[float]:
        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        mine = {i: self.score(encodings[i]) for i in range(rank, len(encodings), world)}
        if world > 1:
            parts = [None] * world
            dist.all_gather_object(parts, mine)
            for part in parts:
                mine.update(part)
        return [mine[i] for i in range(len(encodings))]
