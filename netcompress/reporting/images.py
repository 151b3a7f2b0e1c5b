"""Images in logs (correlation heatmaps, generated samples, search scatter plots), for every logger attached."""
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger


def figure_to_array(figure) -> np.ndarray:
    """HWC uint8 RGB pixels of a matplotlib figure (the figure is closed)."""
    import matplotlib.pyplot as plt

    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return pixels


def log_image(loggers_or_module, key: str, image, step: int) -> list[Path]:
    """Logs ``image`` (CHW float tensor in [0, 1], HWC uint8 array, or a matplotlib figure) under ``key``.

    wandb: ``wandb.Image``; TensorBoard: ``add_image``; CSV: a PNG ``<log_dir>/images/<key>_<step>.png``.
    Accepts a LightningModule (its ``loggers``) or a list of loggers. Returns the PNG files written.
    """
    loggers = getattr(loggers_or_module, "loggers", loggers_or_module)
    if hasattr(image, "canvas"):
        image = figure_to_array(image)
    if isinstance(image, torch.Tensor):
        image = (image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    if image.shape[-1] == 1:
        image = image[..., 0]
    written = []
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, step, dataformats="HW" if image.ndim == 2 else "HWC")
        elif isinstance(logger, CSVLogger):
            from PIL import Image

            path = Path(logger.log_dir) / "images" / f"{key.replace('/', '_')}_{step:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            written.append(path)
    return written
