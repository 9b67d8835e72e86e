"""The model hook: the CE5xx rules on every batch a model's forward receives with `labels`.

    detach = attach(model, guard, tokenizer=tokenizer)
    ...                      # model(**batch) / Trainer.train()
    detach()                 # removes the hook, and checks the last accumulation window

One forward pre-hook on the model itself (not its submodules). It reads the ids from the model
once, at attach (the embedding size on every call: `resize_token_embeddings` changes it), runs
one pass of reductions over the batch's (B, T) integer tensors with one transfer to the host,
and hands a report with findings to `guard.report_external`, which counts, de-duplicates and
raises or warns as the guard is configured. transformers is never imported here.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .._report import Report
from ._check import check_contexts, run_rules
from ._context import BatchContext, Shift, build_context, model_facts
from ._rules import select_batch_rules
from ._stats import BatchStats

WINDOW_RULE = "CE509"


@dataclass
class _Window:
    """Forwards that share one `num_items_in_batch` (the Trainer passes the same one to every
    micro-batch of an accumulation window)."""

    key: Any
    items: float
    supervised: int = 0
    unshifted: int = 0
    if_shifted: int | None = 0  # None once a forward could not say
    forwards: int = 0
    shift: Shift | None = None
    ignore_index: int = -100
    loss_type_unset: bool = False
    interrupted: bool = False  # a forward of it was stopped: its count is not the window's


def _complete(w: _Window) -> bool:
    counts = (w.supervised, w.unshifted, w.if_shifted)
    return any(count is not None and count == w.items for count in counts)


class _Hook:
    def __init__(
        self,
        model: Any,
        guard: Any,
        tokenizer: Any,
        accumulation_steps: int | None,
        ids: dict[str, Any],
    ) -> None:
        self.model = model
        self.guard = guard
        self.tokenizer = tokenizer
        self.steps = accumulation_steps
        self.ids = ids
        self.info = model_facts(model)
        from ..guard._config import disabled_by_env  # here: the guard imports the rule catalogue

        self.disabled_by_env = disabled_by_env
        self.window: _Window | None = None
        self.counted_in: _Window | None = None  # the window of the forward being checked
        self._signature: inspect.Signature | None | bool = False
        self._rules_key: Any = None
        self._rules: list = []

    # ------------------------------------------------------------------ reading the call
    def batch_of(self, args: tuple, kwargs: dict) -> Mapping[str, Any] | None:
        if "labels" in kwargs:
            if not args:
                return kwargs
            bound = self._bind(args, kwargs)
            return bound if bound is not None else kwargs
        if args and isinstance(args[0], Mapping) and "labels" in args[0]:
            return args[0]  # model(batch): a custom module taking the batch dict
        if args:
            bound = self._bind(args, kwargs)
            if bound is not None and "labels" in bound:
                return bound
        return None

    def _bind(self, args: tuple, kwargs: dict) -> dict[str, Any] | None:
        if self._signature is False:
            try:
                self._signature = inspect.signature(self.model.forward)
            except (TypeError, ValueError):
                self._signature = None
        if self._signature is None:
            return None
        try:
            bound = self._signature.bind_partial(*args, **kwargs)  # type: ignore[union-attr]
        except TypeError:
            return None
        arguments = dict(bound.arguments)
        for name, value in list(arguments.items()):  # **kwargs of forward
            if isinstance(value, dict) and name not in ("labels", "input_ids"):
                param = self._signature.parameters.get(name)  # type: ignore[union-attr]
                if param is not None and param.kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(arguments.pop(name))
        return arguments

    def rules(self, opts: Any) -> list:
        key = (opts.select, opts.ignore)
        if key != self._rules_key:
            self._rules = select_batch_rules(
                None if opts.select is None else list(opts.select),
                None if opts.ignore is None else list(opts.ignore),
            )
            self._rules_key = key
        return self._rules

    # ------------------------------------------------------------------ the hook
    def __call__(self, module: Any, args: tuple, kwargs: dict) -> None:
        if _is_compiling():  # nothing here may become part of a compiled graph
            return None
        opts = self.guard.options()
        if not opts.enabled or self.disabled_by_env():
            return None
        report = None
        self.counted_in = None
        try:
            batch = self.batch_of(args, kwargs)
            if batch is not None:
                report = self.check(batch, opts)
        except Exception:  # the checker's own failure must never break the step
            report = None
        if report is not None and report.diagnostics:
            try:
                self.guard.report_external(report)  # may raise, as the guard is configured
            except BaseException:
                # This forward does not run, yet it was counted in its window: a window judged
                # on it later (at detach) would report a mismatch that is not there.
                if self.counted_in is not None:
                    self.counted_in.interrupted = True
                raise
        return None

    def check(self, batch: Mapping[str, Any], opts: Any) -> Report | None:
        ctx = build_context(
            batch, model=self.model, tokenizer=self.tokenizer, model_info=self.info, **self.ids
        )
        if ctx.labels is None:
            return None
        raw_items = batch.get("num_items_in_batch")
        items = ctx.num_items_in_batch
        ctx.num_items_in_batch = None  # the window rule runs once per window, below
        rules = self.rules(opts)
        report = check_contexts([ctx], [r for r in rules if r.code != WINDOW_RULE])
        if items is None or ctx.stats is None or not any(r.code == WINDOW_RULE for r in rules):
            return report
        closed = self.add_to_window(raw_items, items, ctx)
        extra = [d for w in closed for d in self.window_findings(w, rules)]
        if extra:
            report = report.model_copy(
                update={
                    "diagnostics": sorted(
                        [*report.diagnostics, *extra], key=lambda d: (-d.severity.rank, d.code)
                    )
                }
            )
        return report

    # ------------------------------------------------------------------ accumulation windows
    def add_to_window(self, raw: Any, items: float, ctx: BatchContext) -> list[_Window]:
        """Add this forward to its window; return the windows that are complete."""
        closed: list[_Window] = []
        w = self.window
        same = w is not None and (
            raw is w.key or (not isinstance(raw, torch.Tensor) and raw == w.key)
        )
        if w is not None and not same:
            closed.append(w)
            w = None
        if w is None:
            w = _Window(
                raw,
                items,
                shift=ctx.shift,
                ignore_index=ctx.ignore_index,
                loss_type_unset=ctx.loss_type_unset,
            )
        stats: BatchStats = ctx.stats
        w.supervised += stats.supervised_after_shift
        w.unshifted += stats.supervised
        if w.if_shifted is not None and stats.supervised_if_shifted is not None:
            w.if_shifted += stats.supervised_if_shifted
        else:
            w.if_shifted = None
        w.forwards += 1
        self.counted_in = w
        if self.steps is not None and w.forwards >= self.steps:
            closed.append(w)
            w = None
        elif self.steps is None and not isinstance(raw, torch.Tensor) and _complete(w):
            # A number is grouped by value, not identity: consecutive windows with the same
            # count (fixed-length packed batches) would merge. One whose labels add up to
            # its count, read either way, is complete.
            closed.append(w)
            w = None
        self.window = w
        return closed

    def window_findings(self, w: _Window, rules: list) -> list:
        if _distributed() or w.interrupted:
            return []  # the other ranks' labels are not visible here; a cut window is partial
        ctx = BatchContext(
            shift=w.shift,
            ignore_index=w.ignore_index,
            loss_type_unset=w.loss_type_unset,
            num_items_in_batch=w.items,
            window_supervised=0 if w.forwards > 1 else None,
            window_supervised_unshifted=0,
            stats=BatchStats(
                labels_total=1,
                supervised=w.unshifted,
                supervised_after_shift=w.supervised,
                supervised_if_shifted=w.if_shifted if w.shift is None else None,
            ),
        )
        run_rules(ctx, [r for r in rules if r.code == WINDOW_RULE])
        return ctx.found

    def flush(self, interrupted: bool = False) -> None:
        """Check the open window (called at detach). `interrupted`: detach runs while an
        exception propagates (the `with` block or the training loop was left by it), so the
        open window is likely cut short and is not judged."""
        w, self.window = self.window, None
        if w is None or interrupted:
            return
        opts = self.guard.options()
        if not opts.enabled or self.disabled_by_env():
            return
        found = self.window_findings(w, self.rules(opts))
        if found:
            report = Report(
                call=_window_summary(),
                diagnostics=found,
            )
            self.guard.report_external(report)


def _window_summary():
    from .._report import ArgumentSummary, CallSummary

    return CallSummary(input=ArgumentSummary(type="window"), target=ArgumentSummary(type="window"))


def _never_compiling() -> bool:  # torch < 2.3 has no torch.compiler.is_compiling
    return False


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", _never_compiling)


def _distributed() -> bool:
    dist = getattr(torch, "distributed", None)
    return bool(
        dist is not None
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


def attach(
    model: Any,
    guard: Any,
    tokenizer: Any = None,
    *,
    accumulation_steps: int | None = None,
    pad_token_id: int | None = None,
    eos_token_id: int | list[int] | None = None,
    ignore_index: int = -100,
    shift: Shift | None = None,
) -> Callable[[], None]:
    """Check every batch `model`'s forward receives with `labels` (as keyword arguments, bound
    positional ones, or a batch dict as the first argument), and hand each report with findings
    to `guard.report_external`. Returns `detach()`, which removes the hook and checks the last
    `num_items_in_batch` window.

    `accumulation_steps`: forwards per gradient-accumulation window. Without it a window is the
    run of forwards that receive the same `num_items_in_batch` object (as transformers' Trainer
    passes it), checked when the next window starts or at detach. A window cut short is not
    judged: one whose forward the guard stopped by raising, and the open one when `detach()`
    runs while an exception propagates (a `with` block or a `finally` left by it): its count
    covers micro-batches that never ran.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"Expected argument `model` to be a torch.nn.Module, but got {type(model).__name__}"
        )
    if accumulation_steps is not None and (
        not isinstance(accumulation_steps, int) or accumulation_steps < 1
    ):
        raise ValueError(
            f"Expected argument `accumulation_steps` to be an int >= 1, but got {accumulation_steps!r}"
        )
    ids = {
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,
        "ignore_index": ignore_index,
        "shift": shift,
    }
    hook = _Hook(model, guard, tokenizer, accumulation_steps, ids)
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    done = False
    handled_at_attach = sys.exc_info()[1]  # attached inside an `except` clause: not ours

    def detach() -> None:
        nonlocal done
        if done:
            return
        done = True
        handle.remove()
        in_flight = sys.exc_info()[1]  # set in `__exit__` and `finally` while one propagates
        hook.flush(interrupted=in_flight is not None and in_flight is not handled_at_attach)

    return detach
