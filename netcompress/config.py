"""Reading the composed config: the checks made before anything is built, the loggers and callbacks every stage
needs, a Fabric for stages that run their own loop (the MetaPruning search) from the same ``trainer`` config as
``Trainer`` stages, and where an Optuna sweep stores its study."""
import inspect
import re
import sys
import traceback
import typing
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import get_object, instantiate
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig, ListConfig, OmegaConf, read_write
from omegaconf.errors import MissingMandatoryValue

from netcompress.core import ConfigError, find_config_error
from netcompress.schedules import with_total_steps

PROJECT_DIR = Path(__file__).resolve().parents[1]
# ${project_dir:} in conf/: the folder of run.py and conf/, wherever the command is started (paths.project_dir).
OmegaConf.register_new_resolver("project_dir", lambda: str(PROJECT_DIR), replace=True)


def instantiate_all(group: DictConfig | None) -> list:
    """Every entry of a ``logger``/``callbacks`` group that has a ``_target_``."""
    return [instantiate(c) for c in (group or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def check_config(cfg: DictConfig, stages) -> None:
    """The mistakes caught before anything is built or trained (each value is also checked where it is used)."""
    if cfg.stage not in stages:
        raise ConfigError(f"stage={cfg.stage}: choose one of {', '.join(stages)} (the method sets it: "
                          f"method=metapruning_search runs the search).")
    check_data_defaults(cfg)
    seed = cfg.seed
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed}: the seed is an integer from 0 to 4294967295 (e.g. seed=0).")
    check_trainer_config(cfg.trainer, train=cfg.get("train", True))
    check_arguments(cfg)
    check_optimizers(cfg)
    instantiate_all(cfg.get("callbacks"))   # built once, as the optimizers: a value a callback refuses is named now
    if cfg.get("test_ckpt") not in ("last", "best"):
        raise ConfigError(f"test_ckpt={cfg.get('test_ckpt')}: choose last (the last epoch's weights) or best (the "
                          f"best epoch by val/acc).")
    typed = {o.split("=", 1)[0].lstrip("+~") for o in (HydraConfig.get().overrides.task
                                                         if HydraConfig.initialized() else [])}
    data = cfg.get("data") or {}
    if "data.batch_size" in typed and data.get("global_batch_size") is not None:
        raise ConfigError(f"data.batch_size={data.batch_size} and data.global_batch_size={data.global_batch_size} "
                          f"are both set: the global size (per step over all devices) wins for training. Set "
                          f"data.global_batch_size=<N> instead, or data.global_batch_size=null to use batch_size.")


def _literals(hint) -> list:
    """The values of the ``Literal`` types inside a type hint (``Optional[Union[Literal[64, 32], ...]]``)."""
    if typing.get_origin(hint) is typing.Literal:
        return list(typing.get_args(hint))
    return [value for arg in typing.get_args(hint) for value in _literals(arg)]


PRECISIONS = _literals(typing.get_type_hints(L.Trainer.__init__)["precision"])   # what Trainer(precision=) takes


# Trainer settings Lightning takes at construction but divides by, or misreads, later: the smallest value that works.
TRAINER_AT_LEAST = {"accumulate_grad_batches": 1, "check_val_every_n_epoch": 1, "num_nodes": 1, "log_every_n_steps": 0,
                    "gradient_clip_val": 0, "min_epochs": 0}


def check_trainer_config(trainer: DictConfig, train: bool = True) -> None:
    """Settings this machine cannot honour or Lightning would misread, as clear errors before anything starts."""
    accelerator, devices = trainer.get("accelerator"), trainer.get("devices")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator}: no GPU is visible on this machine. Use trainer=cpu "
                          f"(or trainer=ddp_cpu for 2 CPU processes), or run where a GPU is.")
    if isinstance(accelerator, str) and accelerator not in ("auto", "gpu", "cuda"):
        if accelerator not in AcceleratorRegistry:
            raise ConfigError(f"trainer.accelerator={accelerator}: choose cpu, gpu or auto (or one of "
                              f"{', '.join(sorted(AcceleratorRegistry.available_accelerators()))}).")
        if not AcceleratorRegistry[accelerator]["accelerator"].is_available():
            raise ConfigError(f"trainer.accelerator={accelerator}: no {accelerator} device on this machine (or its "
                              f"library is not installed). Use trainer=cpu, or trainer=gpu where a GPU is.")
    if ((isinstance(devices, int) and devices < 1) or devices in ("0", "", [])
            or (isinstance(devices, str) and not re.fullmatch(r"auto|-1|\d+|\d+(,\d+)*,?", devices.replace(" ", "")))):
        raise ConfigError(f"trainer.devices={devices}: give a number of devices >= 1 (or auto).")
    strategy = trainer.get("strategy")
    if isinstance(strategy, str) and strategy != "auto" and strategy not in StrategyRegistry:
        raise ConfigError(f"trainer.strategy={strategy}: choose auto, ddp (trainer=ddp, trainer=ddp_cpu), ddp_spawn "
                          f"or another Lightning strategy (fsdp, deepspeed, ...).")
    precision = trainer.get("precision")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision}: choose 32-true (CPU), bf16-mixed or 16-mixed (GPU), or "
                          f"one of {', '.join(map(str, PRECISIONS[3:11]))}.")
    for name, low in TRAINER_AT_LEAST.items():
        value = trainer.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < low):
            raise ConfigError(f"trainer.{name}={value}: a number >= {low} (Lightning's default: "
                              f"{inspect.signature(L.Trainer).parameters[name].default}).")
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if train and not (isinstance(steps, int) and steps > 0):
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ConfigError(f"trainer.max_epochs={epochs}: train for at least one epoch (an integer >= 1; "
                              f"-1 would train forever). To only test a checkpoint: train=false ckpt_path=<file>.")


ARGUMENT_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def check_arguments(node, key: str = "") -> None:
    """Every ``_target_`` node of the config against its target's signature: a key it does not take (a node
    merged from two configs, a typo) or text where it takes a number, named before instantiate's TypeError."""
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            if isinstance(item, (DictConfig, ListConfig)):
                check_arguments(item, f"{key}[{i}]")
        return
    if not isinstance(node, DictConfig):
        return
    parameters = _parameters(node.get("_target_")) if "_target_" in node else None
    for name in node:
        path = f"{key}.{name}" if key else str(name)
        try:
            value = node[name]
        except MissingMandatoryValue:   # ??? (or a value interpolated from one): named when it is used
            continue
        shown = value if not isinstance(value, (DictConfig, ListConfig)) else "{...}"
        if parameters is not None and name not in ARGUMENT_KEYS:
            if name not in parameters and not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
                fix = ("+model@teacher.net merges into the old network's keys: choose another teacher network with "
                       "teacher=checkpoint model@teacher.net=<name>" if key == "teacher.net" else "Remove the key")
                raise ConfigError(f"{path}={shown}: {node._target_} takes no '{name}' (it takes "
                                  f"{', '.join(p for p in parameters if p != 'self')}). {fix}.")
            if isinstance(value, str) and name in parameters and _takes_number(parameters[name]):
                default = parameters[name].default
                example = f"e.g. {path}={default}" if isinstance(default, (int, float)) else "a number"
                raise ConfigError(f"{path}={value}: not a number ({node._target_} takes a number). Write {example}.")
            if isinstance(value, str) and name in parameters and _takes_list(parameters[name]):
                raise ConfigError(f"{path}={value}: not a list ({node._target_} takes a list). Write "
                                  f"{path}=[{value}] or {path}=[1,2].")
        if isinstance(value, (DictConfig, ListConfig)) and not OmegaConf.is_interpolation(node, name):
            check_arguments(value, path)


def _takes_number(parameter: inspect.Parameter) -> bool:
    """A numeric default, or an annotation of numbers only (``float``, ``int | None``)."""
    if isinstance(parameter.default, (int, float)) and not isinstance(parameter.default, bool):
        return True
    annotation = parameter.annotation
    names = (set(re.findall(r"\w+", annotation)) if isinstance(annotation, str) else
             {getattr(a, "__name__", str(a)) for a in (typing.get_args(annotation) or [annotation])})
    return bool(names & {"int", "float"}) and names <= {"int", "float", "None", "NoneType", "Optional"}


def _takes_list(parameter: inspect.Parameter) -> bool:
    """A list/tuple default, or an annotation of a collection (``Iterable[int]``, ``list[float]``) without ``str``."""
    if isinstance(parameter.default, (list, tuple)):
        return True
    annotation = str(parameter.annotation)
    return bool(re.search(r"\b(Iterable|Sequence|list|List|tuple|Tuple)\b", annotation)) and "str" not in annotation


def _parameters(target) -> dict | None:
    try:
        return dict(inspect.signature(get_object(str(target))).parameters)
    except Exception:  # not importable or no signature: instantiate names it
        return None


def check_optimizers(cfg: DictConfig) -> None:
    """The ``_partial_`` optimizers and scheduler built once on a dummy parameter (the scheduler also stepped a few
    times): torch's own checks (lr < 0, betas outside [0, 1), a period of 0...) as errors naming the key, before a
    teacher is trained."""
    param = torch.nn.Parameter(torch.zeros(1))
    for key in ("optimizer", "generator_optimizer", "scheduler"):
        node = cfg.get(key)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if key != "scheduler":
                    instantiate(node)([param])
                    continue
                optimizer = torch.optim.SGD([param], lr=0.1)
                scheduler = with_total_steps(instantiate(node), 100)(optimizer)   # the module gives the run's
                for _ in range(0 if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else 3):
                    optimizer.step()
                    scheduler.step()
        except Exception as e:
            message = _first_line(e)
            aliases = {"learning rate": "lr", "beta": "betas", "epsilon": "eps"}
            names = [str(n) for n in node if not str(n).startswith("_")]
            culprit = next((n for n in names if n in message), None) or next(
                (a for word, a in aliases.items() if word in message and a in names), None)
            where = (f"{key}.{culprit}={node[culprit]}" if culprit else _typed_under(cfg, key, message)
                     or f"{key}={OmegaConf.to_container(node)}")
            raise ConfigError(f"{where}: {node._target_} refuses it ({message}). Fix the value (the defaults are "
                              f"in conf/{'scheduler' if key == 'scheduler' else 'optimizer'}/).") from None


# -- any exception raised while a config node is built ------------------------------------------------------------
def config_error(exc: BaseException, cfg: DictConfig) -> ConfigError | None:
    """What run.py prints for ``exc`` as one line: the ConfigError behind it, or, for any other exception raised
    while Hydra instantiated a ``_target_`` node (a value its target refuses), a ConfigError naming that node's key:
    the override typed for it or under it (``model.depth=21``, also when the node interpolates it: ``module.net:
    ${model}``), else the node. None for everything else, and for what was raised inside a Trainer's loops (a
    teacher trained on first use while the module is built): training-time failures stay tracebacks."""
    found = find_config_error(exc)
    if found is not None:
        return found
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    keys = [m.group(1) for e in chain if isinstance(e, InstantiationException)
            for m in [re.search(r"^full_key: (\S+)$", str(e), re.M)] if m]
    if not keys or any(_raised_in_training_loop(e) for e in chain):
        return None
    root, key = chain[-1], _source(cfg, keys[0])
    node = OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False)
    target = str(node.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(node, DictConfig) else ""
    message = _first_line(root)
    where = _typed_under(cfg, key, message) or f"{key}={target or node}"
    message = message[len(where) + 1:].strip() if message.startswith(f"{where}:") else message
    return ConfigError(f"{where}: {message} ({target or key} refused it while the run was built from its config: "
                       f"fix the value, or see conf/{key.split('.')[0]}/).")


def _first_line(exc: BaseException, width: int = 160) -> str:
    line = (str(exc).strip().splitlines() or [""])[0].strip() or type(exc).__name__
    return line if len(line) <= width else line[:width - 3] + "..."


def _raised_in_training_loop(exc: BaseException) -> bool:
    return any("/lightning/pytorch/loops/" in frame.f_code.co_filename.replace("\\", "/")
               for frame, _ in traceback.walk_tb(exc.__traceback__))


def _source(cfg: DictConfig, key: str) -> str:
    """``key`` with each interpolated node replaced by the key it interpolates (``module.net`` -> ``model``)."""
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig) or part not in node:
            break
        if OmegaConf.is_interpolation(node, part):
            raw = node._get_node(part)._value()
            match = re.fullmatch(r"\$\{([\w.]+)\}", str(raw))
            return _source(cfg, ".".join([match.group(1), *parts[i + 1:]])) if match else key
        node = node[part]
    return key


def _typed_under(cfg: DictConfig, key: str, message: str = "") -> str | None:
    """The override typed on the command line for ``key`` or a key under it, as typed: of several, the one whose
    name or value the error ``message`` mentions, else the most specific."""
    typed = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    found = []
    for override in typed:
        name, _, value = override.partition("=")
        name = name.lstrip("+~").split("@")[-1]
        if name == key or name.startswith(f"{key}.") or key.startswith(f"{name}."):
            found.append((name.rsplit(".", 1)[-1] in message, value in message, len(name), f"{name}={value}"))
    return max(found)[-1] if found else None


# model and teacher default to the data set's own (conf/config.yaml: optional model: student_${data}, optional
# teacher: for_${data}); a data set without them leaves them ??? until the command names one.
DATA_DEFAULTS = {  # key: (what the data set lacks, the file that would choose it, what the command adds instead)
    "model": ("student", "model/student", "model=<name> (a file of conf/model/, e.g. lenet5_half, resnet20)"),
    "teacher": ("teacher", "teacher/for", "teacher=checkpoint model@teacher.net=<its network> "
                                          "teacher.checkpoint=<its last.ckpt>"),
}


def check_data_defaults(cfg: DictConfig) -> None:
    """A ``model`` or ``teacher`` that the data set does not choose and the command does not name: a clear error."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    data = choices.get("data", "<data>")
    for key, (what, file, fix) in DATA_DEFAULTS.items():
        typed = _typed_under(cfg, key)
        if OmegaConf.is_missing(cfg, key) and typed and typed.startswith(f"{key}="):
            raise ConfigError(f"{typed}: no conf/{typed.replace('=', '/', 1)}.yaml. Write {key}=<the name of a file of "
                              f"conf/{key}/, without .yaml>.")
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is not set: data={data} has no {what} of its own (conf/{file}_{data}.yaml). "
                              f"Add {fix} to the command, or write that file.")


FABRIC_KEYS = tuple(inspect.signature(L.Fabric.__init__).parameters)


def fabric_from_trainer_config(trainer: DictConfig) -> L.Fabric:
    """``L.Fabric`` with every setting the ``trainer`` config and Fabric share (accelerator, strategy, devices,
    num_nodes, precision, plugins), so ``trainer=gpu`` / ``trainer=ddp`` mean the same in every stage.
    ``deterministic`` is applied as Trainer does; loop settings (max_epochs, ...) do not apply."""
    settings = OmegaConf.to_container(trainer, resolve=True)
    kwargs = {k: v for k, v in settings.items() if k in FABRIC_KEYS}
    if kwargs.get("plugins"):
        kwargs["plugins"] = [instantiate(p) for p in kwargs["plugins"]]
    if settings.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=settings["deterministic"] == "warn")
    return L.Fabric(**kwargs)


def sqlite_storage(folder: str) -> str:
    """The sqlite URL of ``<folder>/optuna.db``, creating ``folder``: the Optuna sweeper opens its study before
    Hydra creates the sweep folder, and sqlite cannot create a file in a folder that does not exist yet. Used as
    ``hydra.sweeper.storage: {_target_: netcompress.config.sqlite_storage, folder: ${hydra.sweep.dir}}``."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'optuna.db'}"


class ResumeStudy(Callback):
    """Hydra callback of an Optuna sweep (conf/hparams_search/optuna.yaml): ``hydra.sweeper.n_trials`` is the study's
    size. A sweep resumed from a study's storage runs only the trials it still lacks (finished ones: complete or
    pruned; a trial left running by a killed sweep runs again), none when the study is complete."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        import optuna

        sweeper = config.hydra.sweeper
        storage = instantiate(sweeper.storage) if isinstance(sweeper.storage, DictConfig) else sweeper.storage
        if not storage:
            return
        try:
            trials = optuna.load_study(study_name=sweeper.study_name, storage=storage).trials
        except KeyError:   # no such study yet: a new sweep
            return
        finished = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
        with read_write(sweeper):
            sweeper.n_trials = max(0, sweeper.n_trials - finished)
        print(f"[sweep] the study {sweeper.study_name} holds {finished} finished trials: {sweeper.n_trials} more "
              f"to reach hydra.sweeper.n_trials={sweeper.n_trials + finished}", file=sys.stderr)
