"""torchvision data sets read from ``data.root`` (never downloaded unless ``data.download=true``): any of them through
``TorchvisionDataModule`` and a config (conf/data/mnist.yaml, cifar10.yaml, ...), ImageNet's class folders through
``ImageNetDataModule``."""
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_class
from PIL import Image
from torchvision import datasets
from torchvision import transforms as T

from datamodules.base import ClassificationDataModule
from datamodules.image_folder import class_folders, scan, test_split
from netcompress.core import ConfigError


def _require(root, folder: str, what: str, layout: str, download_hint: bool = True):
    """A ConfigError naming data.root as typed when ``<root>/<folder>`` is missing."""
    if root is None or not (Path(root) / folder).exists():
        fix = " or set data.download=true to fetch it" if download_hint else ""
        missing = f" (no {Path(root) / folder})" if root is not None else ""
        raise ConfigError(f"data.root={root}: {what} not found{missing}. Expected layout: {layout}. "
                          f"Point data.root at the folder that holds it{fix}.")


class RelaxedCIFAR10(datasets.CIFAR10):
    """torchvision's reader with the per-file md5 check relaxed to an existence check (the archive's md5 is
    still checked on download), so locally converted or test-written batches load."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class RelaxedCIFAR100(datasets.CIFAR100):
    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


class TorchvisionDataModule(ClassificationDataModule):
    """Any torchvision classification data set, described by its config (``conf/data/mnist.yaml`` is one):

    dataset: the dataset class (``torchvision.datasets.FashionMNIST``, a dotted name) or a ``_partial_`` of it with
        extra constructor arguments; called as ``dataset(root, transform=, download=, **splits[split])``.
    splits: the constructor arguments that select the training and test split: ``{train: {train: true}, test:
        {train: false}}`` (MNIST, CIFAR) or ``{train: {split: train}, test: {split: test}}`` (SVHN).
    labels: the dataset's attribute that holds the labels (``targets``; SVHN: ``labels``).
    layout: the files under ``data.root``, named in the error when they are missing (the leading folders are
        checked before torchvision reads, unless ``download``).
    mean, std: per-channel normalization. resize: ``T.Resize(resize)`` first (null: none; MNIST 28 -> 32).
    random_shift, flip: training augmentation: a random ``image_size`` crop of the image padded by ``random_shift``
        pixels (zeros) and a random horizontal flip (CIFAR: 4, true; 0, false: none).
    """

    def __init__(self, dataset, splits, labels: str, layout: str, num_classes: int, in_channels: int,
                 image_size: int, mean, std, resize: int | None = None, random_shift: int = 0, flip: bool = False,
                 **kwargs):
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        super().__init__(**kwargs)
        if isinstance(dataset, str):
            try:
                dataset = get_class(dataset)
            except Exception as e:
                raise ConfigError(f"data.dataset={dataset}: no such class ({e}). Give a dataset class by its dotted "
                                  f"name, e.g. torchvision.datasets.FashionMNIST.") from e
        self.dataset, self.splits, self.labels, self.layout = dataset, splits, labels, layout
        self.resize, self.flip = resize, flip
        if set(splits) != {"train", "test"}:
            raise ConfigError(f"data.splits={dict(splits)}: give the dataset's arguments for the two splits, "
                              f"e.g. {{train: {{train: true}}, test: {{train: false}}}}.")
        for name, value in (("mean", mean), ("std", std)):
            if value is None or len(value) != in_channels or (name == "std" and min(value) <= 0):
                raise ConfigError(f"data.{name}={value and list(value)}: give one value per channel ({in_channels}), "
                                  f"std > 0.")
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if not isinstance(random_shift, int) or random_shift < 0:
            raise ConfigError(f"data.random_shift={random_shift}: the largest shift in pixels, an integer >= 0 "
                              f"(0: no augmentation).")
        self.random_shift = random_shift

    @property
    def dataset_name(self) -> str:
        """The torchvision class's name (``CIFAR10`` for ``RelaxedCIFAR10``), as errors name the data set."""
        cls = getattr(self.dataset, "func", self.dataset)
        return next((c.__name__ for c in cls.__mro__ if c.__module__.startswith("torchvision.")), cls.__name__)

    def build(self, train, augment):
        if not self.download:
            folders = Path(self.layout).parts
            folders = folders[:next((i for i, p in enumerate(folders) if set(p) & set("{*<[")), len(folders))]
            _require(self.root, Path(*folders), self.dataset_name, f"<root>/{self.layout}")
        tf = [T.Resize(self.resize)] if self.resize else []
        if augment:
            tf += [T.RandomCrop(self.image_size, padding=self.random_shift)] if self.random_shift else []
            tf += [T.RandomHorizontalFlip()] if self.flip else []
        tf = T.Compose(tf + [T.ToTensor(), T.Normalize(self.mean, self.std)])
        split = dict(self.splits["train" if train else "test"])
        return self.dataset(self.root, transform=tf, download=self.download, **split)

    def labels_of(self, dataset) -> np.ndarray:
        if not hasattr(dataset, self.labels):
            found = [a for a in ("targets", "labels", "_labels") if hasattr(dataset, a)]
            raise ConfigError(f"data.labels={self.labels}: {type(dataset).__name__} has no such attribute"
                              f"{f'; its labels may be in {found}' if found else ''}. Set data.labels to the "
                              f"attribute that holds them.")
        return np.asarray(getattr(dataset, self.labels))


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
        split = "train" if train else test_split(self.root)
        size = self.image_size
        if augment:
            tf = [T.RandomResizedCrop(size, scale=self.crop_scale)]
            tf += [Lighting(self.lighting)] if self.lighting else []
            tf += [T.RandomHorizontalFlip()]
        else:
            tf = [T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size)]
        dataset = CheckedImageFolder(self.root, split, T.Compose(tf + [T.ToTensor(), T.Normalize(self.mean, self.std)]))
        if len(dataset.classes) != self.num_classes:
            raise ConfigError(f"data.root={self.root}: train/ has {len(dataset.classes)} class folders but "
                              f"data.num_classes={self.num_classes}. Set data.num_classes to match.")
        return dataset


class CheckedImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder over ``<root>/<split>`` with the classes of ``<root>/train`` and the tree read and
    checked by ``datamodules.image_folder.scan`` (errors name data.root)."""

    def __init__(self, root, split: str, transform):
        self.tree = root
        super().__init__(str(Path(root) / split), transform=transform)
        self.split = split

    def find_classes(self, directory):
        classes = class_folders(self.tree, "train")
        return classes, {name: i for i, name in enumerate(classes)}

    def make_dataset(self, directory, class_to_idx, *args, **kwargs):
        return scan(self.tree, Path(directory).name, list(class_to_idx))[1]
