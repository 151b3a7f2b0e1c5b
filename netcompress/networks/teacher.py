"""A frozen teacher network, and loading its weights from a Lightning checkpoint or a plain state_dict."""
from pathlib import Path

import torch
from torch import nn

from netcompress.core import ConfigError, read_state_dict, state_dict_mismatch


class FrozenTeacher(nn.Module):
    """A teacher that never trains: no gradients to its parameters and eval mode for good, even when a parent
    module calls ``.train()``. Gradients still flow through it to its input (DAFL's generator needs them)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.requires_grad_(False)
        self.feature_dim = getattr(net, "feature_dim", None)
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        return self.net(x, return_features=return_features)


def load_weights(net: nn.Module, path: str | Path, key: str = "teacher.checkpoint") -> nn.Module:
    state = read_state_dict(path, key)
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise ConfigError(f"{key}={path} does not fit teacher.net={type(net).__name__} (wrong architecture or "
                          f"number of classes: {state_dict_mismatch(net, state)}). Set model@teacher.net=<the "
                          f"checkpoint's network> or point {key} at a {type(net).__name__}.") from None
    return net
