"""The check a guarded loss runs before the loss: overhead budget, schedule, sync mode,
de-duplication, and what to do with a finding (raise, warn, log, dump). `wrap`, `checked` and
`watch` all go through `check_then_call` (after counting down `Guard.countdown` themselves).

A guard must never break the step it guards: anything unexpected inside the checker becomes a
note in the summary, and only a finding the user asked to raise on leaves as an exception.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from time import perf_counter
from types import CodeType, FrameType
from typing import Any

import torch

from .. import _engine
from .._call import Call, autocast_enabled, bind_call
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
    opts = guard.options()
    # The budget first: a call it lets through needs nothing else, not even the environment.
    if not opts.enabled or not guard.within_budget(opts) or disabled_by_env():
        return function(*args, **kwargs)
    guard.before_call(opts, binder, args, kwargs, criterion=criterion, loss=loss)
    token = _IN_LOSS.set(True)
    try:
        return function(*args, **kwargs)
    finally:
        _IN_LOSS.reset(token)


def _never_compiling() -> bool:  # torch < 2.3 has no torch.compiler.is_compiling
    return False


# The function itself, not a wrapper around it: it runs first on every guarded call.
is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", _never_compiling)


# ---------------------------------------------------------------------- call sites

_SKIP_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (torch, sys.modules[__name__.rsplit(".", 2)[0]])
)
_SITE_NAMES: dict[str, str] = {}
_MAX_CODES = 100_000


@dataclass(frozen=True)
class Site:
    name: str  # "train.py:42", the key of de-duplication
    filename: str
    lineno: int


_SKIP_CODES: dict[CodeType, bool] = {}  # code object -> lives in torch or cediag


def user_frame(frame: FrameType | None) -> tuple[FrameType | None, int]:
    """The first frame outside torch and cediag from `frame` up (the user's line that called
    the loss), and how many frames up it was. Each code object's verdict is remembered, so
    that the walk costs a dict lookup per frame on repeated calls."""
    hops = 0
    while frame is not None:
        code = frame.f_code
        skip = _SKIP_CODES.get(code)
        if skip is None:
            skip = code.co_filename.startswith(_SKIP_DIRS)
            if len(_SKIP_CODES) < _MAX_CODES:
                _SKIP_CODES[code] = skip
        if not skip:
            return frame, hops
        frame = frame.f_back
        hops += 1
    return None, hops


def site_of(frame: FrameType | None) -> Site:
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


@dataclass
class _SiteState:
    """A call site's place in the schedule."""

    site: Site
    calls: int = 0  # calls looked at (with a budget, calls let through are not counted here)


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
        self._lock = threading.Lock()
        self._resolved: tuple[GuardOptions | None, GuardOptions | None] = (None, None)
        self._sites: dict[tuple[CodeType, int] | None, _SiteState] = {}
        self._sites_by_name: dict[str, _SiteState] = {}
        # Metadata of calls whose structure checks passed: structure rules read nothing else,
        # so a repeat needs no re-check (training loops repeat a handful of shapes).
        self._clean_keys: set[tuple] = set()
        # The overhead budget's books: when the first call was looked at, and the seconds spent
        # looking at calls since (full checks, metadata checks, reading deferred ones).
        self._started: float | None = None
        self._spent = 0.0
        self._site_depth = 1_000_000  # stack depth of the user's frame from within_budget
        # Calls still to let through before the clock is read again; the entry points read it
        # before anything else and call let_through() while it runs.
        self.countdown = 0

    def options(self) -> GuardOptions:
        """The context's default with this entry point's options on top (cached per default)."""
        base = current_options()
        cached_base, resolved = self._resolved
        if cached_base is not base or resolved is None:
            resolved = resolve(self.overrides)
            self._resolved = (base, resolved)
        return resolved

    def within_budget(self, opts: GuardOptions) -> bool:
        """Whether to look at this call: always without a budget, else while the time spent in
        the guard is within `budget` of the wall time since its first call, and on the first
        call from a line not seen before.

        Over budget, the next `_LET_THROUGH` calls go straight to the loss without even a
        clock read: the entry points test `countdown` before anything else and count it down
        with `let_through()`. Then the clock and the caller's line are read again: a new line
        is noticed at the latest that many calls late.
        """
        budget = opts.budget_fraction
        if budget is None or self._started is None:
            return True
        if self._spent <= budget * (perf_counter() - self._started):
            return True
        try:  # the caller's frame sits at the same depth on every call from one code path
            frame = sys._getframe(self._site_depth)
        except ValueError:  # a shallower stack than before
            return True
        if (frame.f_code, frame.f_lasti) not in self._sites:
            frame, _ = user_frame(frame)  # another code path: walk up to the user's frame
            if frame is not None and (frame.f_code, frame.f_lasti) not in self._sites:
                return True
        self.countdown = _LET_THROUGH + 1
        self.let_through()
        return False

    def let_through(self) -> None:
        """Send one call straight to the loss while `countdown` runs: count it down, and count
        it for the summary. Unlocked: a thread race costs a call more or less."""
        self.countdown -= 1
        COLLECTOR.let_through += 1

    def before_call(
        self,
        opts: GuardOptions,
        binder: Any,
        args: tuple,
        kwargs: dict,
        *,
        criterion: Any = None,
        loss: str = "cross_entropy",
    ) -> None:
        """Check one call before the loss runs. Raises only CrossEntropyInputError, and only
        when `on_error="raise"`.

        The common case, a call whose shapes, dtypes and options passed before and that the
        schedule does not pick, costs a frame walk, a counter and one set lookup.
        """
        start = perf_counter()
        try:
            self._look(opts, binder, args, kwargs, criterion, loss)
        finally:
            end = perf_counter()
            with self._lock:
                if self._started is None:
                    self._started = start
                self._spent += end - start

    def _look(self, opts, binder, args, kwargs, criterion, loss) -> None:
        # Frames: here <- before_call <- check_then_call <- entry point (wrap, watch) <- ...
        frame, hops = user_frame(sys._getframe(3))
        # within_budget (called by check_then_call) finds that frame at depth 2 + hops.
        self._site_depth = min(self._site_depth, 2 + hops)
        state = self._site_state(frame)
        with self._lock:
            state.calls += 1
            n = state.calls
        full = opts.full_check(n)
        COLLECTOR.count_call(full)
        if _PENDING:
            drain(block=False, may_raise=True)
        key = None
        if not full:
            key = structure_key(args, kwargs, criterion, loss, opts)
            if _known(key, self._clean_keys):
                return
        bound = binder.bind(args, kwargs)
        if bound is None:
            return
        try:
            call = bind_call(bound[0], bound[1], criterion=criterion, loss=loss, **bound[2])  # type: ignore[arg-type]
            report = self._check(call, opts, full, state.site, n, key)
        except Exception as error:  # a checker must not break the step it guards
            COLLECTOR.note(f"check at {state.site.name} failed: {type(error).__name__}: {error}")
            return
        if report is not None:
            self.handle(report, call, state.site, n, opts, may_raise=True)

    def _site_state(self, frame: FrameType | None) -> _SiteState:
        key = None if frame is None else (frame.f_code, frame.f_lasti)
        state = self._sites.get(key)
        if state is None:
            site = site_of(frame)
            with self._lock:
                state = self._sites_by_name.setdefault(site.name, _SiteState(site))
                self._sites[key] = state
        return state

    def _check(
        self, call: Call, opts: GuardOptions, full: bool, site: Site, n: int, key: tuple | None
    ) -> Report | None:
        rules = _rules(opts)
        ctx = _engine.check_structure(call, rules)
        if not full:
            if not ctx.found and (not call.tensors_ok or ctx.rejection is None):
                if key is not None and len(self._clean_keys) < _MAX_SIGNATURES:
                    with contextlib.suppress(TypeError):  # unhashable: not remembered
                        self._clean_keys.add(key)
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
            ctx = _engine.evaluate(ctx, rules, plan, packed.tolist())
            # Nothing found, nothing to note: no Report to build (pydantic costs ~20 us).
            return _engine.build_report(ctx) if ctx.found or ctx.notes else None
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
# Over budget, calls let through before the clock is read again. Large enough that the clock
# and frame reads vanish from a let-through call's cost (~1 us in a training step), small
# enough that a guard recovers its schedule promptly once the budget allows.
_LET_THROUGH = 16


def structure_key(
    args: tuple, kwargs: dict, criterion: Any, loss: str, opts: GuardOptions
) -> tuple:
    """What the structure rules depend on, read straight off the arguments (no binding): each
    tensor's shape, dtype, device and layout, other arguments by type and value, the options a
    criterion module holds, the loss kind, autocast, and the rule selection. It may hold
    unhashable values (a list for an option): look it up with `_known`."""
    device = None
    parts: list[Any] = [loss, opts.select, opts.ignore]
    for value in args:
        if isinstance(value, torch.Tensor):
            device = device or value.device
            parts.append((value.shape, value.dtype, value.device, value.layout))
        else:
            parts.append((type(value), value))
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            device = device or value.device
            parts.append((name, value.shape, value.dtype, value.device, value.layout))
        else:
            parts.append((name, type(value), value))
    if criterion is not None:
        parts.append(_criterion_options(criterion))
    parts.append(device is not None and autocast_enabled(device.type))
    return tuple(parts)


def _known(key: tuple, keys: set[tuple]) -> bool:
    try:
        return key in keys
    except TypeError:  # an unhashable argument: such calls are always checked
        return False


def _criterion_options(criterion: Any) -> tuple:
    """The options `bind_call` reads from a loss module, read from its `__dict__`:
    nn.Module.__getattr__ costs half a microsecond per buffer or missing attribute."""
    state = getattr(criterion, "__dict__", None)
    if state is None:
        return (criterion,)
    weight = state.get("weight")
    if weight is None:
        weight = state.get("_buffers", {}).get("weight")
    if weight is None:
        weight = state.get("_parameters", {}).get("weight")
    if isinstance(weight, torch.Tensor):
        weight = (weight.shape, weight.dtype, weight.device, weight.layout)
    return (
        weight,
        state.get("ignore_index"),
        state.get("reduction"),
        state.get("label_smoothing"),
    )


def _schedule_text(opts: GuardOptions) -> str:
    later = f"then every {opts.every}th" if opts.every else "then none"
    return f"first {opts.first} calls, {later}"
