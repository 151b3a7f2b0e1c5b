"""MobileNetV2 search space of MetaPruning: PruningNet and the narrow network of an encoding.

Genes: one output ratio for the stem and for each stage (shared by the stage's blocks so the shortcuts match),
then one mid (expansion) ratio per bottleneck. The last 1x1 conv and the classifier are not pruned. The first
stage's bottleneck has expansion 1 but keeps its 1x1 expansion conv, as in the official PruningNet. A residual
add joins a block's input and output only inside a stage (stride 1, one gene for both widths).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from netcompress.networks.pruningnet.meta import (
    ChoiceBatchNorm2d,
    MetaConv2d,
    NarrowNet,
    PruningNet,
    conv_bn,
    exclude_from_weight_decay,
    ratios_tensor,
    width,
)

# Official ImageNet space: 1.4x the standard widths (ratio 1.0 ~ MobileNetV2-1.4), stage repeats [1,1,2,3,4,3,3,1].
IMAGENET = dict(stem_width=44, stem_stride=2, stage_widths=(22, 33, 44, 88, 132, 224, 448),
                stage_repeats=(1, 2, 3, 4, 3, 3, 1), stage_strides=(1, 2, 2, 2, 1, 2, 1), expand=6,
                last_channels=1280)
# 32x32 inputs (digits, CIFAR): fewer and narrower blocks, 32 -> 4 pixels.
SMALL = dict(stem_width=16, stem_stride=2, stage_widths=(8, 16, 24, 32), stage_repeats=(1, 2, 2, 1),
             stage_strides=(1, 2, 2, 1), expand=6, last_channels=128)


@dataclass
class Block:
    inp: int        # base widths
    mid: int
    out: int
    stride: int
    in_gene: int
    mid_gene: int
    out_gene: int

    @property
    def residual(self) -> bool:
        """A shortcut only inside a stage, as in the official code: stride 1 and the input's channels chosen by the
        same gene as the output's (the stem's width may equal the first stage's, its gene does not)."""
        return self.stride == 1 and self.in_gene == self.out_gene and self.inp == self.out


def layout(stem_width, stage_widths, stage_repeats, stage_strides, expand, **_):
    """Gene names and the bottlenecks, shared by the PruningNet and the narrow network."""
    genes = ["stem_out"] + [f"stage{s + 1}_out" for s in range(len(stage_widths))]
    blocks, inp, in_gene = [], stem_width, 0
    for s, (out, repeats, stride) in enumerate(zip(stage_widths, stage_repeats, stage_strides, strict=False)):
        for r in range(repeats):
            genes.append(f"block{len(blocks) + 1}_mid")
            blocks.append(Block(inp, inp * (1 if s == 0 else expand), out, stride if r == 0 else 1,
                                in_gene, len(genes) - 1, s + 1))
            inp, in_gene = out, s + 1
    return genes, blocks


class MetaInvertedResidual(nn.Module):
    def __init__(self, b: Block, hidden: int):
        super().__init__()
        self.b = b
        self.conv1 = MetaConv2d(3, b.mid, b.inp, 1, hidden=hidden)
        self.conv2 = MetaConv2d(3, b.mid, b.mid, 3, b.stride, depthwise=True, hidden=hidden)
        self.conv3 = MetaConv2d(3, b.out, b.mid, 1, hidden=hidden)
        self.bn1, self.bn2 = ChoiceBatchNorm2d.for_base(b.mid), ChoiceBatchNorm2d.for_base(b.mid)
        self.bn3 = ChoiceBatchNorm2d.for_base(b.out)

    def forward(self, x, encoding):
        b = self.b
        m, i, o = encoding[b.mid_gene], encoding[b.in_gene], encoding[b.out_gene]
        r = ratios_tensor([m, i, o], x)
        out = F.relu6(self.bn1(self.conv1(x, r, width(b.mid, m)), m))
        out = F.relu6(self.bn2(self.conv2(out, r, width(b.mid, m)), m))
        out = self.bn3(self.conv3(out, r, width(b.out, o)), o)
        return out + x if b.residual else out


class MobileNetV2PruningNet(PruningNet):
    arch = "mobilenetv2"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, stem_width: int = 44, stem_stride: int = 2,
                 stage_widths=IMAGENET["stage_widths"], stage_repeats=IMAGENET["stage_repeats"],
                 stage_strides=IMAGENET["stage_strides"], expand: int = 6, last_channels: int = 1280,
                 hidden: int = 64, stem_hidden: int = 32):
        kwargs = dict(num_classes=num_classes, in_channels=in_channels, stem_width=stem_width,
                      stem_stride=stem_stride, stage_widths=tuple(stage_widths),
                      stage_repeats=tuple(stage_repeats), stage_strides=tuple(stage_strides), expand=expand,
                      last_channels=last_channels)
        genes, blocks = layout(**kwargs)
        super().__init__(genes, kwargs)
        self.stem = MetaConv2d(1, stem_width, in_channels, 3, stem_stride, hidden=stem_hidden)
        self.stem_bn = ChoiceBatchNorm2d.for_base(stem_width)
        self.blocks = nn.ModuleList(MetaInvertedResidual(b, hidden) for b in blocks)
        last_in = stage_widths[-1]
        self.last = MetaConv2d(1, last_channels, last_in, 1, hidden=stem_hidden)
        self.last_bn = ChoiceBatchNorm2d([last_channels] * len(self.stem_bn))   # chosen by the input ratio
        self.last_gene = len(stage_widths)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(last_channels, num_classes)
        self.feature_dim = last_channels

    def forward(self, x: torch.Tensor, return_features: bool = False):
        enc = self.encoding
        c = enc[0]
        x = F.relu6(self.stem_bn(self.stem(x, ratios_tensor([c], x), width(self.stem.shape[0], c)), c))
        for block in self.blocks:
            x = block(x, enc)
        c = enc[self.last_gene]
        x = F.relu6(self.last_bn(self.last(x, ratios_tensor([c], x), self.feature_dim), c))
        features = self.pool(x)
        logits = self.fc(features)
        return (logits, features) if return_features else logits


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, mid: int, out: int, stride: int, residual: bool):
        super().__init__()
        self.residual = residual
        self.conv = nn.Sequential(conv_bn(inp, mid, 1, act=nn.ReLU6),
                                  conv_bn(mid, mid, 3, stride, groups=mid, act=nn.ReLU6),
                                  conv_bn(mid, out, 1, act=None))
        exclude_from_weight_decay(self.conv[2])   # the projection conv: no decay in the official retraining

    def forward(self, x):
        out = self.conv(x)
        return out + x if self.residual else out


class MobileNetV2Narrow(NarrowNet):
    def __init__(self, encoding, num_classes: int = 1000, in_channels: int = 3, last_channels: int = 1280,
                 **arch):
        genes, blocks = layout(**arch)
        stem = width(arch["stem_width"], encoding[0])
        layers = [conv_bn(in_channels, stem, 3, arch["stem_stride"], act=nn.ReLU6)]
        for b in blocks:
            layers.append(InvertedResidual(width(b.inp, encoding[b.in_gene]), width(b.mid, encoding[b.mid_gene]),
                                           width(b.out, encoding[b.out_gene]), b.stride, b.residual))
        last_in = width(arch["stage_widths"][-1], encoding[len(arch["stage_widths"])])
        layers.append(conv_bn(last_in, last_channels, 1, act=nn.ReLU6))
        super().__init__(nn.Sequential(*layers), last_channels, num_classes, encoding)


MobileNetV2PruningNet.narrow_cls = MobileNetV2Narrow
