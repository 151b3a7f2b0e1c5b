"""Every option of every config group composes, and what it describes instantiates."""
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import ROOT, compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_config_composes_with_required_keys(tmp_path):
    cfg = compose_config([], tmp_path)
    for key in ("seed", "stage", "train", "test", "ckpt_path", "optimized_metric", "module", "trainer", "data"):
        assert key in cfg, key


@pytest.mark.parametrize("name", options("data"))
def test_data_options_instantiate(tmp_path, name):
    cfg = compose_config([f"data={name}"], tmp_path)
    if OmegaConf.is_missing(cfg.data, "root"):   # data=image_folder: the root is the user's; its classes are counted
        from data_files import write_image_folder

        cfg = compose_config([f"data={name}", f"data.root={write_image_folder(tmp_path / 'tree')}"], tmp_path)
    dm = instantiate(cfg.data)
    assert isinstance(dm, L.LightningDataModule)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (
        cfg.data.num_classes, cfg.data.in_channels, cfg.data.image_size)


@pytest.mark.parametrize("name", options("model"))
def test_model_options_instantiate(tmp_path, name):
    cfg = compose_config([f"model={name}"], tmp_path)
    if any(OmegaConf.is_missing(cfg.model, key) for key in cfg.model.keys()):
        pytest.skip("needs a searched encoding file (tested with MetaPruning)")
    with torch.device("meta"):  # full-size ImageNet networks and PruningNets without allocating memory
        net = instantiate(cfg.model)
    assert isinstance(net, torch.nn.Module)


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_options_instantiate(tmp_path, name):
    cfg = compose_config([f"trainer={name}"], tmp_path)
    if cfg.trainer.accelerator == "gpu":
        assert cfg.trainer.precision in ("bf16-mixed", "16-mixed")
        return  # no GPU here: composing is what can be checked
    assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)


@pytest.mark.parametrize("group", ["logger", "callbacks"])
def test_logger_and_callback_options_instantiate(tmp_path, group):
    from netcompress.config import instantiate_all
    from netcompress.reporting.loggers import finish_wandb

    for name in options(group):
        cfg = compose_config([f"{group}={name}"], tmp_path)
        for obj in instantiate_all(cfg.get(group)):
            assert obj is not None
        finish_wandb()


@pytest.mark.parametrize("group", ["method", "teacher", "loss", "experiment", "hparams_search"])
def test_other_group_options_compose(tmp_path, group):
    for name in options(group):
        cfg = compose_config([f"{group}={name}"], tmp_path)
        job = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
        assert OmegaConf.to_container(job, resolve=True)  # every interpolation resolves


def test_teacher_options_build(tmp_path):
    from netcompress.networks.cifar_resnet import resnet34

    path = tmp_path / "teacher.pt"
    torch.save(resnet34(10).state_dict(), path)
    cfg = compose_config(["teacher=checkpoint", f"teacher.checkpoint={path}", "data=cifar10"], tmp_path)
    teacher = instantiate(cfg.teacher)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    cfg = compose_config(["teacher=checkpoint", "model@teacher.net=resnet20", f"teacher.checkpoint={path}"], tmp_path)
    assert cfg.teacher.net.depth == 20


def test_imagenet_resnet18_composes(tmp_path):
    cfg = compose_config(["method=supervised", "data=imagenet", "model=resnet18"], tmp_path)
    assert cfg.model.arch == "resnet18" and cfg.model.num_classes == 1000
    assert cfg.data._target_.endswith("ImageNetDataModule")


def test_experiment_files_cite_their_source():
    for path in (CONF / "experiment").glob("*.yaml"):
        header = "".join(line for line in Path(path).read_text().splitlines(True)[:12] if line.startswith("#"))
        assert len(header) > 40, f"{path.name}: say in its header which paper table or setup it reproduces"


def test_a_resumed_optuna_sweep_runs_only_the_trials_its_study_lacks(tmp_path):
    """hydra.sweeper.n_trials is the study's size: finished trials in the storage count, a trial left running by a
    killed sweep does not."""
    import optuna

    from netcompress.config import ResumeStudy, sqlite_storage

    def sweeper(n_trials: int):
        cfg = compose_config(["hparams_search=cckd_optuna", f"hydra.sweeper.n_trials={n_trials}",
                              f"hydra.sweeper.storage.folder={tmp_path / 'sweep'}"], tmp_path)
        ResumeStudy().on_multirun_start(cfg)
        return cfg.hydra.sweeper

    assert sweeper(5).n_trials == 5   # no study yet
    study = optuna.create_study(study_name=sweeper(5).study_name, storage=sqlite_storage(str(tmp_path / "sweep")))
    for value in (0.5, 0.6):
        study.tell(study.ask(), value)
    study.ask()   # running when the sweep was killed
    assert sweeper(5).n_trials == 3 and sweeper(2).n_trials == 0 and sweeper(1).n_trials == 0
    assert isinstance(instantiate(compose_config(["hparams_search=optuna"], tmp_path).hydra.callbacks.resume_study),
                      ResumeStudy)
