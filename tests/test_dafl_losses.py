"""DAFL's loss terms, its criterion and the generator against values computed by hand."""
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from netcompress.core import ConfigError
from netcompress.losses.dafl import DAFLLoss, activation_loss, information_entropy_loss, one_hot_loss, student_loss
from netcompress.networks.generator import DAFLGenerator

CONF = Path(__file__).resolve().parents[1] / "conf"


def criterion(**overrides) -> DAFLLoss:
    """conf/loss/dafl.yaml, the one source of the defaults, with ``overrides``."""
    values = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(CONF / "loss" / "dafl.yaml"), overrides))
    assert values.pop("_target_") == "netcompress.losses.dafl.DAFLLoss"
    return DAFLLoss(**values)

LN3, LN4 = math.log(3.0), math.log(4.0)


def test_one_hot_loss_is_cross_entropy_against_the_teachers_argmax():
    # row 1: softmax [1/4, 3/4], argmax 1 -> -ln 3/4; row 2: softmax [4/5, 1/5], argmax 0 -> -ln 4/5
    logits = torch.tensor([[0.0, LN3], [LN4, 0.0]])
    expected = (-math.log(0.75) - math.log(0.8)) / 2
    assert one_hot_loss(logits).item() == pytest.approx(expected, rel=1e-6)


def test_activation_loss_is_minus_mean_absolute_feature_or_the_papers_l1_norm():
    features = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    assert activation_loss(features).item() == pytest.approx(-(1 + 2 + 3 + 4) / 4)           # official: mean
    assert activation_loss(features, "sum").item() == pytest.approx(-((1 + 2) + (3 + 4)) / 2)  # paper Eq. 3


def test_information_entropy_of_a_balanced_batch_is_minus_log_of_the_number_of_classes():
    # softmax rows [1/4, 3/4] and [3/4, 1/4]: batch mean [1/2, 1/2], sum p log10 p = log10(1/2)
    logits = torch.tensor([[0.0, LN3], [LN3, 0.0]])
    assert information_entropy_loss(logits, log_base=10).item() == pytest.approx(-0.30103, abs=1e-5)
    assert information_entropy_loss(logits, log_base=None).item() == pytest.approx(-math.log(2), rel=1e-6)
    assert information_entropy_loss(logits, log_base=2).item() == pytest.approx(-1.0, rel=1e-6)


def test_information_entropy_of_an_unbalanced_batch():
    # both rows [1/4, 3/4]: 1/4 log10 1/4 + 3/4 log10 3/4 = -0.150515 - 0.093704
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])
    assert information_entropy_loss(logits, log_base=10).item() == pytest.approx(-0.244219, abs=1e-6)


def test_information_entropy_stays_finite_when_a_class_probability_underflows_to_zero():
    logits = torch.tensor([[200.0, -200.0]], requires_grad=True)  # softmax [1, 0] exactly in float32
    loss = information_entropy_loss(logits)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_student_loss_is_kl_teacher_to_student_and_never_reaches_the_teacher():
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)     # q = [1/2, 1/2]
    teacher = torch.tensor([[0.0, LN3]], requires_grad=True)     # p = [1/4, 3/4]
    loss = student_loss(student, teacher)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)   # 0.130812
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    # temperature 2: p = softmax([0, ln3 / 2]) = [1, sqrt 3] / (1 + sqrt 3), scaled by T^2 = 4
    p1 = 1 / (1 + math.sqrt(3))
    p2 = 1 - p1
    expected_t2 = 4 * (p1 * math.log(p1 / 0.5) + p2 * math.log(p2 / 0.5))  # 0.145385
    assert student_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected_t2, rel=1e-5)


def test_criterion_weights_the_three_terms_and_adds_the_student_loss():
    logits = torch.tensor([[0.0, LN3], [LN4, 0.0]])
    features = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    student = torch.zeros(2, 2)                                     # q = [1/2, 1/2] for both images
    total, terms = criterion(oh=2.0, a=0.5, ie=3.0)(logits, features, student)
    p = torch.tensor([(0.25 + 0.8) / 2, (0.75 + 0.2) / 2])
    ie = float((p * p.log10()).sum())
    oh = (-math.log(0.75) - math.log(0.8)) / 2
    kl = ((0.25 * math.log(0.5) + 0.75 * math.log(1.5)) + (0.8 * math.log(1.6) + 0.2 * math.log(0.4))) / 2
    assert terms["oh"].item() == pytest.approx(oh, rel=1e-6)
    assert terms["a"].item() == pytest.approx(-2.5)
    assert terms["ie"].item() == pytest.approx(ie, rel=1e-5)
    assert terms["generator"].item() == pytest.approx(2 * oh + 0.5 * -2.5 + 3 * ie, rel=1e-5)
    assert terms["student"].item() == pytest.approx(kl, rel=1e-5)
    assert total.item() == pytest.approx(2 * oh + 0.5 * -2.5 + 3 * ie + kl, rel=1e-5)
    # the paper's activation (L1 norm per image): -(3 + 7) / 2 = -5
    _, terms = criterion(activation="sum")(logits, features, student)
    assert terms["a"].item() == pytest.approx(-5.0)
    # entropy on other (e.g. globally gathered) logits: the balanced pair gives log10(1/2)
    _, terms = criterion()(logits, features, student, entropy_logits=torch.tensor([[0.0, LN3], [LN3, 0.0]]))
    assert terms["ie"].item() == pytest.approx(-0.30103, abs=1e-5)


def test_criterion_defaults_are_the_official_mnist_weights_from_the_yaml_only():
    loss = instantiate(OmegaConf.load(CONF / "loss" / "dafl.yaml"))
    assert isinstance(loss, DAFLLoss)
    assert loss.config == dict(oh=1.0, a=0.1, ie=5.0, log_base=10, temperature=1.0, activation="mean",
                               global_ie=False, adversarial=0.0, bn=0.0, bn_momentum=0.0)
    with pytest.raises(TypeError):   # no second set of defaults in Python
        DAFLLoss()


@pytest.mark.parametrize("key, value, match", [
    ("a", -1.0, "loss.oh=1.0, loss.a=-1.0"), ("temperature", 0.0, "loss.temperature=0.0"),
    ("log_base", 1.0, "loss.log_base=1.0"), ("activation", "max", "loss.activation=max"),
])
def test_criterion_rejects_bad_settings_naming_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        criterion(**{key: value})


def test_generator_shapes_size_and_output_normalization():
    g = DAFLGenerator(latent_dim=100, image_size=32, channels=1)
    # fc 100 -> 128*8*8 (+bias), BN 128, conv 128->128, BN 128, conv 128->64, BN 64, conv 64->1; last BN not affine
    expected = (100 * 8192 + 8192) + 2 * 128 + (128 * 128 * 9 + 128) + 2 * 128 + (128 * 64 * 9 + 64) + 2 * 64 \
        + (64 * 9 + 1)
    assert sum(p.numel() for p in g.parameters()) == expected == 1_049_985
    x = g(torch.randn(16, 100))
    assert x.shape == (16, 1, 32, 32)
    # the final non-affine BatchNorm standardizes the batch (train mode)
    assert x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert x.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-2)
    assert DAFLGenerator(latent_dim=8, image_size=28, channels=3, width=16)(torch.randn(4, 8)).shape == (4, 3, 28, 28)


def test_generator_inner_bn_eps_option_reproduces_the_official_quirk():
    official = DAFLGenerator(inner_bn_eps=0.8)
    bns = [m for m in official.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [bn.eps for bn in bns] == [1e-5, 0.8, 0.8, 1e-5]   # only the two BNs after convolutions
    assert [bn.affine for bn in bns] == [True, True, True, False]
    assert all(bn.eps == 1e-5 for bn in DAFLGenerator().modules() if isinstance(bn, torch.nn.BatchNorm2d))
    with pytest.raises(ValueError, match="multiple of 4"):
        DAFLGenerator(image_size=30)


def test_pixel_output_maps_tanh_to_the_normalized_pixel_range_of_real_inputs():
    g = DAFLGenerator(latent_dim=8, width=8, output="pixels", pixel_mean=0.1307, pixel_std=0.3081)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and not m.affine for m in g.modules())
    x = g(torch.randn(32, 8))
    low, high = (0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081   # black and white pixels after normalization
    assert low - 1e-5 <= x.min().item() and x.max().item() <= high + 1e-5
    assert g.block2[-1](torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)).flatten().tolist() == \
        pytest.approx([low, (0.5 - 0.1307) / 0.3081, high])
    rgb = DAFLGenerator(latent_dim=8, width=8, channels=3, output="pixels", pixel_mean=[0.5, 0.4, 0.3],
                        pixel_std=[0.2, 0.2, 0.2])
    assert rgb.block2[-1](torch.zeros(1, 3, 1, 1)).flatten().tolist() == pytest.approx([0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="pixel_mean"):
        DAFLGenerator(output="pixels")
    with pytest.raises(ValueError, match="generator.output=tanh"):
        DAFLGenerator(output="tanh")


def test_adversarial_option_subtracts_the_mean_absolute_logit_gap():
    teacher = torch.tensor([[0.0, LN3], [LN4, 0.0]])
    student = torch.tensor([[1.0, LN3], [LN4, -2.0]])   # |gap|: 1, 0, 0, 2 -> mean 0.75
    features = torch.ones(2, 3)
    plain, plain_terms = criterion().generator_loss(teacher, features)
    loss, terms = criterion(adversarial=0.5).generator_loss(teacher, features, adversarial_logits=student)
    assert terms["adv"].item() == pytest.approx(0.75)
    assert loss.item() == pytest.approx(plain.item() - 0.5 * 0.75, rel=1e-6)
    assert "adv" not in plain_terms
    with pytest.raises(ValueError, match="adversarial_logits"):
        criterion(adversarial=0.5).generator_loss(teacher, features)
