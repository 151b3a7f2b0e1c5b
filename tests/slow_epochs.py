"""A callback for tests that must catch a run between epochs: it sleeps ``seconds`` before every training epoch but
the first (after the previous epoch's checkpoint), lengthening the run's wall time without computing, so a time
limit or a requeue lands mid-fit while the run's CPU time stays that of a few small epochs. The weights are
untouched. ``first_attempt_only``: only in a SLURM job's first run (``SLURM_RESTART_COUNT`` unset or 0), so the
requeued run is not held up."""
import os
import time

from lightning.pytorch.callbacks import Callback


class SlowEpochs(Callback):
    def __init__(self, seconds: float, first_attempt_only: bool = False):
        self.seconds = seconds
        self.first_attempt_only = first_attempt_only

    def on_train_epoch_start(self, trainer, pl_module):
        requeued = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
        if trainer.current_epoch > 0 and not (self.first_attempt_only and requeued):
            time.sleep(self.seconds)
