"""Hydra sweeps: where an Optuna study is stored."""
from pathlib import Path


def sqlite_storage(folder: str) -> str:
    """The sqlite URL of ``<folder>/optuna.db``, creating ``folder``: the Optuna sweeper opens its study before
    Hydra creates the sweep folder, and sqlite cannot create a file in a folder that does not exist yet. Used as
    ``hydra.sweeper.storage: {_target_: iccv19.training.sweeps.sqlite_storage, folder: ${hydra.sweep.dir}}``."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'optuna.db'}"
