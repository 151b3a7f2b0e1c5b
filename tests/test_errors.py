"""Mistakes a new user makes, typed on the command line: each prints ``error: <key>=<value>: <what is wrong and
the fix>`` (one paragraph, no traceback), exits with status 1 and leaves nothing half-written."""
import pytest
import torch
from helpers import run_cli

from iccv19.networks.lenet import LeNet5

SUPERVISED = ["method=supervised", "model=lenet5", "logger=csv", "trainer.max_epochs=1"]


def bad_files(tmp_path):
    """A text file, a truncated zip, a plain state_dict: none is a Lightning checkpoint."""
    text = tmp_path / "notes.ckpt"
    text.write_text("this is not a checkpoint\n")
    state = tmp_path / "weights.pt"
    torch.save(LeNet5().state_dict(), state)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(state.read_bytes()[:500])
    return text, state, truncated


CASES = {  # name: (arguments, the key=value that must open the message, a word of the fix)
    "batch_size_zero": (["data.batch_size=0"], "data.batch_size=0", "positive integer"),
    "batch_size_negative": (["data.batch_size=-8"], "data.batch_size=-8", "positive integer"),
    "batch_size_text": (["data.batch_size=many"], "data.batch_size=many", "positive integer"),
    "eval_batch_size_zero": (["+data.eval_batch_size=0"], "data.eval_batch_size=0", "positive integer"),
    "global_batch_size_zero": (["data.global_batch_size=0"], "data.global_batch_size=0", "positive integer"),
    "holdout_too_large": (["data.holdout=5000"], "data.holdout=5000", "Choose a value"),
    "holdout_negative": (["data.holdout=-1"], "data.holdout=-1", ">= 0"),
    "num_workers_negative": (["data.num_workers=-2"], "data.num_workers=-2", ">= 0"),
    "devices_zero": (["trainer.devices=0"], "trainer.devices=0", ">= 1"),
    "devices_negative": (["trainer.devices=-1"], "trainer.devices=-1", ">= 1"),
    "gpu_without_gpu": (["trainer=gpu"], "trainer.accelerator=gpu", "trainer=cpu"),
    "ckpt_text_file": (["ckpt_path={text}"], "ckpt_path={text}", "point ckpt_path at"),
    "ckpt_truncated": (["ckpt_path={truncated}"], "ckpt_path={truncated}", "point ckpt_path at"),
    "ckpt_plain_state_dict": (["ckpt_path={state}"], "ckpt_path={state}", "last.ckpt"),
    "ckpt_missing": (["ckpt_path={missing}"], "ckpt_path={missing}", "existing checkpoint"),
    "ckpt_is_a_folder": (["ckpt_path={folder}"], "ckpt_path={folder}", "existing checkpoint"),
    "pruningnet_ckpt_text_file": (["experiment=metapruning_digits_search", "search.pruningnet_ckpt={text}"],
                                  "search.pruningnet_ckpt={text}", "point search.pruningnet_ckpt at"),
    "pruningnet_ckpt_truncated": (["experiment=metapruning_digits_search", "search.pruningnet_ckpt={truncated}"],
                                  "search.pruningnet_ckpt={truncated}", "point search.pruningnet_ckpt at"),
    "teacher_ckpt_text_file": (["method=cckd", "teacher=checkpoint", "model@teacher.net=lenet5",
                                "teacher.checkpoint={text}"], "teacher.checkpoint={text}", "checkpoint"),
}


# The mistakes new users were seen to make run by default; more of the same kinds with -m slow.
SEEN = {"batch_size_zero", "holdout_too_large", "devices_zero", "ckpt_text_file", "ckpt_truncated",
        "ckpt_plain_state_dict", "pruningnet_ckpt_text_file", "teacher_ckpt_text_file"}


@pytest.mark.e2e
@pytest.mark.parametrize("name", [n if n in SEEN else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CASES)])
def test_mistake_is_one_clear_paragraph_and_leaves_nothing_behind(tmp_path, name):
    args, prefix, fix = CASES[name]
    text, state, truncated = bad_files(tmp_path)
    paths = {"text": text, "state": state, "truncated": truncated, "missing": tmp_path / "missing.ckpt",
             "folder": tmp_path}
    args = [a.format(**paths) for a in args]
    method = [] if any(a.startswith(("experiment=", "method=")) for a in args) else SUPERVISED
    proc = run_cli([*method, *args], tmp_path / "work", check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: {prefix.format(**paths)}: "), errors[0]
    assert fix in errors[0]
    for run_dir in proc.run_dirs:  # Hydra's own record of the command is all a failed run leaves
        assert {p.name for p in run_dir.iterdir()} <= {".hydra", "run.log"}, sorted(run_dir.iterdir())


def test_foreign_search_state_and_encoding_files_are_clear_errors(tmp_path):
    from iccv19.core import ConfigError
    from iccv19.networks.pruningnet import load_encoding_file
    from iccv19.search.evolution import Budget, EvolutionarySearch, SearchConfig

    text = tmp_path / "notes.txt"
    text.write_text("{ not json: [")
    search = EvolutionarySearch(3, 31, Budget(lambda e: (1, 1)), lambda encodings: [0.0] * len(encodings),
                                SearchConfig(population=4, generations=1), text)
    with pytest.raises(ConfigError, match=f"search.state={text}: not a search state file"):
        search.load_state()
    with pytest.raises(ConfigError, match=f"model.encoding={text}: not an encoding file"):
        load_encoding_file(text)
