"""Loading a frozen teacher network from a Lightning checkpoint or a plain state_dict."""
from pathlib import Path

import torch
from torch import nn

from training.errors import ConfigError


def read_state_dict(path: str | Path, key: str = "teacher.checkpoint") -> dict:
    """A network's state_dict from a Lightning checkpoint (``state_dict`` with a ``net.`` prefix) or a plain one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={path}: no such file. Train a teacher first (method=supervised) and point "
                          f"{key} at its checkpoints/last.ckpt, or at a plain state_dict file.")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "state_dict" in state:
        state = {k[len("net."):]: v for k, v in state["state_dict"].items() if k.startswith("net.")}
    return state


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
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise ConfigError(
            f"{key}={path} does not fit the teacher network {type(net).__name__} "
            f"(wrong architecture or number of classes: {' '.join(first)}). Set teacher.net to the architecture "
            f"the checkpoint was trained with, or point {key} at a checkpoint of this one.") from None
    return net
