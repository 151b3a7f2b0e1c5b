"""What every bench/ table script shares: run the pipeline as a user types it, read back what it wrote, and
print/write tables the same way.

    from common import run_many, pm, write_section
    records = run_many([["method=kd", "seed=0"], ["method=cckd", "seed=0"]], workdir)   # python run.py ...
    records[0]["metrics"]["test/acc"], records[0]["wall_time_s"], records[0]["run_dir"]

A run whose folder already holds a ``metrics.json`` of the same arguments is read back instead of rerun
(``cached_run``): a table script killed and rerun with the same folders resumes where it stopped.
Every run writes ``metrics.json`` beside its checkpoints (run.py): ``metrics`` (test/*, val/*, model/flops,
model/params, ...), ``wall_time_s`` and ``command``. ``±`` in every table is the sample standard deviation
(n - 1 in the denominator) over seeds.
"""
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"
QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]


def run(args: list[str], workdir: str | Path, threads: int = 1, timeout: float | None = None) -> dict:
    """``python run.py <args>`` started in ``workdir`` (its run folder lands under ``workdir/logs``); returns the
    run's ``metrics.json`` record with ``run_dir`` added. ``threads``: torch/OpenMP threads of the run."""
    workdir = Path(workdir).resolve()   # run_dir is absolute: later commands pass it to run.py in other folders
    workdir.mkdir(parents=True, exist_ok=True)
    before = set(workdir.glob("logs/*/runs/*"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args, *QUIET], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        if errors:   # a mistake in the arguments (a missing data set...): run.py's own line, no traceback
            raise SystemExit(errors[-1])
        raise RuntimeError(f"python run.py {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    run_dir = max(set(workdir.glob("logs/*/runs/*")) - before, key=lambda p: p.stat().st_mtime_ns)
    record = json.loads((run_dir / "metrics.json").read_text())
    record["run_dir"] = str(run_dir)
    return record


def same_run(command: str, args: list[str]) -> bool:
    """Whether ``command`` (a metrics.json record's) ran ``args``: callbacks.* flags (progress bar, summary) and the
    teacher checkpoint's path aside."""
    def key(words):
        return sorted(w.split("=")[0] if w.startswith("teacher.checkpoint=") else w
                      for w in words if not w.startswith("callbacks."))
    return key(shlex.split(command)[2:]) == key(args)


def cached_run(args: list[str], folder: str | Path, run_missing: bool = True, threads: int = 1) -> dict | None:
    """``run`` in ``folder``, or the record a previous run of the same arguments left there (``same_run``): a table
    script killed and rerun resumes where it stopped. None when there is none and ``run_missing`` is false."""
    for done in sorted(Path(folder).glob("logs/*/runs/*/metrics.json")):
        record = json.loads(done.read_text())
        if same_run(record["command"], args):
            return {**record, "run_dir": str(done.parent)}
    if not run_missing:
        return None
    record = run(args, folder, threads)
    acc = record["metrics"].get("test/acc")
    print(f"[bench] {' '.join(args)}: test/acc {acc if acc is None else f'{100 * acc:.2f}'} "
          f"({record['wall_time_s']:.0f} s)", flush=True)
    return record


def run_many(arg_lists: list[list[str]], workdir: str | Path, jobs: int = 2, threads: int = 1) -> list[dict]:
    """``cached_run`` for each argument list, ``jobs`` at a time (each run in its own sub-folder of ``workdir``), in
    order. Two single-threaded jobs use this machine's two cores best for small networks."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda item: cached_run(item[1], Path(workdir) / f"job{item[0]:03d}", threads=threads),
                             enumerate(arg_lists)))


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties averaged); nan when one side is flat."""
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    norm = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / norm if norm else float("nan")


def pm(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± sd`` of ``values`` times ``scale`` (accuracies in percent by default)."""
    mean, sd = mean_sd([scale * v for v in values])
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Replaces what stands between ``<!-- name:start -->`` and ``<!-- name:end -->`` in docs/results.md
    (appends the section when it is not there yet)."""
    content = path.read_text() if path.is_file() else ""
    block = f"<!-- {name}:start -->\n{text.rstrip()}\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    content = pattern.sub(lambda _: block, content) if pattern.search(content) else f"{content.rstrip()}\n\n{block}\n"
    path.write_text(content)
