"""Image folders as a data set: ``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` (or ``val/``), the layout of
ImageNet and of most custom data. ``scan`` reads and checks the tree (ImageNet's datamodule shares it);
``ImageFolderDataModule`` decodes small images once into a uint8 tensor (cached in a file keyed by the tree) and
augments whole batches, so that an epoch is bound by the network, not by JPEG decoding."""
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from datamodules.base import ClassificationDataModule
from netcompress.core import ConfigError, atomic_torch_save

LAYOUT = "<root>/train/<class>/<image> and <root>/test/<class>/<image> (or val/ for the test split)"


def test_split(root) -> str:
    """``test`` or ``val``: the evaluation split of the tree (the first that exists)."""
    return next((s for s in ("test", "val") if (Path(root) / s).is_dir()), "test")


def class_folders(root, split: str = "train") -> list[str]:
    """The class folders of ``<root>/<split>``, sorted (ImageFolder's label order); a ConfigError naming data.root
    when the folder is missing or holds no class folder."""
    folder = Path(str(root)) / split
    if not folder.is_dir():
        raise ConfigError(f"data.root={root}: no {split}/ folder in it. Expected layout: {LAYOUT}. Point data.root at "
                          f"the folder that holds train/ and test/.")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ConfigError(f"data.root={root}: {split}/ holds no class folder. Expected layout: {LAYOUT}.")
    return classes


def scan(root, split: str, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """The classes (sorted folder names of ``train/``) and the ``(path, label)`` samples of ``<root>/<split>``, checked:
    every class of the split is one of train/'s, and no class folder is empty. Errors name data.root."""
    classes = classes or class_folders(root, "train")
    found = class_folders(root, split)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ConfigError(f"data.root={root}: {split}/ has class folders that train/ lacks: {unknown[:5]}. Every "
                          f"class of the test split must be a class the network is trained on: add them to train/ "
                          f"or remove them from {split}/.")
    samples = []
    for label, name in enumerate(classes):
        folder = Path(str(root)) / split / name
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS) \
            if folder.is_dir() else []
        if not files and (split == "train" or folder.is_dir()):
            raise ConfigError(f"data.root={root}: {split}/{name}/ holds no image ({', '.join(IMG_EXTENSIONS)}). "
                              f"Remove the empty class folder or add its images.")
        samples += [(str(p), label) for p in files]
    return classes, samples


def class_count(root) -> int:
    """The number of classes of the tree at ``root`` (the ``image_folder_classes`` resolver of conf/data/)."""
    return len(class_folders(root, "train"))


def _decode(path: str, image_size: int, mode: str) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert(mode)
        if img.size != (image_size, image_size):   # shorter side to image_size, then the centre square
            scale = image_size / min(img.size)
            w, h = max(image_size, round(img.width * scale)), max(image_size, round(img.height * scale))
            img = img.resize((w, h), Image.BILINEAR)
            left, top = (w - image_size) // 2, (h - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
        pixels = np.asarray(img, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def decode(root, samples, image_size: int, in_channels: int, cache_dir=None, threads: int = 2) -> torch.Tensor:
    """All images of ``samples`` as one uint8 tensor (N, C, image_size, image_size), decoded once; kept in
    ``<cache_dir>/image_folder/<key>.pt``, the key made of the files (names, sizes, modification times) and the
    decoding settings, so a changed tree is decoded again. An unreadable file is a ConfigError naming data.root."""
    stats = [(p, Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p, _ in samples]
    key = hashlib.sha1(json.dumps([stats, image_size, in_channels]).encode()).hexdigest()[:20]
    cache = Path(cache_dir) / "image_folder" / f"{key}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        return torch.load(cache, weights_only=True)
    mode = "RGB" if in_channels == 3 else "L"

    def one(path):
        try:
            return _decode(path, image_size, mode)
        except Exception as e:
            raise ConfigError(f"data.root={root}: cannot read {path} as an image ({type(e).__name__}: {e}). Remove "
                              f"or replace the file.") from None

    with ThreadPoolExecutor(max(1, threads)) as pool:   # PIL decodes outside the GIL
        images = list(pool.map(one, [p for p, _ in samples], chunksize=256))
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    if cache is not None:
        atomic_torch_save(tensor, cache)
    return tensor


class TensorImages(Dataset):
    """Decoded uint8 images and their labels; items are ``(image uint8 CxHxW, label)``, batches are made (and
    augmented) by ``BatchTransform``."""

    def __init__(self, images: torch.Tensor, targets: list[int]):
        self.images, self.targets = images, list(targets)
        self.labels = torch.as_tensor(self.targets, dtype=torch.long)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


class BatchTransform:
    """The collate function: stacks uint8 images, augments the whole batch (a random crop of the image padded by
    ``random_shift`` pixels, zeros or ``pad_mode="reflect"``, and a random horizontal flip: torchvision's
    RandomCrop(padding, padding_mode) and RandomHorizontalFlip, drawn per image) and normalizes to float.
    ``augment=False``: normalization only."""

    def __init__(self, mean, std, random_shift: int = 0, flip: bool = False, augment: bool = False,
                 pad_mode: str = "constant"):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.shift, self.flip = (random_shift, flip) if augment else (0, False)
        self.pad_mode = pad_mode

    def __call__(self, items):
        images = torch.stack([image for image, _ in items])
        labels = torch.stack([label for _, label in items])
        return self.augment(images), labels

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.shift:
            s = self.shift
            padded = torch.nn.functional.pad(x if self.pad_mode == "constant" else x.float(), (s, s, s, s),
                                             mode=self.pad_mode).to(x.dtype)
            dy, dx = torch.randint(0, 2 * s + 1, (2, n, 1))
            rows, cols = dy + torch.arange(h), dx + torch.arange(w)                 # (n, h), (n, w)
            x = padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
            x = x.permute(0, 3, 1, 2)
        if self.flip:
            x = torch.where(torch.rand(n, 1, 1, 1) < 0.5, x.flip(3), x)
        return (x.float() - self.mean) / self.std


class ImageFolderDataModule(ClassificationDataModule):
    """Any ImageFolder tree of small images (``conf/data/image_folder.yaml``; ``cifar10_jpeg.yaml`` is one): every
    image decoded once to ``image_size`` (shorter side resized, centre crop) and held in memory as uint8,
    cached under ``cache_dir``; training batches augmented as a whole (``random_shift``, ``flip``), then
    normalized by ``mean``/``std``. ``num_classes`` must equal the number of class folders of ``train/``."""

    def __init__(self, num_classes: int, image_size: int = 32, in_channels: int = 3,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), random_shift: int = 0, flip: bool = True,
                 pad_mode: str = "constant", cache_dir: str | None = None, decode_threads: int = 2, **kwargs):
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        super().__init__(**kwargs)
        for name, value in (("mean", mean), ("std", std)):
            if value is None or len(value) != in_channels or (name == "std" and min(value) <= 0):
                raise ConfigError(f"data.{name}={value and list(value)}: give one value per channel ({in_channels}), "
                                  f"std > 0.")
        if not isinstance(random_shift, int) or random_shift < 0:
            raise ConfigError(f"data.random_shift={random_shift}: the largest shift in pixels, an integer >= 0.")
        if pad_mode not in ("constant", "reflect"):
            raise ConfigError(f"data.pad_mode={pad_mode}: constant (zeros) or reflect.")
        if self.download:
            raise ConfigError("data.download=true: an image folder is read as it is; there is nothing to download.")
        self.mean, self.std = tuple(mean), tuple(std)
        self.random_shift, self.flip, self.pad_mode = random_shift, flip, pad_mode
        self.cache_dir, self.decode_threads = cache_dir, decode_threads
        self._splits = {}

    def split(self, train: bool) -> TensorImages:
        if not self._splits:   # both splits read and checked before anything is decoded or cached
            classes = class_folders(self.root, "train")
            samples = {name: scan(self.root, name, classes)[1] for name in ("train", test_split(self.root))}
            if len(classes) != self.num_classes:
                raise ConfigError(f"data.num_classes={self.num_classes}: data.root={self.root} has {len(classes)} "
                                  f"class folders in train/. Remove the override (the data config counts them).")
            for name, found in samples.items():
                images = decode(self.root, found, self.image_size, self.in_channels, self.cache_dir,
                                self.decode_threads)
                self._splits[name] = TensorImages(images, [label for _, label in found])
        return self._splits["train" if train else test_split(self.root)]

    def build(self, train, augment):
        return self.split(train)

    def collate(self, augment: bool) -> BatchTransform:
        return BatchTransform(self.mean, self.std, self.random_shift, self.flip, augment, self.pad_mode)
