"""A trained network outside the framework, in plain torch: TorchScript (traced and frozen) and ONNX (dynamic
batch size), each written atomically."""
import warnings
from pathlib import Path

import torch

from netcompress.core import atomic_output


def to_torchscript(net: torch.nn.Module, x: torch.Tensor, path: Path) -> torch.jit.ScriptModule:
    """Traced (logits only) and frozen (BatchNorm folded into the convolutions), saved atomically."""
    with warnings.catch_warnings():   # torch.jit is deprecated in torch 2.x but still the one self-contained format
        warnings.simplefilter("ignore")
        with torch.no_grad():
            scripted = torch.jit.freeze(torch.jit.trace(net, x))
        with atomic_output(path) as tmp:
            torch.jit.save(scripted, str(tmp))
    return scripted


def to_onnx(net: torch.nn.Module, x: torch.Tensor, path: Path, opset: int) -> None:
    """ONNX with a dynamic batch dimension (input ``images``, output ``logits``), saved atomically. The TorchScript
    exporter (``dynamo=False``): the torch.export one needs the onnxscript package besides."""
    with warnings.catch_warnings(), atomic_output(path) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(tmp), input_names=["images"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
