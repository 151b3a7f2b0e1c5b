"""Supervised training of any network on any datamodule: teachers, baselines, retraining of pruned networks."""
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from netcompress.core import ConfigError
from netcompress.networks.flops import count_flops, count_params
from netcompress.schedules import with_total_steps


class ClassifierModule(L.LightningModule):
    """``self.net`` trained with cross-entropy (optionally label-smoothed); top-1/top-5 on val and test.

    optimizer: ``_partial_`` optimizer, called with the parameters to train.
    scheduler: ``_partial_`` LR scheduler called with the optimizer (or None); stepped every
        ``scheduler_interval`` ("epoch" or "step"). One that takes ``total_steps`` and is not given it gets the
        run's number of optimizer steps.
    bias_lr_scale: the learning rate of the network's ``bias_parameters()`` (AirbenchNet: BatchNorm biases) times
        this, their weight decay divided by it (the same decay per step); 1: one group.
    tta: test-time augmentation of val/test predictions (logits averaged): 0 none, 1 the image and its mirror,
        2 also both shifted by one pixel (reflect-padded), as airbench evaluates.
    """

    # Init arguments kept out of the checkpoint's hyper_parameters: networks, and factories Lightning's
    # torch.load(weights_only=True) refuses on resume. Subclasses extend it; the run saves the full config anyway.
    unsaved_hyperparameters = ("net", "optimizer", "scheduler")

    def __init__(self, net: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 label_smoothing: float = 0.0, scheduler_interval: str = "epoch", bias_lr_scale: float = 1.0,
                 tta: int = 0):
        super().__init__()
        # collects the init arguments of the subclass too (Lightning walks the __init__ frames)
        self.save_hyperparameters(ignore=list(self.unsaved_hyperparameters), logger=False)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing, self.scheduler_interval = label_smoothing, scheduler_interval
        if tta not in (0, 1, 2):
            raise ConfigError(f"module.tta={tta}: test-time augmentation level 0 (none), 1 (mirror) or 2 (mirror and "
                              f"one-pixel shifts).")
        if not bias_lr_scale > 0:
            raise ConfigError(f"module.bias_lr_scale={bias_lr_scale}: a positive factor (1: no separate group).")
        self.bias_lr_scale, self.tta = bias_lr_scale, tta
        self.metrics = nn.ModuleDict()  # built lazily: the number of classes is read off the logits
        self._train_state = {"sums": None, "samples": 0, "names": (), "step": 0}   # log_train's sums, batch index
        self.train_epoch_means = {}
        self.progress_bar_values = {}   # log_train's latest step values shown in the progress bar

    def forward(self, x: torch.Tensor, return_features: bool = False):
        return self.net(x, return_features=return_features)

    # -- metrics ------------------------------------------------------------------------------------------
    def accuracy(self, name: str, num_classes: int, top_k: int = 1) -> str:
        """The attribute path of a (lazily built) top-k accuracy metric."""
        key = f"{name}_top{top_k}"
        if key not in self.metrics:
            self.metrics[key] = MulticlassAccuracy(num_classes, top_k=min(top_k, num_classes),
                                                   average="micro").to(self.device)
        return f"metrics.{key}"

    def log_accuracy(self, stage: str, logits: torch.Tensor, y: torch.Tensor, prefix: str = ""):
        """Logs ``{stage}/{prefix}acc`` and ``{stage}/{prefix}acc_top5`` as epoch-level metrics (torchmetrics, synced
        over DDP ranks; ``update`` only: the per-batch value ``forward`` would compute is never logged)."""
        for k, suffix in ((1, ""), (5, "_top5")):
            attribute = self.accuracy(f"{stage}_{prefix}", logits.shape[1], k)
            metric = self.get_submodule(attribute)
            metric.update(logits, y)
            self.log(f"{stage}/{prefix}acc{suffix}", metric, on_step=False, on_epoch=True,
                     prog_bar=(k == 1 and stage != "train"), metric_attribute=attribute)

    # -- training scalars ---------------------------------------------------------------------------------------
    def log_train(self, values: dict[str, torch.Tensor], batch_size: int, logits: torch.Tensor | None = None,
                  y: torch.Tensor | None = None, prog_bar: tuple[str, ...] = ("loss",)):
        """Per-step training scalars at the cost of one on-device add per step: ``values`` (e.g. ``{"loss": ...,
        "loss_kd": ...}``) are logged as ``train/<name>_step`` on the steps the loggers write (every
        ``trainer.log_every_n_steps``) and as ``train/<name>_epoch`` (the mean over the epoch's samples, averaged over
        DDP ranks) at the end of the epoch: the names Lightning's ``on_step=True, on_epoch=True`` gives. With
        ``logits`` and labels ``y``, the epoch's training top-1/top-5 accuracy is logged as ``train/acc`` and
        ``train/acc_top5``. The step values go straight to the loggers (``logger.log_metrics``), at the steps and
        with the step and epoch columns Lightning gives its on_step values, and ``prog_bar``'s to the progress bar
        (netcompress.callbacks.ProgressBar reads ``progress_bar_values``): a ``self.log`` per value and step costs
        a sizeable share of a small network's step on a CPU (docs/notes/foundation-and-scale-out.md, per-step
        overhead)."""
        means = torch.stack([v.detach() for v in values.values()]).float()   # bf16 sums would drift
        sums = means * batch_size
        if logits is not None:   # hits per rank of the top-5 (the indices are distinct): top-1 and top-5 counts
            hits = (logits.detach().topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]).sum(dim=0)
            sums = torch.cat([sums, hits[:1], hits.sum(dim=0, keepdim=True)])
        state = self._train_state   # a plain dict: no nn.Module attribute bookkeeping per step
        state["sums"] = sums if state["sums"] is None else state["sums"] + sums
        state["samples"] += batch_size
        state["names"] = (*values, "acc", "acc_top5") if logits is not None else tuple(values)
        step, state["step"] = state["step"], state["step"] + 1   # this batch's index over the run
        every = self.trainer.log_every_n_steps
        if every and (step + 1) % every == 0:   # the steps Lightning's own on_step values are logged at
            step_values = {f"train/{name}_step": value for name, value in zip(values, means.tolist(), strict=True)}
            for logger in self.loggers:   # as Lightning writes on_step values: step and epoch columns
                logger.log_metrics({**step_values, "epoch": self.current_epoch}, step=step)
                logger.save()
            shown = {f"train/{name}_step" for name in prog_bar}
            self.progress_bar_values = {key: value for key, value in step_values.items() if key in shown}

    def on_train_epoch_start(self):
        """``log_train``'s step counter restarts where the epoch starts (on a resume too)."""
        self._train_state["step"] = self.current_epoch * self.trainer.num_training_batches

    def on_train_epoch_end(self):
        """Logs the epoch means of ``log_train``'s values; they stay readable in ``self.train_epoch_means``."""
        state = self._train_state
        if not state["samples"]:
            return
        self.train_epoch_means = dict(zip(state["names"], state["sums"] / state["samples"], strict=True))
        for name, value in self.train_epoch_means.items():
            self.log(f"train/{name}" if name.startswith("acc") else f"train/{name}_epoch", value, sync_dist=True)
        state.update(sums=None, samples=0)

    # -- steps ----------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.log_train({"loss": loss}, len(y), logits, y)
        return loss

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits, averaged over ``self.tta``'s views of ``x``."""
        if self.tta == 0:
            return self.net(x)

        def mirrored(images):
            return 0.5 * (self.net(images) + self.net(images.flip(3)))

        logits = mirrored(x)
        if self.tta == 2:
            h, w = x.shape[2:]
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
            shifted = 0.5 * (mirrored(padded[:, :, :h, :w]) + mirrored(padded[:, :, 2:, 2:]))
            logits = 0.5 * (logits + shifted)
        return logits

    def evaluate(self, batch, stage: str):
        x, y = batch
        logits = self.predict_logits(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        self.log_accuracy(stage, logits, y)

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test")

    # -- set-up ---------------------------------------------------------------------------------------------
    def on_fit_start(self):
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "input_shape"):
            return
        stats = {"model/params": count_params(self.net), "model/flops": count_flops(self.net, dm.input_shape)}
        if getattr(self.net, "search_score", None) is not None:   # a searched network: the score the search gave it
            stats["model/search_score"] = self.net.search_score
        self.model_stats = stats   # run.py writes them to metrics.json
        rank_zero_info(f"[model] {type(self.net).__name__}: {stats['model/params']:,} parameters, "
                       f"{stats['model/flops'] / 1e6:.2f}M FLOPs (multiply-adds) at input {dm.input_shape}")
        for logger in self.loggers:
            logger.log_metrics(stats, step=0)

    def trainable_parameters(self):
        """What the optimizer trains; subclasses add embeddings etc. Frozen parameters are left out."""
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self) -> list:
        """``trainable_parameters()``, with the network's ``bias_parameters()`` in a group of their own when
        ``bias_lr_scale`` is not 1."""
        params = self.trainable_parameters()
        biases = getattr(self.net, "bias_parameters", None)
        if self.bias_lr_scale == 1 or biases is None:
            return params
        settings = getattr(self.optimizer_factory, "keywords", {})
        if "lr" not in settings:
            raise ConfigError("module.bias_lr_scale: the optimizer config must state its lr (optimizer.lr=...).")
        biases = {id(p) for p in biases()}
        group = {"params": [p for p in params if id(p) in biases], "lr": settings["lr"] * self.bias_lr_scale,
                 "weight_decay": settings.get("weight_decay", 0.0) / self.bias_lr_scale}
        return [group, {"params": [p for p in params if id(p) not in biases]}]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        factory = with_total_steps(self.scheduler_factory, int(self.trainer.estimated_stepping_batches))
        scheduler = factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
