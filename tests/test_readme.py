"""Every ``python run.py ...`` line in the README's (and docs') code blocks, run as a user types it: in a copy of the
checkout, with no ``hydra.*``/``paths.*`` overrides and no environment of the test's own. Three kinds of change only:
placeholders (``<run>``, ``data.root=...``) become files and folders made first (a tiny teacher, a PruningNet run, a
search, format-true tiny data), size overrides are appended (epochs, batches, iterations, trials), and the working
directory is the copy. Each command exits 0, or, where it needs what this machine lacks (a GPU, downloadable
weights), exits 1 with a one-line ``error:`` that names the key."""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_files import write_cifar, write_image_folder, write_mnist
from helpers import ROOT, compose_config, run_folders
from hydra.utils import instantiate

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|^/datasets/|^/path/")
WRITERS = {"mnist": write_mnist, "cifar10": lambda root: write_cifar(root, 10),
           "cifar100": lambda root: write_cifar(root, 100, per_batch=400),
           "imagenet": lambda root: write_image_folder(root, classes=3),
           "image_folder": lambda root: write_image_folder(root, classes=3),
           "cifar10_jpeg": lambda root: write_image_folder(root, classes=10)}


def documented_commands() -> list[str]:
    """``python run.py ...`` lines of the fenced code blocks, comments stripped, continuation lines joined."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", doc.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if "python run.py" in line:
                    command = line[line.index("python run.py"):]
                    if command not in found:
                        found.append(command)
    return found


COMMANDS = documented_commands()


def split(command: str) -> tuple[list[str], list[str]]:
    """(flags such as -m / --cfg job, overrides) of a ``python run.py`` command."""
    command = re.sub(r"<[^>]*>", lambda m: m.group(0).replace(" ", "_"), command)   # <teacher run> is one word
    words, flags, overrides = shlex.split(command)[2:], [], []
    while words:
        word = words.pop(0)
        if word in ("--cfg", "-c", "--package", "-p"):
            flags += [word, words.pop(0)]
        elif word.startswith("-"):
            flags.append(word)
        else:
            overrides.append(word)
    return flags, overrides


def composed(overrides: list[str], tmp_path: Path):
    """The config a command composes to (first value of every swept list), for deciding sizes and placeholders."""
    first = [o if "=" not in o or o.startswith("hparams_search") else
             o.split("=", 1)[0] + "=" + o.split("=", 1)[1].split(",")[0] for o in overrides]
    return compose_config(first, tmp_path)


class Checkout:
    """A copy of the repository to run commands in, and the artefacts placeholders stand for."""

    def __init__(self, root: Path):
        self.root = root
        self.made: dict[str, str] = {}
        self.env = {k: v for k, v in os.environ.items() if k != "COMPRESSION_CACHE"}

    def run(self, flags: list[str], overrides: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "run.py", *flags, *overrides], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        proc.run_dirs = run_folders(self.root)
        return proc

    def artefact(self, kind: str, make) -> str:
        if kind not in self.made:
            self.made[kind] = str(make())
        return self.made[kind]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Checkout:
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "logs", "outputs", "multirun", ".cache", "__pycache__", ".pytest_cache", "wandb"))
    return Checkout(root)


def size_overrides(cfg, flags: list[str]) -> list[str]:
    """Appended to make a documented command tiny; changes sizes only."""
    if "--cfg" in flags or "-c" in flags:
        return []
    sizes = []
    if cfg.data.get("_target_", "").endswith("ImageNetDataModule"):
        sizes += ["data.num_classes=3", "data.num_workers=0", "data.pin_memory=false"]
    if cfg.data.get("holdout") and "root" in cfg.data:   # the data sets the tests write hold a few images per class
        sizes.append(f"data.holdout={cfg.data.num_classes}")
    if cfg.stage == "search":
        return sizes + ["search.population=4", "search.generations=1", "search.parents=2", "search.mutations=1",
                        "search.crossovers=1", "search.calib_batches=1", "search.calib_batch_size=16",
                        "search.val_batches=1", "data.batch_size=16", "logger=csv", "callbacks.progress_bar=null"]
    batch = "data.global_batch_size=16" if cfg.data.get("global_batch_size") else "data.batch_size=16"
    sizes += ["trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
              "++trainer.limit_test_batches=1", batch, "callbacks.progress_bar=null"]
    if cfg.get("datamodule"):   # DAFL: generated images per iteration, iterations per epoch, generator width
        sizes += ["module.global_batch_size=8", "datamodule.iterations_per_epoch=2", "generator.width=8"]
    sweeper = cfg.hydra.get("sweeper", {})
    for key, values in (sweeper.get("params") or {}).items():   # a grid: its first point; Optuna: 2 trials
        sizes.append(f"{key}={str(values).split(',')[0]}" if "(" not in str(values) else "hydra.sweeper.n_trials=2")
    if "n_trials" in sweeper:
        sizes.append("hydra.sweeper.n_trials=2")
    return sorted(set(sizes), key=sizes.index)


def fill_placeholder(key: str, overrides: list[str], checkout: Checkout, tmp_path: Path) -> str:
    """The file or folder a placeholder in ``key=<...>`` stands for, made first (once per test module)."""
    cfg = composed([o for o in overrides if not PLACEHOLDER.search(o.split("=", 1)[-1])], tmp_path)
    experiment = cfg.hydra.runtime.choices.get("experiment") or ""
    if key == "data.root":
        name = cfg.hydra.runtime.choices.data
        return checkout.artefact(f"data:{name}", lambda: WRITERS[name](checkout.root.parent / f"data_{name}"))
    if key == "teacher.checkpoint":
        def random_teacher():   # what a trained teacher checkpoint of this architecture holds
            path = checkout.root.parent / f"teacher_{experiment or 'default'}_{cfg.data.num_classes}.pt"
            no_download = {"weights": None} if "weights" in cfg.teacher.net else {}
            torch.save(instantiate(cfg.teacher.net, **no_download).state_dict(), path)
            return path
        return checkout.artefact(f"teacher:{experiment}:{cfg.data.num_classes}", random_teacher)
    if key == "ckpt_path":
        rest = [o for o in overrides if not o.startswith(("ckpt_path=", "stage="))]   # stage=export: of a fit run
        return str(Path(run_ok(checkout, [], rest, tmp_path)) / "checkpoints" / "last.ckpt")
    if key == "search.pruningnet_ckpt":
        stage1 = [f"experiment={experiment.removesuffix('_search')}"]
        return checkout.artefact(f"pruningnet:{experiment}", lambda: Path(
            run_ok(checkout, [], stage1 + ["test=false"], tmp_path)) / "checkpoints" / "last.ckpt")
    if key == "model.encoding":
        search = experiment.removesuffix("_retrain") + "_search"
        if not (ROOT / "conf" / "experiment" / f"{search}.yaml").is_file():
            search = "metapruning_digits_search"   # the composition recipes take a digits search's encodings
        ckpt = fill_placeholder("search.pruningnet_ckpt", [f"experiment={search}"], checkout, tmp_path)
        return checkout.artefact(f"encoding:{experiment}", lambda: Path(run_ok(
            checkout, [], [f"experiment={search}", f"search.pruningnet_ckpt={ckpt}"], tmp_path)) / "top_encodings.yaml")
    pytest.fail(f"no way to fill the placeholder {key}=...: rewrite the documented command so a test can run it")


def run_ok(checkout: Checkout, flags: list[str], overrides: list[str], tmp_path: Path) -> str:
    """Runs a (filled) command at tiny size, asserts it exits 0, returns its run folder."""
    cfg = composed(overrides, tmp_path)
    proc = checkout.run(flags, [*overrides, *size_overrides(cfg, flags)])
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return str(proc.run_dirs[-1]) if proc.run_dirs else ""


def machine_lacks(cfg) -> str | None:
    """The key of what this machine cannot provide for ``cfg``, or None."""
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        return "trainer.accelerator"
    teacher = cfg.get("teacher") or {}
    for net in (teacher.get("net") or {}, cfg.get("model") or {}):
        if net.get("weights") or net.get("weights_path"):
            return "weights"
    return None


IDS = [c.removeprefix("python run.py").strip() or "main job" for c in COMMANDS]


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_documented_command_composes_and_instantiates(command, tmp_path):
    """The fast check of every documented command (the slow one below runs each as a process): it composes as
    typed (placeholders stand for paths, a swept list for its first value), and its data module and network(s) build
    from the composed config (no data is read, no weights are downloaded)."""
    flags, overrides = split(command)
    filled = [f"{o.split('=', 1)[0]}=/placeholder" if "=" in o and PLACEHOLDER.search(o.split("=", 1)[1]) else o
              for o in overrides]
    cfg = composed(filled, tmp_path)
    if "data.root=/placeholder" in filled and cfg.hydra.runtime.choices.data in ("image_folder", "cifar10_jpeg"):
        tree = WRITERS[cfg.hydra.runtime.choices.data](tmp_path / "tree")   # its classes are counted from the tree
        cfg = composed([f"data.root={tree}" if o == "data.root=/placeholder" else o for o in filled], tmp_path)
    if "--cfg" in flags:
        return
    no_download = {"weights": None} if "weights" in (cfg.get("model") or {}) else {}
    if "/placeholder" not in str(cfg.model):   # a network built from a file (model=pruned model.encoding=<...>)
        assert isinstance(instantiate(cfg.model, **no_download), torch.nn.Module)
    if cfg.get("datamodule") is None:
        assert instantiate(cfg.data).batch_size is not None or cfg.data.get("global_batch_size")


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_documented_command_runs(command, checkout, tmp_path):
    flags, overrides = split(command)
    filled = []
    for override in overrides:
        key, _, value = override.partition("=")
        filled.append(f"{key}={fill_placeholder(key.lstrip('+'), overrides, checkout, tmp_path)}"
                      if value and PLACEHOLDER.search(value) else override)
    cfg = composed(filled, tmp_path)
    lacks = machine_lacks(cfg)
    proc = checkout.run(flags, [*filled, *size_overrides(cfg, flags)])
    if lacks and "--cfg" not in flags:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert proc.returncode == 1 and len(errors) == 1 and lacks in errors[0], proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
    else:
        assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        if "--cfg" not in flags:
            assert "[done]" in proc.stdout + proc.stderr


def test_the_readme_documents_every_method_and_a_sweep():
    text = " ".join(COMMANDS)
    for needed in ("method=cckd", "method=kd", "experiment=dafl_digits", "experiment=metapruning_digits",
                   "run.py -m", "trainer=ddp_cpu", "logger=wandb"):
        assert needed in text, needed
