"""torchvision classifiers (ResNet-18/34/50, MobileNetV2, ...) behind the uniform interface."""
from pathlib import Path

import torch
import torchvision
from torch import nn

from netcompress.core import ConfigError


class TorchvisionClassifier(nn.Module):
    """``torchvision.models.get_model(arch)`` split into ``body`` (features) and ``head`` (classifier).

    weights: a torchvision weights name (e.g. ``IMAGENET1K_V1``), fetched into torch.hub's cache when reachable.
    weights_path: a local torchvision state_dict file (for machines that cannot download).
    """

    def __init__(self, arch: str, num_classes: int = 1000, weights: str | None = None,
                 weights_path: str | None = None):
        super().__init__()
        if (weights or weights_path) and num_classes != 1000:
            raise ConfigError(f"weights={weights or weights_path} (model.weights, or teacher.net.weights for the "
                              f"teacher) hold ImageNet's 1000 classes, but the data has num_classes={num_classes}. "
                              f"For a teacher on a subset of ImageNet, train one (method=supervised model=resnet34) "
                              f"and pass teacher=checkpoint teacher.checkpoint=<run>/checkpoints/last.ckpt "
                              f"model@teacher.net=resnet34; teacher.net.weights=null gives a randomly initialized "
                              f"teacher (smoke tests only).")
        model = torchvision.models.get_model(arch, num_classes=num_classes)
        if weights_path:
            if not Path(weights_path).is_file():
                raise ConfigError(f"weights_path={weights_path} (model.weights_path, or teacher.net.weights_path "
                                  f"for the teacher): no such file. Point it at a torchvision state_dict for "
                                  f"{arch} (e.g. from torchvision's download URL).")
            model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        elif weights:
            enum = torchvision.models.get_model_weights(arch)[weights]
            try:
                model.load_state_dict(enum.get_state_dict(progress=False))
            except Exception as e:  # no network, no cache
                raise ConfigError(
                    f"weights={weights} (model.weights, or teacher.net.weights for the teacher): could not fetch "
                    f"{enum.url} ({type(e).__name__}). Copy the file into {torch.hub.get_dir()}/checkpoints/ or "
                    f"point model.weights_path (teacher.net.weights_path) at a local copy.") from None
        self.pretrained = bool(weights or weights_path)
        head_name = "fc" if hasattr(model, "fc") else "classifier"
        self.head = getattr(model, head_name)
        setattr(model, head_name, nn.Identity())
        self.body = model
        linear = self.head if isinstance(self.head, nn.Linear) else next(
            m for m in self.head.modules() if isinstance(m, nn.Linear))
        self.feature_dim = linear.in_features

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = self.body(x)
        logits = self.head(features)
        return (logits, features) if return_features else logits
