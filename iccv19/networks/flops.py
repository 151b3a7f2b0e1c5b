"""FLOPs and parameters, counted by torch.utils.flop_counter (never by hand-written formulas)."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(net: nn.Module, input_shape) -> int:
    """Multiply-accumulates of one forward pass of a single input of ``input_shape`` (C, H, W).

    This is what the papers call FLOPs (MobileNetV2 1.0 = 300M, ResNet-50 = 4.1G): torch's count of floating
    point operations divided by 2. Counts convolutions and matrix products, as the papers do.
    """
    was_training = net.training
    net.eval()
    param = next(net.parameters(), None)
    x = torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    net.train(was_training)
    return counter.get_total_flops() // 2


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
