"""``stage=export``: a trained network out of its Lightning checkpoint, as TorchScript and ONNX.

    python run.py stage=export ckpt_path=<run dir>/checkpoints/last.ckpt

The network is rebuilt from the training run's composed config (``<run dir>/.hydra/config.yaml``, its ``model``
node: a pruned narrow network ``model=pruned`` too) and loaded with the checkpoint's ``net.*`` weights. Written to
the export run's folder: ``network.torchscript.pt`` (traced and frozen) and ``network.onnx`` (dynamic batch
size). Both are checked against the eager network on a batch (max |difference| <= ``export.tolerance``), and the
eager, TorchScript and onnxruntime latencies are measured side by side on the CPU with the same thread count.

``export.quantize=int8`` adds ``network.int8.onnx`` (``netcompress.deploy.quantize``: onnxruntime static
quantization), calibrated on ``export.calibration_images`` training images of the run's data config
(``export.calibration=train``) or on the synthesized images a data-free run saved (``export.calibration=synthetic
export.synthetic_images=<synthetic_images.pt>``: no training image is read). fp32 and int8 are compared on the run's
test set (top-1), at batch 1 and ``export.batch`` (latency, onnxruntime, the same threads) and on disk. A network
that cannot be quantized, or whose int8 top-1 is more than ``export.max_accuracy_drop`` points below fp32's, gets a
warning and keeps its fp32 export alone."""
import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf, open_dict

from netcompress.core import ConfigError, load_checkpoint, read_state_dict, state_dict_mismatch
from netcompress.deploy import quantize
from netcompress.deploy.export import to_onnx, to_torchscript
from netcompress.deploy.speed import example_input, measure_latency, time_call
from netcompress.networks.flops import count_flops, count_params

log = logging.getLogger(__name__)
FIX = "point ckpt_path at <run dir>/checkpoints/last.ckpt of a training run of run.py (stage=fit)"


def _import_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ConfigError(f"stage=export needs onnx and onnxruntime ({e}): pip install -e \".[export]\"") from None
    return onnx, onnxruntime


def run_config_of(ckpt_path: str | Path, command: DictConfig | None = None) -> DictConfig:
    """The composed config of the training run that wrote ``ckpt_path`` (``<run dir>/checkpoints/<file>``); for a
    checkpoint kept outside its run folder, the export command's own config, which names the recipe that trained it
    (``experiment=<recipe>``, e.g. the teacher kept beside teacher_cifar10_jpeg_cpu)."""
    config = Path(ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
    if config.is_file():
        return OmegaConf.load(config)
    if command is not None:
        return command
    raise ConfigError(f"ckpt_path={ckpt_path}: no .hydra/config.yaml of its training run beside it (looked for "
                      f"{config}); the export rebuilds the network from that run's config. Keep the checkpoint "
                      f"inside its run folder and {FIX}, or name the recipe that trained it (experiment=<recipe>).")


def _resolve_relative(run_cfg: DictConfig, run_dir: Path) -> None:
    """A relative ``model.encoding`` (model=pruned) or ``data.root`` is relative to where the training run was
    started (its ``.hydra/hydra.yaml``'s cwd)."""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    cwd = OmegaConf.load(hydra_file).hydra.runtime.get("cwd") if hydra_file.is_file() else None
    for group, key in (("model", "encoding"), ("data", "root")):
        node = run_cfg.get(group)
        try:
            value = node.get(key) if isinstance(node, DictConfig) else None
        except Exception:   # an interpolation that does not resolve outside its run: left as it is
            continue
        if (cwd and isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists()
                and (Path(cwd) / value).exists()):
            with open_dict(run_cfg):
                node[key] = str(Path(cwd) / value)


def load_trained_network(ckpt_path: str | Path, command: DictConfig | None = None
                         ) -> tuple[torch.nn.Module, tuple, DictConfig]:
    """The trained classifier of a fit run's checkpoint in eval mode, its input shape (C, H, W) and the run config
    (``command``: the export's own config, for a checkpoint kept outside its run folder)."""
    if not ckpt_path:
        raise ConfigError(f"ckpt_path is not set: stage=export exports the network of a trained run; {FIX}.")
    weights = read_state_dict(str(ckpt_path), "ckpt_path")   # a bad path or a foreign file: a clear error
    run_cfg = run_config_of(ckpt_path, command)
    trained_elsewhere = run_cfg is not command and run_cfg.get("stage", "fit") != "fit"
    if trained_elsewhere or "model" not in run_cfg or "data" not in run_cfg:
        raise ConfigError(f"ckpt_path={ckpt_path}: its run is stage={run_cfg.get('stage')}, not a training run of a "
                          f"classifier; {FIX}.")
    _resolve_relative(run_cfg, Path(ckpt_path).resolve().parent.parent)
    try:
        net = instantiate(run_cfg.model)
    except Exception as e:
        raise ConfigError(f"ckpt_path={ckpt_path}: its run's model config ({run_cfg.model.get('_target_')}) does not "
                          f"build here: {e}") from None
    if hasattr(net, "set_encoding"):
        raise ConfigError(f"ckpt_path={ckpt_path}: a PruningNet checkpoint (method=metapruning, model={net.arch}); "
                          f"it generates weights for many networks and is not one to deploy. Search it "
                          f"(method=metapruning_search), retrain the found network (model=pruned "
                          f"model.encoding=<top_encodings.yaml>) and export that run's checkpoint.")
    try:
        net.load_state_dict(weights)
    except RuntimeError:
        kept = ("; for a checkpoint outside its run folder, name the recipe that trained it (experiment=<recipe>)"
                if run_cfg is command else "")
        raise ConfigError(f"ckpt_path={ckpt_path}: its net.* weights do not fit the network of its run's config "
                          f"({state_dict_mismatch(net, weights)}); {FIX}{kept}.") from None
    data = run_cfg.data
    input_shape = (int(data.in_channels), int(data.image_size), int(data.image_size))
    return net.eval(), input_shape, run_cfg


def int8_settings(settings) -> dict | None:
    """``export.quantize`` and its keys, checked before anything is built; None when the export stays fp32. The
    synthesized images (``calibration=synthetic``) are read here."""
    mode = settings.get("quantize")
    if mode in (None, "none", False):
        return None
    if mode != "int8":
        raise ConfigError(f"export.quantize={mode}: not a quantization this export makes. Choose int8 (8-bit "
                          f"integers by onnxruntime's static quantization) or null (the fp32 export alone).")
    calibration, n = settings.get("calibration", "train"), settings.get("calibration_images", 512)
    if calibration not in ("train", "synthetic"):
        raise ConfigError(f"export.calibration={calibration}: choose train (training images of the run's data) or "
                          f"synthetic (the images a data-free run saved: export.synthetic_images=<file>).")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"export.calibration_images={n}: the number of calibration images, a positive integer.")
    drop, batch = settings.get("max_accuracy_drop", 1.0), settings.get("batch", 32)
    if isinstance(drop, bool) or not isinstance(drop, int | float):
        raise ConfigError(f"export.max_accuracy_drop={drop}: the top-1 points int8 may lose against fp32, a number.")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"export.batch={batch}: the second latency batch size, a positive integer.")
    out = {"calibration": calibration, "images": n, "max_drop": float(drop), "batch": batch, "synthetic": None}
    if calibration == "synthetic":
        path = settings.get("synthetic_images")
        if not path:
            raise ConfigError("export.synthetic_images=null: export.calibration=synthetic calibrates on the "
                              "synthesized images of a data-free run. Set export.synthetic_images=<run dir of "
                              "method=metapruning_datafree>/synthetic_images.pt, or use export.calibration=train.")
        saved = load_checkpoint(str(path), "export.synthetic_images")
        if not isinstance(saved, dict) or not {"calib", "held"} <= set(saved):
            raise ConfigError(f"export.synthetic_images={path}: not a file of synthesized images (expected the keys "
                              f"calib and held that method=metapruning_datafree writes).")
        out["synthetic"] = torch.cat([saved["calib"], saved["held"]])[:n].float()
    return out


def run_datamodule(run_cfg: DictConfig):
    """The training run's datamodule, built from its config (not set up: each split is built when asked)."""
    try:
        return instantiate(run_cfg.data)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"data: the training run's data config ({run_cfg.data.get('_target_')}) does not build "
                          f"here: {e}") from None


def training_images(datamodule, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` training images (or all, if fewer), a fixed random subset, with evaluation transforms."""
    train = datamodule.build(train=True, augment=False)
    indices = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train, indices), batch_size=256,
                                         collate_fn=datamodule.collate(augment=False))
    return torch.cat([batch[0] for batch in loader]).float()


def _int8(net_onnx: Path, out: Path, q: dict, run_cfg: DictConfig, threads: int, warmup: int, repeats: int,
          input_shape: tuple) -> dict[str, float]:
    """The int8 network beside ``net_onnx`` and fp32 against int8: test top-1, latency, size."""
    datamodule = run_datamodule(run_cfg)
    test = torch.utils.data.DataLoader(datamodule.build(train=False, augment=False), batch_size=256,
                                       collate_fn=datamodule.collate(augment=False))   # as the run's test loader
    if q["calibration"] == "synthetic":
        images, source = q["synthetic"], "synthesized images"
    else:
        images, source = training_images(datamodule, q["images"]), "training images"
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise ConfigError(f"export.calibration={q['calibration']}: the calibration images are "
                          f"{tuple(images.shape[1:])}, the network takes {tuple(input_shape)}; calibrate on images "
                          f"of the run's data.")
    int8_path = out / "network.int8.onnx"
    fp32 = quantize.session(net_onnx, threads)
    one, many = example_input(input_shape, 1), example_input(input_shape, q["batch"])
    metrics = {"export/test_acc_fp32": quantize.accuracy(fp32, test), "export/size_mb_fp32": quantize.size_mb(net_onnx),
               "export/calibration_images": len(images)}
    try:
        quantize.quantize_int8(net_onnx, int8_path, images, q["batch"])
        int8 = quantize.session(int8_path, threads)
    except Exception as e:   # an operator onnxruntime cannot quantize: the fp32 export stands
        int8_path.unlink(missing_ok=True)
        log.warning(f"[export] warning: the network could not be quantized to int8 ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); keeping the fp32 export {net_onnx.name} alone.")
        return {**metrics, f"speed/latency_ms_b{q['batch']}_onnxruntime": quantize.latency_ms(fp32, many, warmup,
                                                                                             repeats),
                "export/int8_kept": 0.0}
    metrics.update({"export/test_acc_int8": quantize.accuracy(int8, test),
                    "export/size_mb_int8": quantize.size_mb(int8_path)})
    for key, x in (("speed/latency_ms", one), (f"speed/latency_ms_b{q['batch']}", many)):   # fp32 and int8 in turns
        timed = quantize.latencies_ms({"onnxruntime": fp32, "int8": int8}, x, warmup, repeats)
        metrics.update({f"{key}_{name}": ms for name, ms in timed.items()})
    drop = 100 * (metrics["export/test_acc_fp32"] - metrics["export/test_acc_int8"])
    metrics["export/int8_kept"] = float(drop <= q["max_drop"])
    rank_zero_info(f"[export] int8 (onnxruntime static quantization, QDQ, weights int8 per channel, activations "
                   f"uint8) calibrated on {len(images)} {source}; test top-1 on {len(test.dataset)} images")
    if not metrics["export/int8_kept"]:
        int8_path.unlink()
        log.warning(f"[export] warning: int8 loses {drop:.2f} points of test top-1 (> export.max_accuracy_drop="
                    f"{q['max_drop']:g}); not kept: the export is the fp32 {net_onnx.name}.")
    return metrics


def _table(m: dict, batch: int, threads: int) -> str:
    """fp32 against int8: test top-1, latency at batch 1 and ``batch`` (onnxruntime, ``threads`` threads), size."""
    def cell(key, scale=1.0, digits=3):
        return f"{scale * m[key]:.{digits}f}" if key in m else "-"
    lines = [f"[export] {'':4} | {'top-1 %':>8} | {'batch 1 ms':>10} | {f'batch {batch} ms':>11} | {'size MB':>8}"
             f"   (onnxruntime, {threads} thread(s))"]
    for name, b1 in (("fp32", "onnxruntime"), ("int8", "int8")):
        lines.append(f"[export] {name:4} | {cell(f'export/test_acc_{name}', 100, 2):>8} | "
                     f"{cell(f'speed/latency_ms_{b1}'):>10} | {cell(f'speed/latency_ms_b{batch}_{b1}'):>11} | "
                     f"{cell(f'export/size_mb_{name}'):>8}")
    return "\n".join(lines)


def export(cfg: DictConfig) -> dict[str, float]:
    """The stage: export, check and time ``cfg.ckpt_path``'s network; returns the metrics for metrics.json."""
    onnx, _ = _import_onnx()
    settings = cfg.get("export") or {}
    q = int8_settings(settings)
    tolerance, batch = float(settings.get("tolerance", 1e-4)), int(settings.get("check_batch", 8))
    warmup, repeats = int(settings.get("warmup", 10)), int(settings.get("repeats", 50))
    net, input_shape, run_cfg = load_trained_network(cfg.get("ckpt_path"), cfg)
    out = Path(cfg.paths.output_dir)
    x = example_input(input_shape, batch)
    with torch.inference_mode():
        expected = net(x)
    scripted = to_torchscript(net, x, out / "network.torchscript.pt")
    to_onnx(net, x, out / "network.onnx", int(settings.get("opset", 17)))
    onnx.checker.check_model(str(out / "network.onnx"))
    session = quantize.session(out / "network.onnx", torch.get_num_threads())
    with torch.inference_mode():
        from_script = scripted(x)
    from_onnx = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    diffs = {"export/max_abs_diff_torchscript": (from_script - expected).abs().max().item(),
             "export/max_abs_diff_onnx": (from_onnx - expected).abs().max().item()}
    bad = {k: v for k, v in diffs.items() if not v <= tolerance}
    if bad:
        raise RuntimeError(f"exported network differs from the checkpoint's by more than export.tolerance="
                           f"{tolerance}: {bad}")
    one = x[:1].numpy()
    metrics = {"model/flops": count_flops(net, input_shape), "model/params": count_params(net), **diffs,
               "speed/latency_ms": measure_latency(net, input_shape, 1, "cpu", warmup, repeats),
               "speed/latency_ms_torchscript": measure_latency(scripted, input_shape, 1, "cpu", warmup, repeats),
               "speed/latency_ms_onnxruntime": time_call(lambda: session.run(None, {"images": one}), "cpu",
                                                         warmup, repeats),
               "speed/threads": torch.get_num_threads()}
    rank_zero_info(
        f"[export] {type(net).__name__} of {cfg.ckpt_path}: {metrics['model/flops'] / 1e6:.3f}M FLOPs, "
        f"{metrics['model/params']:,} parameters, input {input_shape}\n"
        f"[export] wrote {out / 'network.torchscript.pt'} and {out / 'network.onnx'}; max |diff| vs eager on a "
        f"batch of {batch}: TorchScript {diffs['export/max_abs_diff_torchscript']:.2e}, "
        f"ONNX {diffs['export/max_abs_diff_onnx']:.2e} (tolerance {tolerance:g})\n"
        f"[export] CPU latency at batch 1 ({metrics['speed/threads']} threads, median of {repeats}): "
        f"eager {metrics['speed/latency_ms']:.3f} ms | TorchScript {metrics['speed/latency_ms_torchscript']:.3f} ms"
        f" | onnxruntime {metrics['speed/latency_ms_onnxruntime']:.3f} ms")
    if q is not None:
        metrics.update(_int8(out / "network.onnx", out, q, run_cfg, metrics["speed/threads"], warmup, repeats,
                             input_shape))
        rank_zero_info(_table(metrics, q["batch"], metrics["speed/threads"]))
    return metrics
