"""Building blocks of MetaPruning's PruningNet (Liu et al., ICCV 2019).

A PruningNet holds no convolution weights of its own: every convolution has a small weight generator
``Linear(k, H) -> ReLU -> Linear(H, numel of the largest weight)`` that reads the block's channel ratios
(e.g. ``[mid, in, out]``) and outputs the weight of the widest layer, which is then cropped (prefix slicing) to
the channels of the sampled encoding. Each convolution is followed by one of 31 BatchNorms (non-affine, except
the official MBv1 stem and depthwise ones), chosen by the channel choice, so every width keeps its own statistics.

An *encoding* is a list of choice ids (0..30), one per gene; the gene layout is defined by each architecture.
"""
import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

RATIOS = tuple((10 + 3 * i) / 100 for i in range(31))   # 0.10, 0.13, ..., 1.00
NUM_CHOICES = len(RATIOS)
MAX_CHOICE = NUM_CHOICES - 1


def width(base: int, choice: int) -> int:
    """Channels of a layer with ``base`` channels at ratio choice ``choice`` (int(base * r), as the official code)."""
    return max(1, int(base * RATIOS[choice]))


class MetaConv2d(nn.Module):
    """A convolution whose weight is generated from ratios and cropped to the sampled channels."""

    def __init__(self, num_ratios: int, max_out: int, max_in: int, kernel_size: int, stride: int = 1,
                 depthwise: bool = False, hidden: int = 32):
        super().__init__()
        self.shape = (max_out, 1 if depthwise else max_in, kernel_size, kernel_size)
        self.stride, self.padding, self.depthwise = stride, kernel_size // 2, depthwise
        self.generator = nn.Sequential(nn.Linear(num_ratios, hidden), nn.ReLU(),
                                       nn.Linear(hidden, math.prod(self.shape)))

    def weight(self, ratios: torch.Tensor, out_channels: int, in_channels: int) -> torch.Tensor:
        full = self.generator(ratios).view(self.shape)
        return full[:out_channels] if self.depthwise else full[:out_channels, :in_channels]

    def forward(self, x: torch.Tensor, ratios: torch.Tensor, out_channels: int) -> torch.Tensor:
        in_channels = x.shape[1]
        if self.depthwise and out_channels != in_channels:
            raise ValueError(f"depthwise conv: out_channels={out_channels} != in_channels={in_channels}")
        return F.conv2d(x, self.weight(ratios, out_channels, in_channels), stride=self.stride,
                        padding=self.padding, groups=in_channels if self.depthwise else 1)


def exclude_from_weight_decay(*modules: nn.Module) -> None:
    """Tags the parameters of ``modules`` so that ``official_weight_decay`` leaves them without weight decay."""
    for module in modules:
        for p in module.parameters():
            p.no_weight_decay = True


def official_weight_decay(params, optimizer):
    """A ``_partial_`` optimizer wrapper: ``optimizer`` (itself a partial, e.g. SGD with ``weight_decay``) gets two
    parameter groups, the tagged parameters (``exclude_from_weight_decay``) with ``weight_decay=0``.

    The official MetaPruning scripts decay only the parameters named ``fc``/``conv1``/``pwconv`` (MobileNets:
    not the depthwise and projection convs, nor BatchNorm; PruningNets: not the BatchNorms) or ``fc``/``conv``
    (ResNet: not BatchNorm, nor the downsample shortcut). The networks here tag exactly those."""
    params = list(params)
    decay = [p for p in params if not getattr(p, "no_weight_decay", False)]
    no_decay = [p for p in params if getattr(p, "no_weight_decay", False)]
    return optimizer([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])


class ChoiceBatchNorm2d(nn.ModuleList):
    """One BatchNorm per channel choice; ``widths[c]`` is the width normalized for choice ``c``. Non-affine by
    default (official MBv2 and ResNet); ``affine=True`` for the official MBv1 stem and depthwise BNs."""

    def __init__(self, widths: Sequence[int], affine: bool = False):
        super().__init__(nn.BatchNorm2d(w, affine=affine) for w in widths)
        self.batch_statistics = False   # eval mode normalizes with the batch's statistics (PruningNet.batch_statistics)
        exclude_from_weight_decay(self)

    @classmethod
    def for_base(cls, base: int, affine: bool = False) -> "ChoiceBatchNorm2d":
        return cls([width(base, c) for c in range(NUM_CHOICES)], affine)

    def forward(self, x: torch.Tensor, choice: int) -> torch.Tensor:
        bn = self[choice]
        if self.batch_statistics and not self.training:
            return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        return bn(x)


def ratios_tensor(choices: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """The generator input: the ratios of the given choices, on the device/dtype of ``like``."""
    return torch.tensor([RATIOS[c] for c in choices], device=like.device, dtype=like.dtype)


class PruningNet(nn.Module):
    """Base of the PruningNets: holds the current encoding and knows its narrow counterpart.

    ``forward(x, return_features=False)`` runs the network at ``self.encoding`` (set with ``set_encoding``;
    the full width by default), so a PruningNet keeps the uniform classifier interface of ``networks/``.
    Subclasses set ``arch`` (registry name), ``gene_names`` and ``arch_kwargs`` (what builds the narrow net).
    """

    arch: str = ""
    narrow_cls: type = None

    def __init__(self, gene_names: Sequence[str], arch_kwargs: dict):
        super().__init__()
        self.gene_names = list(gene_names)
        self.arch_kwargs = dict(arch_kwargs)
        self.encoding = self.full_encoding()

    @property
    def num_genes(self) -> int:
        return len(self.gene_names)

    def full_encoding(self) -> list:
        return [MAX_CHOICE] * self.num_genes

    def random_encoding(self, rng: random.Random) -> list:
        return [rng.randrange(NUM_CHOICES) for _ in range(self.num_genes)]

    def check_encoding(self, encoding: Sequence[int]) -> list:
        encoding = [int(c) for c in encoding]
        if len(encoding) != self.num_genes or not all(0 <= c < NUM_CHOICES for c in encoding):
            raise ValueError(f"{self.arch} encoding needs {self.num_genes} choice ids in 0..{MAX_CHOICE}, "
                             f"got {encoding}")
        return encoding

    def set_encoding(self, encoding: Sequence[int]) -> None:
        self.encoding = self.check_encoding(encoding)

    def batch_statistics(self, enabled: bool) -> None:
        """In eval mode, normalize with each batch's statistics instead of the running ones.

        The running statistics of a choice are averaged over every encoding that used it, so they fit no single
        network; the search recalibrates them per candidate. For a quick accuracy of one encoding (validation
        during PruningNet training) the batch statistics are the honest alternative.
        """
        for m in self.modules():
            if isinstance(m, ChoiceBatchNorm2d):
                m.batch_statistics = enabled

    def narrow(self, encoding: Sequence[int]) -> nn.Module:
        """The ordinary narrow network (plain convs, affine BN) of ``encoding``."""
        return self.narrow_cls(self.check_encoding(encoding), **self.arch_kwargs)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
            act: type | None = nn.ReLU) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ activation): the layer of the ordinary narrow networks."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_channels)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class NarrowNet(nn.Module):
    """Ordinary network built from an encoding: ``body`` -> global average pool -> ``fc``."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, encoding: Sequence[int]):
        super().__init__()
        self.encoding = list(encoding)
        self.body = body
        # official retraining decays neither BatchNorm nor depthwise convs (the subclasses tag the rest)
        exclude_from_weight_decay(*(m for m in body.modules() if isinstance(m, nn.BatchNorm2d)
                                    or (isinstance(m, nn.Conv2d) and m.groups > 1)))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = self.pool(self.body(x))
        logits = self.fc(features)
        return (logits, features) if return_features else logits
