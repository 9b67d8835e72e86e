"""The linear cross-entropy rules (LCE1xx shapes, LCE3xx logit values, LCE4xx options).
Importing this package registers them."""

from . import logits, options, shape  # noqa: F401  (registration side effect)
