"""The check a guarded loss runs before the loss: schedule, sync mode, de-duplication, and what
to do with a finding (raise, warn, log, dump). `wrap`, `checked` and `watch` all go through
`Guard.before_loss`.

A guard must never break the step it guards: anything unexpected inside the checker becomes a
note in the summary, and only a finding the user asked to raise on leaves as an exception.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .. import _engine
from .._call import Call, bind_call
from .._dump import write_dump
from .._report import CrossEntropyInputError, Diagnostic, Report, Severity
from ..rules import Rule, select_rules
from ..rules._context import Context
from ._config import (
    GuardOptions,
    current_options,
    disabled_by_env,
    resolve,
    validate_overrides,
)
from ._summary import COLLECTOR, GuardSummary

logger = logging.getLogger("cediag")


class CediagWarning(UserWarning):
    """A finding on a guarded cross-entropy call; `.diagnostic` and `.report` hold the data."""

    def __init__(self, message: str, diagnostic: Diagnostic | None = None, report=None):
        super().__init__(message)
        self.diagnostic = diagnostic
        self.report = report


# True while a guarded loss runs: the torch call inside it is not checked a second time.
_IN_LOSS: contextvars.ContextVar[bool] = contextvars.ContextVar("cediag_in_loss", default=False)


def check_then_call(
    guard: Guard, function, binder, args: tuple, kwargs: dict, *, criterion: Any, loss: str
):
    """The body every guarded entry point shares: check the bound (input, target), then run
    the loss with the watch() hooks off, so the F.cross_entropy inside is not checked twice."""
    opts = guard.active()
    if opts is None:
        return function(*args, **kwargs)
    bound = binder.bind(args, kwargs)
    if bound is not None:
        guard.before_loss(
            bound[0], bound[1], criterion=criterion, loss=loss, guard_options=opts, **bound[2]
        )
    token = _IN_LOSS.set(True)
    try:
        return function(*args, **kwargs)
    finally:
        _IN_LOSS.reset(token)


def is_compiling() -> bool:
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # torch < 2.3
        return False


# ---------------------------------------------------------------------- call sites

_SKIP_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (torch, sys.modules[__name__.rsplit(".", 2)[0]])
)
_SITE_NAMES: dict[str, str] = {}


@dataclass(frozen=True)
class Site:
    name: str  # "train.py:42", the key of de-duplication
    filename: str
    lineno: int


def call_site(depth: int = 2) -> Site:
    """The first frame outside torch and cediag: the user's line that called the loss."""
    frame = sys._getframe(depth)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP_DIRS):
        frame = frame.f_back
    if frame is None:
        return Site("<unknown>", "<unknown>", 0)
    filename = frame.f_code.co_filename
    short = _SITE_NAMES.get(filename)
    if short is None:
        try:
            rel = os.path.relpath(filename)
            short = filename if rel.startswith("..") else rel
        except ValueError:  # another drive on Windows
            short = filename
        _SITE_NAMES[filename] = short
    return Site(f"{short}:{frame.f_lineno}", filename, frame.f_lineno)


# ---------------------------------------------------------------------- deferred reads


@dataclass
class _Pending:
    guard: Guard
    options: GuardOptions
    ctx: Context
    rules: list[Rule]
    plan: Any
    host: torch.Tensor  # the packed statistics: pinned CPU copy (CUDA) or the tensor itself
    event: Any  # torch.cuda.Event recorded after the copy, or None
    site: Site
    n: int

    def ready(self) -> bool:
        if self.event is not None:
            return self.event.query()  # asks the driver; does not block or synchronise
        return self.host.device.type == "cpu"

    def read(self) -> list[float]:
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()


_PENDING: list[_Pending] = []
_PENDING_LOCK = threading.Lock()


def _to_host_async(packed: torch.Tensor) -> tuple[torch.Tensor, Any]:
    if packed.device.type == "cuda":
        host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
        host.copy_(packed, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event
    return packed, None  # CPU: already computed. Other devices: read at summary() time.


def drain(block: bool, may_raise: bool) -> None:
    """Finish deferred checks whose statistics have arrived (all of them when `block`)."""
    if not _PENDING:
        return
    with _PENDING_LOCK:
        todo = [p for p in _PENDING if block or p.ready()]
        for p in todo:
            _PENDING.remove(p)
    first_error: CrossEntropyInputError | None = None
    for p in todo:
        try:
            report = _engine.finish(p.ctx, p.rules, p.plan, p.read())
        except Exception as error:  # never break the training step
            COLLECTOR.note(
                f"deferred check at {p.site.name} failed: {type(error).__name__}: {error}"
            )
            continue
        try:
            p.guard.handle(report, p.ctx.call, p.site, p.n, p.options, may_raise=may_raise)
        except CrossEntropyInputError as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error


def summary(*, clear: bool = False) -> GuardSummary:
    """Every finding of guarded losses so far (deferred checks are read first).

    `clear=True` empties the table after reading it.
    """
    drain(block=True, may_raise=False)
    result = COLLECTOR.snapshot()
    if clear:
        COLLECTOR.clear()
    return result


# ---------------------------------------------------------------------- the guard

_RULES_CACHE: dict[tuple, list[Rule]] = {}


def _rules(options: GuardOptions) -> list[Rule]:
    key = (options.select, options.ignore)
    rules = _RULES_CACHE.get(key)
    if rules is None:
        rules = select_rules(
            None if options.select is None else list(options.select),
            None if options.ignore is None else list(options.ignore),
        )
        _RULES_CACHE[key] = rules
    return rules


class Guard:
    """The shared policy of one entry point (a wrapped loss, a decorated function, a watch block).

    `sink`, when given, receives every report that has findings at `fail_on` or worse, repeats
    included (the pytest plugin uses it to fail the test that made the call).
    """

    def __init__(self, overrides: dict[str, Any] | None = None, *, sink=None):
        self.overrides = validate_overrides(overrides or {})
        self.sink = sink
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._resolved: tuple[GuardOptions | None, GuardOptions | None] = (None, None)
        # Metadata of calls whose structure checks passed: structure rules read nothing else,
        # so a repeat needs no re-check (training loops repeat a handful of shapes).
        self._clean_structures: set[tuple] = set()

    def options(self) -> GuardOptions:
        """The context's default with this entry point's options on top (cached per default)."""
        base = current_options()
        cached_base, resolved = self._resolved
        if cached_base is not base or resolved is None:
            resolved = resolve(self.overrides)
            self._resolved = (base, resolved)
        return resolved

    def active(self) -> GuardOptions | None:
        """The options to check with, or None when the guard is off (option or CEDIAG_DISABLE)."""
        opts = self.options()
        return opts if opts.enabled and not disabled_by_env() else None

    def before_loss(
        self,
        input: Any,
        target: Any,
        *,
        criterion: Any = None,
        loss: str = "cross_entropy",
        guard_options: GuardOptions | None = None,
        **options: Any,
    ) -> None:
        """Check one call before the loss runs. Raises only CrossEntropyInputError, and only
        when `on_error="raise"`. `guard_options`: from `active()`, when the caller has them."""
        opts = guard_options or self.active()
        if opts is None:
            return
        site = call_site(2)
        with self._lock:
            n = self._counts.get(site.name, 0) + 1
            self._counts[site.name] = n
        full = opts.full_check(n)
        COLLECTOR.count_call(full)
        if _PENDING:
            drain(block=False, may_raise=True)
        try:
            call = bind_call(input, target, criterion=criterion, loss=loss, **options)  # type: ignore[arg-type]
            report = self._check(call, opts, full, site, n)
        except Exception as error:  # a checker must not break the step it guards
            COLLECTOR.note(f"check at {site.name} failed: {type(error).__name__}: {error}")
            return
        if report is not None:
            self.handle(report, call, site, n, opts, may_raise=True)

    def _check(
        self, call: Call, opts: GuardOptions, full: bool, site: Site, n: int
    ) -> Report | None:
        rules = _rules(opts)
        if not full:
            signature = _metadata_signature(call, opts)
            if signature is not None and signature in self._clean_structures:
                return None  # same shapes, dtypes and options as a call that passed: skip
        ctx = _engine.check_structure(call, rules)
        if not full:
            if not ctx.found and (not call.tensors_ok or ctx.rejection is None):
                if signature is not None and len(self._clean_structures) < _MAX_SIGNATURES:
                    self._clean_structures.add(signature)
                return None
            ctx.notes.append(f"values not checked on call {n} (schedule: {_schedule_text(opts)})")
            return _engine.finish(ctx, rules, None, None)
        deferred = opts.sync == "deferred" and not ctx.has_error()
        try:
            plan, packed = _engine.start_statistics(call)
        except Exception as error:  # odd tensors: check the structure only
            ctx.notes.append(f"values not checked: {type(error).__name__}: {error}")
            plan, packed = None, None
        if packed is None:
            return _engine.finish(ctx, rules, None, None)
        if not deferred:
            return _engine.finish(ctx, rules, plan, packed.tolist())
        host, event = _to_host_async(packed)
        # Keep the values, not the autograd graph, alive until the statistics are read.
        call.input = call.input.detach()
        with _PENDING_LOCK:
            _PENDING.append(_Pending(self, opts, ctx, rules, plan, host, event, site, n))
        return None

    def handle(
        self,
        report: Report,
        call: Call,
        site: Site,
        n: int,
        opts: GuardOptions,
        *,
        may_raise: bool,
    ) -> None:
        """Count the findings, write a reproducer, and raise / warn / log as configured."""
        if not report.diagnostics:
            if report.notes and not report.values_checked and call.tensors_ok and not call.on_meta:
                for note in report.notes:
                    if not note.startswith("values not checked on call"):
                        COLLECTOR.note(f"{site.name}: {note}")
            return
        report = report.model_copy(update={"source": site.name})
        failing = report.at_least(opts.fail_on)
        new = {d.code for d in report.diagnostics if COLLECTOR.record(site.name, d, n)}
        if failing and self.sink is not None:
            self.sink(report)
        if failing and opts.dump_dir is not None and any(d.code in new for d in failing):
            report = self._dump(report, call, site, n, opts, failing)
        if failing and opts.on_error == "raise" and may_raise:
            raise CrossEntropyInputError(report)
        for d in report.diagnostics:
            if d.code in new and d.severity.rank >= Severity.warning.rank:
                self._emit(d, report, site, n, opts)

    def _dump(self, report, call, site, n, opts, failing) -> Report:
        stem = f"cediag-{os.path.basename(site.filename)}-{site.lineno}-{failing[0].code}-call{n}"
        try:
            path = str(write_dump(opts.dump_dir, stem, call, report, site.name))
        except Exception as error:  # a failed dump must not hide the finding
            note = f"reproducer not saved: {type(error).__name__}: {error}"
            COLLECTOR.note(f"{site.name}: {note}")
            return report.model_copy(update={"notes": [*report.notes, note]})
        for d in failing:
            COLLECTOR.set_dump(site.name, d.code, path)
        note = f"reproducer saved to {path}"
        return report.model_copy(update={"notes": [*report.notes, note]})

    def _emit(self, d: Diagnostic, report: Report, site: Site, n: int, opts: GuardOptions):
        text = f"{d.code} {d.rule} [{d.severity.value}] at {site.name} (call {n}): {d.message}"
        text += f"\n    fix: {d.fix}"
        for note in report.notes:
            if note.startswith("reproducer"):
                text += f"\n    {note}"
        if opts.on_error == "log":
            level = logging.ERROR if d.severity is Severity.error else logging.WARNING
            logger.log(level, "%s", text)
        else:
            warnings.warn_explicit(
                CediagWarning(text, d, report), CediagWarning, site.filename, site.lineno
            )


_MAX_SIGNATURES = 1024


def _metadata_signature(call: Call, opts: GuardOptions) -> tuple | None:
    """What the structure rules depend on, as a hashable key; None for odd arguments."""
    parts = []
    for value in (call.input, call.target, call.weight):
        if value is None:
            parts.append(None)
        elif isinstance(value, torch.Tensor):
            parts.append((tuple(value.shape), value.dtype, value.device, value.layout))
        else:
            return None
    options = (call.ignore_index, call.reduction, call.label_smoothing, call.loss, call.autocast)
    try:
        hash(options)
    except TypeError:
        return None
    return (*parts, options, opts.select, opts.ignore)


def _schedule_text(opts: GuardOptions) -> str:
    later = f"then every {opts.every}th" if opts.every else "then none"
    return f"first {opts.first} calls, {later}"
