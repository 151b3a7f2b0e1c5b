"""MetaPruning end to end: PruningNet training, search and retraining from the command line's configs, DDP."""
import csv
import json
import logging
import re
import shlex
from functools import partial

import pytest
import torch
import yaml
from helpers import FAST, run_config
from lightning.pytorch.callbacks import Callback

from netcompress.core import ConfigError
from netcompress.networks.flops import count_flops
from netcompress.networks.pruningnet import build_pruned

pytestmark = pytest.mark.e2e   # every test here runs the stages through run.run or a Trainer

TINY_TRAIN = FAST + ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
                     "logger=csv"]
TINY_SEARCH = ["search.population=4", "search.generations=2", "search.parents=2", "search.mutations=2",
               "search.crossovers=2", "search.calib_batches=1", "search.calib_batch_size=32", "search.val_batches=1"]


def test_three_digits_stages_end_to_end(tmp_path, caplog):
    train_dir, search_dir, retrain_dir = tmp_path / "train", tmp_path / "search", tmp_path / "retrain"
    metrics = run_config(["experiment=metapruning_digits", *TINY_TRAIN, "test=false"], train_dir)
    ckpt = train_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and "val/acc" in metrics

    search = ["experiment=metapruning_digits_search", f"search.pruningnet_ckpt={ckpt}", *TINY_SEARCH, "logger=csv"]
    with caplog.at_level(logging.INFO):
        metrics = run_config(search, search_dir)
    hint = re.search(r"retrain with: (python run\.py .*?) \(add", caplog.text).group(1)
    top = yaml.safe_load((search_dir / "top_encodings.yaml").read_text())
    assert (search_dir / "flops_vs_acc.png").is_file() and list(search_dir.glob("csv/images/search_flops*.png"))
    state = json.loads((search_dir / "search_state.json").read_text())
    assert state["generation"] == 2 and metrics["search/evaluated"] == len(state["evaluated"]) >= 4
    budget = top["budget"]
    assert budget["max_flops"] == pytest.approx(0.5 * budget["full_flops"])
    assert all(t["flops"] <= budget["max_flops"] for t in top["top"]) and top["uniform"]["flops"] <= budget["max_flops"]
    assert metrics["search/best_flops"] == top["top"][0]["flops"]
    rows = list(csv.DictReader(open(search_dir / "csv" / "metrics.csv")))
    assert [r["search/best_acc"] != "" for r in rows if r["step"] in ("0", "1")].count(True) == 2

    # the narrow network's FLOPs (torch.utils.flop_counter) equal the search's for the same encoding
    assert top["random"] and all(r["flops"] <= budget["max_flops"] and r["generation"] == 0 for r in top["random"])
    assert budget["counter"] == "torch"
    for pick, entry in (("best", top["top"][0]), ("uniform", top["uniform"]), (1, top["top"][1]),
                        ("random", top["random"][0]), ("random1", top["random"][1])):
        narrow = build_pruned(str(search_dir / "top_encodings.yaml"), pick=pick)
        assert narrow.encoding == entry["encoding"] and narrow.search_score == entry["val_acc"]
        assert count_flops(narrow, (1, 32, 32)) == entry["flops"]

    # stage 3 as the search printed it: the retraining recipe, not the default method (CCKD)
    retrain = shlex.split(hint)[2:]
    assert retrain == ["experiment=metapruning_digits_retrain", f"model.encoding={search_dir / 'top_encodings.yaml'}"]
    metrics = run_config([*retrain, *TINY_TRAIN], retrain_dir)
    assert 0 <= metrics["test/acc"] <= 1 and metrics["model/search_score"] == top["top"][0]["val_acc"]
    logged = [r for r in csv.DictReader(open(retrain_dir / "csv" / "metrics.csv")) if r.get("model/flops")]
    assert int(float(logged[0]["model/flops"])) == top["top"][0]["flops"]

    # a budget nothing meets, a search on the test set, a missing checkpoint: clear errors naming the key
    with pytest.raises(ConfigError, match="search.max_flops"):
        run_config([*search, "search.max_flops=1000"], tmp_path / "bad1")
    with pytest.raises(ConfigError, match="data.holdout"):
        run_config([*search, "data.holdout=0"], tmp_path / "bad2")
    with pytest.raises(ConfigError, match="search.pruningnet_ckpt"):
        run_config([*search, f"search.pruningnet_ckpt={tmp_path}/none.ckpt"], tmp_path / "bad3")


@pytest.mark.slow
def test_killed_search_stage_resumes(tmp_path):
    train_dir = tmp_path / "train"
    run_config(["experiment=metapruning_digits", *TINY_TRAIN, "test=false", "model=pruningnet_mbv1_small"],
               train_dir)
    search = ["experiment=metapruning_digits_search", "model=pruningnet_mbv1_small", *TINY_SEARCH, "logger=none",
              f"search.pruningnet_ckpt={train_dir / 'checkpoints' / 'last.ckpt'}", "search.generations=3",
              f"search.state={tmp_path / 'state.json'}"]
    full = run_config(search, tmp_path / "full")
    (tmp_path / "state.json").unlink()
    import netcompress.search.evaluate as evaluate

    original, calls = evaluate.CandidateEvaluator.__call__, []

    def killed_in_generation_3(self, encodings):
        calls.append(len(encodings))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, encodings)

    evaluate.CandidateEvaluator.__call__ = killed_in_generation_3
    try:
        with pytest.raises(KeyboardInterrupt):
            run_config(search, tmp_path / "killed")
    finally:
        evaluate.CandidateEvaluator.__call__ = original
    assert json.loads((tmp_path / "state.json").read_text())["generation"] == 2
    resumed = run_config(search, tmp_path / "resumed")
    assert resumed == full


class RecordEncodings(Callback):
    def __init__(self, folder):
        self.folder = folder

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(self.folder / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(pl_module.net.encoding) + "\n")


@pytest.mark.slow
def test_same_encoding_on_both_ranks_of_cpu_ddp(tmp_path):
    import lightning as L

    from datamodules.digits import DigitsDataModule
    from lightning_modules.pruningnet import PruningNetModule
    from netcompress.networks.pruningnet import build_pruningnet

    module = PruningNetModule(build_pruningnet("resnet", "small", 10, 1), partial(torch.optim.SGD, lr=0.01),
                              encoding_seed=3)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=4, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[RecordEncodings(tmp_path)])
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=16, holdout=180))
    ranks = [[json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(ranks[0]) == 4 and ranks[0] == ranks[1]
    assert len({tuple(e) for e in ranks[0]}) == 4   # a new encoding every step
    assert ranks[0][0] == module.sample_encoding(0)


@pytest.mark.slow
def test_search_split_across_two_cpu_ddp_ranks_matches_one_process(tmp_path):
    from helpers import run_cli

    train_dir = tmp_path / "train"
    run_config(["experiment=metapruning_digits", *TINY_TRAIN, "test=false"], train_dir)
    search = ["experiment=metapruning_digits_search", *TINY_SEARCH, "logger=none", *FAST,
              f"search.pruningnet_ckpt={train_dir / 'checkpoints' / 'last.ckpt'}"]
    one = run_cli(search, tmp_path).run_dir
    proc = run_cli([*search, "trainer=ddp_cpu"], tmp_path)
    one = yaml.safe_load((one / "top_encodings.yaml").read_text())
    two = yaml.safe_load((proc.run_dir / "top_encodings.yaml").read_text())
    assert one["top"] == two["top"] and one["uniform"] == two["uniform"]
    assert "[search] found" in proc.stdout + proc.stderr
