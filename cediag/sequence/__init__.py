"""Sequence context: the language-model mistakes that live around the (logits, labels) pair.

    report = cediag.check_batch(batch, model=model, tokenizer=tokenizer)
    detach = cediag.sequence.attach(model, guard, tokenizer=tokenizer)

`check_batch` runs the CE5xx rules on a collated batch; `attach` runs them on every batch a
model's forward receives with `labels`. docs/sequence.md describes the context and the rules.
"""

from ._check import check_batch as check_batch
from ._context import BatchContext as BatchContext
from ._context import build_context as build_context
from ._hooks import attach as attach

__all__ = ["BatchContext", "attach", "build_context", "check_batch"]
