"""The fast CIFAR-10 network of Jordan's airbench94 (the architecture of its ``clean_airbench`` variant): a frozen
2x2 whitening convolution computed from training images, three conv groups (conv, max-pool, BatchNorm, GELU, conv,
BatchNorm, GELU), a 3x3 max-pool and a bias-free linear head scaled by 1/9. BatchNorm layers learn only their
biases; convolutions start as identities on their first input channels (Dirac). A teacher that trains in minutes.

``init_from_data(images)`` sets the whitening filters: the eigenvectors of the covariance of the images' 2x2
patches, each divided by the square root of its eigenvalue, and their negatives (``callbacks.InitFromData`` calls
it before the first training step). ``bias_parameters()`` are the BatchNorm biases, which the recipe trains at a
higher learning rate."""
import torch
from torch import nn


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a fixed unit scale and a learned bias."""

    def __init__(self, channels: int, momentum: float):
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


def _conv(c_in: int, c_out: int, kernel: int = 3, padding="same", bias: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=bias)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])
        if bias:
            conv.bias.zero_()
    return conv


class _ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, momentum: float):
        super().__init__(_conv(c_in, c_out), nn.MaxPool2d(2), _BatchNorm(c_out, momentum), nn.GELU(),
                         _conv(c_out, c_out), _BatchNorm(c_out, momentum), nn.GELU())


class AirbenchNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths=(64, 256, 256), whiten_kernel: int = 2,
                 scaling: float = 1 / 9, bn_momentum: float = 0.1):
        super().__init__()
        whiten_width = 2 * in_channels * whiten_kernel ** 2
        self.whiten = _conv(in_channels, whiten_width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.activation = nn.GELU()
        widths = [whiten_width, *widths]
        self.groups = nn.Sequential(*(_ConvGroup(a, b, bn_momentum) for a, b in zip(widths, widths[1:], strict=False)))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes, bias=False)
        self.scaling, self.feature_dim = scaling, widths[-1]

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Whitening filters from ``images`` (N, C, H, W), normalized as the network sees them."""
        c, k = self.whiten.in_channels, self.whiten.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)              # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        covariance = torch.cov(patches.T)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).flip(0).reshape(-1, c, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))

    def bias_parameters(self) -> list[nn.Parameter]:
        return [m.bias for m in self.modules() if isinstance(m, _BatchNorm)]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        x = self.groups(self.activation(self.whiten(x)))
        features = self.pool(x).flatten(1)
        logits = self.fc(features) * self.scaling
        return (logits, features) if return_features else logits
