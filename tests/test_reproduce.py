"""bench/reproduce.py from a fresh clone: the frontier is drawn from the metrics.json of runs made as a user makes
them (the table scripts it drives run the same ``python run.py`` commands, for hours, so they are not run here)."""
import subprocess
import sys

import pytest
from helpers import FAST, ROOT, run_cli


@pytest.mark.e2e
@pytest.mark.slow
def test_frontier_draws_every_run_with_its_method_and_flops(tmp_path):
    tiny = [*FAST, "trainer.max_epochs=1", "data.holdout=0"]
    run_cli(["method=supervised", *tiny], tmp_path)
    run_cli(["method=supervised", "model=lenet5", *tiny], tmp_path)
    out = tmp_path / "frontier.png"
    proc = subprocess.run([sys.executable, "bench/reproduce.py", "--frontier-only", "--runs", str(tmp_path / "logs"),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[reproduce] 2 runs drawn" in proc.stdout
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sys.path.insert(0, str(ROOT / "bench"))
    from reproduce import runs_under

    records = runs_under([tmp_path / "logs"])
    assert sorted(r["method"] for r in records) == ["supervised on Digits"] * 2
    flops = sorted(r["metrics"]["model/flops"] for r in records)
    assert flops[0] < flops[1] / 2   # the default LeNet-5-half against LeNet-5, read from each run's metrics.json
    assert all(0.3 < r["metrics"]["test/acc"] <= 1 for r in records)
