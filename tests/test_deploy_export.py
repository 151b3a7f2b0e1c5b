"""stage=export: a trained network (LeNet, a pruned narrow MobileNetV2) as TorchScript and ONNX, checked against the
checkpoint's network; the errors a user can fix."""
import json
import shutil
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml
from helpers import FAST, compose_config, run_config
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from netcompress.core import ConfigError
from netcompress.stages.export import load_trained_network

onnxruntime = pytest.importorskip("onnxruntime")


def save_run_config(overrides, run_dir):
    """What Hydra writes beside a run: the composed config (without the hydra node) in .hydra/config.yaml."""
    cfg = compose_config(overrides, run_dir)
    with open_dict(cfg):
        del cfg["hydra"]
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return cfg


def fake_run(overrides, run_dir):
    """A run folder with its config and a checkpoint of its network's weights: the initial ones, with BatchNorm
    statistics that are not the identity (the export must keep them)."""
    cfg = save_run_config(overrides, run_dir)
    net = instantiate(cfg.model)
    generator = torch.Generator().manual_seed(0)
    state = {k: (torch.rand(v.shape, generator=generator) + 0.5 if k.endswith("running_var")
                 else 0.1 * torch.randn(v.shape, generator=generator) if k.endswith("running_mean") else v)
             for k, v in net.state_dict().items()}
    (run_dir / "checkpoints").mkdir()
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}}, run_dir / "checkpoints" / "last.ckpt")
    return state


def export_run(ckpt, out):
    metrics = run_config(["stage=export", f"ckpt_path={ckpt}", "export.repeats=3", "export.warmup=1"], out)
    assert json.loads((out / "metrics.json").read_text())["metrics"] == pytest.approx(metrics)
    return metrics


def check_files(out, net, input_shape):
    """The files on disk (loaded afresh) give the eager network's logits on a new batch of another size."""
    x = torch.randn(5, *input_shape)
    with torch.no_grad():
        expected = net.eval()(x)
    with warnings.catch_warnings():   # torch.jit.load is deprecated (FutureWarning) but works
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(out / "network.torchscript.pt"))
    assert (scripted(x) - expected).abs().max() <= 1e-4
    session = onnxruntime.InferenceSession(str(out / "network.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"images": x.numpy()})[0] - expected.numpy()).max() <= 1e-4


@pytest.mark.e2e
def test_export_of_a_trained_lenet_run(tmp_path):
    train = tmp_path / "train"
    overrides = ["method=supervised", "model=lenet5", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                 "+trainer.limit_val_batches=1", "test=false", *FAST]
    run_config(overrides, train)
    save_run_config(overrides, train)   # in-process runs have no .hydra folder
    metrics = export_run(train / "checkpoints" / "last.ckpt", tmp_path / "export")
    assert metrics["export/max_abs_diff_torchscript"] <= 1e-4 and metrics["export/max_abs_diff_onnx"] <= 1e-4
    for key in ("speed/latency_ms", "speed/latency_ms_torchscript", "speed/latency_ms_onnxruntime"):
        assert 0 < metrics[key] < 1000
    assert metrics["model/params"] == 61706   # LeNet-5 on 1x32x32, 10 classes
    net, input_shape, _ = load_trained_network(train / "checkpoints" / "last.ckpt")
    trained = torch.load(train / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(net.body[0].weight, trained["net.body.0.weight"])
    check_files(tmp_path / "export", net, input_shape)


def test_export_of_a_pruned_narrow_network(tmp_path, monkeypatch):
    encoding = [5, 10, 30, 20, 0, 3, 8, 12, 30, 0, 17]   # 11 genes of the small MobileNetV2 space
    (tmp_path / "enc.yaml").write_text(yaml.safe_dump({"arch": "mobilenetv2", "size": "small",
                                                       "encoding": encoding}))
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)   # model.encoding relative to where the training run started
    state = fake_run(["method=supervised", "model=pruned", "model.encoding=enc.yaml"], run)
    monkeypatch.chdir(run)        # export from elsewhere: the path is found through .hydra/hydra.yaml's cwd
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"cwd": str(tmp_path)}}}))
    export_run(run / "checkpoints" / "last.ckpt", tmp_path / "export")
    net, input_shape, _ = load_trained_network(run / "checkpoints" / "last.ckpt")
    assert net.encoding == encoding and input_shape == (1, 32, 32)
    assert torch.equal(net.state_dict()["body.0.1.running_var"], state["body.0.1.running_var"])
    check_files(tmp_path / "export", net, input_shape)


def test_export_errors_name_ckpt_path_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"ckpt_path is not set.*checkpoints/last.ckpt"):
        run_config(["stage=export"], tmp_path / "a")
    with pytest.raises(ConfigError, match=r"ckpt_path=/no/such/last.ckpt: no such file"):
        run_config(["stage=export", "ckpt_path=/no/such/last.ckpt"], tmp_path / "b")
    run = tmp_path / "pruningnet"
    fake_run(["method=metapruning", "model=pruningnet_mbv2_small"], run)
    with pytest.raises(ConfigError, match=r"PruningNet checkpoint.*model=pruned"):
        run_config(["stage=export", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], tmp_path / "c")
    alone = tmp_path / "alone" / "last.ckpt"
    alone.parent.mkdir()
    shutil.copy(run / "checkpoints" / "last.ckpt", alone)
    with pytest.raises(ConfigError, match=r"do not fit.*outside its run folder, name the recipe"):
        run_config(["stage=export", f"ckpt_path={alone}"], tmp_path / "d")   # the command's own network: LeNet-5
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # the export extra not installed
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[export\]"'):
        run_config(["stage=export", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], tmp_path / "e")


def test_a_checkpoint_kept_outside_its_run_folder_exports_with_the_recipe_named(tmp_path):
    """A kept checkpoint (no run folder beside it, e.g. conf/experiment/teacher_cifar10_jpeg_cpu.ckpt) is rebuilt
    from the export command's own config: the recipe that trained it."""
    run = tmp_path / "run"
    state = fake_run(["experiment=teacher_digits"], run)
    kept = tmp_path / "kept.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", kept)
    metrics = run_config(["stage=export", "experiment=teacher_digits", f"ckpt_path={kept}", "export.repeats=3",
                          "export.warmup=1"], tmp_path / "out")
    net = instantiate(compose_config(["experiment=teacher_digits"], tmp_path / "c").model)
    net.load_state_dict(state)
    check_files(tmp_path / "out", net, (1, 32, 32))
    assert metrics["export/max_abs_diff_onnx"] <= 1e-4
