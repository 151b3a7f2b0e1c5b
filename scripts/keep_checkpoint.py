"""Keep a trained network in the repository: its weights in half precision (a checkpoint that ``teacher.checkpoint=``
and ``ckpt_path=`` with ``train=false`` both read) and its run's record beside it.

    python scripts/keep_checkpoint.py <run dir> conf/experiment/teacher_cifar10_jpeg_cpu

writes ``<stem>.ckpt`` (the ``net.*`` weights, floating tensors in float16; about half the size of float32) and
``<stem>.metrics.json`` (the run's metrics.json: test accuracy, wall time, numerics, command). Check the kept file
by testing it: ``python run.py experiment=<recipe> train=false ckpt_path=<stem>.ckpt data.root=...``."""
import argparse
import json
import sys
from pathlib import Path

import lightning

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netcompress.core import atomic_torch_save, atomic_write_text, load_checkpoint  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("stem", type=Path, help="where to write <stem>.ckpt and <stem>.metrics.json")
    args = parser.parse_args()
    state = load_checkpoint(args.run_dir / "checkpoints" / "last.ckpt", "run_dir")["state_dict"]
    weights = {k: v.half() if v.is_floating_point() else v for k, v in state.items() if k.startswith("net.")}
    atomic_torch_save({"state_dict": weights, "pytorch-lightning_version": lightning.__version__},
                      args.stem.with_suffix(".ckpt"))
    record = json.loads((args.run_dir / "metrics.json").read_text())
    atomic_write_text(args.stem.with_suffix(".metrics.json"), json.dumps(record, indent=2, sort_keys=True))
    size = args.stem.with_suffix(".ckpt").stat().st_size / 2**20
    print(f"wrote {args.stem}.ckpt ({size:.2f} MiB, {len(weights)} tensors) and {args.stem}.metrics.json")


if __name__ == "__main__":
    main()
