"""``stage=export``: a trained network out of its Lightning checkpoint, as TorchScript and ONNX.

    python run.py stage=export ckpt_path=<run dir>/checkpoints/last.ckpt

The network is rebuilt from the training run's composed config (``<run dir>/.hydra/config.yaml``, its ``model``
node: a pruned narrow network ``model=pruned`` too) and loaded with the checkpoint's ``net.*`` weights. Written to
the export run's folder: ``network.torchscript.pt`` (traced and frozen) and ``network.onnx`` (dynamic batch
size). Both are checked against the eager network on a batch (max |difference| <= ``export.tolerance``), and the
eager, TorchScript and onnxruntime latencies are measured side by side on the CPU with the same thread count."""
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf, open_dict

from netcompress.core import ConfigError, read_state_dict, state_dict_mismatch
from netcompress.deploy.export import to_onnx, to_torchscript
from netcompress.deploy.speed import example_input, measure_latency, time_call
from netcompress.networks.flops import count_flops, count_params

FIX = "point ckpt_path at <run dir>/checkpoints/last.ckpt of a training run of run.py (stage=fit)"


def _import_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ConfigError(f"stage=export needs onnx and onnxruntime ({e}): pip install -e \".[export]\"") from None
    return onnx, onnxruntime


def run_config_of(ckpt_path: str | Path) -> DictConfig:
    """The composed config of the training run that wrote ``ckpt_path`` (``<run dir>/checkpoints/<file>``)."""
    config = Path(ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no .hydra/config.yaml of its training run beside it (looked for "
                          f"{config}); the export rebuilds the network from that run's config. Keep the checkpoint "
                          f"inside its run folder and {FIX}.")
    return OmegaConf.load(config)


def _resolve_encoding(run_cfg: DictConfig, run_dir: Path) -> None:
    """A relative ``model.encoding`` (model=pruned) is relative to where the training run was started."""
    encoding = run_cfg.model.get("encoding") if "model" in run_cfg else None
    if not isinstance(encoding, str) or Path(encoding).is_absolute() or Path(encoding).is_file():
        return
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        cwd = OmegaConf.load(hydra_file).hydra.runtime.get("cwd")
        if cwd and (Path(cwd) / encoding).is_file():
            with open_dict(run_cfg):
                run_cfg.model.encoding = str(Path(cwd) / encoding)


def load_trained_network(ckpt_path: str | Path) -> tuple[torch.nn.Module, tuple, DictConfig]:
    """The trained classifier of a fit run's checkpoint in eval mode, its input shape (C, H, W) and the run config."""
    if not ckpt_path:
        raise ConfigError(f"ckpt_path is not set: stage=export exports the network of a trained run; {FIX}.")
    weights = read_state_dict(str(ckpt_path), "ckpt_path")   # a bad path or a foreign file: a clear error
    run_cfg = run_config_of(ckpt_path)
    if run_cfg.get("stage", "fit") != "fit" or "model" not in run_cfg or "data" not in run_cfg:
        raise ConfigError(f"ckpt_path={ckpt_path}: its run is stage={run_cfg.get('stage')}, not a training run of a "
                          f"classifier; {FIX}.")
    _resolve_encoding(run_cfg, Path(ckpt_path).resolve().parent.parent)
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
        raise ConfigError(f"ckpt_path={ckpt_path}: its net.* weights do not fit the network of its run's config "
                          f"({state_dict_mismatch(net, weights)}); {FIX}.") from None
    data = run_cfg.data
    input_shape = (int(data.in_channels), int(data.image_size), int(data.image_size))
    return net.eval(), input_shape, run_cfg


def export(cfg: DictConfig) -> dict[str, float]:
    """The stage: export, check and time ``cfg.ckpt_path``'s network; returns the metrics for metrics.json."""
    onnx, onnxruntime = _import_onnx()
    settings = cfg.get("export") or {}
    tolerance, batch = float(settings.get("tolerance", 1e-4)), int(settings.get("check_batch", 8))
    warmup, repeats = int(settings.get("warmup", 10)), int(settings.get("repeats", 50))
    net, input_shape, run_cfg = load_trained_network(cfg.get("ckpt_path"))
    out = Path(cfg.paths.output_dir)
    x = example_input(input_shape, batch)
    with torch.inference_mode():
        expected = net(x)
    scripted = to_torchscript(net, x, out / "network.torchscript.pt")
    to_onnx(net, x, out / "network.onnx", int(settings.get("opset", 17)))
    onnx.checker.check_model(str(out / "network.onnx"))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(out / "network.onnx"), options, providers=["CPUExecutionProvider"])
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
    return metrics
