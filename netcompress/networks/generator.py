"""DAFL's image generator (Chen et al., ICCV 2019, Sec. 3 and the official code's ``Generator``).

z -> Linear -> 128 x (s/4) x (s/4) -> BN -> upsample x2 -> conv3x3 128 -> BN -> LeakyReLU 0.2
  -> upsample x2 -> conv3x3 64 -> BN -> LeakyReLU 0.2 -> conv3x3 C -> tanh -> output layer

``width``: channels of the first block (128 officially; the second block has ``width // 2``). The CPU recipes use a
narrower generator.

``inner_bn_eps``: the official code builds the two BatchNorms after the convolutions as ``BatchNorm2d(c, 0.8)``,
i.e. eps=0.8 (the author meant momentum). A large eps damps the normalization (the activations are divided by
sqrt(var + 0.8) instead of sqrt(var)). The recipes that target the paper's tables use 0.8
(conf/generator/dafl_official.yaml).

``output``: what follows the tanh.

- ``batchnorm`` (official): a non-affine ``BatchNorm2d(C)`` standardizes each generated batch per channel. It is
  symmetric under x -> -x and under any contrast: nothing tells the generator which sign the strokes have or how
  sparse they are, and the images come out with inverted polarity (bright background, dark strokes: negative
  skew where real digits have positive skew) -- see docs/notes/dafl.md, "Why the generated images looked wrong".
- ``pixels``: the tanh is read as a pixel value in [0, 1] (``(tanh + 1) / 2``) and normalized with the real data's
  normalization constants ``pixel_mean`` / ``pixel_std`` (one value, or one per channel), the transform every real
  input goes through. The generator then produces images in the range the teacher was trained on, with a fixed
  black level: not a statistic of the data beyond the two constants the data pipeline states anyway.
"""
import torch
import torch.nn.functional as F
from torch import nn

OUTPUTS = ("batchnorm", "pixels")


class PixelNormalize(nn.Module):
    """tanh output in [-1, 1] -> pixel in [0, 1] -> ``(pixel - mean) / std`` per channel, as real inputs are."""

    def __init__(self, channels: int, mean, std):
        super().__init__()
        mean, std = (torch.as_tensor([v] * channels if isinstance(v, int | float) else list(v), dtype=torch.float32)
                     for v in (mean, std))
        if mean.numel() != channels or std.numel() != channels or (std <= 0).any():
            raise ValueError(f"generator.pixel_mean={mean.tolist()} / pixel_std={std.tolist()}: give one value or "
                             f"{channels} (one per channel), std > 0")
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2 - self.mean) / self.std


class DAFLGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100, image_size: int = 32, channels: int = 1, width: int = 128,
                 inner_bn_eps: float = 1e-5, output: str = "batchnorm", pixel_mean=None, pixel_std=None):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"generator image_size={image_size} must be a multiple of 4")
        if output not in OUTPUTS:
            raise ValueError(f"generator.output={output}: choose one of {', '.join(OUTPUTS)}")
        if output == "pixels" and (pixel_mean is None or pixel_std is None):
            raise ValueError("generator.output=pixels needs generator.pixel_mean and generator.pixel_std (the real "
                             "data's normalization constants, e.g. 0.1307 and 0.3081 for MNIST)")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.init_size = image_size // 4
        self.width = width
        self.fc = nn.Linear(latent_dim, width * self.init_size ** 2)
        self.bn0 = nn.BatchNorm2d(width)
        self.block1 = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width, eps=inner_bn_eps),
            nn.LeakyReLU(0.2, inplace=True))
        last = nn.BatchNorm2d(channels, affine=False) if output == "batchnorm" else \
            PixelNormalize(channels, pixel_mean, pixel_std)
        self.block2 = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2, eps=inner_bn_eps),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width // 2, channels, 3, padding=1), nn.Tanh(), last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self.width, self.init_size, self.init_size)
        x = F.interpolate(self.bn0(x), scale_factor=2)
        x = F.interpolate(self.block1(x), scale_factor=2)
        return self.block2(x)
