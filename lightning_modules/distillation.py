"""The base of every method that learns from a frozen teacher (KD, CCKD, DAFL): it owns the teacher, checks it
fits the data, logs its accuracy beside the student's, and keeps the loss criterion's settings in the
checkpoint's hyper-parameters."""
import warnings
from collections.abc import Callable

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_modules.classifier import ClassifierModule
from netcompress.core import ConfigError
from netcompress.networks.teacher import FrozenTeacher

# The frozen teacher is in eval mode on purpose (FrozenTeacher): Lightning's "N modules in eval mode" notice at
# fit start is about it, every run, and is nothing a user should act on.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")


class DistillationModule(ClassifierModule):
    """``net`` (the student) learns from ``teacher`` (never trained: wrapped in ``FrozenTeacher``).

    criterion: the ``loss`` config group, instantiated (an ``nn.Module`` from ``netcompress.losses``); its settings
    are saved as ``hparams["loss"]`` (``criterion.config`` where it has one). Subclasses compute their loss with
    it in ``training_step``.
    log_teacher_accuracy: log ``{val,test}/teacher_acc`` (and top-5) beside the student's. The teacher never
      changes, so its validation accuracy is measured at the first validation of a fit only (a large teacher would
      otherwise cost as much as the student's whole validation, every epoch).
    """

    unsaved_hyperparameters = ClassifierModule.unsaved_hyperparameters + ("teacher", "loss")
    method = "a distillation method"   # named in errors; subclasses set e.g. "method=cckd"

    def __init__(self, net: nn.Module, teacher: nn.Module | None, optimizer: Callable, loss: nn.Module | None = None,
                 scheduler: Callable | None = None, label_smoothing: float = 0.0, scheduler_interval: str = "epoch",
                 log_teacher_accuracy: bool = True):
        super().__init__(net, optimizer, scheduler, label_smoothing, scheduler_interval)
        if teacher is None:
            raise ConfigError(f"teacher: {self.method} needs a trained teacher; choose one with teacher=... "
                              f"(teacher=digits_lenet5, teacher=checkpoint teacher.checkpoint=<file>, "
                              f"teacher=pretrained).")
        self.teacher = teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(teacher)
        self.criterion = loss
        if loss is not None:
            self.hparams["loss"] = dict(getattr(loss, "config", {}), _target_=f"{type(loss).__module__}."
                                        f"{type(loss).__qualname__}")
        self.log_teacher_accuracy = log_teacher_accuracy
        self.teacher_validated = False

    def evaluate(self, batch, stage: str):
        super().evaluate(batch, stage)
        if self.log_teacher_accuracy and not (stage == "val" and self.teacher_validated):
            x, y = batch
            self.log_accuracy(stage, self.teacher(x), y, prefix="teacher_")

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        self.teacher_validated = self.teacher_validated or not self.trainer.sanity_checking

    def setup(self, stage: str):
        """Samplers that need the teacher (SUR: its features of the training set) get it before the training
        loader is built."""
        use_teacher = getattr(self.trainer.datamodule, "use_teacher", None)
        if stage == "fit" and use_teacher is not None and use_teacher(self.teacher, self.trainer.strategy.root_device):
            rank_zero_info("[distillation] the batch sampler got the teacher's features of the training set")

    def on_fit_start(self):
        super().on_fit_start()
        dm = self.trainer.datamodule
        if dm is not None and hasattr(dm, "input_shape"):
            self.check_teacher_fits(tuple(dm.input_shape), dm.num_classes)

    @torch.no_grad()
    def check_teacher_fits(self, input_shape: tuple[int, ...], num_classes: int):
        """One forward pass of a blank input: a teacher built for other inputs or classes is a clear error."""
        try:
            logits = self.teacher(torch.zeros(1, *input_shape, device=self.device))
        except RuntimeError as e:
            raise ConfigError(f"teacher.net={type(self.teacher.net).__name__} does not take this data's inputs "
                              f"{input_shape} ({str(e).splitlines()[0][:160]}). Choose a teacher network for "
                              f"data=... (e.g. model@teacher.net=<the architecture the teacher was trained "
                              f"as>).") from None
        if logits.shape[1] != num_classes:
            raise ConfigError(f"the teacher predicts {logits.shape[1]} classes, but the data has {num_classes}: "
                              f"point teacher.checkpoint at a teacher trained on this data (and set "
                              f"teacher.net.num_classes={num_classes}).")
