"""Regenerates the CCKD digits table of docs/results.md: LeNet-5-half from scratch vs KD vs CCKD with the
random, CUR and SUR samplers, mean and std of the test accuracy over seeds; same epochs and optimizer for all,
the same cached LeNet-5 teacher.

    python bench/cckd_digits_table.py                 # prints the table (15 runs; CPU minutes)
    python bench/cckd_digits_table.py --write         # and writes it into docs/results.md (cckd section)
"""
import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = {  # label: overrides
    "student from scratch (CE)": ["method=supervised"],
    "KD (alpha 0.1, T 4)": ["method=kd"],
    "CCKD, random sampler": ["method=cckd", "sampler=random"],
    "CCKD, CUR sampler (k 4)": ["method=cckd", "sampler=cur"],
    "CCKD, SUR sampler (k 4, 5 superclasses)": ["method=cckd", "sampler=sur"],
}


def run_once(overrides: list[str], workdir: Path) -> float:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import run

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = cfg.hydra.runtime.cwd = str(workdir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.output_dir = cfg.paths.log_dir = str(workdir)
        del cfg["hydra"]
    return run.run(cfg)["test/acc"]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--write", action="store_true", help="update the cckd section of docs/results.md")
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    common = [f"trainer.max_epochs={args.epochs}", "optimizer.lr=0.003", "logger=none",
              "callbacks=none"]
    lines = [f"| LeNet-5 -> LeNet-5-half on digits, {args.epochs} epochs, Adam 3e-3, batch 64 "
             f"| test top-1 (%) mean ± std over seeds {', '.join(map(str, args.seeds))} |", "|---|---|"]
    start = time.time()
    for label, overrides in ROWS.items():
        accs = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                accs.append(100 * run_once([*overrides, *common, f"seed={seed}"], Path(tmp)))
            print(f"[table] {label} seed {seed}: {accs[-1]:.2f}", flush=True)
        lines.append(f"| {label} | {statistics.mean(accs):.2f} ± {statistics.pstdev(accs):.2f} |")
    table = "\n".join(lines)
    command = " ".join(["python bench/cckd_digits_table.py", *(["--seeds", *map(str, args.seeds)]
                                                                if args.seeds != [0, 1, 2] else []),
                        *([f"--epochs {args.epochs}"] if args.epochs != 10 else []), "--write"])
    section = (f"Regenerate: `{command}` ({time.time() - start:.0f} s on this run's machine). Teacher: the "
               f"cached digits LeNet-5 (`teacher=digits_lenet5`); CCKD uses `loss=cckd` defaults (Taylor-RBF "
               f"gamma 0.4, P 2, beta 100, 128-d embeddings, frozen teacher embedding).\n\n{table}\n")
    print(table)
    if args.write:
        path = ROOT / "docs" / "results.md"
        text = path.read_text()
        if "<!-- cckd-table:start -->" not in text:  # first time: an inner block inside the cckd section
            text = text.replace("<!-- cckd:end -->", "<!-- cckd-table:start -->\n<!-- cckd-table:end -->\n"
                                "<!-- cckd:end -->")
        text = re.sub(r"(<!-- cckd-table:start -->\n).*?(<!-- cckd-table:end -->)",
                      lambda m: m.group(1) + section + m.group(2), text, flags=re.S)
        path.write_text(text)


if __name__ == "__main__":
    main()
