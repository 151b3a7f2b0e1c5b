"""scikit-learn's 8x8 digits (ships inside the package): the embedded default, upsampled to 32x32."""
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from datamodules.base import ClassificationDataModule


class DigitsDataModule(ClassificationDataModule):
    """1797 images, 10 classes. A fixed stratified split: 360 test images, the rest the training pool (of which
    ``holdout`` are held out for validation). Pixels scaled to [0, 1], bilinearly upsampled, then normalized with
    the training pool's mean and standard deviation."""

    num_classes, in_channels = 10, 1

    def __init__(self, image_size: int = 32, test_size: int = 360, split_seed: int = 0, **kwargs):
        self.image_size = image_size
        super().__init__(**kwargs)
        self.test_size, self.split_seed = test_size, split_seed
        self._tensors = None

    def _splits(self):
        if self._tensors is None:
            digits = load_digits()
            x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
            y = torch.tensor(digits.target, dtype=torch.long)
            train_idx, test_idx = train_test_split(range(len(y)), test_size=self.test_size,
                                                   random_state=self.split_seed, stratify=y.numpy())
            mean, std = x[train_idx].mean(), x[train_idx].std()
            x = (x - mean) / std
            self._tensors = {True: (x[train_idx], y[train_idx]), False: (x[test_idx], y[test_idx])}
        return self._tensors

    def build(self, train: bool, augment: bool):
        return TensorDataset(*self._splits()[train])
