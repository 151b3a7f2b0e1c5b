"""The framework's library: networks, losses, MetaPruning's evolutionary search and the deploy helpers (pure torch),
the stages of run.py (``stages``: fit, search, export) and what they share (``config``, ``reporting``,
``callbacks``).

``netcompress.core`` is the leaf every other module may import (errors, atomic writes, checkpoint reading); it
imports nothing of the project. LightningModules and datamodules live in the top-level ``lightning_modules`` and
``datamodules`` packages.
"""
