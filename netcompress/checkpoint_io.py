"""Checkpoints written atomically: a killed run never leaves a truncated ``last.ckpt`` behind."""
from lightning.pytorch.plugins.io import TorchCheckpointIO

from netcompress.core import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_torch_save(checkpoint, path)
