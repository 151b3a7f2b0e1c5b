"""Running the project the way users do, from tests: compose a config in-process, or run ``run.py`` as a
subprocess (needed for ``strategy=ddp``, which re-executes the command line)."""
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
# End-to-end tests run quietly (conf/debug/quiet.yaml: no progress bar or summary, every step logged) and add their
# own sizes; debug=tiny (conf/debug/tiny.yaml) is one epoch of two batches.
FAST = ["debug=quiet"]
TINY = ["debug=tiny"]


def compose_config(overrides: list[str], output_dir: str | Path) -> DictConfig:
    """The composed config, as ``python run.py <overrides>`` would see it, writing under ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    output_dir = Path(output_dir)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(output_dir)
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
    return cfg


def run_config(overrides: list[str], output_dir: str | Path) -> dict[str, float]:
    """Compose and run in this process (``run.run``); returns the final metrics."""
    import run

    cfg = compose_config(overrides, output_dir)
    with open_dict(cfg):
        del cfg["hydra"]  # as in @hydra.main: the job config without the hydra node
    return run.run(cfg)


def run_folders(workdir: str | Path) -> list[Path]:
    """Run folders (``logs/<task>/runs/<time>``) and multirun job folders (``logs/<task>/multiruns/<time>/<n>``)
    under ``workdir``, oldest first; the jobs of a sweep by job number (jobs that run at once finish in any order)."""
    workdir = Path(workdir)
    found = [*workdir.glob("logs/*/runs/*"), *(p for p in workdir.glob("logs/*/multiruns/*/*") if p.name.isdigit())]
    return sorted((p for p in found if p.is_dir()),
                  key=lambda p: (p.parent.name, int(p.name) if p.name.isdigit() else -1, p.stat().st_mtime_ns, p.name))


def run_cli(args: list[str], workdir: str | Path, timeout: int = 600, multirun: bool = False,
            check: bool = True) -> subprocess.CompletedProcess:
    """``python run.py [-m] <args>`` as a user types it, started in ``workdir`` (created if needed): no
    ``hydra.*`` or ``paths.*`` overrides, so run folders land where a user's would, under ``workdir/logs``.
    The returned process has ``run_dirs`` (the run folders it created, multirun jobs in order) and ``run_dir``
    (the last of them)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    before = set(run_folders(workdir))
    cmd = [sys.executable, str(ROOT / "run.py"), *(["-m"] if multirun else []), *args]
    proc = subprocess.run(cmd, cwd=workdir, env=dict(os.environ), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                             f"\n--- stderr\n{proc.stderr[-6000:]}")
    proc.run_dirs = [p for p in run_folders(workdir) if p not in before]
    proc.run_dir = proc.run_dirs[-1] if proc.run_dirs else None
    return proc
