"""Plumbing every part of the project may import: user-facing errors, atomic writes and checkpoint
reading. A leaf: it imports nothing of the project (and nothing of Lightning or Hydra)."""
import os
from contextlib import contextmanager
from pathlib import Path

import torch


# -- errors a user can fix --------------------------------------------------------------------------------------
class ConfigError(ValueError):
    """Bad input: the message names the config key and how to fix it. run.py prints it without a traceback."""


def find_config_error(exc: BaseException) -> "ConfigError | None":
    """The ConfigError behind ``exc`` (Hydra's instantiate wraps the exceptions it sees), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConfigError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


# -- atomic writes ------------------------------------------------------------------------------------------------
@contextmanager
def atomic_output(path: str | Path):
    """Yields a temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds. A
    killed process never leaves a truncated ``path`` behind (the old file stays until the new one is complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def atomic_torch_save(obj, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


# -- checkpoints ----------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, key: str, weights_only: bool = True):
    """``torch.load`` of a file a user named in ``key``; a missing, truncated or foreign file is a ConfigError
    naming ``key`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={path}: no such file. Point {key} at an existing checkpoint "
                          f"(a run's checkpoints/last.ckpt, or a plain state_dict file).")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # truncated zip, a text file, a pickle of something else
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:80]
        raise ConfigError(f"{key}={path}: not a readable PyTorch checkpoint ({first}). Truncated or of another "
                          f"kind: point {key} at a complete one (a finished epoch's checkpoints/last.ckpt).") from None


def state_dict_mismatch(net: torch.nn.Module, state: dict) -> str:
    """What keeps ``state`` from loading into ``net``, in one short sentence (torch's own message lists every key:
    thousands of characters for a ResNet): counts and the first key of each kind."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))]
    parts = [f"{len(missing)} tensors missing ({missing[0]}, ...)" if missing else "",
             f"{len(unexpected)} unexpected ({unexpected[0]}, ...)" if unexpected else "",
             f"{len(shapes)} of another shape ({shapes[0]}: {list(state[shapes[0]].shape)} in the file, "
             f"{list(own[shapes[0]].shape)} here)" if shapes else ""]
    return ", ".join(p for p in parts if p)


@contextmanager
def checkpoint_must_fit(module: torch.nn.Module, path, key: str = "ckpt_path"):
    """Around ``trainer.fit/test(ckpt_path=path)``: Lightning's strict state_dict error (every key listed, thousands
    of characters) as a ConfigError naming ``key`` with ``state_dict_mismatch``'s summary."""
    try:
        yield
    except RuntimeError as e:
        if not path or "Error(s) in loading state_dict" not in str(e):
            raise
        state = load_checkpoint(path, key).get("state_dict") or {}
        raise ConfigError(f"{key}={path} does not fit this run's {type(module).__name__} "
                          f"({state_dict_mismatch(module, state)}). Resume or test it with the method and model it "
                          f"was trained with (its .hydra/overrides.yaml).") from None


def read_state_dict(path: str | Path, key: str, prefix: str = "net.") -> dict:
    """A network's state_dict from a Lightning checkpoint (its ``state_dict``, keys under ``prefix`` with the
    prefix removed) or from a plain state_dict file. Loaded with ``weights_only=True``."""
    state = load_checkpoint(path, key)
    if isinstance(state, dict) and "state_dict" in state:
        state = {k[len(prefix):]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    if not isinstance(state, dict) or not state:
        raise ConfigError(f"{key}={path}: holds no network weights (no '{prefix}*' tensors in its state_dict). "
                          f"Point {key} at a checkpoint of the network's training run.")
    return state
