"""ResNets for 32x32 inputs.

* ``resnet18``/``resnet34``: the 3x3-stem, 64-channel, no-maxpool style used by DAFL (512-d features, avgpool 4).
* ``resnet20/32/56/110``: He et al.'s CIFAR ResNets (16/32/64 channels, 6n+2 layers; 1x1-conv projection
  shortcuts as in RepDistiller/CRD, whose CC benchmark the CCKD recipes target).
"""
import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage, widths, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, in_planes = [], widths[0]
        for i, (n, planes) in enumerate(zip(blocks_per_stage, widths, strict=False)):
            for j in range(n):
                layers.append(BasicBlock(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_planes, num_classes)
        self.feature_dim = in_planes

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = self.pool(self.layers(self.stem(x)))
        logits = self.fc(features)
        return (logits, features) if return_features else logits


def resnet18(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels)


def resnet34(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet([3, 4, 6, 3], [64, 128, 256, 512], num_classes, in_channels)


def he_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    if (depth - 2) % 6:
        raise ValueError(f"model.depth={depth}: CIFAR ResNets have depth 6n+2 (20, 32, 44, 56, 110)")
    n = (depth - 2) // 6
    return CifarResNet([n, n, n], [16, 32, 64], num_classes, in_channels)
