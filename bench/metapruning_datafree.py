"""MetaPruning with no training image (issue 22 item 4) beside the same pipeline on real images, on digits at 10%
of the full network's FLOPs. Per seed, every stage a ``python run.py`` command:

* data-free: ``experiment=metapruning_datafree`` (PruningNet from the teacher on synthesized images) ->
  ``experiment=metapruning_datafree_search`` (scored on the synthesized images it saved) ->
  ``experiment=metapruning_datafree_retrain`` (the found network trained data-free);
* real (``--real``): ``experiment=metapruning_digits`` -> ``experiment=metapruning_digits_search`` in the same FLOPs
  window -> ``experiment=metapruning_digits_retrain``.

Ranking agreement: every candidate the data-free search scored (``search_state.json``) is scored again by the same
PruningNet after BN recalibration on real training images, top-1 on the 180 held-out training images (what the
real search would have said); Spearman's rho between the two scores, and the real score of the synthetic search's
pick against the best real score among the candidates.

    python bench/metapruning_datafree.py [--seeds 0 1 2] [--real] [--out DIR] [--picture docs/x.png]

Stages run one at a time (one thread), each in ``<out>/<pipeline>_s<seed>/<stage>``; a stage whose folder holds a
``metrics.json`` is read back, so a killed bench resumes. Wall time per stage is printed.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, pm, spearman  # noqa: E402

BUDGET = ["search.max_flops=0.1", "search.min_flops=0.09", "search.random_choices=[0,9]"]
PIPELINES = {
    "datafree": (["experiment=metapruning_datafree"], ["experiment=metapruning_datafree_search"],
                 ["experiment=metapruning_datafree_retrain"]),
    "real": (["experiment=metapruning_digits", "test=false"], ["experiment=metapruning_digits_search", *BUDGET],
             ["experiment=metapruning_digits_retrain"]),
}


def stage(folder: Path, args: list[str]) -> dict:
    """``python run.py <args>`` writing to ``folder`` (its metrics.json record), or the record already there."""
    if (folder / "metrics.json").is_file():
        return json.loads((folder / "metrics.json").read_text())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={folder}", "callbacks.progress_bar=null"]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    record = json.loads((folder / "metrics.json").read_text())
    print(f"[bench] {' '.join(args)}: {record['wall_time_s']:.0f} s", flush=True)
    return record


def pipeline(name: str, seed: int, out: Path) -> dict:
    train, search, retrain = PIPELINES[name]
    d = out / f"{name}_s{seed}"
    records = {"train": stage(d / "train", [*train, f"seed={seed}"])}
    ckpt = d / "train" / "checkpoints" / "last.ckpt"
    records["search"] = stage(d / "search", [*search, f"seed={seed}", f"search.pruningnet_ckpt={ckpt}"])
    encodings = d / "search" / "top_encodings.yaml"
    records["retrain"] = stage(d / "retrain", [*retrain, f"seed={seed}", f"model.encoding={encodings}"])
    return records


def real_scores(search_dir: Path, encodings: list[list[int]]) -> list[float]:
    """The candidates scored as the real search scores them: BN recalibration on training batches, top-1 on the
    held-out split of the data the PruningNet run validated on (digits: 180 images)."""
    from hydra.utils import instantiate

    from netcompress.search.evaluate import CandidateEvaluator
    from netcompress.stages.search import calibration_loader, load_pruningnet

    cfg = OmegaConf.load(search_dir / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    evaluator = CandidateEvaluator(load_pruningnet(cfg), calibration_loader(datamodule, cfg.search, cfg.search.seed),
                                   datamodule.val_dataloader())
    return evaluator(encodings)


def agreement(search_dir: Path) -> dict:
    cached = search_dir / "ranking_vs_real.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    evaluated = json.loads((search_dir / "search_state.json").read_text())["evaluated"]
    synthetic = [r["acc"] for r in evaluated]
    real = real_scores(search_dir, [r["encoding"] for r in evaluated])
    pick = max(range(len(synthetic)), key=lambda i: (synthetic[i], -i))
    result = {"candidates": len(evaluated), "spearman": spearman(synthetic, real), "pick_real": real[pick],
              "best_real": max(real), "pick_synthetic": synthetic[pick]}
    cached.write_text(json.dumps(result))
    return result


def picture(train_dir: Path, out: Path):
    """64 held synthesized images of a stage-1 run (synthetic_images.pt, each scaled to its own range) | 64 real
    test images of its data."""
    from hydra.utils import instantiate
    from torchvision.utils import make_grid, save_image

    held = torch.load(train_dir / "synthetic_images.pt")["held"][:64]
    datamodule = instantiate(OmegaConf.load(train_dir / ".hydra" / "config.yaml").data)
    datamodule.setup()
    real = next(iter(datamodule.test_dataloader()))[0][:64]
    grids = [make_grid(x.float(), nrow=8, normalize=True, scale_each=True, pad_value=1.0) for x in (held, real)]
    save_image(torch.cat([grids[0], torch.ones(grids[0].shape[0], grids[0].shape[1], 8), grids[1]], dim=2), out)
    print(f"[bench] wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--real", action="store_true", help="also run the real-data pipeline")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench_metapruning_datafree")
    parser.add_argument("--picture", type=Path, help="write seed 0's held synthesized images beside real ones here")
    args = parser.parse_args()
    names = ["datafree", "real"] if args.real else ["datafree"]
    rows = []
    for seed in args.seeds:
        for name in names:
            records = pipeline(name, seed, args.out)
            row = {"pipeline": name, "seed": seed, "test": records["retrain"]["metrics"]["test/acc"],
                   "search": records["search"]["metrics"]["search/best_acc"],
                   "flops": records["search"]["metrics"]["search/best_flops"],
                   **{f"wall_{k}": r["wall_time_s"] for k, r in records.items()}}
            if name == "datafree":
                row.update(agreement(args.out / f"datafree_s{seed}" / "search"))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| pipeline | seeds | test top-1 % | searched MFLOPs | wall s: PruningNet / search / training |")
    print("|---|---|---|---|---|")
    for name in names:
        mine = [r for r in rows if r["pipeline"] == name]
        walls = " / ".join(f"{min(r[k] for r in mine):.0f}-{max(r[k] for r in mine):.0f}"
                           for k in ("wall_train", "wall_search", "wall_retrain"))
        print(f"| {name} | {len(mine)} | {pm([r['test'] for r in mine])} | "
              f"{sum(r['flops'] for r in mine) / len(mine) / 1e6:.3f} | {walls} |")
    free = [r for r in rows if r["pipeline"] == "datafree"]
    print("\n| seed | candidates | Spearman (synthetic vs real score) | pick: real held-out % | best real % |")
    print("|---|---|---|---|---|")
    for r in free:
        print(f"| {r['seed']} | {r['candidates']} | {r['spearman']:.2f} | {100 * r['pick_real']:.2f} | "
              f"{100 * r['best_real']:.2f} |")
    if args.picture:
        picture(args.out / f"datafree_s{args.seeds[0]}" / "train", args.picture)


if __name__ == "__main__":
    main()
