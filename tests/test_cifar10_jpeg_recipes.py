"""The data-free and MetaPruning recipes of the full-size CIFAR-10 (JPEG-75) study: they read the kept teacher as it
was trained, take the temperature chosen for it, and run their stages on a tiny image folder in the real layout."""
import pytest
import torch
import yaml
from helpers import FAST, ROOT, compose_config, run_config
from test_image_folder import write_tree

KEPT = str(ROOT / "conf" / "experiment" / "teacher_cifar10_jpeg_cpu.ckpt")
DISTILLING = ["kd_cifar10_jpeg_cpu", "cckd_cifar10_jpeg_cpu", "dkd_cifar10_jpeg_cpu", "fast_datafree_cifar10_jpeg_cpu",
              "dafl_cifar10_jpeg_cpu", "metapruning_then_kd_cifar10_jpeg_cpu"]


def test_every_recipe_that_distills_reads_the_kept_teacher_at_its_temperature(tmp_path):
    teacher = compose_config(["experiment=teacher_cifar10_jpeg_cpu", "data.root=/data"], tmp_path / "t")
    for recipe in DISTILLING:
        encoding = ["model.encoding=x.yaml"] if recipe.startswith("metapruning") else []
        cfg = compose_config([f"experiment={recipe}", "data.root=/data", *encoding], tmp_path / recipe)
        assert cfg.teacher.checkpoint == KEPT and cfg.teacher.net == teacher.model, recipe
        assert cfg.data.mean == teacher.data.mean and cfg.data.std == teacher.data.std, recipe
        assert cfg.loss.temperature == 1.0, recipe   # chosen for this teacher (study cifar10_held_out)
    fast = compose_config(["experiment=fast_datafree_cifar10_jpeg_cpu", "data.root=/data"], tmp_path / "f")
    dafl = compose_config(["experiment=dafl_cifar10_jpeg_cpu", "data.root=/data"], tmp_path / "d")
    assert (fast.loss.bn, fast.loss.bn_momentum, dafl.loss.bn) == (10.0, 0.9, 0.0)
    for key in ("oh", "a", "ie"):   # DAFL's CIFAR-10 weights in both
        assert fast.loss[key] == dafl.loss[key]
    assert fast.model == dafl.model and fast.generator == dafl.generator
    assert fast.trainer.max_epochs == dafl.trainer.max_epochs and fast.trainer.precision == "32-true"


@pytest.mark.e2e
@pytest.mark.parametrize("recipe", ["fast_datafree_cifar10_jpeg_cpu", "dafl_cifar10_jpeg_cpu"])
def test_data_free_recipes_learn_from_the_kept_teacher(tmp_path, monkeypatch, recipe):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = write_tree(tmp_path / "tree", classes=10, per_class=2)
    tiny = ["trainer.max_epochs=2", "datamodule.iterations_per_epoch=2", "module.global_batch_size=8",
            "module.num_images=8", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "logger=none",
            *FAST]
    metrics = run_config([f"experiment={recipe}", f"data.root={root}", *tiny], tmp_path / "run")
    assert 0.0 <= metrics["test/acc"] <= 1.0 and "test/teacher_acc" in metrics
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    # DAFL steps generator and student each iteration; fast_datafree's first epoch only synthesizes
    assert last["global_step"] > 0 and last["epoch"] == 1   # the second (last) epoch


@pytest.mark.e2e
def test_metapruning_stages_run_on_an_image_folder(tmp_path, monkeypatch):
    """PruningNet and search share the held-out split; the retraining trains on every training image; the
    composition distills the found network from the kept teacher."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = write_tree(tmp_path / "tree", classes=10, per_class=4)
    data = [f"data.root={root}", "data.holdout=10", "data.batch_size=8"]
    tiny = [*data, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1", "logger=none", *FAST]
    train = compose_config(["experiment=metapruning_cifar10_jpeg_cpu", "data.root=/data"], tmp_path / "c")
    search = compose_config(["experiment=metapruning_cifar10_jpeg_cpu_search", "data.root=/data"], tmp_path / "c")
    retrain = compose_config(["experiment=metapruning_cifar10_jpeg_cpu_retrain", "data.root=/data",
                              "model.encoding=x.yaml"], tmp_path / "c")
    assert train.data.holdout == search.data.holdout > 0 and retrain.data.holdout == 0
    assert train.model == {k: v for k, v in search.model.items()}
    run_config(["experiment=metapruning_cifar10_jpeg_cpu", "test=false", *tiny], tmp_path / "train")
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    steps = ["search.population=4", "search.generations=1", "search.parents=2", "search.mutations=2",
             "search.crossovers=2", "search.calib_batches=1", "search.calib_batch_size=8", "search.val_batches=1"]
    run_config(["experiment=metapruning_cifar10_jpeg_cpu_search", f"search.pruningnet_ckpt={ckpt}",
                "search.max_flops=0.5", *steps, *data, "logger=none", *FAST], tmp_path / "search")
    encodings = tmp_path / "search" / "top_encodings.yaml"
    metrics = run_config(["experiment=metapruning_cifar10_jpeg_cpu_retrain", f"model.encoding={encodings}", *tiny],
                         tmp_path / "retrain")
    full = yaml.safe_load(encodings.read_text())["budget"]["full_flops"]
    assert metrics["model/flops"] <= 0.5 * full and 0 <= metrics["test/acc"] <= 1
    # the composition: the same network and training, by KD from the kept teacher
    composed = run_config(["experiment=metapruning_then_kd_cifar10_jpeg_cpu", f"model.encoding={encodings}", *tiny],
                          tmp_path / "kd")
    assert composed["model/flops"] == metrics["model/flops"] and "test/teacher_acc" in composed
