"""Pure loss functions: no Lightning, no data, unit-tested against hand-computed values."""
