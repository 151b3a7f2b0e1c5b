"""Which int8 path `stage=export export.quantize=int8` takes: the same trained network quantized by onnxruntime's
static quantization (QDQ, weights int8 per channel, activations uint8 or int8) and by torch.ao's x86 path (FX graph
mode, the x86 qconfig, then traced and frozen as a deployment would ship it), each calibrated on the same training
images. Printed per network: test top-1 and median latency at batch 1 and 32, as ratios against fp32 onnxruntime
measured in the same run, the same intra-op threads (--threads) for all.

    python bench/int8_backends.py --ckpt <fit run>/checkpoints/last.ckpt [--ckpt ...] [--threads 1]
    python bench/int8_backends.py --shape resnet20:cifar10     # latency only: an untrained model=resnet20, data=cifar10

A checkpoint's network is rebuilt from its run's config (as stage=export does); its data config gives the
calibration images (--calibration of them) and the test set. A --shape network has random weights: it is
calibrated on random images, and only its latency is measured."""
import argparse
import copy
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netcompress.deploy import quantize  # noqa: E402
from netcompress.deploy.export import to_onnx  # noqa: E402
from netcompress.deploy.speed import example_input, time_forward  # noqa: E402


class Logits(nn.Module):
    """The network's logits alone: FX traces its forward with ``return_features`` a constant."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def torch_x86(net: nn.Module, images: torch.Tensor, batch: int) -> torch.jit.ScriptModule:
    """torch.ao's x86 post-training static quantization (FX graph mode), traced and frozen."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(Logits(copy.deepcopy(net)).eval(), get_default_qconfig_mapping("x86"),
                              example_inputs=(images[:1],))
        with torch.inference_mode():
            for b in images.split(batch):
                prepared(b)
        converted = convert_fx(prepared)
        with torch.no_grad():
            return torch.jit.freeze(torch.jit.trace(converted, images[:1]))


def torch_accuracy(net, test) -> float:
    correct = total = 0
    with torch.inference_mode():
        for x, y in test:
            correct += int((net(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def bench(name: str, net: nn.Module, input_shape, images, test, threads: int, repeats: int) -> list[str]:
    """One network: a row per backend (top-1, latency at batch 1 and 32, ratios to fp32 onnxruntime, size)."""
    x1, x32 = example_input(input_shape, 1), example_input(input_shape, 32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        to_onnx(net, x1, fp32, 17)
        files = {"onnxruntime fp32": fp32}
        for activations in ("uint8", "int8"):
            files[f"onnxruntime int8 (act {activations})"] = Path(tmp) / f"{activations}.onnx"
            quantize.quantize_int8(fp32, files[f"onnxruntime int8 (act {activations})"], images, 32, activations)
        results = {}
        for label, path in files.items():
            s = quantize.session(path, threads)
            results[label] = (quantize.accuracy(s, test) if test else None,
                              quantize.latency_ms(s, x1, 10, repeats), quantize.latency_ms(s, x32, 3, repeats),
                              quantize.size_mb(path))
        ts = torch_x86(net, images, 32)
        torch.jit.save(ts, str(Path(tmp) / "x86.pt"))
        results["torch.ao x86 (FX, TorchScript)"] = (
            torch_accuracy(ts, test) if test else None, time_forward(ts, x1, 10, repeats),
            time_forward(ts, x32, 3, repeats), quantize.size_mb(Path(tmp) / "x86.pt"))
    base = results["onnxruntime fp32"]
    for label, (acc, b1, b32, size) in results.items():
        top1 = f"{100 * acc:.2f}" if acc is not None else "-"
        drop = f"{100 * (base[0] - acc):+.2f}" if acc is not None else "-"
        rows.append(f"| {name} | {label} | {top1} | {drop} | {b1:.3f} | {b32:.3f} | {base[1] / b1:.2f}x | "
                    f"{base[2] / b32:.2f}x | {size:.3f} |")
    return rows


def from_checkpoint(ckpt: str, n: int):
    from netcompress.stages.export import load_trained_network, run_datamodule, training_images

    net, input_shape, run_cfg = load_trained_network(ckpt)
    datamodule = run_datamodule(run_cfg)
    test = torch.utils.data.DataLoader(datamodule.build(train=False, augment=False), batch_size=256)
    name = run_cfg.model.get("_target_", "").rsplit(".", 1)[-1]
    return name, net, input_shape, training_images(datamodule, n), test


def from_shape(spec: str, n: int):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    model, data = spec.split(":")
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model}", f"data={data}"])
    net, shape = instantiate(cfg.model).eval(), (cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    return f"{model} on {data} (random weights)", net, shape, example_input(shape, n), None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", action="append", default=[], help="a fit run's checkpoints/last.ckpt (repeatable)")
    p.add_argument("--shape", action="append", default=[], help="model:data, latency of an untrained network")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calibration", type=int, default=512, help="calibration images")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; latency: median of {args.repeats}; ratios: fp32 onnxruntime's time / this one's "
          f"(> 1: faster); drop: fp32 top-1 minus this one's, in points\n")
    print("| network | backend | top-1 % | drop | batch 1 ms | batch 32 ms | speed-up b1 | speed-up b32 | size MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for source in [*(from_checkpoint(c, args.calibration) for c in args.ckpt),
                   *(from_shape(s, args.calibration) for s in args.shape)]:
        print("\n".join(bench(*source, args.threads, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
