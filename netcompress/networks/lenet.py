"""LeNet-5 and LeNet-5-half as in DAFL (32x32 input; features = the 120-d (60-d) conv3 output)."""
import torch
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0):
        super().__init__()
        c1, c2, c3, f1 = (max(1, int(round(c * width))) for c in (6, 16, 120, 84))
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 5), nn.ReLU(inplace=True), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(c3, f1), nn.ReLU(inplace=True), nn.Linear(f1, num_classes))
        self.feature_dim = c3

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = self.body(x)
        logits = self.head(features)
        return (logits, features) if return_features else logits


def lenet5_half(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """DAFL's student: 3/8/60 channels, fc 60 -> 42 -> classes."""
    return LeNet5(num_classes, in_channels, width=0.5)
