"""Numerical parity with the installed ``torchdistill`` package: ``loss=cckd_torchdistill`` is torchdistill's
ImageNet CCKD criterion (configs/sample/ilsvrc2012/cckd/resnet18_from_resnet50.yaml: KDLoss(T 1, alpha 0) x 1.0 +
CCKDLoss(gaussian, gamma 0.4, max_p 2, batchmean) x 0.003 on Linear4CCKD embeddings) and ``loss=kd`` is its
KDLoss: same value and same gradients (to 1e-6) on random logits/features, with the criterion built from our YAML."""
import pytest
import torch
from helpers import compose_config
from hydra.utils import instantiate

torchdistill_losses = pytest.importorskip(
    "torchdistill.losses.mid_level",
    reason="torchdistill is not installed (pip install torchdistill; the test extra installs it): the parity of "
           "loss=cckd_torchdistill / loss=kd with torchdistill's CCKDLoss / KDLoss cannot be checked")

# torchdistill's published recipe, as the constants of its YAML (not read from our config: this is the reference)
TD_KD = {"temperature": 1.0, "alpha": 0, "reduction": "batchmean"}
TD_KD_FACTOR, TD_CC_FACTOR = 1.0, 0.003
TD_CC = {"kernel_config": {"type": "gaussian", "gamma": 0.4, "max_p": 2}, "reduction": "batchmean"}
S_DIM, T_DIM, N, CLASSES = 24, 40, 16, 10


def our_loss(name: str, tmp_path, **dims):
    loss = instantiate(compose_config([f"loss={name}"], tmp_path).loss)
    return (loss(**dims) if dims else loss).double()


def io(path: str, tensor: torch.Tensor) -> dict:
    return {path: {"output": tensor}}


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, CLASSES, generator=g, dtype=torch.float64) * 3,
            torch.randn(N, CLASSES, generator=g, dtype=torch.float64) * 3,
            torch.randint(0, CLASSES, (N,), generator=g),
            torch.randn(N, S_DIM, generator=g, dtype=torch.float64),
            torch.randn(N, T_DIM, generator=g, dtype=torch.float64))


def test_cckd_torchdistill_yaml_is_torchdistill_recipe(tmp_path):
    ours = our_loss("cckd_torchdistill", tmp_path, student_dim=S_DIM, teacher_dim=T_DIM)
    # Linear4CCKD: nn.Linear(in, 128, bias=True) with default init; the teacher's trains (requires_grad: True)
    for linear, dim in ((ours.student_embed, S_DIM), (ours.teacher_embed, T_DIM)):
        assert isinstance(linear, torch.nn.Linear) and linear.bias is not None
        assert (linear.in_features, linear.out_features) == (dim, 128)
        assert all(p.requires_grad for p in linear.parameters())
    torch.manual_seed(3)
    seeded = our_loss("cckd_torchdistill", tmp_path, student_dim=S_DIM, teacher_dim=T_DIM)
    torch.manual_seed(3)
    default_init = torch.nn.Linear(S_DIM, 128), torch.nn.Linear(T_DIM, 128)   # nn.Linear's own init, in order
    assert torch.equal(seeded.student_embed.weight.float(), default_init[0].weight)
    assert torch.equal(seeded.teacher_embed.weight.float(), default_init[1].weight)

    logits, t_logits, y, f_s, f_t = inputs()
    leaves = [logits.requires_grad_(), f_s.requires_grad_(), *ours.student_embed.parameters(),
              *ours.teacher_embed.parameters()]
    total, terms = ours(logits, t_logits, y, f_s, f_t)
    assert set(terms) == {"ce", "kd", "cc"}
    our_grads = torch.autograd.grad(total, leaves)

    kd = torchdistill_losses.KDLoss(".", "output", ".", "output", **TD_KD)
    cc = torchdistill_losses.CCKDLoss("linear", "linear", **TD_CC)
    e_s, e_t = ours.student_embed(f_s), ours.teacher_embed(f_t)
    reference = TD_KD_FACTOR * kd(io(".", logits), io(".", t_logits), y) + \
        TD_CC_FACTOR * cc(io("linear", e_s), io("linear", e_t))
    ref_grads = torch.autograd.grad(reference, leaves)
    assert total.item() == pytest.approx(reference.item(), abs=1e-6, rel=1e-6)
    assert terms["cc"].item() > 1.0  # unnormalized features: the CC term is not negligible, so the check has teeth
    for ours_g, ref_g in zip(our_grads, ref_grads, strict=True):
        assert ours_g.abs().sum() > 0
        torch.testing.assert_close(ours_g, ref_g, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kernel, td_kernel", [("bilinear", {"type": "bilinear"}),
                                               ("rbf_taylor", {"type": "gaussian", "gamma": 0.7, "max_p": 3})])
def test_cc_term_matches_torchdistill_for_its_kernels(tmp_path, kernel, td_kernel):
    ours = our_loss("cckd_torchdistill", tmp_path, student_dim=S_DIM, teacher_dim=T_DIM)
    ours.kernel, ours.gamma, ours.order = kernel, td_kernel.get("gamma", 0.4), td_kernel.get("max_p", 2)
    *_, f_s, f_t = inputs(1)
    e_s, e_t = ours.embed(f_s.requires_grad_(), f_t)
    _, terms = ours(*inputs(1)[:3], f_s, f_t)
    reference = torchdistill_losses.CCKDLoss("l", "l", td_kernel, "batchmean")(io("l", e_s), io("l", e_t))
    assert terms["cc"].item() == pytest.approx(reference.item(), rel=1e-6)
    torch.testing.assert_close(torch.autograd.grad(terms["cc"], f_s)[0], torch.autograd.grad(reference, f_s)[0],
                               atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("ce, kd_w, temperature", [(None, None, None), (0.5, 0.5, 2.0), (0.0, 1.0, 1.0)])
def test_kd_matches_torchdistill_kdloss(tmp_path, ce, kd_w, temperature):
    ours = our_loss("kd", tmp_path)   # loss=kd defaults first (CE 0.1, KD 0.9, T 4), then other settings
    if ce is not None:
        ours.ce_weight, ours.kd_weight, ours.temperature = ce, kd_w, temperature
    logits, t_logits, y, *_ = inputs(2)
    logits.requires_grad_()
    total, terms = ours(logits, t_logits, y)
    reference = torchdistill_losses.KDLoss(".", "output", ".", "output", temperature=ours.temperature,
                                           alpha=ours.ce_weight, beta=ours.kd_weight,
                                           reduction="batchmean")(io(".", logits), io(".", t_logits), y)
    assert total.item() == pytest.approx(reference.item(), abs=1e-6, rel=1e-6)
    torch.testing.assert_close(torch.autograd.grad(total, logits)[0], torch.autograd.grad(reference, logits)[0],
                               atol=1e-6, rtol=1e-6)
    assert ours.config == {"ce_weight": ours.ce_weight, "kd_weight": ours.kd_weight,
                           "temperature": ours.temperature, "label_smoothing": 0.0}
