"""Mistakes a new user makes, typed on the command line: each is ``error: <key>=<value as typed>: <what is wrong
and the fix>`` (one line, no traceback), exit status 1, and no run folder left by a run that never started.

The table runs in-process (compose + ``run.run``: the ConfigError is what run.py prints); a few real ``run.py``
processes check the printed form."""
from pathlib import Path

import pytest
import torch
from helpers import compose_config, run_cli
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

import run
from netcompress.config import config_error
from netcompress.core import ConfigError
from netcompress.networks.cifar_resnet import he_resnet
from netcompress.networks.lenet import LeNet5

# Every run of the table is cut short in case a row is not refused (it must be: the test fails then).
SHORT = ["logger=none", "callbacks=none", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1"]
SUPERVISED = ["method=supervised", "model=lenet5"]


def bad_files(tmp_path):
    """A text file, a truncated zip, a plain state_dict: none is a Lightning checkpoint."""
    text = tmp_path / "notes.ckpt"
    text.write_text("this is not a checkpoint\n")
    state = tmp_path / "weights.pt"
    torch.save(LeNet5().state_dict(), state)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(state.read_bytes()[:500])
    return text, state, truncated


# name: (arguments, the key=value that must open the message, a word of the fix); method=supervised unless named
CASES = {
    "batch_size_zero": (["data.batch_size=0"], "data.batch_size=0", "positive integer"),
    "batch_size_negative": (["data.batch_size=-8"], "data.batch_size=-8", "positive integer"),
    "batch_size_text": (["data.batch_size=many"], "data.batch_size=many", "positive integer"),
    "eval_batch_size_zero": (["+data.eval_batch_size=0"], "data.eval_batch_size=0", "positive integer"),
    "global_batch_size_zero": (["data.global_batch_size=0"], "data.global_batch_size=0", "positive integer"),
    "holdout_too_large": (["data.holdout=5000"], "data.holdout=5000", "Choose a value"),
    "holdout_negative": (["data.holdout=-1"], "data.holdout=-1", ">= 0"),
    "num_workers_negative": (["data.num_workers=-2"], "data.num_workers=-2", ">= 0"),
    "devices_zero": (["trainer.devices=0"], "trainer.devices=0", ">= 1"),
    "devices_negative": (["trainer.devices=-1"], "trainer.devices=-1", ">= 1"),
    "gpu_without_gpu": (["trainer=gpu"], "trainer.accelerator=gpu", "trainer=cpu"),
    "ckpt_text_file": (["ckpt_path={text}"], "ckpt_path={text}", "point ckpt_path at"),
    "ckpt_truncated": (["ckpt_path={truncated}"], "ckpt_path={truncated}", "point ckpt_path at"),
    "ckpt_plain_state_dict": (["ckpt_path={state}"], "ckpt_path={state}", "last.ckpt"),
    "ckpt_missing": (["ckpt_path={missing}"], "ckpt_path={missing}", "existing checkpoint"),
    "ckpt_is_a_folder": (["ckpt_path={folder}"], "ckpt_path={folder}", "existing checkpoint"),
    "pruningnet_ckpt_text_file": (["experiment=metapruning_digits_search", "search.pruningnet_ckpt={text}"],
                                  "search.pruningnet_ckpt={text}", "point search.pruningnet_ckpt at"),
    "pruningnet_ckpt_truncated": (["experiment=metapruning_digits_search", "search.pruningnet_ckpt={truncated}"],
                                  "search.pruningnet_ckpt={truncated}", "point search.pruningnet_ckpt at"),
    "teacher_ckpt_text_file": (["method=cckd", "teacher=checkpoint", "model@teacher.net=lenet5",
                                "teacher.checkpoint={text}"], "teacher.checkpoint={text}", "checkpoint"),
    # tracebacks, library messages and silent mistakes once
    "lr_negative": (["optimizer.lr=-1"], "optimizer.lr=-1", "Invalid learning rate"),
    "lr_text": (["optimizer.lr=abc"], "optimizer.lr=abc", "not a number"),
    "weight_decay_negative": (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1", "conf/optimizer"),
    "momentum_text": (["optimizer=sgd", "optimizer.momentum=abc"], "optimizer.momentum=abc", "not a number"),
    "generator_lr_negative": (["method=dafl", "generator_optimizer.lr=-1"], "generator_optimizer.lr=-1", "Fix"),
    "scheduler_step_text": (["scheduler=step", "scheduler.step_size=abc"], "scheduler.step_size=abc", "number"),
    "seed_text": (["seed=abc"], "seed=abc", "integer"),
    "seed_negative": (["seed=-1"], "seed=-1", "integer"),
    "loss_weight_text": (["method=cckd", "loss.beta=abc"], "loss.beta=abc", "not a number"),
    "kd_temperature_text": (["method=kd", "loss.temperature=abc"], "loss.temperature=abc", "not a number"),
    "teacher_net_merged": (["method=cckd", "+model@teacher.net=resnet18"], "teacher.net.in_channels=1",
                           "teacher=checkpoint model@teacher.net="),
    "model_key_typo": (["+model.depth=2"], "model.depth=2", "Remove the key"),
    "model_classes_text": (["model.num_classes=ten"], "model.num_classes=ten", "not a number"),
    "holdout_text": (["data.holdout=abc"], "data.holdout=abc", "integer"),
    "precision_unknown": (["trainer.precision=13"], "trainer.precision=13", "32-true"),
    "accelerator_tpu": (["trainer.accelerator=tpu"], "trainer.accelerator=tpu", "trainer=cpu"),
    "accelerator_unknown": (["trainer.accelerator=gpus"], "trainer.accelerator=gpus", "choose cpu"),
    "max_epochs_forever": (["trainer.max_epochs=-1"], "trainer.max_epochs=-1", "at least one epoch"),
    "max_epochs_zero": (["trainer.max_epochs=0"], "trainer.max_epochs=0", "train=false"),
    "max_epochs_text": (["trainer.max_epochs=abc"], "trainer.max_epochs=abc", "at least one epoch"),
    "devices_text": (["trainer.devices=two"], "trainer.devices=two", ">= 1"),
    "strategy_unknown": (["trainer=ddp_cpu", "trainer.strategy=dpp"], "trainer.strategy=dpp", "ddp"),
    "data_key_typo": (["+data.imagesize=28"], "data.imagesize=28", "takes no imagesize"),
    "test_a_checkpoint_of_another_network": (["train=false", "ckpt_path={foreign}"], "ckpt_path={foreign}",
                                             "the method and model it was trained with"),
    "resume_a_checkpoint_of_another_network": (["ckpt_path={foreign}"], "ckpt_path={foreign}", "missing"),
    "pruningnet_of_another_network": (["experiment=metapruning_digits_search", "search.pruningnet_ckpt={resnet}"],
                                      "search.pruningnet_ckpt={resnet}", "another shape"),
    "stage_unknown": (["stage=nosuch"], "stage=nosuch", "search"),
    "test_ckpt_unknown": (["test_ckpt=final"], "test_ckpt=final", "best"),
    "both_batch_sizes": (["data.batch_size=32", "data.global_batch_size=64"], "data.batch_size=32",
                         "global_batch_size=null"),
    "teacher_ckpt_mistyped": (["method=cckd", "teacher.checkpoint={missing}"], "teacher.checkpoint={missing}",
                              "no such file"),
    "teacher_of_another_network": (["method=cckd", "teacher=checkpoint", "model@teacher.net=lenet5",
                                    "teacher.checkpoint={resnet}"], "teacher.checkpoint={resnet}", "model@teacher"),
    "data_root_missing": (["data=cifar10", "model=resnet20", "data.root={folder}/cifar"], "data.root={folder}/cifar",
                          "cifar-10-batches-py"),
    "max_flops_ambiguous": (["experiment=metapruning_digits_search", "search.pruningnet_ckpt={pruningnet}",
                             "search.max_flops=2.0"], "search.max_flops=2.0", "330M"),
    "encoding_unset": (["model=pruned"], "encoding", "must be set"),
    # values a target refuses while the run is built (any exception, named by the key as typed), zero or negative
    # where a positive number is needed, text where a list goes, a group option that does not exist
    "resnet_depth_not_6n_plus_2": (["model=resnet20", "model.depth=21"], "model.depth=21", "6n+2"),
    "generator_latent_dim_negative": (["method=dafl", "generator.latent_dim=-1"], "generator.latent_dim=-1",
                                      "DAFLGenerator refused it"),
    "max_time_text": (["+trainer.max_time=abc"], "trainer.max_time=abc", "DD:HH:MM:SS"),
    "cosine_period_zero": (["scheduler=cosine", "scheduler.T_max=0"], "scheduler.T_max=0", "CosineAnnealingLR"),
    "step_size_zero": (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0", "StepLR refuses"),
    "milestones_text": (["scheduler=multistep", "scheduler.milestones=abc"], "scheduler.milestones=abc",
                        "not a list"),
    "throughput_batch_zero": (["callbacks=default", "callbacks.speed.throughput_batch=0"],
                              "callbacks.speed.throughput_batch=0", ">= 1"),
    "save_top_k_below_minus_one": (["callbacks=default", "callbacks.model_checkpoint.save_top_k=-5"],
                                   "callbacks.model_checkpoint.save_top_k=-5", "ModelCheckpoint refused it"),
    "lr_monitor_interval_unknown": (["callbacks=default", "callbacks.lr_monitor.logging_interval=batch"],
                                    "callbacks.lr_monitor.logging_interval=batch", "`step` or `epoch`"),
    "accumulate_zero": (["+trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0", ">= 1"),
    "validate_every_zero_epochs": (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0", ">= 1"),
    "num_nodes_zero": (["trainer.num_nodes=0"], "trainer.num_nodes=0", ">= 1"),
    "log_every_negative": (["trainer.log_every_n_steps=-1"], "trainer.log_every_n_steps=-1", ">= 0"),
    "gradient_clip_negative": (["+trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1", ">= 0"),
    "adam_beta_above_one": (["optimizer=adam", "+optimizer.betas=[1.5,0.9]"], "optimizer.betas=[1.5, 0.9]",
                            "Invalid beta"),
    "momentum_negative": (["optimizer=sgd", "optimizer.momentum=-0.5"], "optimizer.momentum=-0.5", "momentum"),
    "model_option_unknown": (["model=nosuch"], "model=nosuch", "conf/model/"),
    "num_workers_text": (["data.num_workers=abc"], "data.num_workers=abc", ">= 0"),
    "batch_size_fraction": (["data.batch_size=1.5"], "data.batch_size=1.5", "positive integer"),
    "seed_fraction": (["seed=1.5"], "seed=1.5", "integer"),
    "max_epochs_fraction": (["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5", "at least one epoch"),
    "holdout_fraction": (["data.holdout=1.5"], "data.holdout=1.5", ">= 0"),
    "random_shift_negative": (["data=mnist", "model=lenet5", "data.random_shift=-1"], "data.random_shift=-1", ">= 0"),
    "kd_temperature_zero": (["method=kd", "loss.temperature=0"], "loss.temperature=0", "> 0"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{name: path} for the table: foreign, truncated and mismatched checkpoints, a trained-looking PruningNet."""
    tmp = tmp_path_factory.mktemp("files")
    text, state, truncated = bad_files(tmp)
    resnet = tmp / "resnet20.pt"
    torch.save(he_resnet(20, num_classes=10, in_channels=1).state_dict(), resnet)
    foreign = tmp / "resnet20.ckpt"   # a Lightning checkpoint of another network
    torch.save({"state_dict": {f"net.{k}": v for k, v in torch.load(resnet, weights_only=True).items()},
                "pytorch-lightning_version": "2.5.0", "epoch": 0, "global_step": 0}, foreign)
    pruningnet = tmp / "pruningnet.pt"
    torch.save(instantiate(compose_config(["experiment=metapruning_digits_search"], tmp).model).state_dict(),
               pruningnet)
    return {"text": text, "state": state, "truncated": truncated, "missing": tmp / "missing.ckpt", "folder": tmp,
            "resnet": resnet, "foreign": foreign, "pruningnet": pruningnet}


@pytest.mark.parametrize("name", sorted(CASES))
def test_mistake_is_named_by_key_value_and_fix(tmp_path, files, name):
    """What run.py prints after ``error:``: opens with the key and the value as typed, names the fix, one short line."""
    args, prefix, fix = CASES[name]
    args = [a.format(**files) for a in args]
    method = [] if any(a.startswith(("experiment=", "method=")) for a in args) else SUPERVISED
    short = [a for a in SHORT if not (a == "callbacks=none" and "callbacks=default" in args)]
    cfg = compose_config([*method, *short, *args], tmp_path)
    with open_dict(cfg):
        del cfg["hydra"]
    with pytest.raises(Exception) as raised:
        run.run(cfg)
    error = config_error(raised.value, cfg) or raised.value   # what run.py prints after "error: "
    message = " ".join(str(error).split())
    if isinstance(error, ConfigError):
        assert message.startswith((f"{prefix.format(**files)}: ", f"{prefix.format(**files)} ")), message
        assert fix in message, message
        assert len(message) <= 300 + len(str(files["folder"])), (len(message), message)
    else:   # a ??? left unset: run.py names the unset keys itself
        assert isinstance(error, MissingMandatoryValue) and prefix in message
    assert not files["missing"].exists()   # a mistyped teacher.checkpoint is not trained and written


def run_mistake(args: list[str], workdir: Path):
    proc = run_cli(args, workdir, check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and len(errors[0]) <= 320, proc.stderr[-3000:]
    assert not list(workdir.glob("logs/*/runs/*")), "a run that never started left its folder"
    return errors[0]


@pytest.mark.e2e
def test_printed_as_one_line_without_a_run_folder(tmp_path):
    """The user's path: a value the Trainer refuses when it is built (the last thing built, after the datamodule,
    the module, the loggers and the callbacks) is one line, and the folder Hydra made for the run is gone."""
    line = run_mistake(["+trainer.max_time=abc"], tmp_path / "a")
    assert line.startswith("error: trainer.max_time=abc: `Timer(duration='abc')` is not a valid duration"), line


@pytest.mark.e2e
def test_a_failure_while_training_stays_a_traceback(tmp_path):
    """What is raised inside the Trainer's loops (a divergence, a bug) is not a config mistake, even when it is
    raised while a node is instantiated (a teacher trained on first use)."""
    from lightning_modules.dafl import TrainingDiverged

    cfg = compose_config(["method=dafl", *SHORT, "loss.a=nan"], tmp_path)
    with open_dict(cfg):
        del cfg["hydra"]
    with pytest.raises(TrainingDiverged) as raised:
        run.run(cfg)
    assert config_error(raised.value, cfg) is None
    node = OmegaConf.create({"teacher": {"_target_": f"{__name__}.train_and_fail"}})
    with pytest.raises(InstantiationException, match="full_key: teacher") as raised:   # raised in a training loop
        instantiate(node.teacher)                                                        # while a node is built
    assert config_error(raised.value, cfg) is None


def train_and_fail():
    """A Trainer whose training step raises, as a ``_target_`` (a teacher trained on first use does this)."""
    import lightning as L

    from lightning_modules.classifier import ClassifierModule
    from netcompress.networks.lenet import LeNet5

    class Fails(ClassifierModule):
        def training_step(self, batch, batch_idx):
            raise FloatingPointError("a bug in training")

    data = torch.utils.data.TensorDataset(torch.zeros(4, 1, 32, 32), torch.zeros(4, dtype=torch.long))
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(Fails(LeNet5(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1)),
                                              torch.utils.data.DataLoader(data, batch_size=2))


@pytest.mark.e2e
@pytest.mark.slow   # a process of its own: the error format is run by default above
def test_an_unwritable_log_dir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    line = run_mistake([f"paths.log_dir={tmp_path}/file/logs"], tmp_path / "c")
    assert line.startswith(f"error: paths.log_dir={tmp_path}/file/logs: cannot create the run folder in it")


def test_foreign_search_state_and_encoding_files_are_clear_errors(tmp_path):
    from netcompress.networks.pruningnet import load_encoding_file
    from netcompress.search.evolution import Budget, EvolutionarySearch, SearchConfig

    text = tmp_path / "notes.txt"
    text.write_text("{ not json: [")
    search = EvolutionarySearch(3, 31, Budget(lambda e: (1, 1)), lambda encodings: [0.0] * len(encodings),
                                SearchConfig(population=4, generations=1), text)
    with pytest.raises(ConfigError, match=f"search.state={text}: not a search state file"):
        search.load_state()
    with pytest.raises(ConfigError, match=f"model.encoding={text}: not an encoding file"):
        load_encoding_file(text)
