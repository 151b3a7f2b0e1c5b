"""Logs, console and pictures of a run: the wandb offline fallback, the run header and folder, the model summary."""
