"""Lightning callbacks of our own: the progress bar and the speed benchmark of conf/callbacks/default.yaml, and
opt-in ones for measuring and speeding up training without touching the LightningModules. Add one from the command
line: ``+callbacks.step_stats._target_=netcompress.callbacks.StepStats``."""
import resource
import statistics
import time

import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.utilities import rank_zero_info

from netcompress.core import atomic_torch_save
from netcompress.deploy.speed import measure_latency, measure_throughput, synchronize


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, its training bar and metrics updated every ``every_n_batches`` batches and at
    the epoch's last: Lightning's updates them after every batch, a measurable share of a small network's CPU step
    (docs/notes/foundation-and-scale-out.md, per-step overhead). Beside the ``prog_bar`` metrics it shows the module's
    ``progress_bar_values`` (the training losses ``ClassifierModule.log_train`` writes without ``self.log``).
    ``refresh_rate`` and the rest: RichProgressBar's (redraws per second)."""

    def __init__(self, every_n_batches: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.every_n_batches = every_n_batches

    def get_metrics(self, trainer, pl_module):
        return {**super().get_metrics(trainer, pl_module), **getattr(pl_module, "progress_bar_values", {})}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        done = batch_idx + 1
        if done % self.every_n_batches == 0 or done == self.total_train_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class StepStats(Callback):
    """Prints the median training step time (hooks + forward + backward + optimizer, data loading excluded) over
    the steps after ``warmup``, and the peak memory: CUDA's peak allocation on a GPU, the process's peak resident
    memory on a CPU. One line at the end of fit, starting with ``[step_stats]``."""

    def __init__(self, warmup: int = 3):
        self.warmup, self.times, self._start = warmup, [], None

    def on_fit_start(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        synchronize(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        synchronize(pl_module.device)
        self.times.append(time.perf_counter() - self._start)

    def summary(self, device: torch.device) -> dict:
        times = self.times[self.warmup:] or self.times
        if device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
        else:
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"
        return {"steps": len(times), "step_ms": 1000 * statistics.median(times) if times else float("nan"),
                "peak_mib": peak, "memory": kind}

    def on_fit_end(self, trainer, pl_module):
        s = self.summary(pl_module.device)
        rank_zero_info(f"[step_stats] {type(pl_module).__name__} on {pl_module.device}: {s['step_ms']:.2f} ms/step "
                       f"(median of {s['steps']} steps after {self.warmup} warm-up), peak memory "
                       f"{s['peak_mib']:.0f} MiB ({s['memory']})")


class TrainThroughput(Callback):
    """Training images per second over the fit, data loading, augmentation, the step and logging included,
    validation excluded: ``speed/train_throughput`` in ``module.model_stats`` (metrics.json, the ``[done]`` line)."""

    def __init__(self):
        self.images, self.seconds, self._start = 0, 0.0, None

    def _stop(self):
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        x = batch[0] if isinstance(batch, list | tuple) else batch
        self.images += len(x) if isinstance(x, torch.Tensor) else 0

    def on_validation_epoch_start(self, trainer, pl_module):
        self._stop()

    def on_train_epoch_end(self, trainer, pl_module):
        self._stop()

    def on_fit_end(self, trainer, pl_module):
        if self.seconds > 0 and self.images:
            stats = getattr(pl_module, "model_stats", {})
            stats["speed/train_throughput"] = self.images * trainer.world_size / self.seconds
            pl_module.model_stats = stats


class ElapsedTime(Callback):
    """The fit's wall time so far (validation included; a resumed fit goes on from its checkpoint's), logged as
    ``time/elapsed_s`` at the end of each validation of the fit, beside ``val/acc``: the accuracy-against-time curve
    of a run. A resumed fit's time before the resume: ``time/before_resume_s`` in ``module.model_stats``
    (metrics.json). Not Lightning's Timer: a Timer among the callbacks makes the Trainer ignore ``max_time``."""

    def __init__(self):
        self.before, self._start = 0.0, None

    def elapsed(self) -> float:
        return self.before + (time.monotonic() - self._start if self._start is not None else 0.0)

    def on_train_start(self, trainer, pl_module):
        self._start = time.monotonic()

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            pl_module.log("time/elapsed_s", self.elapsed(), reduce_fx="max", sync_dist=True)

    def on_fit_end(self, trainer, pl_module):
        if self.before:   # a resumed fit: the time before the resume, for a record of the whole run's cost
            pl_module.model_stats = {**getattr(pl_module, "model_stats", {}), "time/before_resume_s": self.before}

    def state_dict(self) -> dict:
        return {"elapsed_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before = state_dict["elapsed_s"]


class RanksInSync(Callback):
    """Under DDP: after every training epoch, a fingerprint of each trained network's weights (the sum and the sum
    of squares of its parameters, in float64) is gathered from every rank and printed, one line starting with
    ``[ranks]``; ranks that differ stop the run (a gradient not averaged over the processes, a step taken on one rank
    only). Nothing under one process. Add it from the command line:
    ``+callbacks.ranks_in_sync._target_=netcompress.callbacks.RanksInSync``."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.world_size == 1:
            return
        nets = {name: child for name, child in pl_module.named_children()
                if any(p.requires_grad for p in child.parameters())}
        local = torch.stack([torch.stack([sum(p.detach().double().sum() for p in net.parameters()),
                                          sum(p.detach().double().square().sum() for p in net.parameters())])
                             for net in nets.values()])
        ranks = pl_module.all_gather(local).view(trainer.world_size, len(nets), 2).tolist()
        rank_zero_info(f"[ranks] weight fingerprints after epoch {trainer.current_epoch}: " + "; ".join(
            f"{name} " + ", ".join(f"{r[i][0]:.10g}/{r[i][1]:.10g}" for r in ranks) for i, name in enumerate(nets)))
        differ = [name for i, name in enumerate(nets) if len({tuple(r[i]) for r in ranks}) > 1]
        if differ:
            raise RuntimeError(f"[ranks] the DDP ranks' weights differ after epoch {trainer.current_epoch} "
                               f"({', '.join(differ)}): a gradient was not averaged over the processes")


class CompileNet(Callback):
    """``torch.compile`` of the trained network (``module.net``), in place (``nn.Module.compile``: parameter names
    and checkpoints stay as they are). ``mode``: None | reduce-overhead | max-autotune."""

    def __init__(self, mode: str | None = None):
        self.mode = mode

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":
            pl_module.net.compile(mode=self.mode)


class ChannelsLast(Callback):
    """Channels-last memory format for the module's 4-d weights and the training batch's images (``batch[0]``)."""

    def on_fit_start(self, trainer, pl_module):
        pl_module.to(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if isinstance(batch, list) and isinstance(batch[0], torch.Tensor) and batch[0].dim() == 4:
            batch[0] = batch[0].contiguous(memory_format=torch.channels_last)


class InitFromData(Callback):
    """Before a fresh fit (not a resume), the network's ``init_from_data(images)`` with the first ``num_images``
    training images as the network sees them (AirbenchNet: its whitening filters). Rank 0's images decide; the
    result is broadcast so every DDP rank starts the same."""

    def __init__(self, num_images: int = 5000):
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images={num_images}: a positive number of images")
        self.num_images = num_images

    def on_fit_start(self, trainer, pl_module):
        net = pl_module.net
        if trainer.ckpt_path or not hasattr(net, "init_from_data"):
            return
        batches, count = [], 0
        for x, *_ in trainer.datamodule.train_dataloader():
            batches.append(x)
            count += len(x)
            if count >= self.num_images:
                break
        if not batches:   # no full training batch: the network keeps its own initialization
            return
        net.init_from_data(torch.cat(batches)[: self.num_images].to(pl_module.device))
        for parameter in net.parameters():
            parameter.data = trainer.strategy.broadcast(parameter.data, src=0)


class SpeedBenchmark(Callback):
    """After fit, the measured inference speed of the trained network (``module.net``) on the run's device: median
    latency of one ``latency_batch`` batch (``speed/latency_ms``) and images/s at ``throughput_batch``
    (``speed/throughput``; ``speed/batch_ms``: the time of one such batch), with ``speed/threads``
    (``torch.get_num_threads()``) and ``speed/throughput_batch``.
    Added to ``module.model_stats`` (run.py writes them to metrics.json and the ``[done]`` line) and logged.
    Measured on global rank 0 only; a PruningNet (MetaPruning's stage 1) is skipped: its narrow networks are the
    deployable ones. ``callbacks.speed=null`` turns it off."""

    def __init__(self, latency_batch: int = 1, throughput_batch: int = 64, warmup: int = 10, repeats: int = 50):
        if min(latency_batch, throughput_batch, repeats) < 1 or warmup < 0:
            raise ValueError("latency_batch, throughput_batch and repeats are integers >= 1, warmup >= 0")
        self.latency_batch, self.throughput_batch = latency_batch, throughput_batch
        self.warmup, self.repeats = warmup, repeats

    def measure(self, net, input_shape, device) -> dict:
        latency = measure_latency(net, input_shape, self.latency_batch, device, self.warmup, self.repeats)
        throughput = measure_throughput(net, input_shape, self.throughput_batch, device,
                                        max(1, self.warmup // 3), max(1, self.repeats // 5))
        return {"speed/latency_ms": latency, "speed/throughput": throughput,
                "speed/batch_ms": 1000 * self.throughput_batch / throughput,
                "speed/threads": torch.get_num_threads(), "speed/throughput_batch": self.throughput_batch}

    def on_fit_end(self, trainer, pl_module):
        dm, net = trainer.datamodule, getattr(pl_module, "net", None)
        if trainer.global_rank != 0 or net is None or not hasattr(dm, "input_shape") or hasattr(net, "set_encoding"):
            return
        stats = self.measure(net, tuple(dm.input_shape), pl_module.device)
        if not hasattr(pl_module, "model_stats"):
            pl_module.model_stats = {}
        pl_module.model_stats.update(stats)
        rank_zero_info(f"[speed] {type(net).__name__} on {pl_module.device} ({stats['speed/threads']} threads): "
                       f"{stats['speed/latency_ms']:.3f} ms at batch {self.latency_batch}, "
                       f"{stats['speed/throughput']:.0f} images/s at batch {self.throughput_batch}")
        for logger in trainer.loggers:
            logger.log_metrics(stats, step=trainer.global_step)


class SaveSyntheticImages(Callback):
    """After fit of a data-free module (``method=metapruning_datafree``, ``fast_datafree``), a held set of
    synthesized images for a search without training images (``search.data=synthetic``), written to ``path`` by
    global rank 0: ``calib`` (the newest ``calib_images`` images of the module's pool, what the student trained on,
    for BatchNorm recalibration), ``held`` (``held_images`` fresh ones that no training step used:
    ``module.fresh_images``) and ``held_logits`` (the frozen teacher's logits on them: the search's targets)."""

    def __init__(self, path: str, held_images: int = 1024, calib_images: int = 512):
        self.path, self.held_images, self.calib_images = path, held_images, calib_images

    def on_fit_end(self, trainer, pl_module):
        if trainer.global_rank != 0:
            return
        held = pl_module.fresh_images(self.held_images)
        with torch.no_grad():
            logits = torch.cat([pl_module.teacher(x) for x in held.split(256)])
        calib = pl_module.sample_images(self.calib_images)
        atomic_torch_save({"calib": calib.cpu(), "held": held.cpu(), "held_logits": logits.cpu()}, self.path)
        rank_zero_info(f"[synthetic] wrote {self.path}: {len(calib)} calibration and {len(held)} held images "
                       f"(the teacher's classes: {torch.bincount(logits.argmax(1)).tolist()})")
