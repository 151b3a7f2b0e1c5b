"""Hydra entry point: compose the config, instantiate datamodule, module, trainer, loggers and callbacks, run
the stage. Examples: README.md. Everything is built from ``_target_`` configs under conf/."""
import json
import sys
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from iccv19.core import ConfigError, atomic_write_text, checkpoint_must_fit, find_config_error, load_checkpoint
from iccv19.deploy.export import export
from iccv19.search.stage import run_search
from iccv19.training.build import check_config, instantiate_all
from iccv19.training.console import header, job_command, remove_unstarted_run, run_folder, silence_library_warnings
from iccv19.training.loggers import finish_wandb


def fit(cfg: DictConfig) -> dict[str, float]:
    """Train ``cfg.module`` on ``cfg.data`` (unless ``train=false``), then evaluate on the test set."""
    # Resume: ckpt_path when set, else the run folder's own last.ckpt (a requeued SLURM job, a rerun into the same
    # hydra.run.dir continues where it stopped). Read once through load_checkpoint: a bad file is a clear error.
    ckpt_path, last = cfg.get("ckpt_path"), Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if not ckpt_path and cfg.train and last.is_file():
        rank_zero_info(f"[resume] {last} exists: continuing that run (another run folder starts over)")
        ckpt_path = str(last)
    checkpoint = load_checkpoint(ckpt_path, "ckpt_path") if ckpt_path else {"state_dict": None}
    if not (isinstance(checkpoint, dict) and "state_dict" in checkpoint):
        raise ConfigError(f"ckpt_path={ckpt_path}: not a Lightning checkpoint (no state_dict in it). ckpt_path "
                          f"resumes or tests a run: point it at <run dir>/checkpoints/last.ckpt.")
    del checkpoint
    datamodule = instantiate(cfg.datamodule or cfg.data)
    datamodule.setup()  # a missing dataset fails here, before a teacher is trained or a logger started
    module = instantiate(cfg.module, _convert_="object")  # plain containers: checkpoints load with weights_only
    loggers = instantiate_all(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    callbacks = instantiate_all(cfg.get("callbacks"))
    if not loggers:  # logger=none: Lightning refuses a learning-rate monitor without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    metrics = {}
    if cfg.train:
        with checkpoint_must_fit(module, ckpt_path):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(trainer.callback_metrics)
    metrics.update(getattr(module, "model_stats", {}))
    if cfg.test:
        ckpt = ckpt_path if not cfg.train else None
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if cfg.train and cfg.get("test_ckpt") == "best" and best:
            ckpt = best
        with checkpoint_must_fit(module, ckpt):
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)
        metrics.update(trainer.callback_metrics)
    return {k: float(v) for k, v in metrics.items()}


STAGES = {"fit": fit, "search": run_search, "export": export}


def run(cfg: DictConfig) -> dict[str, float]:
    """Check, seed, print the header, run ``cfg.stage``; returns the final metrics."""
    check_config(cfg, STAGES)
    if cfg.get("print_config"):
        rank_zero_info(OmegaConf.to_yaml(cfg, resolve=True))
    for line in header(cfg):
        rank_zero_info(line)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    started = time.time()
    try:
        metrics = STAGES[cfg.stage](cfg)
    finally:
        finish_wandb()
    if rank_zero_only.rank == 0:
        write_metrics_json(Path(cfg.paths.output_dir) / "metrics.json", metrics, time.time() - started)
    summary = ", ".join(f"{k} {v:.4f}" if k.startswith("test/") else f"{k} {v:.4g}" for k, v in sorted(metrics.items())
                        if k.startswith(("test/", "speed/", "model/flops", "model/params")))
    rank_zero_info(f"[done] {summary or 'no test metrics'}")
    rank_zero_info(f"[run] folder: {run_folder(cfg)}")
    return metrics


def write_metrics_json(path: Path, metrics: dict[str, float], seconds: float) -> None:
    """What bench/ scripts read back: final metrics (test/*, model/flops, model/params, ...), wall time and the
    command that produced them."""
    record = {"metrics": metrics, "wall_time_s": round(seconds, 2),
              "command": job_command()}
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    silence_library_warnings()
    try:
        metrics = run(cfg)
    except MissingMandatoryValue:   # a ??? value reached (after the data checks, so a bad data.root is named first)
        missing = sorted(OmegaConf.missing_keys(cfg))
        print(f"error: {', '.join(missing)} must be set (??? in conf/): add {missing[0]}=<value> to the command "
              f"(the comment beside it in conf/ says what it takes).", file=sys.stderr)
        remove_unstarted_run(run_folder(cfg))
        sys.exit(1)
    except Exception as e:
        error = find_config_error(e)
        if error is None:
            raise
        print("error: " + " ".join(str(error).split()), file=sys.stderr)   # one line, whatever the message
        remove_unstarted_run(run_folder(cfg))
        sys.exit(1)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
