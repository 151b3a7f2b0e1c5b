"""DAFL's image generator (Chen et al., ICCV 2019, Sec. 3 and the official code's ``Generator``).

z -> Linear -> 128 x (s/4) x (s/4) -> BN -> upsample x2 -> conv3x3 128 -> BN -> LeakyReLU 0.2
  -> upsample x2 -> conv3x3 64 -> BN -> LeakyReLU 0.2 -> conv3x3 C -> tanh -> BatchNorm2d(C, affine=False)

The last, non-affine BatchNorm standardizes each generated batch per channel, so the images have roughly the
statistics of normalized real inputs; there is no other normalization.

``inner_bn_eps``: the official code builds the two BatchNorms after the convolutions as ``BatchNorm2d(c, 0.8)``,
i.e. eps=0.8 (the author meant momentum). A large eps damps the normalization (the activations are divided by
sqrt(var + 0.8) instead of sqrt(var)), which changes the dynamics a little. Default: the standard 1e-5; set
``generator.inner_bn_eps=0.8`` to reproduce the official runs exactly.
"""
import torch
import torch.nn.functional as F
from torch import nn


class DAFLGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100, image_size: int = 32, channels: int = 1, inner_bn_eps: float = 1e-5):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"generator image_size={image_size} must be a multiple of 4")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.init_size = image_size // 4
        self.fc = nn.Linear(latent_dim, 128 * self.init_size ** 2)
        self.bn0 = nn.BatchNorm2d(128)
        self.block1 = nn.Sequential(
            nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128, eps=inner_bn_eps), nn.LeakyReLU(0.2, inplace=True))
        self.block2 = nn.Sequential(
            nn.Conv2d(128, 64, 3, padding=1), nn.BatchNorm2d(64, eps=inner_bn_eps), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, channels, 3, padding=1), nn.Tanh(), nn.BatchNorm2d(channels, affine=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], 128, self.init_size, self.init_size)
        x = F.interpolate(self.bn0(x), scale_factor=2)
        x = F.interpolate(self.block1(x), scale_factor=2)
        return self.block2(x)

    def sample_noise(self, batch_size: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """Standard normal latent codes, drawn from ``generator`` (a per-rank stream) when given."""
        z = torch.randn(batch_size, self.latent_dim, generator=generator,
                        device=generator.device if generator is not None else device)
        return z.to(device) if device is not None else z
