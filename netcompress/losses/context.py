"""What a distillation criterion is told besides the outputs: ``KDModule`` builds a ``LossContext`` every training
step and passes it as ``criterion(..., context=context)``. A criterion that needs none of it ignores it."""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossContext:
    """epoch: the current epoch, counted from 0 (Lightning's ``current_epoch``); max_epochs: the run's length
    (-1 or None when unbounded); global_step: optimizer steps so far; indices: the batch's dataset indices when the
    data gives them (a batch ``(x, y, indices)``), else None."""

    epoch: int = 0
    max_epochs: int | None = None
    global_step: int = 0
    indices: torch.Tensor | None = None
