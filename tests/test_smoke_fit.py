import pytest
from helpers import FAST, run_config


@pytest.mark.e2e
def test_supervised_digits_runs(tmp_path):
    metrics = run_config(["method=supervised", "model=lenet5", "trainer.max_epochs=1", *FAST], tmp_path)
    assert metrics["test/acc"] > 0.3
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
