"""FLOPs of the uniform-width baselines of the MetaPruning paper's ImageNet tables (docs/parity.md's table), counted
both ways: our default (torch.utils.flop_counter: conv/matmul multiply-adds) and the official cal_FLOPs (+ biases, BN,
ReLU, pooling; search.flops_counter=official), against the paper's numbers."""
import pytest
import torchvision

from netcompress.networks.flops import count_flops
from netcompress.networks.pruningnet import MAX_CHOICE, mobilenetv1, resnet


def mbv1(m):
    arch = dict(mobilenetv1.IMAGENET, stem_width=int(32 * m),
                widths=tuple(int(w * m) for w in mobilenetv1.IMAGENET["widths"]))
    return mobilenetv1.MobileNetV1Narrow([MAX_CHOICE] * 13, **arch)


def resnet50(m):
    arch = dict(resnet.IMAGENET, stem_width=int(64 * m),
                stage_widths=tuple(int(w * m) for w in resnet.IMAGENET["stage_widths"]))
    return resnet.ResNetNarrow([MAX_CHOICE] * 20, **arch)


# (network, torch counter, official counter, paper, how far the paper may be from ours; MFLOPs at 224x224). The
# paper rounds MobileNetV1 to 1M and ResNet-50 to 0.1G: our count rounds to its number. Its MobileNetV2 1.0x (313M)
# lies 4% above torchvision's network (the MobileNetV2 rows), as both counters count it; it gives no FLOPs for the
# narrower uniform MobileNetV2.
ROWS = [
    ("MobileNetV1 1.0x", lambda: mbv1(1.0), 568.74, 578.88, 569, 0.5),
    ("MobileNetV1 0.75x", lambda: mbv1(0.75), 325.40, 333.00, 325, 0.5),
    ("MobileNetV1 0.5x", lambda: mbv1(0.5), 149.50, 154.57, 149, 0.5),
    ("MobileNetV1 0.25x", lambda: mbv1(0.25), 41.03, 43.57, 41, 0.5),
    ("MobileNetV2 1.0x", lambda: torchvision.models.mobilenet_v2(width_mult=1.0), 300.77, 307.45, 313, 0.04 * 313),
    ("MobileNetV2 0.75x", lambda: torchvision.models.mobilenet_v2(width_mult=0.75), 209.07, 214.93, None, None),
    ("MobileNetV2 0.5x", lambda: torchvision.models.mobilenet_v2(width_mult=0.5), 97.13, 100.77, None, None),
    ("MobileNetV2 0.35x", lambda: torchvision.models.mobilenet_v2(width_mult=0.35), 59.29, 62.15, None, None),
    ("ResNet-50 1.0x", lambda: resnet50(1.0), 4089.18, 4106.30, 4100, 50),
    ("ResNet-50 0.75x", lambda: resnet50(0.75), 2322.68, 2335.51, 2300, 50),
    ("ResNet-50 0.5x", lambda: resnet50(0.5), 1052.31, 1060.87, 1100, 50),
]


@pytest.mark.parametrize("name, build, ours, official, paper, tolerance", ROWS, ids=[r[0] for r in ROWS])
def test_uniform_baselines_count_the_papers_flops(name, build, ours, official, paper, tolerance):
    net = build().eval()
    torch_count, official_count = count_flops(net, (3, 224, 224)) / 1e6, count_flops(
        net, (3, 224, 224), counter="official") / 1e6
    assert torch_count == pytest.approx(ours, abs=0.01) and official_count == pytest.approx(official, abs=0.01)
    assert official_count > torch_count   # the official counter adds biases, BN, ReLU and pooling
    if paper is not None:
        assert abs(torch_count - paper) <= tolerance, (name, torch_count, paper)
