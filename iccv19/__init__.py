"""The framework's own library: networks, losses, MetaPruning's search and the Lightning glue (``training``).

``iccv19.core`` is the leaf every other module may import (errors, atomic writes, option parsing, checkpoint
reading); it imports nothing of the project. LightningModules and datamodules live in the top-level
``lightning_modules`` and ``datamodules`` packages.
"""
