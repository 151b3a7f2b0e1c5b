"""Peak resident memory of the default job, ``python run.py`` (CCKD on digits), for 2 epochs with the cached teacher.

    python bench/bench_memory.py
"""
import resource
import subprocess
import sys
import tempfile

from common import ROOT


def main():
    with tempfile.TemporaryDirectory() as workdir:   # the run folder lands there, as it would in a user's folder
        subprocess.run([sys.executable, str(ROOT / "run.py"), "trainer.max_epochs=2", "callbacks.progress_bar=null",
                        "logger=none"], cwd=workdir, check=True, capture_output=True)
    print(f"peak memory of `python run.py trainer.max_epochs=2` (digits): "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
