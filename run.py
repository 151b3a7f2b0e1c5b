"""Hydra entry point: compose the config, check it, dispatch on ``cfg.stage`` (``netcompress.stages``: fit, search,
export), write ``metrics.json``. Examples: README.md. Everything is built from ``_target_`` configs under conf/."""
import json
import sys
import time
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

import datamodules  # noqa: F401  (registers the resolvers conf/data/ uses)
from netcompress.config import check_config, config_error
from netcompress.core import atomic_write_text
from netcompress.reporting.console import (
    header,
    job_command,
    numerics,
    remove_unstarted_run,
    run_folder,
    silence_library_warnings,
)
from netcompress.reporting.loggers import finish_wandb
from netcompress.stages.export import export
from netcompress.stages.fit import fit
from netcompress.stages.search import run_search

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
        write_metrics_json(Path(cfg.paths.output_dir) / "metrics.json", metrics, time.time() - started, numerics(cfg))
    summary = ", ".join(f"{k} {v:.4f}" if k.startswith("test/") else f"{k} {v:.4g}" for k, v in sorted(metrics.items())
                        if k.startswith(("test/", "speed/", "model/flops", "model/params")))
    rank_zero_info(f"[done] {summary or 'no test metrics'}")
    rank_zero_info(f"[run] folder: {run_folder(cfg)}")
    return metrics


def write_metrics_json(path: Path, metrics: dict[str, float], seconds: float, how: dict) -> None:
    """What bench/ scripts read back: final metrics (test/*, model/flops, model/params, speed/*, ...), wall time,
    the numerics (precision, memory format, threads) and the command that produced them."""
    record = {"metrics": metrics, "wall_time_s": round(seconds, 2), **how, "command": job_command()}
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
        error = config_error(e, cfg)   # a ConfigError, or any exception raised while the run was built
        if error is None:
            raise
        print("error: " + " ".join(str(error).split()), file=sys.stderr)   # one line, whatever the message
        remove_unstarted_run(run_folder(cfg))
        sys.exit(1)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
