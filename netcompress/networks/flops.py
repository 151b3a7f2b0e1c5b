"""FLOPs and parameters. The default counter is torch.utils.flop_counter (never hand-written formulas); the
official MetaPruning counter (``counter="official"``) adds, on top of the same convolution/matmul count, what the
official ``cal_FLOPs`` hooks add, so that its hard-coded budgets ("330M", "1950-2050M") select the same networks.
"""
import math

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

COUNTERS = ("torch", "official")


def _official_extras(net: nn.Module) -> tuple[list, list]:
    """Forward hooks that add what liuzechun/MetaPruning's ``cal_FLOPs.print_model_parm_flops`` counts besides
    conv/matmul multiply-adds: conv and Linear biases, one per BatchNorm2d/ReLU input element (ReLU modules only:
    ReLU6 and functional relu are not counted there either) and k*k per output element of Max/AvgPool2d (an
    adaptive average pool counts its input elements, like the official ``AvgPool2d(7)`` on a 7x7 map)."""
    extras, handles = [], []

    def hook(module, inputs, output):
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            extras.append(output.numel() if module.bias is not None else 0)
        elif isinstance(module, nn.Linear):
            extras.append(module.bias.numel() * (x.shape[0] if x.dim() == 2 else 1) if module.bias is not None else 0)
        elif isinstance(module, (nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d)):
            extras.append(x.numel())
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            k = module.kernel_size
            extras.append(output.numel() * (k * k if isinstance(k, int) else math.prod(k)))

    kinds = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AvgPool2d)
    for m in net.modules():
        if isinstance(m, kinds):
            handles.append(m.register_forward_hook(hook))
    return extras, handles


def count_flops(net: nn.Module, input_shape, counter: str = "torch") -> int:
    """Multiply-accumulates of one forward pass of a single input of ``input_shape`` (C, H, W).

    ``counter="torch"``: what the papers call FLOPs (MobileNetV2 1.0 = 300M, ResNet-50 = 4.1G): torch's count of
    floating point operations divided by 2; convolutions and matrix products only.
    ``counter="official"``: the same plus MetaPruning's ``cal_FLOPs`` extras (biases, BN, ReLU, pooling).
    """
    if counter not in COUNTERS:
        raise ValueError(f"counter={counter!r}: choose one of {COUNTERS}")
    was_training = net.training
    net.eval()
    param = next(net.parameters(), None)
    x = torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    extras, handles = _official_extras(net) if counter == "official" else ([], [])
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as flop_counter:
            net(x)
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return flop_counter.get_total_flops() // 2 + int(sum(extras))


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
