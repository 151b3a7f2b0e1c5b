"""Learning-rate schedules that conf/scheduler/ cannot write as plain torch arguments."""
import functools
import inspect

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LinearLR, MultiStepLR

from netcompress.core import ConfigError


def linear_epoch_start(optimizer: Optimizer, epochs: int) -> LinearLR:
    """MetaPruning's official schedule for ``epochs`` epochs as Lightning runs it. The official scripts step
    ``LambdaLR(lr * (1 - epoch / epochs))`` at the start of every epoch, so epoch e (0-based) trains at
    ``lr * (1 - (e + 1) / epochs)`` and the last one at 0; Lightning steps a scheduler at the end of an epoch, which
    gives the same lrs from ``LinearLR`` going from ``(epochs - 1) / epochs`` to 0 over ``epochs - 1`` steps."""
    if not isinstance(epochs, int) or epochs < 2:
        raise ConfigError(f"scheduler.epochs={epochs}: the official linear schedule trains its last epoch at lr 0, so "
                          f"it needs at least 2 epochs (set trainer.max_epochs >= 2, or choose scheduler=linear).")
    return LinearLR(optimizer, start_factor=(epochs - 1) / epochs, end_factor=0.0, total_iters=epochs - 1)


def quarters_epoch_start(optimizer: Optimizer, epochs: int, gamma: float = 0.1) -> MultiStepLR:
    """MetaPruning's official ResNet schedule for ``epochs`` epochs as Lightning runs it: the official scripts step
    ``MultiStepLR(milestones=[E // 4, E // 2, E // 4 * 3])`` at the start of every epoch, so each decay takes effect
    one epoch earlier than its milestone says; Lightning steps at the end of an epoch, hence milestones minus one."""
    if not isinstance(epochs, int) or epochs < 4:
        raise ConfigError(f"scheduler.epochs={epochs}: the official schedule decays at each quarter of training, so it "
                          f"needs at least 4 epochs (set trainer.max_epochs >= 4, or choose scheduler=multistep).")
    return MultiStepLR(optimizer, [epochs // 4 - 1, epochs // 2 - 1, epochs // 4 * 3 - 1], gamma)


def with_total_steps(factory, total_steps: int):
    """A scheduler factory that takes ``total_steps`` and is not given it, given ``total_steps``; others as they are."""
    if "total_steps" in inspect.signature(factory).parameters and "total_steps" not in getattr(factory, "keywords", {}):
        return functools.partial(factory, total_steps=total_steps)
    return factory


def triangle(optimizer: Optimizer, total_steps: int, start: float = 0.2, peak_at: float = 0.2) -> LambdaLR:
    """A per-step triangle (airbench's schedule): each group's lr times ``start`` at step 0, rising linearly to
    the full lr at ``peak_at`` of ``total_steps``, then falling linearly to 0 at the last step. ``total_steps``
    is the run's number of optimizer steps (the module fills it in; conf/scheduler/triangle.yaml)."""
    if not isinstance(total_steps, int) or total_steps < 2:
        raise ConfigError(f"scheduler.total_steps={total_steps}: a triangle needs at least 2 steps.")
    if not 0 <= start <= 1 or not 0 < peak_at < 1:
        raise ConfigError(f"scheduler.start={start}, scheduler.peak_at={peak_at}: start in [0, 1], peak_at in (0, 1).")
    peak = max(1, round(peak_at * total_steps))

    def factor(step: int) -> float:
        if step < peak:
            return start + (1 - start) * step / peak
        return max(0.0, (total_steps - step) / (total_steps - peak))

    return LambdaLR(optimizer, factor)
