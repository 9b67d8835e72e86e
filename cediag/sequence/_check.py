"""`check_batch`: the CE5xx rules on a collated batch, before training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .._call import argument_summary
from .._report import ArgumentSummary, CallSummary, Diagnostic, Report
from ..rules._registry import Rule
from ._context import BatchContext, Shift, build_context
from ._rules import select_batch_rules
from ._stats import compute


def check_batch(
    batch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    model: Any = None,
    tokenizer: Any = None,
    pad_token_id: int | None = None,
    eos_token_id: int | list[int] | None = None,
    ignore_index: int = -100,
    shift: Shift | None = None,
    num_items_in_batch: Any = None,
    vocab_size: int | None = None,
    embedding_rows: int | None = None,
    num_labels: int | None = None,
    select: list[str] | None = None,
    ignore: list[str] | None = None,
) -> Report:
    """Check a collated language-model batch (`input_ids`, `attention_mask`, `labels`, ...)
    before it reaches the model, with the CE5xx rules.

    `model` and `tokenizer` supply the pad / EOS ids, the embedding size and who shifts the
    labels; explicit arguments win. `shift`: "model" (a causal LM's own loss shifts), "caller"
    (you compute the loss on the logits and shift yourself), "none" (nobody shifts: masked LM,
    token classification). A list of batches is one gradient-accumulation window:
    `num_items_in_batch` is then checked against all of them. Never raises on what the batch
    holds: every problem is a diagnostic, and what could not be checked is a note.
    """
    rules = select_batch_rules(
        select, ignore
    )  # a bad code is the caller's mistake: this one raises
    batches = [batch] if isinstance(batch, Mapping) else list(batch)
    options = dict(
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        ignore_index=ignore_index,
        shift=shift,
        vocab_size=vocab_size,
        embedding_rows=embedding_rows,
        num_labels=num_labels,
    )
    try:
        contexts = [
            build_context(b, model=model, tokenizer=tokenizer, **options)  # type: ignore[arg-type]
            for b in batches
        ]
    except ValueError:
        if shift is not None and shift not in ("model", "caller", "none"):
            raise
        return _unchecked(batches, "the batch could not be read")
    if not contexts:
        return _unchecked(batches, "no batch given")
    if num_items_in_batch is not None:
        contexts[-1].num_items_in_batch = _items(num_items_in_batch)
    return check_contexts(contexts, rules)


def _items(value: Any) -> float | None:
    from ._context import _number

    return _number(value)


def check_contexts(contexts: list[BatchContext], rules: list[Rule]) -> Report:
    """Run the rules on each batch of a window; the window's counts go to the last one."""
    found: list[Diagnostic] = []
    notes: list[str] = []
    checked = True
    with torch._C.DisableTorchFunctionSubclass(), torch.no_grad():
        window, window_unshifted, window_if_shifted = 0, 0, 0
        for i, ctx in enumerate(contexts):
            last = i == len(contexts) - 1
            if not last:
                ctx.num_items_in_batch = None
            elif len(contexts) > 1:
                ctx.window_supervised, ctx.window_supervised_unshifted = window, window_unshifted
                ctx.window_supervised_if_shifted = window_if_shifted
            prefix = f"batch {i + 1} of {len(contexts)}: " if len(contexts) > 1 else ""
            if not _readable(ctx):
                checked = False
                notes.append(f"{prefix}not checked: no integer `labels` tensor in the batch")
                continue
            try:
                ctx.stats = compute(ctx)
            except Exception as error:
                checked = False
                notes.append(f"{prefix}not checked: {type(error).__name__}: {error}")
                continue
            window += ctx.stats.supervised_after_shift
            window_unshifted += ctx.stats.supervised
            window_if_shifted += ctx.stats.supervised_if_shifted or 0
            run_rules(ctx, rules)
            for d in ctx.found:
                if not any(f.code == d.code for f in found):
                    found.append(d.model_copy(update={"message": prefix + d.message}))
            notes += [prefix + n for n in ctx.notes]
    first = contexts[0]
    return Report(
        call=summary(first),
        diagnostics=sorted(found, key=lambda d: (-d.severity.rank, d.code)),
        values_checked=checked,
        notes=notes,
    )


def _readable(ctx: BatchContext) -> bool:
    labels = ctx.labels
    return (
        isinstance(labels, torch.Tensor)
        and labels.layout is torch.strided
        and not labels.is_meta
        and not labels.dtype.is_floating_point
        and not labels.dtype.is_complex
        and labels.dtype != torch.bool
    )


def run_rules(ctx: BatchContext, rules: list[Rule]) -> None:
    from .._engine import run_rules as run  # the engine's: findings and failures, one way

    run(ctx, rules)


def summary(ctx: BatchContext) -> CallSummary:
    """The batch as a call: input_ids as the input, labels as the target."""
    return CallSummary(
        loss="cross_entropy",
        input=argument_summary(ctx.input_ids)
        if ctx.input_ids is not None
        else ArgumentSummary(type="NoneType"),
        target=argument_summary(ctx.labels)
        if ctx.labels is not None
        else ArgumentSummary(type="NoneType"),
        ignore_index=ctx.ignore_index,
    )


def _unchecked(batches: list[Any], why: str) -> Report:
    def get(key: str) -> Any:
        first = batches[0] if batches else None
        return first.get(key) if isinstance(first, Mapping) else None

    return Report(
        call=CallSummary(
            input=argument_summary(get("input_ids")), target=argument_summary(get("labels"))
        ),
        values_checked=False,
        notes=[f"not checked: {why}"],
    )
