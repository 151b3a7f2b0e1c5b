"""MNIST, CIFAR-10/100 and ImageNet through torchvision's own dataset readers (never downloaded unless
``data.download=true``)."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import datasets
from torchvision import transforms as T

from datamodules.base import ClassificationDataModule
from iccv19.core import ConfigError


def _require(root, folder: str, what: str, layout: str, download_hint: bool = True):
    """``data.root`` (as the user gave it) must hold ``folder``."""
    if root is None or not (Path(root) / folder).exists():
        fix = " or set data.download=true to fetch it" if download_hint else ""
        raise ConfigError(f"data.root={root}: {what} not found (no {folder}/ in it). Expected layout: {layout}. "
                          f"Point data.root at the folder that holds it{fix}.")


class MNISTDataModule(ClassificationDataModule):
    """MNIST resized to 32x32 (DAFL's LeNet-5 input), normalized with (0.1307, 0.3081). ``random_shift``: training
    images shifted by up to that many pixels each way (zero padding, then a random 32x32 crop); 0 (default, the
    official recipes): no augmentation."""

    num_classes, in_channels, image_size = 10, 1, 32

    def __init__(self, random_shift: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(random_shift, int) or random_shift < 0:
            raise ConfigError(f"data.random_shift={random_shift}: the largest shift in pixels, an integer >= 0 "
                              f"(0: no augmentation).")
        self.random_shift = random_shift

    def build(self, train, augment):
        if not self.download:
            _require(self.root, "MNIST/raw", "MNIST",
                     "<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte")
        shift = [T.RandomCrop(32, padding=self.random_shift)] if augment and self.random_shift else []
        tf = T.Compose([T.Resize(32), *shift, T.ToTensor(), T.Normalize((0.1307,), (0.3081,))])
        return datasets.MNIST(self.root, train=train, transform=tf, download=self.download)


class _CIFAR10(datasets.CIFAR10):
    """torchvision's reader with the per-file md5 check relaxed to an existence check (the archive's md5 is
    still checked on download), so locally converted or test-written batches load."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class _CIFAR100(datasets.CIFAR100):
    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


class CIFAR10DataModule(ClassificationDataModule):
    """Random crop 32 (padding 4) + horizontal flip for training; per-channel normalization with ``mean``/``std``
    (default: this data set's own statistics; the DAFL recipes set the official code's constants)."""

    num_classes, in_channels, image_size = 10, 3, 32
    dataset_cls, folder = _CIFAR10, "cifar-10-batches-py"
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    def __init__(self, mean=None, std=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("mean", mean), ("std", std)):
            if value is not None:
                if len(value) != 3 or (name == "std" and min(value) <= 0):
                    raise ConfigError(f"data.{name}={list(value)}: give one value per channel (3), std > 0.")
                setattr(self, name, tuple(float(v) for v in value))

    def build(self, train, augment):
        if not self.download:
            _require(self.root, self.folder, self.dataset_cls.__bases__[0].__name__,
                     f"<root>/{self.folder}/ with the python-pickle batches")
        tf = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
        tf = T.Compose(tf + [T.ToTensor(), T.Normalize(self.mean, self.std)])
        return self.dataset_cls(self.root, train=train, transform=tf, download=self.download)


class CIFAR100DataModule(CIFAR10DataModule):
    num_classes = 100
    dataset_cls, folder = _CIFAR100, "cifar-100-python"
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


class Lighting:
    """AlexNet-style PCA lighting noise as the official MetaPruning scripts apply it (``utils.Lighting``): on the
    PIL image (0..255), ``eigvec @ (alpha * eigval)`` with ``alpha ~ N(0, alphastd)`` added per channel, clipped
    and cast back to uint8 (truncating). With ImageNet's eigenvalues the shift is a fraction of one gray level,
    so after the cast it lowers a channel by one level where its shift is negative: reproduced as it is."""

    eigval = np.array([0.2175, 0.0188, 0.0045])
    eigvec = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])

    def __init__(self, alphastd: float):
        self.alphastd = alphastd

    def __call__(self, img):
        if self.alphastd == 0:
            return img
        alpha = (torch.randn(3).numpy() * self.alphastd).astype("float32")
        shift = (self.eigvec @ (alpha * self.eigval).reshape(3, 1)).reshape(3)
        pixels = np.asarray(img)
        out = np.clip(pixels + shift, 0, 255) if pixels.dtype == np.uint8 else pixels + shift
        return Image.fromarray(out.astype(pixels.dtype), "RGB")

    def __repr__(self):
        return f"Lighting(alphastd={self.alphastd})"


class ImageNetDataModule(ClassificationDataModule):
    """ImageFolder train/ and val/ (one sub-folder per class). RandomResizedCrop(scale=crop_scale) (+ PCA lighting
    noise when ``lighting`` > 0, official MetaPruning: 0.1) + flip for training, Resize(256) + CenterCrop(224) for
    evaluation."""

    num_classes, in_channels = 1000, 3
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, image_size: int = 224, num_classes: int = 1000, lighting: float = 0.0,
                 crop_scale=(0.08, 1.0), **kwargs):
        self.num_classes, self.image_size = num_classes, image_size  # subsets (e.g. 100 classes) are common
        self.lighting, self.crop_scale = float(lighting), tuple(crop_scale)
        if not (len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            raise ConfigError(f"data.crop_scale={list(crop_scale)}: RandomResizedCrop's area range, two numbers "
                              f"0 < lo <= hi <= 1 (official: [0.08, 1.0]).")
        super().__init__(**kwargs)
        if self.download:
            raise ConfigError("data.download=true: ImageNet cannot be downloaded automatically. Get it from "
                              "image-net.org and point data.root at it.")

    def build(self, train, augment):
        split = "train" if train else "val"
        _require(self.root, split, "ImageNet",
                 "<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG", download_hint=False)
        size = self.image_size
        if augment:
            tf = [T.RandomResizedCrop(size, scale=self.crop_scale)]
            tf += [Lighting(self.lighting)] if self.lighting else []
            tf += [T.RandomHorizontalFlip()]
        else:
            tf = [T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size)]
        dataset = datasets.ImageFolder(str(Path(self.root) / split),
                                       transform=T.Compose(tf + [T.ToTensor(), T.Normalize(self.mean, self.std)]))
        if len(dataset.classes) != self.num_classes:
            raise ConfigError(f"data.root={self.root}: {split}/ has {len(dataset.classes)} class folders but "
                              f"data.num_classes={self.num_classes}. Set data.num_classes to match.")
        return dataset
