"""MetaPruning stage 1: train a PruningNet with one random channel encoding per iteration.

The encoding of step ``s`` is drawn from ``random.Random(encoding_seed, s)``: the whole batch and every DDP rank
use the same one without communication, and a resumed run draws the same sequence. Validation and test run the
PruningNet at full width; that accuracy is only a sanity signal (the official code notes that the PruningNet's
own accuracy is low and meaningless for a random encoding): never early-stop on it. BatchNorm uses each
evaluation batch's statistics there, since the running ones mix all encodings. The search stage scores encodings
properly, after BatchNorm recalibration.

Two trainers share this (``RandomEncodings``): ``PruningNetModule`` learns from labels of training images;
``DataFreePruningNetModule`` (``method=metapruning_datafree``) learns from a frozen teacher on synthesized images,
with ``method=fast_datafree``'s meta generator and image pool (lightning_modules/fast_datafree.py): each of its KD
steps on pool images draws its own encoding, and at the end of training it leaves a held set of synthesized images
with the teacher's predictions in the run folder (``netcompress.callbacks.SaveSyntheticImages``), which the
search scores candidates on (``search.data=synthetic``). No training image is read in either stage.

Speed: the gradients are freed between steps (Lightning's ``zero_grad(set_to_none=True)``). Zeroing them in place
instead, as the official loop does, costs a pass over every generated weight's gradient (the PruningNets' weight
generators are large) plus an accumulating backward (``python bench/bench_overhead.py --sizes imagenet --methods
pruningnet`` measures the step against a plain loop; docs/notes/metapruning.md).
"""
import random

from lightning_modules.classifier import ClassifierModule
from lightning_modules.fast_datafree import MetaGeneratorModule


class RandomEncodings:
    """Mixin of a LightningModule whose ``self.net`` is a PruningNet: the encoding of a step, and full width with
    batch statistics for validation and test."""

    encoding_seed = 0

    def sample_encoding(self, step: int) -> list:
        return self.net.random_encoding(random.Random(self.encoding_seed * 1_000_003 + step))

    def _full_width(self):
        self.net.set_encoding(self.net.full_encoding())
        self.net.batch_statistics(True)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.net.batch_statistics(False)

    def on_validation_epoch_start(self):
        self._full_width()

    def on_test_epoch_start(self):
        self._full_width()

    def on_train_epoch_end(self):
        super().on_train_epoch_end()
        self._full_width()


class PruningNetModule(RandomEncodings, ClassifierModule):
    def __init__(self, net, optimizer, scheduler=None, label_smoothing: float = 0.0,
                 scheduler_interval: str = "epoch", encoding_seed: int = 0):
        super().__init__(net, optimizer, scheduler, label_smoothing, scheduler_interval)
        self.encoding_seed = encoding_seed

    def training_step(self, batch, batch_idx):
        self.net.set_encoding(self.sample_encoding(self.global_step))
        return super().training_step(batch, batch_idx)


class DataFreePruningNetModule(RandomEncodings, MetaGeneratorModule):
    """A PruningNet ``net`` trained by ``MetaGeneratorModule``'s loop (its arguments, plus ``encoding_seed``): KD
    step ``k`` of iteration ``i`` runs the encoding of step ``i * student_steps + k``. The adversarial term of the
    synthesis (``loss.adversarial``) sees the PruningNet at the last KD step's encoding."""

    method = "method=metapruning_datafree"

    def __init__(self, *args, encoding_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoding_seed = encoding_seed

    def before_student_step(self, step: int):
        self.net.set_encoding(self.sample_encoding(step))
