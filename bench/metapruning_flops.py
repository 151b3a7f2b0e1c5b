"""FLOPs of the uniform-width baselines of the MetaPruning paper's ImageNet tables, counted both ways: our default
(torch.utils.flop_counter: conv/matmul multiply-adds) and the official cal_FLOPs (+ biases, BN, ReLU, pooling;
search.flops_counter=official), next to the paper's numbers. Prints the markdown table of docs/parity.md.

    python bench/metapruning_flops.py
"""
import sys
from pathlib import Path

import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netcompress.networks.flops import count_flops  # noqa: E402
from netcompress.networks.pruningnet import MAX_CHOICE, mobilenetv1, resnet  # noqa: E402

SHAPE = (3, 224, 224)


def mbv1(m):
    arch = dict(mobilenetv1.IMAGENET, stem_width=int(32 * m),
                widths=tuple(int(w * m) for w in mobilenetv1.IMAGENET["widths"]))
    return mobilenetv1.MobileNetV1Narrow([MAX_CHOICE] * 13, **arch)


def resnet50(m):
    arch = dict(resnet.IMAGENET, stem_width=int(64 * m),
                stage_widths=tuple(int(w * m) for w in resnet.IMAGENET["stage_widths"]))
    return resnet.ResNetNarrow([MAX_CHOICE] * 20, **arch)


ROWS = [  # (network, builder, paper's FLOPs in M for the uniform baseline row)
    ("MobileNetV1 1.0x", lambda: mbv1(1.0), 569), ("MobileNetV1 0.75x", lambda: mbv1(0.75), 325),
    ("MobileNetV1 0.5x", lambda: mbv1(0.5), 149), ("MobileNetV1 0.25x", lambda: mbv1(0.25), 41),
    ("MobileNetV2 1.0x (torchvision)", lambda: torchvision.models.mobilenet_v2(width_mult=1.0), 313),
    ("MobileNetV2 0.75x (torchvision)", lambda: torchvision.models.mobilenet_v2(width_mult=0.75), None),
    ("MobileNetV2 0.5x (torchvision)", lambda: torchvision.models.mobilenet_v2(width_mult=0.5), None),
    ("MobileNetV2 0.35x (torchvision)", lambda: torchvision.models.mobilenet_v2(width_mult=0.35), None),
    ("ResNet-50 1.0x", lambda: resnet50(1.0), 4100), ("ResNet-50 0.75x", lambda: resnet50(0.75), 2300),
    ("ResNet-50 0.5x", lambda: resnet50(0.5), 1100),
]


def main():
    print("| uniform baseline (224x224) | torch counter (MFLOPs) | official cal_FLOPs (MFLOPs) | paper (MFLOPs) |")
    print("|---|---|---|---|")
    for name, build, paper in ROWS:
        net = build()
        torch_count, official = count_flops(net, SHAPE), count_flops(net, SHAPE, counter="official")
        print(f"| {name} | {torch_count / 1e6:.1f} | {official / 1e6:.1f} | {paper if paper else '-'} |", flush=True)


if __name__ == "__main__":
    main()
