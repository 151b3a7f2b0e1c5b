"""KD and correlation-congruence losses against values computed by hand on tiny inputs."""
import math

import pytest
import torch

from netcompress.losses.correlation import correlation_congruence_loss, correlation_matrix
from netcompress.losses.kd import kd_loss

E = math.exp(-0.8)  # exp(-2 gamma) with gamma = 0.4


def test_kd_hand_computed():
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    # row 1: p_t = (3/4, 1/4), p_s = (1/2, 1/2); row 2: identical -> 0; batchmean over 2 rows.
    kl_row1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(student, teacher).item() == pytest.approx(kl_row1 / 2, rel=1e-6)
    # T = 2: p_t = softmax(ln3 / 2, 0) = (sqrt3, 1) / (sqrt3 + 1); scaled by T^2 = 4.
    s3 = math.sqrt(3.0)
    pt = (s3 / (s3 + 1), 1 / (s3 + 1))
    kl_t2 = pt[0] * math.log(pt[0] / 0.5) + pt[1] * math.log(pt[1] / 0.5)
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(4 * kl_t2 / 2, rel=1e-6)
    assert kd_loss(teacher, teacher, temperature=4.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_gradient_only_through_student():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    kd_loss(student, teacher, 3.0).backward()
    assert student.grad.abs().sum() > 0


# Student: two orthogonal unit vectors; teacher: one direction twice. Gram: C_s = I, C_t = all ones.
S = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
T = torch.tensor([[1.0, 0.0], [1.0, 0.0]])


@pytest.mark.parametrize("kernel, expected", [
    ("bilinear", 2 * 1.0**2 / 4),                               # off-diagonals 0 vs 1
    ("rbf_taylor", 2 * (E * (1 + 0.8 + 0.32) - E) ** 2 / 4),    # k(1) = e^-.8 (1 + .8 + .32), k(0) = e^-.8
    ("rbf", 2 * (1 - E) ** 2 / 4),                              # ||x-y||^2 = 2 -> exp(-0.8); same -> 1
    ("mmd", 0.0),                                               # every row has feature mean 1/2
])
def test_cc_kernels_hand_computed(kernel, expected):
    loss = correlation_congruence_loss(S, T, kernel=kernel).item()
    assert loss == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_cc_normalization_and_mmd_kernel():
    # Unnormalized rows: normalize=True makes the scale irrelevant for the bilinear kernel.
    assert correlation_congruence_loss(3 * S, 5 * T, kernel="bilinear").item() == pytest.approx(0.5)
    # naive MMD, no normalization: means of rows s = (1, 3) and t = (0, 0): C_s off-diagonal |1 - 3| = 2.
    s = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    t = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert correlation_matrix(s, "mmd").tolist() == [[0.0, 2.0], [2.0, 0.0]]
    assert correlation_congruence_loss(s, t, kernel="mmd", normalize=False).item() == pytest.approx(2 * 4 / 4)


def test_taylor_order_hand_computed():
    # order 1: k(x.y) = e^-.8 (1 + .8 x.y); order 3 adds (.8)^3 / 6 (x.y)^3.
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # unit rows, x0.x1 = 0.6
    c1 = correlation_matrix(x, "rbf_taylor", 0.4, order=1)
    c3 = correlation_matrix(x, "rbf_taylor", 0.4, order=3)
    assert c1[0, 1].item() == pytest.approx(E * (1 + 0.8 * 0.6))
    assert c3[0, 1].item() == pytest.approx(E * (1 + 0.48 + 0.32 * 0.36 + 0.512 / 6 * 0.216))
    assert c3[0, 0].item() == pytest.approx(E * (1 + 0.8 + 0.32 + 0.512 / 6))


def test_taylor_series_approaches_exact_rbf():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
    exact = correlation_matrix(x, "rbf", gamma=0.4)
    errors = [(correlation_matrix(x, "rbf_taylor", 0.4, order=p) - exact).abs().max().item()
              for p in range(8)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
    # The remainder is bounded by exp(-2g) sum_{p > P} (2g)^p / p! (|x.y| <= 1).
    for p, err in enumerate(errors):
        bound = E * sum(0.8**q / math.factorial(q) for q in range(p + 1, 30))
        assert err <= bound + 1e-6
    assert errors[-1] < 1e-5


def test_torchdistill_variant_is_unsquared_frobenius_over_n2():
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # C_s = [[4, 0], [0, 1]]
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # C_t = ones; diff = [[3, -1], [-1, 0]]
    loss = correlation_congruence_loss(s, t, kernel="bilinear", normalize=False, variant="torchdistill")
    assert loss.item() == pytest.approx(math.sqrt(11.0) / 4)
    paper = correlation_congruence_loss(s, t, kernel="bilinear", normalize=False)
    assert paper.item() == pytest.approx(11.0 / 4)


def test_reduction_sum_is_n2_times_mean():
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # bilinear, unnormalized: sum of squared diffs 9 + 1 + 1 + 0 = 11
    total = correlation_congruence_loss(s, t, kernel="bilinear", normalize=False, reduction="sum")
    assert total.item() == pytest.approx(11.0)
    frobenius = correlation_congruence_loss(s, t, kernel="bilinear", normalize=False, variant="torchdistill",
                                            reduction="sum")
    assert frobenius.item() == pytest.approx(math.sqrt(11.0))


def test_repdistiller_variant_consecutive_products():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    # |s - t| = [[1, 2], [2, 3], [1, 1]]; row products: 1*2 + 2*3 = 8, 2*1 + 3*1 = 5; mean 6.5.
    loss = correlation_congruence_loss(s, t, normalize=False, variant="repdistiller")
    assert loss.item() == pytest.approx(6.5)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="loss.kernel"):
        correlation_congruence_loss(S, T, kernel="cosine")
    with pytest.raises(ValueError, match="loss.reduction"):
        correlation_congruence_loss(S, T, reduction="batchmean")
    with pytest.raises(ValueError, match="loss.variant"):
        correlation_congruence_loss(S, T, variant="other")
    with pytest.raises(ValueError, match="embed_dim"):
        correlation_congruence_loss(S, torch.ones(2, 3))


def test_rbf_gradient_finite_on_identical_rows():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0]], requires_grad=True)
    correlation_congruence_loss(x, torch.randn(2, 2), kernel="rbf").backward()
    assert torch.isfinite(x.grad).all()
