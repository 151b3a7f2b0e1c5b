"""``stage=fit``: train ``cfg.module`` on the data (unless ``train=false``), then test it; resumes from
``ckpt_path`` or the run folder's own ``last.ckpt``."""
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from netcompress.config import instantiate_all
from netcompress.core import ConfigError, checkpoint_must_fit, load_checkpoint


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
    callbacks = instantiate_all(cfg.get("callbacks"))
    if not loggers:  # logger=none: Lightning refuses a learning-rate monitor without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:   # the first write into the run folder: everything above is built
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
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
