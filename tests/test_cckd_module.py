"""KDModule with the criteria of conf/loss/: which parameters train, the teacher embedding decision, loss
options, saved settings."""
import inspect

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from lightning_modules.kd import KDModule
from netcompress.core import ConfigError
from netcompress.losses.cckd import CCKDLoss
from netcompress.losses.correlation import correlation_congruence_loss, correlation_matrix
from netcompress.losses.kd import KDLoss
from netcompress.networks.lenet import LeNet5, lenet5_half
from netcompress.networks.teacher import FrozenTeacher


def make_loss(name: str = "cckd", **overrides):
    """``conf/loss/<name>.yaml`` with ``loss.<key>=<value>`` overrides, instantiated as run.py does."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"loss={name}", *(f"loss.{k}={'null' if v is None else v}"
                                                             for k, v in overrides.items())])
    return instantiate(cfg.loss)


def make_module(name: str = "cckd", **loss):
    loss = make_loss(name, **{**({"beta": 1.0} if name == "cckd" else {}), **loss})
    torch.manual_seed(0)
    return KDModule(lenet5_half(), FrozenTeacher(LeNet5()), optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                      loss=loss)


def batch(n=16):
    torch.manual_seed(1)
    return torch.randn(n, 1, 32, 32), torch.arange(n) % 10


@pytest.mark.parametrize("train_teacher_embedding", [False, True])
def test_gradients_reach_student_and_embeddings_never_teacher_backbone(train_teacher_embedding):
    module = make_module(train_teacher_embedding=train_teacher_embedding)
    module.train()
    assert not module.teacher.training  # FrozenTeacher stays in eval mode under .train()
    out = module.losses(*batch())
    assert set(out) >= {"loss_ce", "loss_kd", "loss_cc"}
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.parameters())
    assert all(p.grad.abs().sum() > 0 for p in module.criterion.student_embed.parameters())
    assert all(p.grad is None for p in module.teacher.parameters())
    assert (module.criterion.teacher_embed.weight.grad is not None) == train_teacher_embedding
    trained = {id(p) for p in module.trainable_parameters()}
    assert not trained & {id(p) for p in module.teacher.parameters()}
    assert (id(module.criterion.teacher_embed.weight) in trained) == train_teacher_embedding


def test_one_optimizer_step_changes_student_not_teacher():
    module = make_module()
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    embed_before = module.criterion.teacher_embed.weight.clone()
    student_before = [p.clone() for p in module.net.parameters()]
    optimizer = module.configure_optimizers()
    module.losses(*batch())["loss"].backward()
    optimizer.step()
    assert all(torch.equal(v, module.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert torch.equal(embed_before, module.criterion.teacher_embed.weight)
    assert all(not torch.equal(a, b) for a, b in zip(student_before, module.net.parameters(), strict=False))


def test_kd_is_the_same_module_without_embeddings():
    module = make_module("kd")
    assert isinstance(module.criterion, KDLoss) and not list(module.criterion.parameters())
    out = module.losses(*batch())
    assert "loss_cc" not in out
    expected = 0.1 * out["loss_ce"].item() + 0.9 * out["loss_kd"].item()
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_total_loss_is_the_weighted_sum():
    module = make_module(ce_weight=0.3, kd_weight=0.7, beta=2.0, temperature=2.0)
    out = module.losses(*batch())
    expected = 0.3 * out["loss_ce"] + 0.7 * out["loss_kd"] + 2.0 * out["loss_cc"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_frozen_orthogonal_teacher_embedding_keeps_teacher_correlations():
    # embed_dim 128 >= teacher features 120: the frozen embedding is an isometry, C_t is the teacher's own.
    module = make_module(kernel="bilinear")
    feats = torch.randn(8, 120)
    emb = module.criterion.teacher_embed(feats)
    assert torch.allclose(emb @ emb.t(), feats @ feats.t(), atol=1e-4)


def fit_embeddings(student_embed, teacher_embed, fs, ft, steps=300, **kw):
    params = [p for m in (student_embed, teacher_embed) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = correlation_congruence_loss(student_embed(fs), teacher_embed(ft), **kw)
        loss.backward()
        optimizer.step()
    return loss.item()


def test_cc_cannot_be_zeroed_by_collapse_with_frozen_teacher_embedding():
    module = make_module()
    torch.manual_seed(2)
    fs, ft = torch.randn(32, 60), torch.randn(32, 120)
    c_t = correlation_matrix(F.normalize(module.criterion.teacher_embed(ft), dim=1))
    # A collapsed student (every embedding the same direction) makes C_s constant: the loss is then at least
    # the variance of C_t's entries, far from zero.
    collapsed = torch.ones(32, 128)
    collapse_loss = correlation_congruence_loss(collapsed, module.criterion.teacher_embed(ft)).item()
    assert collapse_loss >= c_t.var(unbiased=False).item() > 1e-3
    # Training the student embedding lowers the loss below any collapse, and C_s keeps its structure.
    start = correlation_congruence_loss(module.criterion.student_embed(fs), module.criterion.teacher_embed(ft)).item()
    final = fit_embeddings(module.criterion.student_embed, module.criterion.teacher_embed, fs, ft)
    assert final < min(start, collapse_loss) / 3
    c_s = correlation_matrix(F.normalize(module.criterion.student_embed(fs), dim=1))
    assert c_s.var().item() > 0.5 * c_t.var().item()


@pytest.mark.parametrize("variant, normalize", [("repdistiller", False), ("paper", True)])
@pytest.mark.parametrize("train_teacher_embedding", [False, True])
def test_degenerate_student_zeroes_cc_only_if_teacher_embedding_trains(variant, normalize,
                                                                       train_teacher_embedding):
    # A student that learned nothing (the same features for every sample). With the default frozen teacher
    # embedding its CC stays high. If the teacher embedding trains (torchdistill, RepDistiller), the optimizer
    # collapses the teacher embeddings onto the student's: CC goes to ~0 and the student learned nothing.
    module = make_module(train_teacher_embedding=train_teacher_embedding, variant=variant,
                         normalize=normalize, embed_dim=8)
    torch.manual_seed(3)
    fs, ft = torch.randn(1, 60).expand(32, 60), torch.randn(32, 120)
    spread_before = module.criterion.teacher_embed(ft).std(dim=0).mean().item()
    kw = {"variant": variant, "normalize": normalize}
    embeds = module.criterion.student_embed, module.criterion.teacher_embed
    start = correlation_congruence_loss(embeds[0](fs), embeds[1](ft), **kw).item()
    final = fit_embeddings(*embeds, fs, ft, steps=400, **kw)
    emb_t = module.criterion.teacher_embed(ft).detach()
    if not train_teacher_embedding:
        assert final > 0.5 * start
        assert torch.allclose(emb_t.std(dim=0).mean(), torch.tensor(spread_before))
    else:
        assert final < 0.02 * start
        if normalize:  # every teacher embedding points the same way
            assert correlation_matrix(F.normalize(emb_t, dim=1)).var().item() < 1e-3
        else:
            assert emb_t.std(dim=0).mean().item() < 0.2 * spread_before


def test_bad_loss_options_name_the_key():
    with pytest.raises(ConfigError, match="loss.ce_weight"):
        make_module(ce_weight=-0.5)
    with pytest.raises(ConfigError, match="loss.reduction"):
        make_module(reduction="max")
    with pytest.raises(ConfigError, match="loss.kernel"):
        make_module(kernel="cosine")
    with pytest.raises(ConfigError, match="loss.embed_dim"):
        make_module(embed_dim=None)
    with pytest.raises(ConfigError, match="teacher"):
        KDModule(lenet5_half(), None, optimizer=torch.optim.SGD, loss=make_loss("kd"))
    with pytest.raises(ConfigError, match="loss: method=kd/cckd needs a distillation criterion"):
        KDModule(lenet5_half(), FrozenTeacher(LeNet5()), optimizer=torch.optim.SGD, loss=None)


@pytest.mark.parametrize("name", ["cckd", "kd", "cckd_torchdistill", "cckd_repdistiller"])
def test_yaml_is_the_one_source_of_defaults_and_saved_as_hparams(name):
    # Every weighted term is an init argument without a Python default: the YAML alone sets it ...
    signature = inspect.signature(CCKDLoss if name != "kd" else KDLoss).parameters
    assert [p for p, v in signature.items() if v.default is not inspect.Parameter.empty] == ["label_smoothing"]
    module = make_module(name, **({"beta": 0.5} if name == "cckd" else {}))
    # ... and the module saves the resolved criterion settings as hparams["loss"], plain values only.
    saved = module.hparams["loss"]
    own = yaml.safe_load(open(ROOT / "conf" / "loss" / f"{name}.yaml"))
    for key, value in own.items():
        if key not in ("defaults", "_partial_", "_target_", "beta"):
            assert saved[key] == value, key
    assert saved["_target_"] == own.get("_target_", "netcompress.losses.cckd.CCKDLoss")
    if name != "kd":
        assert (saved["student_dim"], saved["teacher_dim"]) == (60, 120)
        assert saved["beta"] == (0.5 if name == "cckd" else own["beta"])
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in saved.values())
