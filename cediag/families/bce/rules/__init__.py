"""The binary cross-entropy rules. Importing this package registers them."""

from . import inputs, options, shape, targets  # noqa: F401  (registration side effect)
