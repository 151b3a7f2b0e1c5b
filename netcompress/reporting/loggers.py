"""Loggers: wandb that goes offline by itself when no API key is configured; a CSV log that a resumed run extends."""
import csv
import netrc
import os
from pathlib import Path

from lightning.pytorch import loggers
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_info


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(
            os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1])
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def run_name_and_group(save_dir: str) -> tuple[str, str]:
    """wandb run name and group from the run folder: ``logs/<task>/runs/<time>`` is run ``<task>/<time>`` in
    group ``<task>``; a multirun job ``logs/<task>/multiruns/<time>/<n>`` is ``<task>/<time>/<n>`` in the
    sweep's group ``<task>/<time>``, so a sweep's runs sit together on the dashboard."""
    parts = Path(save_dir).resolve().parts
    if len(parts) >= 4 and parts[-3] == "multiruns":
        return "/".join((parts[-4], parts[-2], parts[-1])), "/".join((parts[-4], parts[-2]))
    if len(parts) >= 3 and parts[-2] == "runs":
        return "/".join((parts[-3], parts[-1])), parts[-3]
    return parts[-1], parts[-1]


def wandb_logger(offline: bool | None = None, name: str | None = None, group: str | None = None,
                 **kwargs) -> WandbLogger:
    """A WandbLogger that logs offline when ``offline`` is None and no API key is configured (``WANDB_API_KEY``
    or ``wandb login``). Offline runs are synced later with ``wandb sync <save_dir>/wandb/offline-run-*``.
    ``name``/``group`` None: from the run folder (``run_name_and_group``)."""
    default_name, default_group = run_name_and_group(kwargs.get("save_dir", "."))
    kwargs.update(name=name or default_name, group=group or default_group)
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not wandb_api_key_configured()
        if offline:
            rank_zero_info(f"[wandb] no API key configured: logging offline under {kwargs.get('save_dir', '.')}"
                           f"/wandb. Sync later with `wandb sync {kwargs.get('save_dir', '.')}/wandb/offline-run-*`.")
    return WandbLogger(offline=offline, **kwargs)


def finish_wandb():
    """Close the current wandb run, so the next job of a multirun starts its own (WandbLogger reuses wandb.run)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


class _AppendingWriter(loggers.csv_logs.ExperimentWriter):
    def _check_log_dir_exists(self):   # Lightning's deletes the folder's metrics.csv; this one keeps its header
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class CSVLogger(loggers.CSVLogger):
    """Lightning's CSVLogger, except that a run resumed in its folder appends to its metrics.csv instead of deleting
    the epochs before the resume. Rows of steps redone after a crash appear twice; the later one counts."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def logged_values(path: Path, key: str) -> list[float]:
    """A metric of a metrics.csv, in step order: of rows logged twice for one step (a step redone after a resume),
    the later."""
    with open(path, newline="") as f:
        rows = {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}
    return [rows[step] for step in sorted(rows)]
