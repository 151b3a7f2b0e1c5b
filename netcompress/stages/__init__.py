"""The stages of run.py, side by side: ``fit`` (train, then test), ``search`` (MetaPruning's evolutionary
search over a trained PruningNet) and ``export`` (TorchScript and ONNX out of a checkpoint). They use Lightning and
Hydra; the pure parts they drive (networks, losses, the evolution, the deploy helpers) do not."""
