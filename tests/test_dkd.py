"""DKD (loss=dkd) against values computed by hand, KD's decomposition, its warm-up, and KDModule's use of it."""
import math

import pytest
import torch
from helpers import compose_config
from hydra.utils import instantiate

from netcompress.losses.context import LossContext
from netcompress.losses.dkd import DKDLoss, dkd_terms
from netcompress.losses.kd import kd_loss


def two_samples():
    """Target class 0 both times; the student is uniform; teachers p = [1/2, 1/4, 1/4] and [1/5, 3/5, 1/5]."""
    student = torch.zeros(2, 3)
    teacher = torch.log(torch.tensor([[2.0, 1.0, 1.0], [1.0, 3.0, 1.0]]))
    return student, teacher, torch.tensor([0, 0])


def test_terms_equal_the_hand_computation():
    tckd, nckd = dkd_terms(*two_samples(), temperature=1.0)
    # TCKD: KL([1/2, 1/2] || [1/3, 2/3]) and KL([1/5, 4/5] || [1/3, 2/3]); NCKD: KL([1/2, 1/2] || [1/2, 1/2]) = 0
    # and KL([3/4, 1/4] || [1/2, 1/2])
    assert tckd.item() == pytest.approx((0.5 * math.log(1.5) + 0.5 * math.log(0.75)
                                         + 0.2 * math.log(0.6) + 0.8 * math.log(1.2)) / 2, rel=1e-5)
    assert nckd.item() == pytest.approx((0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2, rel=1e-5)


def test_kd_is_tckd_plus_weighted_nckd_per_sample():
    """The paper's Eq. 4 at T = 2: KD = TCKD + (1 - p_target^teacher) NCKD, sample by sample."""
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 5) * 3, torch.randn(6, 5) * 3, torch.randint(0, 5, (6,))
    for i in range(6):
        tckd, nckd = dkd_terms(s[i:i + 1], t[i:i + 1], y[i:i + 1], temperature=2.0)
        p_target = torch.softmax(t[i] / 2.0, dim=0)[y[i]]
        assert (tckd + (1 - p_target) * nckd).item() == pytest.approx(kd_loss(s[i:i + 1], t[i:i + 1], 2.0).item(),
                                                                     rel=1e-4)


def test_weights_and_warmup():
    s, t, y = two_samples()
    loss = DKDLoss(ce_weight=0.5, alpha=2.0, beta=3.0, temperature=1.0, warmup=4)
    tckd, nckd = dkd_terms(s, t, y, 1.0)
    ce = math.log(3)   # the uniform student
    for epoch, ramp in ((0, 0.25), (2, 0.75), (3, 1.0), (50, 1.0)):
        total, terms = loss(s, t, y, context=LossContext(epoch=epoch))
        assert set(terms) == {"ce", "tckd", "nckd"}
        assert total.item() == pytest.approx(0.5 * ce + ramp * (2 * tckd.item() + 3 * nckd.item()), rel=1e-5)
    assert loss(s, t, y)[0].item() == pytest.approx(loss(s, t, y, context=LossContext(epoch=0))[0].item())


def test_identical_outputs_distil_nothing_and_gradients_are_finite():
    torch.manual_seed(1)
    logits = torch.randn(4, 10, requires_grad=True)
    tckd, nckd = dkd_terms(logits, logits.detach().clone(), torch.randint(0, 10, (4,)), 4.0)
    assert abs(tckd.item()) < 1e-6 and abs(nckd.item()) < 1e-6
    tckd, nckd = dkd_terms(logits * 3, logits.detach(), torch.randint(0, 10, (4,)), 4.0)
    (tckd + nckd).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_bad_values_name_the_key():
    from netcompress.core import ConfigError
    with pytest.raises(ConfigError, match="loss.temperature"):
        DKDLoss(1.0, 1.0, 8.0, 0.0, 20)
    with pytest.raises(ConfigError, match="loss.beta"):
        DKDLoss(1.0, 1.0, -1.0, 4.0, 20)


@pytest.mark.parametrize("overrides", [["method=kd", "loss=dkd"],
                                       ["experiment=dkd_cifar100_resnet56_resnet20", "teacher.checkpoint=x.ckpt"]])
def test_composes_into_the_kd_module(overrides, tmp_path):
    cfg = compose_config(overrides, tmp_path)
    assert cfg.module._target_ == "lightning_modules.kd.KDModule"
    assert cfg.loss._target_ == "netcompress.losses.dkd.DKDLoss"
    if "loss=dkd" in overrides:   # the whole module, with the digits teacher and the dkd criterion
        cfg.teacher.checkpoint = None
        module = instantiate(cfg.module, _convert_="object")
        x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
        out = module.losses(x, y, LossContext(epoch=0))
        assert {"loss", "loss_ce", "loss_tckd", "loss_nckd"} <= set(out)
        assert module.hparams["loss"]["_target_"] == "netcompress.losses.dkd.DKDLoss"
    else:   # mdistiller's ResNet-56 -> ResNet-20 recipe
        assert (cfg.loss.beta, cfg.loss.temperature, cfg.loss.warmup, cfg.optimizer.lr) == (2.0, 4.0, 20, 0.05)
        assert list(cfg.scheduler.milestones) == [150, 180, 210] and cfg.trainer.max_epochs == 240
