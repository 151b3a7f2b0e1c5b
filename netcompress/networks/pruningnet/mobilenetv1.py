"""MobileNetV1 search space of MetaPruning: one output ratio per layer (the stem and the depthwise-separable
blocks); the last block is fixed at full width.

Known official bug (not reproduced by default): the official *evaluation* network reads the ratio of layer
i - 1 for layer i (``channel_scale[rngs[i-1]]``; layer 0 reads the last gene), so the retrained network is not
the one the search scored. ``MobileNetV1Narrow(..., official_offset_bug=True)`` rebuilds that shifted network
for users who must match the released models; its FLOPs then differ from the search's.
"""
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
    ratios_tensor,
    width,
)

IMAGENET = dict(stem_width=32, stem_stride=2, widths=(64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024),
                strides=(1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1))
SMALL = dict(stem_width=16, stem_stride=2, widths=(32, 64, 64, 128, 128), strides=(1, 2, 1, 2, 1))   # 32x32 inputs


def layer_widths(stem_width, widths, **_):
    return (stem_width,) + tuple(widths)


def gene_names(widths):
    return ["stem_out"] + [f"block{i + 1}_out" for i in range(len(widths) - 1)]   # the last block is fixed


class MobileNetV1PruningNet(PruningNet):
    arch = "mobilenetv1"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, stem_width: int = 32, stem_stride: int = 2,
                 widths=IMAGENET["widths"], strides=IMAGENET["strides"], hidden: int = 32, affine_bn: bool = True):
        kwargs = dict(num_classes=num_classes, in_channels=in_channels, stem_width=stem_width,
                      stem_stride=stem_stride, widths=tuple(widths), strides=tuple(strides))
        super().__init__(gene_names(widths), kwargs)
        base = layer_widths(stem_width, widths)
        self.stem = MetaConv2d(1, stem_width, in_channels, 3, stem_stride, hidden=hidden)
        # official: the stem and depthwise BNs are affine, the pointwise ones not (affine_bn=False: all non-affine)
        self.bns = nn.ModuleList([ChoiceBatchNorm2d.for_base(stem_width, affine_bn)])
        self.dw, self.pw, self.dw_bns = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, stride in enumerate(strides):
            self.dw.append(MetaConv2d(2, base[i], base[i], 3, stride, depthwise=True, hidden=hidden))
            self.dw_bns.append(ChoiceBatchNorm2d.for_base(base[i], affine_bn))
            self.pw.append(MetaConv2d(2, base[i + 1], base[i], 1, hidden=hidden))
            self.bns.append(ChoiceBatchNorm2d.for_base(base[i + 1]))
        self.base = base
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(base[-1], num_classes)
        self.feature_dim = base[-1]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        choices = list(self.encoding) + [MAX_CHOICE]
        c = choices[0]
        x = F.relu(self.bns[0](self.stem(x, ratios_tensor([c], x), width(self.base[0], c)), c))
        for i in range(len(self.dw)):
            cin, cout = choices[i], choices[i + 1]
            r = ratios_tensor([cin, cout], x)
            x = F.relu(self.dw_bns[i](self.dw[i](x, r, x.shape[1]), cin))
            x = F.relu(self.bns[i + 1](self.pw[i](x, r, width(self.base[i + 1], cout)), cout))
        features = self.pool(x)
        logits = self.fc(features)
        return (logits, features) if return_features else logits


class MobileNetV1Narrow(NarrowNet):
    def __init__(self, encoding, num_classes: int = 1000, in_channels: int = 3, stem_stride: int = 2,
                 strides=IMAGENET["strides"], official_offset_bug: bool = False, **arch):
        genes = list(encoding)
        if official_offset_bug:
            genes = [genes[i - 1] for i in range(len(genes))]
        base = layer_widths(**arch)
        ch = [width(b, c) for b, c in zip(base, genes + [MAX_CHOICE], strict=False)]
        layers = [conv_bn(in_channels, ch[0], 3, stem_stride)]
        for i, stride in enumerate(strides):
            layers += [conv_bn(ch[i], ch[i], 3, stride, groups=ch[i]), conv_bn(ch[i], ch[i + 1], 1)]
        super().__init__(nn.Sequential(*layers), ch[-1], num_classes, encoding)


MobileNetV1PruningNet.narrow_cls = MobileNetV1Narrow
