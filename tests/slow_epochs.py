"""A callback for tests that must catch a run between epochs: it sleeps ``seconds`` before every training epoch
(after the previous epoch's checkpoint), lengthening the run's wall time without computing, so a time limit or a requeue
lands mid-fit while the run's CPU time stays that of a few small epochs. The weights are untouched."""
import time

from lightning.pytorch.callbacks import Callback


class SlowEpochs(Callback):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_epoch_start(self, trainer, pl_module):
        time.sleep(self.seconds)
