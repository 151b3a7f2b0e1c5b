"""The BatchNorm-statistics term (loss.bn, netcompress/losses/bn_statistics.py): hand-computed values, zero on a batch
that matches the running statistics, the moving average, hooks that never outlive a forward, the error on a teacher
without BatchNorm, and the term inside DAFL's module."""
import math
from functools import partial

import pytest
import torch
from torch import nn

from lightning_modules.dafl import GeneratorThenStudentModule
from netcompress.core import ConfigError
from netcompress.losses.bn_statistics import BatchNormStatistics, batch_statistics, batchnorm_layers
from netcompress.losses.dafl import DAFLLoss
from netcompress.networks.generator import DAFLGenerator
from netcompress.networks.lenet import LeNet5, lenet5_half
from netcompress.networks.teacher import FrozenTeacher

WEIGHTS = dict(oh=1.0, a=0.1, ie=5.0, log_base=10, temperature=1.0, activation="mean", global_ie=False,
               adversarial=0.0, bn=0.0, bn_momentum=0.0)


class TinyBNNet(nn.Module):
    """A classifier with two BatchNorms and the uniform interface (logits, features)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Conv2d(4, 6, 3, stride=2), nn.BatchNorm2d(6), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(6, num_classes)
        self.feature_dim = 6

    def forward(self, x, return_features=False):
        f = self.body(x)
        return (self.fc(f), f) if return_features else self.fc(f)


def test_term_is_the_norm_of_the_variance_gap_plus_the_norm_of_the_mean_gap():
    bn = nn.BatchNorm2d(2).eval()
    bn.running_mean.copy_(torch.tensor([0.5, -1.0]))
    bn.running_var.copy_(torch.tensor([2.0, 3.0]))
    # channel 0: 1, 3, 5, 7 (mean 4, biased variance 5); channel 1: 0, 0, 2, 2 (mean 1, variance 1)
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]], [[[5.0, 7.0]], [[2.0, 2.0]]]])
    stats = BatchNormStatistics()
    with stats.recording(nn.Sequential(bn)):
        bn(x)
    expected = math.sqrt((5 - 2) ** 2 + (1 - 3) ** 2) + math.sqrt((4 - 0.5) ** 2 + (1 + 1) ** 2)
    assert stats.loss().item() == pytest.approx(expected, rel=1e-6)
    assert not bn._forward_hooks   # the hook lived only inside recording()


def test_term_is_zero_when_the_batch_matches_the_running_statistics_and_sums_the_layers():
    torch.manual_seed(0)
    net = TinyBNNet().eval()
    x = torch.randn(8, 1, 12, 12)
    layers = batchnorm_layers(net)
    assert len(layers) == 2
    stats = BatchNormStatistics()
    with stats.recording(net):
        net(x)
    per_layer = [t.item() for t in stats.terms]
    assert len(per_layer) == 2 and all(t > 0.1 for t in per_layer)
    assert stats.loss().item() == pytest.approx(sum(per_layer))
    for layer in layers:   # the running statistics become this batch's, layer by layer (in eval
        seen = []                        # mode a layer's output, the next one's input, depends on its own)
        handle = layer.register_forward_hook(lambda m, i, o, seen=seen: seen.append(batch_statistics(i[0])))
        with torch.no_grad():
            net(x)
        handle.remove()
        layer.running_mean.copy_(seen[0][0])
        layer.running_var.copy_(seen[0][1])
    with stats.recording(net):
        net(x)
    assert stats.loss().item() == pytest.approx(0.0, abs=1e-5)


def test_moving_average_blends_past_batch_statistics_in():
    bn = nn.BatchNorm1d(1).eval()     # running mean 0, running variance 1
    stats = BatchNormStatistics(momentum=0.5)
    with stats.recording(bn):
        bn(torch.tensor([[2.0], [4.0]]))   # mean 3, variance 1: compared as it is (no history yet)
    assert stats.loss().item() == pytest.approx(0.0 + 3.0)
    stats.update_ema()
    with stats.recording(bn):
        bn(torch.tensor([[0.0], [2.0]]))   # mean 1, variance 1; blended with the history: mean 2, variance 1
    assert stats.loss().item() == pytest.approx(2.0)
    stats.update_ema()                     # history: mean 0.5 * 3 + 0.5 * 1 = 2
    assert stats.ema[0][0].item() == pytest.approx(2.0)


def make_module(teacher, bn=1.0, **loss):
    torch.manual_seed(0)
    return GeneratorThenStudentModule(
        net=lenet5_half(), teacher=FrozenTeacher(teacher), generator=DAFLGenerator(latent_dim=16, width=8),
        optimizer=partial(torch.optim.Adam, lr=0.002), generator_optimizer=partial(torch.optim.Adam, lr=0.02),
        loss=DAFLLoss(**{**WEIGHTS, "bn": bn, **loss}), batch_size=16, noise_seed=7, image_every_n_epochs=0)


def test_a_teacher_without_batchnorm_is_an_error_naming_loss_bn():
    with pytest.raises(ConfigError, match=r"loss.bn=1.0: .* LeNet5 has none.*loss.bn=0"):
        make_module(LeNet5())
    make_module(LeNet5(), bn=0.0)   # off: DAFL as it was


def test_module_adds_the_weighted_term_and_it_alone_moves_the_generator():
    module = make_module(TinyBNNet(), bn=2.0)
    out = module.losses(module.noise(0))
    assert out["loss_bn"].item() > 0
    off = make_module(TinyBNNet(), bn=0.0)
    off_out = off.losses(off.noise(0))   # the same networks and noise, without the term
    assert "loss_bn" not in off_out
    assert out["loss_generator"].item() == pytest.approx(off_out["loss_generator"].item() + 2.0 * out["loss_bn"].item(),
                                                         rel=1e-5)
    out["loss_bn"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.generator.parameters())
    assert all(p.grad is None for p in module.net.parameters())
    assert not any(m._forward_hooks for m in module.teacher.modules())
