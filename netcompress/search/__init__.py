"""MetaPruning's evolutionary search over channel encodings of a trained PruningNet (its own run.py stage)."""
