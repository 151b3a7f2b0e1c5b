"""ResNet-50 search space of MetaPruning (bottleneck ResNets).

Genes: the output ratio of the stem and of stages 1..n-1 (shared by a stage's blocks; the last stage is fixed
at full width), then one mid ratio per bottleneck. The first block of each stage has a generated, cropped 1x1
downsample conv on its shortcut.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from netcompress.networks.pruningnet.meta import (
    MAX_CHOICE,
    ChoiceBatchNorm2d,
    MetaConv2d,
    NarrowNet,
    PruningNet,
    conv_bn,
    exclude_from_weight_decay,
    ratios_tensor,
    width,
)

IMAGENET = dict(stem_width=64, stem_kernel=7, stem_stride=2, stem_pool=True, stage_widths=(256, 512, 1024, 2048),
                stage_repeats=(3, 4, 6, 3), stage_strides=(1, 2, 2, 2))
SMALL = dict(stem_width=16, stem_kernel=3, stem_stride=2, stem_pool=False, stage_widths=(32, 64, 128, 256),
             stage_repeats=(1, 1, 1, 1), stage_strides=(1, 2, 2, 1))   # 32x32 inputs
FIXED = None   # gene id of the last stage's output: always full width


@dataclass
class Block:
    inp: int
    mid: int
    out: int
    stride: int
    downsample: bool
    in_gene: int
    mid_gene: int
    out_gene: int


def layout(stage_widths, stage_repeats, stage_strides, stem_width, **_):
    n = len(stage_widths)
    genes = ["stem_out"] + [f"stage{s + 1}_out" for s in range(n - 1)]
    blocks, inp, in_gene = [], stem_width, 0
    for s, (out, repeats, stride) in enumerate(zip(stage_widths, stage_repeats, stage_strides, strict=False)):
        out_gene = s + 1 if s < n - 1 else FIXED
        for r in range(repeats):
            genes.append(f"block{len(blocks) + 1}_mid")
            blocks.append(Block(inp, out // 4, out, stride if r == 0 else 1, r == 0, in_gene, len(genes) - 1,
                                out_gene))
            inp, in_gene = out, out_gene
    return genes, blocks


def choice(encoding, gene):
    return MAX_CHOICE if gene is FIXED else encoding[gene]


class MetaBottleneck(nn.Module):
    def __init__(self, b: Block, hidden: int):
        super().__init__()
        self.b = b
        self.conv1 = MetaConv2d(3, b.mid, b.inp, 1, hidden=hidden)
        self.conv2 = MetaConv2d(3, b.mid, b.mid, 3, b.stride, hidden=hidden)
        self.conv3 = MetaConv2d(3, b.out, b.mid, 1, hidden=hidden)
        self.bn1, self.bn2 = ChoiceBatchNorm2d.for_base(b.mid), ChoiceBatchNorm2d.for_base(b.mid)
        self.bn3 = ChoiceBatchNorm2d.for_base(b.out)
        if b.downsample:
            self.down = MetaConv2d(3, b.out, b.inp, 1, b.stride, hidden=hidden)
            self.down_bn = ChoiceBatchNorm2d.for_base(b.out)

    def forward(self, x, encoding):
        b = self.b
        m, i, o = encoding[b.mid_gene], choice(encoding, b.in_gene), choice(encoding, b.out_gene)
        r = ratios_tensor([m, i, o], x)
        out = F.relu(self.bn1(self.conv1(x, r, width(b.mid, m)), m))
        out = F.relu(self.bn2(self.conv2(out, r, width(b.mid, m)), m))
        out = self.bn3(self.conv3(out, r, width(b.out, o)), o)
        shortcut = self.down_bn(self.down(x, r, width(b.out, o)), o) if b.downsample else x
        return F.relu(out + shortcut)


class ResNetPruningNet(PruningNet):
    arch = "resnet"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, stem_width: int = 64, stem_kernel: int = 7,
                 stem_stride: int = 2, stem_pool: bool = True, stage_widths=IMAGENET["stage_widths"],
                 stage_repeats=IMAGENET["stage_repeats"], stage_strides=IMAGENET["stage_strides"],
                 hidden: int = 32):
        kwargs = dict(num_classes=num_classes, in_channels=in_channels, stem_width=stem_width,
                      stem_kernel=stem_kernel, stem_stride=stem_stride, stem_pool=stem_pool,
                      stage_widths=tuple(stage_widths), stage_repeats=tuple(stage_repeats),
                      stage_strides=tuple(stage_strides))
        genes, blocks = layout(**kwargs)
        super().__init__(genes, kwargs)
        self.stem = MetaConv2d(1, stem_width, in_channels, stem_kernel, stem_stride, hidden=hidden)
        self.stem_bn = ChoiceBatchNorm2d.for_base(stem_width)
        self.stem_pool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
        self.blocks = nn.ModuleList(MetaBottleneck(b, hidden) for b in blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(stage_widths[-1], num_classes)
        self.feature_dim = stage_widths[-1]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        enc = self.encoding
        c = enc[0]
        x = F.relu(self.stem_bn(self.stem(x, ratios_tensor([c], x), width(self.stem.shape[0], c)), c))
        x = self.stem_pool(x)
        for block in self.blocks:
            x = block(x, enc)
        features = self.pool(x)
        logits = self.fc(features)
        return (logits, features) if return_features else logits


class Bottleneck(nn.Module):
    def __init__(self, inp: int, mid: int, out: int, stride: int, downsample: bool):
        super().__init__()
        self.conv = nn.Sequential(conv_bn(inp, mid, 1), conv_bn(mid, mid, 3, stride), conv_bn(mid, out, 1, act=None))
        self.shortcut = conv_bn(inp, out, 1, stride, act=None) if downsample else nn.Identity()
        exclude_from_weight_decay(self.shortcut)   # official retraining decays only 'conv'/'fc' (not downsample)

    def forward(self, x):
        return F.relu(self.conv(x) + self.shortcut(x))


class ResNetNarrow(NarrowNet):
    def __init__(self, encoding, num_classes: int = 1000, in_channels: int = 3, **arch):
        genes, blocks = layout(**arch)
        stem = width(arch["stem_width"], encoding[0])
        layers = [conv_bn(in_channels, stem, arch["stem_kernel"], arch["stem_stride"])]
        if arch["stem_pool"]:
            layers.append(nn.MaxPool2d(3, 2, 1))
        for b in blocks:
            layers.append(Bottleneck(width(b.inp, choice(encoding, b.in_gene)), width(b.mid, encoding[b.mid_gene]),
                                     width(b.out, choice(encoding, b.out_gene)), b.stride, b.downsample))
        super().__init__(nn.Sequential(*layers), arch["stage_widths"][-1], num_classes, encoding)


ResNetPruningNet.narrow_cls = ResNetNarrow
