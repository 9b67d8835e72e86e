"""The cross-entropy rules. Importing this package registers them."""

from . import logits, options, shape, targets  # noqa: F401  (registration side effect)
