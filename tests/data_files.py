"""Tiny datasets written in the real on-disk formats, for torchvision's own readers."""
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_mnist(root: Path, n_train: int = 40, n_test: int = 20, seed: int = 0, name: str = "MNIST",
                learnable: bool = False) -> Path:
    """``root/<name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (big-endian IDX, as LeCun ships them; the
    format of every torchvision MNIST-like set, named after its class: MNIST, FashionMNIST, KMNIST). Labels cycle
    0..9. Images: noise, or with ``learnable`` black ones with a white 8x5 block whose place is the label's (rows
    4-11 for 0-4, 16-23 for 5-9; columns 1 + 5 * (label % 5) on): a network learns it in a few steps."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        if learnable:
            images[:] = 0
            for image, label in zip(images, labels, strict=True):
                row, col = 4 + 12 * (label // 5), 1 + 5 * (label % 5)
                image[row:row + 8, col:col + 5] = 255
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return Path(root)


def write_cifar(root: Path, classes: int = 10, per_batch: int = 20, seed: int = 0) -> Path:
    """CIFAR-10 (5 train batches + test_batch + batches.meta) or CIFAR-100 (train, test, meta) python pickles."""
    rng = np.random.default_rng(seed)
    if classes == 10:
        folder, label_key = "cifar-10-batches-py", "labels"
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta_name, meta = "batches.meta", {"label_names": [f"class{i}" for i in range(10)]}
    else:
        folder, files, label_key = "cifar-100-python", ["train", "test"], "fine_labels"
        meta_name, meta = "meta", {"fine_label_names": [f"class{i}" for i in range(100)]}
    path = Path(root) / folder
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        n = per_batch
        entry = {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                 label_key: [int(i % classes) for i in range(n)], "filenames": [f"{name}_{i}.png" for i in range(n)]}
        with open(path / name, "wb") as f:
            pickle.dump(entry, f)
    with open(path / meta_name, "wb") as f:
        pickle.dump(meta, f)
    return Path(root)


def write_image_folder(root: Path, classes: int = 3, per_class: int = 4, size: int = 40, seed: int = 0) -> Path:
    """``root/{train,val}/<wnid>/*.JPEG`` as ImageNet is laid out."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            folder = Path(root) / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img_{i}.JPEG", quality=90)
    return Path(root)
