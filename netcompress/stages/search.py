"""The search stage of run.py (``method=metapruning_search``): evolutionary search over a trained PruningNet.

Loads the PruningNet from ``search.pruningnet_ckpt``, scores candidates on the datamodule's held-out validation
split after BatchNorm recalibration on training batches (``search.data=real``), or, with no image of any data set
(``search.data=synthetic``), recalibrates on the synthesized images a data-free PruningNet's run saved
(``search.images``) and scores top-1 agreement with its teacher on its held synthesized images; writes to the run
folder:

* ``search_state.json``  every generation (atomic); rerunning with ``search.state=<that file>`` resumes
* ``top_encodings.yaml`` the best ``search.top_k`` encodings with FLOPs, parameters and held-out accuracy, the
  uniform-width baseline within the same budget and ``search.top_k`` random encodings of the budget (the first
  generation, unselected); ``model=pruned model.encoding=<file> model.pick=best|uniform|random|<i>`` builds them
* ``flops_vs_acc.png``   every candidate scored (also logged as the image ``search/flops_vs_acc``)

Under DDP (``trainer=ddp``) every rank scores a slice of each generation and the results are gathered.
"""
import shlex
from pathlib import Path

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from netcompress.config import fabric_from_trainer_config, instantiate_all
from netcompress.core import ConfigError, load_checkpoint, read_state_dict, state_dict_mismatch
from netcompress.networks.flops import COUNTERS, count_flops, count_params
from netcompress.networks.pruningnet import NUM_CHOICES, RATIOS
from netcompress.reporting.images import log_image
from netcompress.search.evaluate import CandidateEvaluator
from netcompress.search.evolution import Budget, EvolutionarySearch, SearchConfig, resolve_budget
from netcompress.search.latency import LatencyTable


def load_pruningnet(cfg: DictConfig):
    net = instantiate(cfg.model)
    if not hasattr(net, "set_encoding"):
        raise ConfigError(f"model={cfg.model.get('_target_')}: the search needs a PruningNet model "
                          f"(model=pruningnet_mbv2_small, pruningnet_mbv2, ...), the one search.pruningnet_ckpt "
                          f"was trained with.")
    path = cfg.search.get("pruningnet_ckpt")
    if not path:
        raise ConfigError("search.pruningnet_ckpt is not set: train a PruningNet first (method=metapruning) and "
                          "pass its <run dir>/checkpoints/last.ckpt.")
    weights = read_state_dict(str(path), "search.pruningnet_ckpt")
    try:
        net.load_state_dict(weights)
    except RuntimeError:
        raise ConfigError(f"search.pruningnet_ckpt={path} does not fit model.arch={cfg.model.get('arch')} "
                          f"({state_dict_mismatch(net, weights)}): use the model config it was trained with.") from None
    return net


def latency_table_for(net, input_shape, s: DictConfig, cache_dir, fabric) -> LatencyTable | None:
    """The latency lookup table of ``net``'s family when the budget has a latency bound (built once, cached; under
    DDP rank 0 builds it while the others wait, then they read it)."""
    if s.get("max_latency") is None and s.get("min_latency") is None:
        return None
    settings = s.get("latency") or {}
    target = settings.get("device") or fabric.device.type
    if str(target).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"search.latency.device={target}: no GPU is visible here; the table is measured on the "
                          f"target device. Use search.latency.device=cpu, or build it where that GPU is.")
    table = LatencyTable(net, input_shape, cache_dir, target, batch_size=settings.get("batch_size", 1),
                         threads=settings.get("threads"), warmup=settings.get("warmup", 3),
                         repeats=settings.get("repeats", 20))
    cached = table.load() if fabric.global_rank == 0 else True
    if not cached:
        rank_zero_info(f"[latency] building the lookup table {table.path} (every layer at every channel choice, "
                       f"once per device, threads, batch and torch version)")
        table.build()
    fabric.barrier()
    if fabric.global_rank != 0 and not table.load():
        raise RuntimeError(f"rank {fabric.global_rank}: the latency table {table.path} rank 0 wrote is unreadable")
    rank_zero_info(f"[latency] {'read' if cached else 'built'} {table.describe()}")
    return table


def budget_for(net, input_shape, s: DictConfig, table: LatencyTable | None = None) -> tuple[Budget, int, int]:
    counter = s.get("flops_counter") or "torch"
    if counter not in COUNTERS:
        raise ConfigError(f"search.flops_counter={counter}: choose 'torch' (torch.utils.flop_counter, multiply-adds "
                          f"of convs and matmuls) or 'official' (MetaPruning's cal_FLOPs: also biases, BN, ReLU, "
                          f"pooling).")

    def measure(encoding):
        narrow = net.narrow(encoding)
        cost = count_flops(narrow, input_shape, counter), count_params(narrow)
        return (*cost, table.predict(narrow)) if table is not None else cost

    budget = Budget(measure)
    full_flops, full_params, full_latency = budget.cost(net.full_encoding())
    budget.max_flops = resolve_budget(s.get("max_flops"), full_flops, "search.max_flops")
    budget.min_flops = resolve_budget(s.get("min_flops"), full_flops, "search.min_flops")
    budget.max_params = resolve_budget(s.get("max_params"), full_params, "search.max_params")
    budget.max_latency = resolve_budget(s.get("max_latency"), full_latency, "search.max_latency", latency=True)
    budget.min_latency = resolve_budget(s.get("min_latency"), full_latency, "search.min_latency", latency=True)
    budget.check_attainable([0] * net.num_genes, net.full_encoding())
    return budget, full_flops, full_params


def uniform_encoding(net, budget: Budget) -> list:
    """The widest uniform-ratio encoding within the budget's upper bounds (the baseline MetaPruning is compared to)."""
    for c in reversed(range(NUM_CHOICES)):
        if budget.within_upper([c] * net.num_genes):
            return [c] * net.num_genes
    return [0] * net.num_genes


def calibration_loader(datamodule, s: DictConfig, seed: int):
    """``cumulative``: a fixed random subset of the training split (the same batches for every candidate),
    streamed in order. ``official``: the whole training split, reshuffled for every candidate. Data modules that
    augment whole batches in their collate function (image folders) give the batches un-augmented."""
    train, collate = datamodule.train_set, datamodule.collate(False)
    mode = s.get("bn_recalibration") or "cumulative"
    if mode not in ("cumulative", "official"):
        raise ConfigError(f"search.bn_recalibration={mode}: choose 'cumulative' (a cumulative average over fixed "
                          f"batches, ours) or 'official' (momentum 0.1 over reshuffled batches).")
    if mode == "official":
        return torch.utils.data.DataLoader(train, batch_size=s.calib_batch_size, shuffle=True,
                                           generator=torch.Generator().manual_seed(seed), collate_fn=collate,
                                           num_workers=datamodule.num_workers, pin_memory=datamodule.pin_memory)
    size = min(len(train), s.calib_batches * s.calib_batch_size)
    indices = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:size].tolist()
    return torch.utils.data.DataLoader(torch.utils.data.Subset(train, indices), batch_size=s.calib_batch_size,
                                       collate_fn=collate, num_workers=datamodule.num_workers,
                                       pin_memory=datamodule.pin_memory)


def synthetic_batches(s: DictConfig):
    """``search.data=synthetic``: the calibration batches and the (images, teacher's classes) batches of the file a
    data-free PruningNet's run wrote (``SaveSyntheticImages``; default ``<its run folder>/synthetic_images.pt``, the
    folder above ``search.pruningnet_ckpt``'s), and the images' shape. No data set is read."""
    run_dir = Path(str(s.get("pruningnet_ckpt") or ".")).resolve().parent.parent
    path = s.get("images") or run_dir / "synthetic_images.pt"
    if not Path(str(path)).is_file():
        raise ConfigError(f"search.images={s.get('images') or 'null'}: search.data=synthetic needs the synthesized "
                          f"images of the data-free PruningNet's run and {path} does not exist. Train it with "
                          f"method=metapruning_datafree (it writes <run dir>/synthetic_images.pt) and set "
                          f"search.images=<that file>, or search on real images with search.data=real.")
    saved = load_checkpoint(str(path), "search.images")
    if not isinstance(saved, dict) or not {"calib", "held", "held_logits"} <= set(saved):
        raise ConfigError(f"search.images={path}: not a file of synthesized images (expected the keys calib, held, "
                          f"held_logits that method=metapruning_datafree writes).")
    calib = list(saved["calib"].split(s.calib_batch_size))[:s.calib_batches]
    labels = saved["held_logits"].argmax(1)
    held = list(zip(saved["held"].split(s.calib_batch_size), labels.split(s.calib_batch_size), strict=True))
    return calib, held, tuple(saved["held"].shape[1:])


def scatter_figure(records, uniform, budget: Budget, title: str,
                   ylabel: str = "held-out top-1 (%) after BN recalibration"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    points = ax.scatter([r["flops"] / 1e6 for r in records], [100 * r["acc"] for r in records],
                        c=[r["generation"] for r in records], cmap="viridis", s=14)
    fig.colorbar(points, ax=ax, label="generation")
    best = records[0]
    ax.scatter([best["flops"] / 1e6], [100 * best["acc"]], marker="*", s=200, c="red", label="best")
    ax.scatter([uniform["flops"] / 1e6], [100 * uniform["acc"]], marker="s", s=60, c="black",
               label=f"uniform {uniform['ratio']:.2f}x")
    for bound in (budget.max_flops, budget.min_flops):
        if bound is not None:
            ax.axvline(bound / 1e6, color="gray", linestyle="--")
    ax.set(xlabel="MFLOPs (multiply-adds)", ylabel=ylabel, title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def describe(record, net, full_flops) -> dict:
    return {"encoding": list(record["encoding"]), "ratios": [RATIOS[c] for c in record["encoding"]],
            "val_acc": round(float(record["acc"]), 6), "flops": int(record["flops"]), "params": int(record["params"]),
            "flops_fraction": round(record["flops"] / full_flops, 4),
            **({"latency_ms": round(record["latency_ms"], 4)} if "latency_ms" in record else {}),
            **({"generation": record["generation"]} if "generation" in record else {})}


def run_search(cfg: DictConfig) -> dict[str, float]:
    s = cfg.search
    fabric = fabric_from_trainer_config(cfg.trainer)
    fabric.launch()
    data = s.get("data") or "real"
    if data not in ("real", "synthetic"):
        raise ConfigError(f"search.data={data}: choose 'real' (BN recalibration on training images, top-1 on the "
                          f"held-out split data.holdout) or 'synthetic' (both on the synthesized images of a "
                          f"data-free PruningNet, method=metapruning_datafree; top-1 agreement with its teacher).")
    official_bn = s.get("bn_recalibration") == "official"
    if data == "synthetic":
        calib, val, input_shape = synthetic_batches(s)
    else:
        datamodule = instantiate(cfg.data)
        datamodule.setup()
        if not datamodule.holdout:
            raise ConfigError("data.holdout=0: the search scores candidates on a split held out of the training set, "
                              "never on the test set. Set data.holdout=N (digits: 180; ImageNet: 50000, as the paper).")
        calib, val = calibration_loader(datamodule, s, s.seed), datamodule.val_dataloader()
        input_shape = tuple(datamodule.input_shape)
    net = load_pruningnet(cfg)
    table = latency_table_for(net, input_shape, s, cfg.paths.cache_dir, fabric)
    budget, full_flops, full_params = budget_for(net, input_shape, s, table)
    evaluator = CandidateEvaluator(net, calib, val, fabric.device,
                                   calib_batches=s.calib_batches if official_bn else None,
                                   val_batches=s.get("val_batches"), momentum=0.1 if official_bn else None)
    output_dir = Path(cfg.paths.output_dir)
    loggers = []
    if fabric.global_rank == 0:
        loggers = instantiate_all(cfg.get("logger"))
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    config = SearchConfig(population=s.population, generations=s.generations, parents=s.parents,
                          mutations=s.mutations, crossovers=s.crossovers, mutation_prob=s.mutation_prob,
                          seed=s.seed, random_choices=tuple(s.random_choices) if s.get("random_choices") else None)

    def progress(generation, stats):
        rank_zero_info(f"[search] generation {generation + 1}/{config.generations}: best acc {stats['best_acc']:.4f} "
                       f"@ {stats['best_flops'] / 1e6:.3f}M FLOPs, population mean acc {stats['mean_acc']:.4f} "
                       f"@ {stats['mean_flops'] / 1e6:.3f}M, top-{config.population} mean {stats['top_mean_acc']:.4f}, "
                       f"{stats['evaluated']} evaluated")
        for logger in loggers:
            logger.log_metrics({f"search/{k}": v for k, v in stats.items() if k != "generation"}, step=generation)

    state_path = Path(str(s.state)) if s.get("state") else output_dir / "search_state.json"
    evolution = EvolutionarySearch(net.num_genes, NUM_CHOICES, budget, evaluator, config, state_path,
                                   on_generation=progress, write_state=fabric.global_rank == 0)
    if state_path.is_file():
        rank_zero_info(f"[search] resuming from {state_path}")
    ranked = evolution.run()

    uniform = uniform_encoding(net, budget)
    uniform_flops, uniform_params, uniform_latency = budget.cost(uniform)
    uniform_record = {"encoding": uniform, "acc": evaluator([uniform])[0], "flops": uniform_flops,
                      "params": uniform_params, "ratio": RATIOS[uniform[0]],
                      **({"latency_ms": uniform_latency} if uniform_latency is not None else {})}
    best = ranked[0]
    metrics = {"search/best_acc": best["acc"], "search/best_flops": best["flops"], "search/best_params": best["params"],
               "search/uniform_acc": uniform_record["acc"], "search/uniform_flops": uniform_flops,
               "search/evaluated": len(evolution.evaluated)}
    if fabric.global_rank == 0:
        top = {"arch": net.arch, "arch_kwargs": {k: list(v) if isinstance(v, tuple) else v
                                                 for k, v in net.arch_kwargs.items()},
               "input_shape": list(input_shape), "gene_names": net.gene_names,
               "budget": {"counter": s.get("flops_counter") or "torch",
                          "max_flops": budget.max_flops, "min_flops": budget.min_flops,
                          "max_params": budget.max_params, "full_flops": full_flops, "full_params": full_params,
                          **({"max_latency_ms": budget.max_latency, "min_latency_ms": budget.min_latency,
                              "full_latency_ms": budget.cost(net.full_encoding())[2], "latency_table": str(table.path),
                              "latency_device": table.key["device"], "latency_threads": table.threads,
                              "latency_batch_size": table.batch_size} if table is not None else {})},
               "top": [describe(r, net, full_flops) for r in ranked[:s.top_k]],
               "uniform": {**describe(uniform_record, net, full_flops), "ratio": uniform_record["ratio"]},
               "random": [describe(r, net, full_flops) for r in evolution.evaluated.values()
                          if r["generation"] == 0][:s.top_k]}
        output = Path(str(s.output)) if s.get("output") else output_dir / "top_encodings.yaml"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(yaml.safe_dump(top, sort_keys=False, default_flow_style=None))
        figure = scatter_figure(ranked, uniform_record, budget, f"{net.arch}: {len(ranked)} candidates",
                                *(["agreement with the teacher (%), synthesized"] if data == "synthetic" else []))
        figure.savefig(output_dir / "flops_vs_acc.png")
        log_image(loggers, "search/flops_vs_acc", figure, step=config.generations)
        for logger in loggers:
            logger.log_metrics(metrics, step=config.generations)
            logger.finalize("success")
        rank_zero_info(
            f"[search] found: {best['flops'] / 1e6:.3f}M FLOPs ({best['flops'] / full_flops:.1%} of the full "
            f"network), {best['params']:,} parameters, held-out acc {best['acc']:.4f}; "
            f"uniform {uniform_record['ratio']:.2f}x: "
            f"{uniform_flops / 1e6:.3f}M FLOPs, held-out acc {uniform_record['acc']:.4f}\n[search] wrote {output}; "
            f"retrain with: {retrain_command(cfg, output)} (add model.pick=uniform for the baseline)")
    return metrics


def retrain_command(cfg: DictConfig, output: Path) -> str:
    """Stage 3 as a command that runs as printed: the recipe's ``*_retrain`` sibling
    (``experiment=metapruning_digits_search`` -> ``metapruning_digits_retrain``), or supervised training of
    ``model=pruned`` on the same data; the data settings typed for the search carry over."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    typed = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    experiment = choices.get("experiment") or ""
    if experiment.endswith("_search"):
        stage3 = [f"experiment={experiment.removesuffix('_search')}_retrain"]
    else:
        stage3 = ["method=supervised", f"data={choices.get('data', 'digits')}", "model=pruned"]
    data = [o for o in typed if o.lstrip("+").startswith("data.") and not o.startswith("data.holdout")]
    return shlex.join(["python", "run.py", *stage3, *data, f"model.encoding={output.resolve()}"])
