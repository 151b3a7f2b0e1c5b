"""Image folders as a data set (data=image_folder, data=cifar10_jpeg): the tree read and checked, images decoded once
and cached, batches augmented as a whole, and a fit that learns from them."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, TINY, compose_config, run_cli, run_config
from hydra.utils import instantiate
from PIL import Image

from datamodules.image_folder import BatchTransform, ImageFolderDataModule, scan
from netcompress.core import ConfigError

COLORS = [(230, 20, 20), (20, 230, 20), (20, 20, 230)]


def write_tree(root: Path, classes: int = 3, per_class: int = 6, size: int = 32, fmt: str = "png",
               test: str = "test") -> Path:
    """``root/{train,<test>}/class_<c>/<i>.<fmt>``: class c is colour c plus noise, so a network can tell them apart."""
    rng = np.random.default_rng(0)
    for split in ("train", test):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                noise = rng.integers(-20, 21, (size, size, 3))
                pixels = np.clip(np.array(COLORS[c % 3]) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{fmt}")
    return root


def module(root, tmp_path, **kwargs):
    return ImageFolderDataModule(root=str(root), num_classes=3, cache_dir=str(tmp_path / "cache"), batch_size=4,
                                 **kwargs)


def test_tree_is_decoded_to_the_exact_pixels_with_labels_in_folder_order(tmp_path):
    root = write_tree(tmp_path / "tree")
    dm = module(root, tmp_path)
    dm.setup()
    assert (len(dm.train_set), len(dm.test_set)) == (18, 18)
    assert dm.train_set.targets == [0] * 6 + [1] * 6 + [2] * 6
    expected = np.asarray(Image.open(root / "train" / "class_1" / "2.png"))
    assert torch.equal(dm.train_set.images[8], torch.from_numpy(expected.copy()).permute(2, 0, 1))
    loader = dm.test_dataloader()
    x, y = next(iter(loader))     # evaluation: normalization only, as torchvision's Normalize
    first = loader.dataset.indices[0]    # one fixed random order of the class-by-class listing: mixed batches
    assert sorted(loader.dataset.indices) == list(range(18)) and len(set(y.tolist())) > 1
    raw = np.asarray(Image.open(root / "test" / f"class_{first // 6}" / f"{first % 6}.png"))
    raw = torch.from_numpy(raw.copy()).permute(2, 0, 1) / 255
    mean, std = torch.tensor(dm.mean).view(3, 1, 1), torch.tensor(dm.std).view(3, 1, 1)
    assert torch.allclose(x[0], (raw - mean) / std, atol=1e-5) and y[0] == first // 6
    assert loader.dataset.indices == dm.test_dataloader().dataset.indices   # the same order every time


def test_decoded_images_are_cached_by_tree_and_a_changed_tree_is_decoded_again(tmp_path, monkeypatch):
    import datamodules.image_folder as image_folder

    root = write_tree(tmp_path / "tree")
    module(root, tmp_path).setup()
    assert len(list((tmp_path / "cache" / "image_folder").glob("*.pt"))) == 2   # train and test
    monkeypatch.setattr(image_folder, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    dm = module(root, tmp_path)
    dm.setup()   # read from the cache: nothing decoded
    assert len(dm.train_set) == 18
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "class_0" / "new.png")
    with pytest.raises(ConfigError, match="AssertionError: decoded"):   # the new key misses the cache
        module(root, tmp_path).setup()


def test_large_images_are_resized_and_centre_cropped_and_val_is_the_test_split(tmp_path):
    root = write_tree(tmp_path / "tree", size=48, fmt="jpg", test="val")
    dm = module(root, tmp_path, image_size=24)
    dm.setup()
    assert dm.train_set.images.shape == (18, 3, 24, 24) and len(dm.test_set) == 18


@pytest.mark.parametrize("breaks, message", [
    (lambda r: __import__("shutil").rmtree(r / "train"), "no train/ folder"),
    (lambda r: (r / "test" / "class_9").mkdir(), "test/ has class folders that train/ lacks: ['class_9']"),
    (lambda r: [p.unlink() for p in (r / "train" / "class_2").iterdir()], "train/class_2/ holds no image"),
    (lambda r: (r / "train" / "class_1" / "3.png").write_bytes(b"not an image"), "cannot read"),
])
def test_a_bad_tree_is_one_error_naming_data_root_and_nothing_is_cached(tmp_path, breaks, message):
    root = write_tree(tmp_path / "tree")
    breaks(root)
    with pytest.raises(ConfigError, match="data.root=") as error:
        module(root, tmp_path).setup()
    assert message in str(error.value)
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_batch_augmentation_is_a_shifted_crop_and_a_mirror_of_each_image(tmp_path):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    transform = BatchTransform(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), random_shift=2, flip=True, augment=True)
    out, labels = transform([(img, torch.tensor(i)) for i, img in enumerate(images)])
    assert out.shape == (64, 3, 8, 8) and labels.tolist() == list(range(64))
    pixels = (out * 63.75 + 127.5).round()        # back to 0..255: normalization is (x - 127.5) / 63.75
    padded = torch.nn.functional.pad(images.float(), (2, 2, 2, 2))
    offsets, flips = set(), 0
    for i in range(64):
        views = {(dy, dx, f): padded[i, :, dy:dy + 8, dx:dx + 8].flip(2) if f else padded[i, :, dy:dy + 8, dx:dx + 8]
                 for dy in range(5) for dx in range(5) for f in (0, 1)}
        match = [k for k, v in views.items() if torch.equal(v, pixels[i])]
        assert match, f"image {i} is no shifted crop or mirror of its input"
        offsets.add(match[0][:2])
        flips += match[0][2]
    assert len(offsets) > 5 and 10 < flips < 54           # the draws differ per image
    plain, _ = BatchTransform((0.5,) * 3, (0.25,) * 3, 2, True, augment=False)([(images[0], torch.tensor(0))])
    assert torch.equal((plain[0] * 63.75 + 127.5).round(), images[0].float())


def test_image_folder_composes_with_its_class_count_and_a_fit_learns(tmp_path):
    root = write_tree(tmp_path / "tree", per_class=16)
    overrides = ["method=supervised", "data=image_folder", f"data.root={root}", "model=resnet8", *FAST,
                 "trainer.max_epochs=4", "data.batch_size=16", "optimizer.lr=0.01", "callbacks.speed=null"]
    cfg = compose_config(overrides, tmp_path / "run")
    assert cfg.data.num_classes == 3 and cfg.model.num_classes == 3
    metrics = run_config(overrides, tmp_path / "run")
    assert metrics["test/acc"] >= 0.9   # chance: 1/3
    record = json.loads(next((tmp_path / "run").glob("**/metrics.json")).read_text())
    assert record["precision"] == "32-true" and record["memory_format"] == "contiguous"
    assert record["metrics"]["speed/train_throughput"] > 0


def test_cifar10_jpeg_reads_the_ten_classes_with_cifar_statistics(tmp_path):
    root = write_tree(tmp_path / "tree", classes=10, per_class=2, fmt="jpg")
    cfg = compose_config(["method=supervised", "data=cifar10_jpeg", f"data.root={root}", "model=resnet8"],
                         tmp_path / "run")
    dm = instantiate(cfg.data)
    dm.setup()
    assert (dm.num_classes, dm.random_shift, dm.mean[0]) == (10, 4, 0.4914) and len(dm.train_set) == 20
    assert scan(root, "test")[0] == [f"class_{c}" for c in range(10)]


def test_missing_data_root_is_one_error_line_and_no_run_folder(tmp_path):
    proc = run_cli(["method=supervised", "data=image_folder", f"data.root={tmp_path / 'nowhere'}", "model=resnet8",
                    *TINY], tmp_path / "work", check=False)
    assert proc.returncode == 1 and proc.run_dir is None
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.root=" in errors[0] and "no train/ folder" in errors[0]
