"""stage=export export.quantize=int8: the int8 ONNX network of a trained digits LeNet-5, calibrated on training
images or on synthesized ones (then no training image is read), its accuracy measured on the test set beside fp32's,
the fp32 export kept alone when int8 loses too much or cannot be made; bad settings are one error line."""
import json
import logging
import re
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml
from helpers import FAST, ROOT, run_cli, run_config
from test_deploy_export import save_run_config

from datamodules.digits import DigitsDataModule
from netcompress.core import ConfigError
from netcompress.deploy import quantize
from netcompress.deploy.export import to_onnx
from netcompress.stages.export import load_trained_network

onnxruntime = pytest.importorskip("onnxruntime")
EXPORT = ["stage=export", "export.quantize=int8", "export.repeats=3", "export.warmup=1",
          "export.calibration_images=128"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet-5 trained on digits for a few epochs (far above chance), in its run folder with its config."""
    run = tmp_path_factory.mktemp("train")
    overrides = ["method=supervised", "model=lenet5", "trainer.max_epochs=3", "test=false", *FAST]
    run_config(overrides, run)
    save_run_config(overrides, run)   # in-process runs have no .hydra folder
    return run / "checkpoints" / "last.ckpt"


def digits_test_set():
    data = DigitsDataModule(batch_size=64).build(train=False, augment=False)
    return data.tensors


def test_accuracy_and_latency_of_a_session(tmp_path):
    """accuracy() on a network whose logits are its inputs: the hand-counted top-1."""
    net = torch.nn.Flatten()
    to_onnx(net, torch.zeros(1, 1, 1, 3), tmp_path / "id.onnx", 17)
    session = quantize.session(tmp_path / "id.onnx", 1)
    x = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 2, 1]]).reshape(4, 1, 1, 3)
    y = torch.tensor([1, 0, 2, 2])   # argmax 1, 0, 2, 1: three of four
    assert quantize.accuracy(session, [(x[:2], y[:2]), (x[2:], y[2:])]) == 0.75
    assert 0 < quantize.latency_ms(session, x, 1, 3) < 1000
    assert quantize.size_mb(tmp_path / "id.onnx") == (tmp_path / "id.onnx").stat().st_size / 2**20


def test_two_sessions_are_timed_in_turns():
    """fp32 and int8 latencies are measured in alternating rounds, so that another process's load hits both."""
    import time

    calls = []

    class Sleeper:
        def __init__(self, name, seconds):
            self.name, self.seconds = name, seconds

        def run(self, outputs, feed):
            calls.append(self.name)
            time.sleep(self.seconds)

    timed = quantize.latencies_ms({"a": Sleeper("a", 0.001), "b": Sleeper("b", 0.004)}, torch.zeros(1, 1, 2, 2),
                                  warmup=1, repeats=10, rounds=5)
    assert calls[4:] == (["a"] * 2 + ["b"] * 2) * 5   # after the warm-up (2 calls each): 5 rounds of 2 runs, in turns
    assert 1 <= timed["a"] < timed["b"] and timed["b"] >= 4


def test_int8_export_is_smaller_and_measured_on_the_test_set(trained, tmp_path, caplog):
    out = tmp_path / "export"
    with caplog.at_level(logging.INFO):
        metrics = run_config([*EXPORT, f"ckpt_path={trained}"], out)
    assert json.loads((out / "metrics.json").read_text())["metrics"] == pytest.approx(metrics)
    assert (out / "network.int8.onnx").is_file() and (out / "network.onnx").is_file()
    assert metrics["export/size_mb_int8"] < 0.5 * metrics["export/size_mb_fp32"]   # 8-bit weights
    assert metrics["export/int8_kept"] == 1.0 and metrics["export/calibration_images"] == 128
    # the numbers are the files' own: recomputed here on the 360 test images
    x, y = digits_test_set()
    int8 = onnxruntime.InferenceSession(str(out / "network.int8.onnx"), providers=["CPUExecutionProvider"])
    assert metrics["export/test_acc_int8"] == (int8.run(None, {"images": x.numpy()})[0].argmax(1) == y.numpy()).mean()
    net, _, _ = load_trained_network(trained)
    with torch.no_grad():
        eager = (net(x).argmax(1) == y).float().mean().item()
    assert metrics["export/test_acc_fp32"] == pytest.approx(eager, abs=1.5 / len(y))   # at most one image apart
    assert metrics["export/test_acc_fp32"] > 0.5   # chance: 0.1
    assert abs(metrics["export/test_acc_fp32"] - metrics["export/test_acc_int8"]) <= 0.01
    for key in ("speed/latency_ms_onnxruntime", "speed/latency_ms_int8", "speed/latency_ms_b32_onnxruntime",
                "speed/latency_ms_b32_int8"):
        assert 0 < metrics[key] < 1000
    int8_logits = int8.run(None, {"images": x[:8].numpy()})[0]
    with torch.no_grad():   # quantized, not the same numbers, but the same network
        assert np.abs(int8_logits - net(x[:8]).numpy()).max() < 0.2 * np.abs(int8_logits).max()
    table = [line for line in caplog.text.splitlines() if "[export] int8 |" in line or "[export] fp32 |" in line]
    assert len(table) == 2 and f"{100 * metrics['export/test_acc_int8']:.2f}" in table[1]


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "[export]" in r.getMessage()]


def test_more_than_the_allowed_drop_keeps_fp32_alone(trained, tmp_path, caplog):
    """export.max_accuracy_drop=-1: int8 would have to beat fp32 by a point. One warning line; no int8 file."""
    out = tmp_path / "export"
    metrics = run_config([*EXPORT, f"ckpt_path={trained}", "export.max_accuracy_drop=-1"], out)
    [line] = warnings_of(caplog)
    assert re.fullmatch(r"\[export\] warning: int8 loses -?\d+\.\d\d points of test top-1 \(> "
                        r"export.max_accuracy_drop=-1\); not kept: the export is the fp32 network.onnx.", line)
    assert metrics["export/int8_kept"] == 0.0 and "export/test_acc_int8" in metrics
    assert not (out / "network.int8.onnx").exists() and (out / "network.onnx").is_file()


def test_a_network_that_cannot_be_quantized_keeps_fp32(trained, tmp_path, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise NotImplementedError("Could not find an implementation for ConvInteger\nmore detail")

    monkeypatch.setattr(quantize, "quantize_int8", refuse)
    out = tmp_path / "export"
    metrics = run_config([*EXPORT, f"ckpt_path={trained}"], out)
    assert warnings_of(caplog) == ["[export] warning: the network could not be quantized to int8 "
                                   "(NotImplementedError: Could not find an implementation for ConvInteger); keeping "
                                   "the fp32 export network.onnx alone."]
    assert metrics["export/int8_kept"] == 0.0 and "export/test_acc_int8" not in metrics
    assert not (out / "network.int8.onnx").exists() and (out / "network.onnx").is_file()


def test_synthetic_calibration_reads_no_training_image(trained, tmp_path, monkeypatch):
    """calibration=synthetic: the images of a file as SaveSyntheticImages writes it; the training split is never
    built (only the test set, for the accuracy)."""
    generator = torch.Generator().manual_seed(0)
    images = {"calib": torch.randn(48, 1, 32, 32, generator=generator),
              "held": torch.randn(64, 1, 32, 32, generator=generator), "held_logits": torch.randn(64, 10)}
    torch.save(images, tmp_path / "synthetic_images.pt")
    build = DigitsDataModule.build

    def test_split_only(self, train, augment):
        assert not train, "a training image was read"
        return build(self, train, augment)

    monkeypatch.setattr(DigitsDataModule, "build", test_split_only)
    out = tmp_path / "export"
    metrics = run_config([*EXPORT, f"ckpt_path={trained}", "export.calibration=synthetic",
                          f"export.synthetic_images={tmp_path / 'synthetic_images.pt'}",
                          "export.max_accuracy_drop=100"], out)
    assert metrics["export/calibration_images"] == 112   # 48 + 64, fewer than the 128 asked
    assert (out / "network.int8.onnx").is_file() and metrics["export/test_acc_int8"] >= 0


def test_bad_settings_are_one_error_line(trained, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for extra, match in ((["export.quantize=int4"], r"export.quantize=int4: .*Choose int8"),
                             (["export.calibration=synthetic"], r"export.synthetic_images=null: .*synthetic_images.pt"),
                             (["export.calibration=test"], r"export.calibration=test: choose train"),
                             (["export.calibration=synthetic", f"export.synthetic_images={tmp_path / 'no.pt'}"],
                              r"export.synthetic_images=.*no.pt: no such file"),
                             (["export.calibration_images=0"], r"export.calibration_images=0: .*positive")):
            with pytest.raises(ConfigError, match=match):
                run_config([*EXPORT, f"ckpt_path={trained}", *extra], tmp_path / "out")
            assert not (tmp_path / "out" / "network.onnx").exists()   # refused before anything was written


@pytest.mark.e2e
def test_int4_as_typed_is_one_line_and_no_run_folder(trained, tmp_path):
    proc = run_cli(["stage=export", f"ckpt_path={trained}", "export.quantize=int4"], tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: export.quantize=int4: ")
    assert proc.run_dirs == []


def test_deploy_study_quantizes_every_network_and_calibrates_the_data_free_ones_on_synthesized_images():
    """The export stage quantizes each network of the chain, with and without data; the rows without data calibrate
    on the synthesized images of their own PruningNet's run, and read no other run of the chain with data."""
    sys.path.insert(0, str(ROOT / "bench"))
    from study import Study

    study = Study("deploy_pipeline")   # checks every ${run:...} names a row of an earlier stage
    exports = {key.split("/", 1)[1]: study.rows[key]["overrides"] for key in study.rows if key.startswith("export/")}
    assert set(exports) == {"teacher", "found", "uniform", "found without data", "uniform without data"}
    for label, overrides in exports.items():
        assert "export.quantize=int8" in overrides
        assert ("export.calibration=synthetic" in overrides) == label.endswith("without data")
    free = [k for k in study.rows if k.endswith("without data")]
    assert len(free) == 6 and all(need[0] in (*free, "teacher/teacher") for k in free for need in study.needs(k, 0))
    assert all(any("search.max_latency=" in o for o in study.rows[k]["overrides"]) for k in study.rows
               if k.startswith("search/"))


def test_deploy_figure_plots_the_records_means(tmp_path):
    """bench/figures.py's deploy picture: per network and precision, the mean over seeds of test top-1 against
    latency at batch 1 and 32 and size; an int8 network not kept (over export.max_accuracy_drop) drawn hollow."""
    sys.path.insert(0, str(ROOT / "bench"))
    import figures

    metrics = {"export/test_acc_fp32": 0.95, "export/test_acc_int8": 0.93, "export/int8_kept": 0.0,
               "speed/latency_ms_onnxruntime": 0.1, "speed/latency_ms_int8": 0.05,
               "speed/latency_ms_b32_onnxruntime": 2.0, "speed/latency_ms_b32_int8": 1.0,
               "export/size_mb_fp32": 0.4, "export/size_mb_int8": 0.1, "speed/threads": 1}
    records = {"export/found": [{"metrics": {**metrics, "export/test_acc_fp32": 0.95 + shift}} for shift in (0, 0.01)]}
    axes = figures.deploy(records, ["export/found"]).axes
    points = [[(tuple(c.get_offsets()[0]), len(c.get_facecolor()) > 0) for c in ax.collections] for ax in axes]
    assert points[0] == [((0.1, pytest.approx(95.5)), True), ((0.05, pytest.approx(93.0)), False)]   # int8 hollow
    assert [p[0] for p, _ in points[1]] == [2.0, 1.0] and [p[0] for p, _ in points[2]] == [0.4, 0.1]
    assert axes[0].get_xlabel() == "onnxruntime latency, batch 1 ms (1 thread(s))"


def test_relative_data_root_is_the_training_runs(tmp_path, monkeypatch):
    """The calibration and test images come from the training run's data.root, typed relative to where that run
    started: found from another folder through its .hydra/hydra.yaml."""
    from omegaconf import OmegaConf

    from netcompress.stages.export import _resolve_relative

    (tmp_path / "start" / "images").mkdir(parents=True)
    run = tmp_path / "start" / "logs" / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"cwd": str(tmp_path / "start")}}}))
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"paths": {"data_dir": "images"}, "data": {"root": "${paths.data_dir}"},
                            "model": {"_target_": "x"}})
    _resolve_relative(cfg, run)
    assert cfg.data.root == str(tmp_path / "start" / "images")
    cfg = OmegaConf.create({"data": {"root": "/elsewhere"}, "model": {}})
    _resolve_relative(cfg, run)
    assert cfg.data.root == "/elsewhere"


def test_int8_export_of_an_image_folder_run_tests_as_the_run_did(tmp_path):
    """The test set goes through the data set's own batching (an image folder's normalization is in its collate
    function): the exported fp32 network scores what the run's test scored."""
    from test_image_folder import write_tree

    tree = write_tree(tmp_path / "tree", per_class=16)
    run = tmp_path / "train"
    overrides = ["method=supervised", "data=image_folder", f"data.root={tree}", "model=resnet8", *FAST,
                 "trainer.max_epochs=4", "data.batch_size=16", "optimizer.lr=0.01", "callbacks.speed=null"]
    tested = run_config(overrides, run)
    save_run_config(overrides, run)
    assert tested["test/acc"] >= 0.9
    metrics = run_config([*EXPORT, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "export.calibration_images=32"],
                         tmp_path / "export")
    assert metrics["export/test_acc_fp32"] == pytest.approx(tested["test/acc"], abs=1e-6)
