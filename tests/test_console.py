"""What a run shows: a short header instead of the config dump, no library noise, the run folder at start and end,
run.log holding the same lines; hints that run as printed."""
import shlex
from pathlib import Path

import pytest
from helpers import compose_config, run_cli

from netcompress.stages.search import retrain_command

NOISE = ("Trainer already configured", "Tip:", "GPU available", "TPU available", "LeafSpec", "_pytree")


def test_retrain_hint_of_a_search_without_a_recipe_composes_to_supervised_retraining(tmp_path):
    """``method=metapruning_search`` typed without a recipe: the hint trains model=pruned by cross-entropy on the
    same data (the default method is CCKD: ``model=pruned`` alone would distil from the digits teacher)."""
    cfg = compose_config(["method=metapruning_search", "data.batch_size=32"], tmp_path)
    encoding = tmp_path / "top_encodings.yaml"
    hint = shlex.split(retrain_command(cfg, encoding))
    assert hint[:2] == ["python", "run.py"] and f"model.encoding={encoding}" in hint
    printed = compose_config(hint[2:], tmp_path / "retrain")
    assert printed.module._target_ == "lightning_modules.classifier.ClassifierModule"
    assert printed.model._target_ == "netcompress.networks.pruningnet.build_pruned"
    assert printed.data.batch_size == 32 and printed.stage == "fit"


@pytest.mark.e2e
def test_default_run_prints_a_short_header_and_keeps_it_in_run_log(tmp_path):
    proc = run_cli(["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                    "+trainer.limit_test_batches=1"], tmp_path)
    lines = proc.stdout.splitlines()
    before_bar = next(i for i, line in enumerate(lines) if line.startswith("Epoch "))
    assert before_bar <= 40, "\n".join(lines[:before_bar])
    folder = f"[run] folder: {proc.run_dir.resolve()}"
    assert lines[:before_bar].count(folder) == 1 and lines[-1] == folder   # at start and at the end
    assert not [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if any(n in line for n in NOISE)]
    assert "[run] method=cckd" in proc.stdout and "_target_" not in proc.stdout   # no config dump
    log = (proc.run_dir / "run.log").read_text().splitlines()
    shown = [line for line in lines if line.startswith("[")]   # the console's log lines (not the progress bars)
    assert shown and [line for line in log if line.startswith("[")] == shown
    assert Path(proc.run_dir / ".hydra" / "config.yaml").is_file()
