"""DAFL's image generator (Chen et al., ICCV 2019, Sec. 3 and the official code's ``Generator``).

z -> Linear -> 128 x (s/4) x (s/4) -> BN -> upsample x2 -> conv3x3 128 -> BN -> LeakyReLU 0.2
  -> upsample x2 -> conv3x3 64 -> BN -> LeakyReLU 0.2 -> conv3x3 C -> tanh -> BatchNorm2d(C, affine=False)

The last, non-affine BatchNorm standardizes each generated batch per channel, so the images have roughly the
statistics of normalized real inputs; there is no other normalization.

``width``: channels of the first block (128 officially; the second block has ``width // 2``). The digits recipe
uses a narrower generator so that a CPU trains it in a minute.

``inner_bn_eps``: the official code builds the two BatchNorms after the convolutions as ``BatchNorm2d(c, 0.8)``,
i.e. eps=0.8 (the author meant momentum). A large eps damps the normalization (the activations are divided by
sqrt(var + 0.8) instead of sqrt(var)), which changes the dynamics a little. Default: the standard 1e-5; set
``generator.inner_bn_eps=0.8`` to reproduce the official runs exactly.
"""
import torch
import torch.nn.functional as F
from torch import nn


class DAFLGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100, image_size: int = 32, channels: int = 1, width: int = 128,
                 inner_bn_eps: float = 1e-5):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"generator image_size={image_size} must be a multiple of 4")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.init_size = image_size // 4
        self.width = width
        self.fc = nn.Linear(latent_dim, width * self.init_size ** 2)
        self.bn0 = nn.BatchNorm2d(width)
        self.block1 = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width, eps=inner_bn_eps),
            nn.LeakyReLU(0.2, inplace=True))
        self.block2 = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2, eps=inner_bn_eps),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width // 2, channels, 3, padding=1), nn.Tanh(), nn.BatchNorm2d(channels, affine=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self.width, self.init_size, self.init_size)
        x = F.interpolate(self.bn0(x), scale_factor=2)
        x = F.interpolate(self.block1(x), scale_factor=2)
        return self.block2(x)
