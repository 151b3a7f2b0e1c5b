"""PruningNets: generated weight shapes, cropping, BN choice, narrow networks and official sizes."""
import random

import pytest
import torch
from torch import nn

from netcompress.core import ConfigError
from netcompress.networks.flops import count_flops, count_params
from netcompress.networks.pruningnet import ARCHS, RATIOS, build_pruned, build_pruningnet, narrow_network, width
from netcompress.networks.pruningnet.meta import ChoiceBatchNorm2d, MetaConv2d


def test_ratio_list_and_widths():
    assert len(RATIOS) == 31 and RATIOS[0] == 0.10 and RATIOS[1] == 0.13 and RATIOS[-1] == 1.0
    assert width(44, 30) == 44 and width(44, 0) == 4 and width(192, 5) == int(192 * 0.25) == 48
    assert width(8, 0) == 1   # never zero channels


def test_meta_conv_generates_and_crops_the_largest_weight():
    torch.manual_seed(0)
    conv = MetaConv2d(3, max_out=12, max_in=8, kernel_size=3, hidden=16)
    ratios = torch.tensor([0.5, 0.25, 1.0])
    full = conv.generator(ratios).view(12, 8, 3, 3)
    assert conv.generator[0].in_features == 3 and conv.generator[2].out_features == 12 * 8 * 9
    w = conv.weight(ratios, out_channels=5, in_channels=2)
    assert w.shape == (5, 2, 3, 3) and torch.equal(w, full[:5, :2])   # prefix crop
    x = torch.randn(2, 2, 7, 7)
    assert torch.allclose(conv(x, ratios, 5), nn.functional.conv2d(x, full[:5, :2], padding=1), atol=1e-6)
    # depthwise: one filter per channel, groups = channels
    dw = MetaConv2d(3, 12, 12, 3, stride=2, depthwise=True)
    assert dw.shape == (12, 1, 3, 3) and dw(torch.randn(2, 7, 8, 8), ratios, 7).shape == (2, 7, 4, 4)
    # different ratios -> different weights
    assert not torch.equal(conv.weight(torch.tensor([0.1, 0.1, 0.1]), 5, 2), w)


def test_choice_batchnorm_uses_the_bn_of_the_choice():
    bn = ChoiceBatchNorm2d.for_base(40)
    assert len(bn) == 31 and all(not m.affine for m in bn)
    assert [m.num_features for m in bn][:3] == [4, 5, 6] and bn[30].num_features == 40
    x = torch.randn(8, width(40, 2), 3, 3) * 3 + 1
    bn.train()
    bn(x, 2)
    assert bn[2].num_batches_tracked == 1 and all(bn[c].num_batches_tracked == 0 for c in range(31) if c != 2)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_generated_weight_shapes_for_random_encodings_at_every_layer(arch):
    """Each generated conv weight of the PruningNet has the shape of the same conv in the narrow network."""
    torch.manual_seed(0)
    net = build_pruningnet(arch, "small", num_classes=10, in_channels=1)
    rng = random.Random(arch)
    for encoding in [net.full_encoding(), [0] * net.num_genes] + [net.random_encoding(rng) for _ in range(3)]:
        net.set_encoding(encoding)
        seen = []   # (weight shape, groups) of every F.conv2d call, in order
        original = torch.nn.functional.conv2d

        def spy(x, w, *args, groups=1, seen=seen, original=original, **kwargs):
            seen.append((tuple(w.shape), groups))
            return original(x, w, *args, groups=groups, **kwargs)

        torch.nn.functional.conv2d = spy
        try:
            logits = net(torch.randn(2, 1, 32, 32))
        finally:
            torch.nn.functional.conv2d = original
        narrow = net.narrow(encoding)
        expected = [(tuple(m.weight.shape), m.groups) for m in narrow.modules() if isinstance(m, nn.Conv2d)]
        order = sorted if arch == "resnet" else list   # ResNet's shortcut conv runs after conv3 in the PruningNet
        assert order(seen) == order(expected), encoding
        assert logits.shape == (2, 10) and narrow(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_bn_choice_follows_the_encoding():
    net = build_pruningnet("mobilenetv2", "small", 10, 1).train()
    encoding = [3] * net.num_genes
    encoding[0] = 7
    net.set_encoding(encoding)
    net(torch.randn(4, 1, 32, 32))
    assert net.stem_bn[7].num_batches_tracked == 1 and net.stem_bn[3].num_batches_tracked == 0
    block = net.blocks[0]   # its mid gene is 3, its output is stage 1 (gene 1 -> 3)
    assert block.bn1[3].num_batches_tracked == 1 and block.bn1[30].num_batches_tracked == 0
    assert net.last_bn[3].num_batches_tracked == 1   # the unpruned last conv picks its BN by its input ratio


def test_uniform_classifier_interface():
    net = build_pruningnet("resnet", "small", 10, 1)
    logits, features = net(torch.randn(3, 1, 32, 32), return_features=True)
    assert logits.shape == (3, 10) and features.shape == (3, net.feature_dim)
    narrow = net.narrow([5] * net.num_genes)
    logits, features = narrow(torch.randn(3, 1, 32, 32), return_features=True)
    assert features.shape == (3, narrow.feature_dim) == (3, 256)   # the last ResNet stage is never pruned


def test_narrow_network_is_really_narrow():
    net = build_pruningnet("mobilenetv2", "small", 10, 1)
    full = net.narrow(net.full_encoding())
    half = net.narrow([15] * net.num_genes)   # ratio 0.55
    assert count_params(half) < 0.5 * count_params(full)
    assert count_flops(half, (1, 32, 32)) < 0.5 * count_flops(full, (1, 32, 32))
    assert full.body[0][0].out_channels == 16 and half.body[0][0].out_channels == width(16, 15) == 8


@pytest.mark.parametrize("arch, params_m, flops_m", [("mobilenetv2", 242.0, 569.5), ("mobilenetv1", 106.3, 568.7),
                                                     ("resnet", 776.1, 4089.2)])
def test_official_pruningnet_sizes(arch, params_m, flops_m):
    """Built on the meta device: the ImageNet PruningNets have the official designs' parameter counts (MBv2 ~242M,
    MBv1 ~106M with its affine stem and depthwise BNs, ResNet-50 ~776M) and their full-width networks the standard
    FLOPs."""
    with torch.device("meta"):
        net = build_pruningnet(arch, "imagenet", num_classes=1000, in_channels=3)
        full = net.narrow(net.full_encoding())
    assert count_params(net) / 1e6 == pytest.approx(params_m, abs=0.1)
    assert count_flops(full, (3, 224, 224)) / 1e6 == pytest.approx(flops_m, abs=0.1)
    assert net.num_genes == {"mobilenetv2": 25, "mobilenetv1": 13, "resnet": 20}[arch]


def test_mbv1_official_offset_bug_is_opt_in():
    net = build_pruningnet("mobilenetv1", "small", 10, 1)
    encoding = [0, 30, 0, 30, 10]
    fixed = net.narrow(encoding)
    buggy = narrow_network("mobilenetv1", net.arch_kwargs, encoding, official_offset_bug=True)
    assert fixed.body[0][0].out_channels == width(16, 0) == 1    # layer 0 reads gene 0
    assert buggy.body[0][0].out_channels == width(16, 10) == 6   # the official evaluation reads gene -1
    assert fixed.body[2][0].out_channels == width(32, 30) == 32  # layer 1 reads gene 1
    assert buggy.body[2][0].out_channels == width(32, 0)         # the official evaluation reads gene 0


def test_build_pruned_from_hand_written_yaml(tmp_path):
    path = tmp_path / "enc.yaml"
    path.write_text("arch: mobilenetv1\nsize: small\nencoding: [1, 2, 3, 4, 5]\n")
    net = build_pruned(str(path), num_classes=7, in_channels=3)
    assert net.encoding == [1, 2, 3, 4, 5] and net(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ConfigError, match="model.encoding"):
        build_pruned(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="model.arch"):
        build_pruningnet("vgg")


def test_mbv2_shortcut_only_inside_a_stage_when_the_stem_is_as_wide_as_stage_one():
    """A stem as wide as the first stage: its width comes from another gene, so no shortcut joins them (the sum of
    two differently pruned widths would not add up); blocks after a stage's first keep theirs."""
    from netcompress.networks.pruningnet.mobilenetv2 import MobileNetV2PruningNet, layout

    space = dict(stem_width=16, stem_stride=1, stage_widths=(16, 24), stage_repeats=(2, 2), stage_strides=(1, 2),
                 expand=6, last_channels=64)
    _, blocks = layout(**space)
    assert [b.residual for b in blocks] == [False, True, False, True]
    net = MobileNetV2PruningNet(num_classes=10, in_channels=1, **space)
    encoding = [30] * net.num_genes
    encoding[0] = 5   # the stem pruned to 0.25, stage 1 kept whole
    net.set_encoding(encoding)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert net.narrow(encoding)(torch.randn(2, 1, 32, 32)).shape == (2, 10)
