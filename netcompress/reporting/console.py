"""What a run shows on the console and leaves in its folder: a short header instead of the config dump, library
noise dropped at its source, the job's own command, and no folder left behind by a run that never started.

The console and ``run.log`` get the same lines: ``conf/hydra/default.yaml`` configures Hydra's job logging with
``QuietFilter`` on both handlers and lets Lightning's loggers propagate to them."""
import logging
import shlex
import shutil
import sys
import warnings
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# Lightning's info lines that say nothing about this run (logged through rank_zero_info at every Trainer start).
NOISE = (
    "Trainer already configured with model summary callbacks",   # we configure our own ModelSummary on purpose
    "💡 Tip:",                                                   # litlogger / litmodels advertisements
    "GPU available:", "TPU available:",                          # the header names the trainer's accelerator
    "`Trainer.fit` stopped: `max_epochs=",                       # the progress bar shows the last epoch
)


class QuietFilter(logging.Filter):
    """Drops the ``NOISE`` lines (a filter on the job-logging handlers: console and run.log alike)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE)


def silence_library_warnings() -> None:
    """Warnings raised inside the libraries about their own internals, with nothing for a user to do, dropped by
    message; every other warning reaches the console and run.log (through the ``py.warnings`` logger)."""
    # lightning/pytorch/utilities/_pytree.py builds torch's deprecated LeafSpec (torch >= 2.10); Lightning's to fix.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Lightning's hint on any machine with SLURM's srun (a login node, scripts/local_slurm.sh) when a run is not a SLURM
    # job: runs reach SLURM through hydra/launcher=slurm, which starts them with srun.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
    logging.captureWarnings(True)


def _target_name(node) -> str:
    target = node.get("_target_", "") if isinstance(node, DictConfig) else ""
    return str(target).rsplit(".", 1)[-1] or "none"


def numerics(cfg: DictConfig) -> dict:
    """How the run computes: the trainer's precision, the memory format of images and weights (channels_last when
    ``callbacks.ChannelsLast`` is on) and the intra-op threads. In the header and in metrics.json."""
    callbacks = cfg.get("callbacks") or {}
    channels_last = any(isinstance(c, DictConfig) and str(c.get("_target_", "")).endswith(".ChannelsLast")
                        for c in callbacks.values())
    return {"precision": str((cfg.get("trainer") or {}).get("precision")),
            "memory_format": "channels_last" if channels_last else "contiguous", "threads": torch.get_num_threads()}


def header(cfg: DictConfig) -> list[str]:
    """Method, data, student, teacher and run folder in a few lines (``print_config=true`` prints the whole
    config; it is always saved in the run folder's ``.hydra/config.yaml``)."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    method = choices.get("method") or cfg.get("task_name")
    recipe = f" (experiment={choices['experiment']})" if choices.get("experiment") else ""
    data = cfg.get("data") or {}
    root = f" at {data.get('root')}" if data.get("root") else ""
    lines = [f"[run] method={method}{recipe}, stage={cfg.get('stage')}, seed={cfg.get('seed')}",
             f"[run] data: {_target_name(data)}{root}; model: {_target_name(cfg.get('model'))}"]
    teacher = cfg.get("teacher")
    if isinstance(teacher, DictConfig) and teacher.get("net") is not None:
        source = ("teacher.checkpoint (not set yet)" if OmegaConf.is_missing(teacher, "checkpoint") else
                  teacher.get("checkpoint") or (teacher.get("train_if_missing") or {}).get("path") or "its own weights")
        lines.append(f"[run] teacher: {_target_name(teacher.net)} from {source}")
    trainer = cfg.get("trainer") or {}
    epochs = f", max_epochs={trainer.get('max_epochs')}" if cfg.get("stage") == "fit" and cfg.get("train") else ""
    how = numerics(cfg)
    lines.append(f"[run] trainer: {trainer.get('accelerator')} x {trainer.get('devices')}{epochs}, "
                 f"precision={how['precision']}, memory format={how['memory_format']}, threads={how['threads']}")
    lines.append(f"[run] folder: {run_folder(cfg)}")
    return lines


def run_folder(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir).resolve()


def job_command() -> str:
    """``python run.py <this job's overrides>``: in a multirun job its own values, not the sweep's."""
    if not HydraConfig.initialized():
        return " ".join(["python", "run.py", *map(shlex.quote, sys.argv[1:])])
    return shlex.join(["python", "run.py", *HydraConfig.get().overrides.task])


def remove_unstarted_run(folder: Path) -> bool:
    """Removes the run folder Hydra created for a run that failed before it wrote anything (only ``.hydra/``
    and the log are there); a folder with checkpoints, logger output or metrics stays."""
    folder = Path(folder)
    if not folder.is_dir() or {p.name for p in folder.iterdir()} - {".hydra", "run.log"}:
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


class CheckRunFolder(Callback):
    """Hydra callback: the run (or sweep) folder is created before anything else, so an unwritable
    ``paths.log_dir`` is one error line instead of Hydra's chained tracebacks."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._create(config, config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._create(config, config.hydra.sweep.dir)

    @staticmethod
    def _create(config: DictConfig, folder: str) -> None:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"error: paths.log_dir={config.paths.log_dir}: cannot create the run folder in it ({e.strerror}). "
                  f"Point paths.log_dir at a folder you can write to (default: ./logs).",
                  file=sys.stderr)
            sys.exit(1)
