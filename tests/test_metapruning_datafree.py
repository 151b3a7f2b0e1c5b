"""MetaPruning with no training image (method=metapruning_datafree, search.data=synthetic): the PruningNet learns
from the frozen teacher on synthesized images, one encoding per KD step; the search scores candidates on the images
stage 1 saved, without any data loader; the chain runs from the recipes."""
import json

import lightning as L
import pytest
import torch
import yaml
from helpers import FAST, compose_config, run_config
from hydra.utils import instantiate

from datamodules.base import ClassificationDataModule
from datamodules.data_free import DataFreeDataModule
from datamodules.digits import DigitsDataModule
from lightning_modules.pruningnet import DataFreePruningNetModule
from netcompress.callbacks import SaveSyntheticImages
from netcompress.core import ConfigError
from netcompress.networks.lenet import LeNet5
from netcompress.search.evaluate import CandidateEvaluator
from netcompress.stages.search import load_pruningnet

TINY = ["module.global_batch_size=16", "module.generator_steps=1", "module.student_steps=2", "module.warmup_epochs=0",
        "module.image_every_n_epochs=0"]
TINY_SEARCH = ["search.population=4", "search.generations=2", "search.parents=2", "search.mutations=2",
               "search.crossovers=2", "search.calib_batches=1", "search.calib_batch_size=16"]


def tiny_module(tmp_path):
    cfg = compose_config(["experiment=metapruning_datafree", *TINY], tmp_path)
    torch.manual_seed(0)
    return instantiate(cfg.module, teacher=LeNet5()), cfg   # an untrained teacher: the cached one is not needed


@pytest.mark.e2e
def test_the_pruningnet_learns_from_the_teacher_one_encoding_per_kd_step(tmp_path):
    module, cfg = tiny_module(tmp_path)
    assert isinstance(module, DataFreePruningNetModule) and module.student_steps == 2
    net = {k: v.detach().clone() for k, v in module.net.named_parameters()}
    teacher = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    encodings, set_encoding = [], module.net.set_encoding
    module.net.set_encoding = lambda e: (encodings.append(list(e)), set_encoding(e))
    path = tmp_path / "synthetic_images.pt"
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                        callbacks=[SaveSyntheticImages(str(path), held_images=20, calib_images=8)])
    trainer.fit(module, datamodule=DataFreeDataModule(DigitsDataModule(batch_size=16, holdout=180), 2))

    full = module.net.full_encoding()
    steps = [e for e in encodings if e != full]   # validation runs at full width
    assert steps == [module.sample_encoding(s) for s in range(4)]   # 2 iterations x 2 KD steps, each its own
    assert len({tuple(e) for e in steps}) == 4
    changed = [k for k, v in module.net.named_parameters() if not torch.equal(net[k], v)]
    assert len(changed) > len(net) // 2, changed
    assert all(torch.equal(v, module.teacher.state_dict()[k]) for k, v in teacher.items())
    saved = torch.load(path)
    assert saved["calib"].shape == (8, 1, 32, 32) and saved["held"].shape == (20, 1, 32, 32)
    assert torch.allclose(saved["held_logits"], module.teacher(saved["held"]), atol=1e-5)
    pool = module.pool[:module.pool_count]
    assert not any(torch.equal(h, c) for h in saved["held"] for c in pool)   # images no KD step trained on


def write_images(path, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.save({"calib": torch.randn(n, 1, 32, 32, generator=g), "held": torch.randn(n, 1, 32, 32, generator=g),
                "held_logits": torch.randn(n, 10, generator=g)}, path)


@pytest.fixture
def pruningnet_ckpt(tmp_path):
    """A PruningNet state dict beside the images file its run would have written (<run>/checkpoints/x.ckpt)."""
    cfg = compose_config(["experiment=metapruning_digits"], tmp_path)
    torch.manual_seed(0)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(instantiate(cfg.model).state_dict(), path)
    return path


@pytest.mark.e2e
def test_the_synthetic_search_reads_no_data_set_and_scores_agreement_with_the_teacher(tmp_path, pruningnet_ckpt,
                                                                                     monkeypatch):
    write_images(pruningnet_ckpt.parents[1] / "synthetic_images.pt")   # the default search.images
    monkeypatch.setattr(ClassificationDataModule, "setup", lambda *a, **k: pytest.fail("the search read a data set"))
    out = tmp_path / "search"
    metrics = run_config(["experiment=metapruning_datafree_search", f"search.pruningnet_ckpt={pruningnet_ckpt}",
                          "data=mnist", "data.root=/no/such/folder", *TINY_SEARCH, "logger=csv"], out)
    top = yaml.safe_load((out / "top_encodings.yaml").read_text())
    assert top["budget"]["max_flops"] == pytest.approx(0.1 * top["budget"]["full_flops"])
    # the score by hand: recalibrate on the 16 calibration images, top-1 against the teacher's argmax on the held set
    cfg = compose_config(["experiment=metapruning_datafree_search", f"search.pruningnet_ckpt={pruningnet_ckpt}"],
                         tmp_path / "x")
    saved = torch.load(pruningnet_ckpt.parents[1] / "synthetic_images.pt")
    evaluator = CandidateEvaluator(load_pruningnet(cfg), [saved["calib"][:16]],
                                   [(saved["held"], saved["held_logits"].argmax(1))])
    best = top["top"][0]
    assert evaluator([best["encoding"]])[0] == pytest.approx(best["val_acc"], abs=1e-6)
    assert metrics["search/best_acc"] == pytest.approx(best["val_acc"], abs=1e-6)
    assert json.loads((out / "search_state.json").read_text())["generation"] == 2


def test_a_missing_images_file_and_an_unknown_search_data_are_config_errors(tmp_path, pruningnet_ckpt):
    base = ["experiment=metapruning_datafree_search", f"search.pruningnet_ckpt={pruningnet_ckpt}", *TINY_SEARCH]
    with pytest.raises(ConfigError, match=r"search.images=null: .*run/synthetic_images.pt does not exist"):
        run_config(base, tmp_path / "a")
    with pytest.raises(ConfigError, match="search.images=/no/file.pt: .*does not exist"):
        run_config([*base, "search.images=/no/file.pt"], tmp_path / "b")
    bad = tmp_path / "bad.pt"
    torch.save({"images": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match="not a file of synthesized images"):
        run_config([*base, f"search.images={bad}"], tmp_path / "c")
    with pytest.raises(ConfigError, match="search.data=imagenet: choose 'real'"):
        run_config([*base, "search.data=imagenet"], tmp_path / "d")


@pytest.mark.e2e
def test_the_three_recipes_chain_with_no_training_image(tmp_path):
    """The user's path, in-process: stage 1 writes the images, stage 2 reads them, stage 3 trains what it found."""
    train = run_config(["experiment=metapruning_datafree", *FAST, *TINY, "trainer.max_epochs=1",
                        "datamodule.iterations_per_epoch=2", "callbacks.synthetic_images.held_images=32",
                        "callbacks.synthetic_images.calib_images=16", "+trainer.limit_val_batches=1",
                        "+trainer.limit_test_batches=1", "logger=csv"], tmp_path / "train")
    assert "test/acc" in train and (tmp_path / "train" / "synthetic_images.pt").is_file()
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    run_config(["experiment=metapruning_datafree_search", f"search.pruningnet_ckpt={ckpt}", *TINY_SEARCH,
                "logger=csv"], tmp_path / "search")
    retrain = run_config(["experiment=metapruning_datafree_retrain",
                          f"model.encoding={tmp_path / 'search' / 'top_encodings.yaml'}", *FAST, *TINY,
                          "trainer.max_epochs=1", "datamodule.iterations_per_epoch=2", "+trainer.limit_val_batches=1",
                          "+trainer.limit_test_batches=1", "logger=csv"], tmp_path / "retrain")
    assert 0 <= retrain["test/acc"] <= 1 and retrain["model/flops"] <= 0.1 * train["model/flops"]
