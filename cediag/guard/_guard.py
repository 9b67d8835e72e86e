"""The check a guarded loss runs before the loss. `wrap`, `checked` and `watch` all go through
`check_then_call`.

Every call is checked. A call whose signature (shapes, dtypes, options) passed the structure
rules before gets its family's sentinel (`cediag/families/*/sentinel.py`): one read of the
input and a few reductions of the targets. A suspicion, and the schedule (`first`, then every `every`-th call at a call
site), get the full check on that same call. With `sync="deferred"` the readings stay on the
device and are read every `sync_every` calls, at `summary()`, when a `watch()` block ends, and
at interpreter exit: nothing found is ever dropped.

A guard must never break the step it guards: anything unexpected inside the checker becomes a
note in the summary, and only a finding the user asked to raise on leaves as an exception.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import dataclasses
import logging
import os
import sys
import threading
import warnings
import weakref
from contextlib import nullcontext
from dataclasses import dataclass, field
from time import perf_counter
from types import CodeType, FrameType
from typing import Any

import torch

from .. import _engine
from .._call import any_autocast, autocast_enabled
from .._dump import write_dump
from .._report import CrossEntropyInputError, Diagnostic, Report, Severity
from ..families import family_of
from ..families._declaration import FamilyCall, SentinelPlan
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
    """A finding on a guarded loss call; `.diagnostic` and `.report` hold the data."""

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
    the loss with the watch() hooks off, so the F.cross_entropy inside is not checked twice.

    Reports for the `sink` (the pytest plugin) are handed over only once the loss has run: a
    call the loss itself rejects raises the loss's own exception, which a test may expect."""
    opts = guard.options()
    if not opts.enabled or disabled_by_env():
        return function(*args, **kwargs)
    if opts.budget_fraction is not None and not guard.within_budget(opts):
        return function(*args, **kwargs)
    try:
        for_sink = guard.before_call(opts, binder, args, kwargs, criterion=criterion, loss=loss)
    except CrossEntropyInputError as error:
        # Raised from here, without the guard's inner frames: the traceback shows the user's
        # line, the loss's own frames and this one.
        raise error.with_traceback(None) from None
    try:  # set inside the try: an interrupt right after it must not leave the flag stuck
        _IN_LOSS.set(True)
        result = function(*args, **kwargs)
    finally:
        _IN_LOSS.set(False)  # exact: callers get here only when the flag is False
    if for_sink:
        for report in for_sink:
            guard.sink(report)
    return result


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


# Libraries whose losses call F.cross_entropy for the user (transformers' loss_utils, say): a
# finding is attributed to the user's line that called into them, not to theirs.
_LIBRARIES = ("transformers", "timm", "segmentation_models_pytorch", "liger_kernel")


def _library_dirs() -> tuple[str, ...]:
    """The folders of those libraries that are imported (read on a code object's first sight)."""
    dirs = []
    for name in _LIBRARIES:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            dirs.append(os.path.dirname(path) + os.sep)
    return tuple(dirs)


@dataclass(frozen=True)
class Site:
    name: str  # "train.py:42"
    filename: str
    lineno: int
    column: int = 0  # where the call starts on its line: two losses on one line are two sites

    @property
    def key(self) -> tuple[str, int]:
        """What findings are de-duplicated by."""
        return self.name, self.column


# id(code object) -> (the code object, whether it lives in torch or cediag). Keyed by id: a
# code object's hash is recomputed from its bytecode on every lookup (microseconds for a long
# function); holding the object keeps its id from being reused.
_SKIP_CODES: dict[int, tuple[CodeType, bool]] = {}


def user_frame(frame: FrameType | None) -> FrameType | None:
    """The first frame outside torch and cediag from `frame` up: the user's line that called
    the loss. Each code object's verdict is remembered, so the walk costs a dict lookup per
    frame on repeated calls, and no frame depth is assumed."""
    while frame is not None:
        code = frame.f_code
        known = _SKIP_CODES.get(id(code))
        if known is not None:
            skip = known[1]
        else:
            skip = code.co_filename.startswith(_SKIP_DIRS + _library_dirs())
            if len(_SKIP_CODES) < _MAX_CODES:
                _SKIP_CODES[id(code)] = (code, skip)
        if not skip:
            return frame
        frame = frame.f_back
    return None


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
    return Site(f"{short}:{frame.f_lineno}", filename, frame.f_lineno, _column(frame))


def _column(frame: FrameType) -> int:
    """The column of the instruction `frame` is at (Python 3.11+), else 0."""
    positions = getattr(frame.f_code, "co_positions", None)
    if positions is None:
        return 0
    for index, position in enumerate(positions()):
        if index == frame.f_lasti // 2:
            return position[2] or 0
    return 0


@dataclass
class _SiteState:
    """A call site's place in the schedule, and which hints the sentinel may still follow."""

    site: Site
    calls: int = 0  # calls checked at this site
    # A hint (a suspicious logits range, an activation in the graph) is followed by a full
    # check once, then not again until a call without it: a legal model whose logits happen to
    # lie in [0, 1] costs one full check, a softmax added at step 5000 is still caught then.
    disarmed: set[str] = field(default_factory=set)
    full_next: bool = False  # a deferred hint asks for the full check on the next call


@dataclass
class _Signature:
    """What the guard knows about a call signature whose structure checks raised no error."""

    plan: SentinelPlan | None  # None: nothing the sentinel can read
    report: Report | None  # the structure findings (warnings, infos), re-counted on each call


# ---------------------------------------------------------------------- deferred reads


@dataclass(eq=False)
class _PendingCheck:
    """A scheduled full check whose statistics are still on their way to the host."""

    options: GuardOptions
    ctx: Context
    rules: list[Rule]
    plan: Any
    host: torch.Tensor  # the packed statistics: pinned CPU copy (CUDA) or the tensor itself
    event: Any  # torch.cuda.Event recorded after the copy, or None
    state: _SiteState
    n: int

    def ready(self) -> bool:
        if self.event is not None:
            return self.event.query()  # asks the driver; does not block or synchronise
        return self.host.device.type == "cpu"

    def read(self) -> list[float]:
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()


@dataclass(eq=False)
class _PendingReading:
    """A sentinel reading left on the device (`sync="deferred"`)."""

    options: GuardOptions
    plan: SentinelPlan
    reading: torch.Tensor
    state: _SiteState
    n: int


def _read_all(readings: list[torch.Tensor]) -> list[list[float]]:
    """The values of many readings with one transfer per device. Readings of different
    families (or plans) differ in length: they are joined flat and split again."""
    by_device: dict[torch.device, list[int]] = {}
    for index, reading in enumerate(readings):
        by_device.setdefault(reading.device, []).append(index)
    values: list[list[float]] = [[] for _ in readings]
    for indices in by_device.values():
        flat = torch.cat([readings[i].reshape(-1) for i in indices]).tolist()
        offset = 0
        for i in indices:
            size = readings[i].numel()
            values[i] = flat[offset : offset + size]
            offset += size
    return values


def _to_host_async(packed: torch.Tensor) -> tuple[torch.Tensor, Any]:
    if packed.device.type == "cuda":
        host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
        host.copy_(packed, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event
    return packed, None  # CPU: already computed. Other devices: read at summary() time.


# Guards with deferred work, so that summary() and interpreter exit can finish it.
_WITH_PENDING: weakref.WeakSet[Guard] = weakref.WeakSet()
_WITH_PENDING_LOCK = threading.Lock()


def summary(*, clear: bool = False) -> GuardSummary:
    """Every finding of guarded losses so far (deferred readings are read first).

    `clear=True` empties the table after reading it.
    """
    flush_all()
    result = COLLECTOR.snapshot()
    if clear:
        COLLECTOR.clear()
    return result


def flush_all() -> list[Report]:
    """Read every guard's deferred work now; returns the failing reports (not raised)."""
    with _WITH_PENDING_LOCK:
        guards = list(_WITH_PENDING)
    failing: list[Report] = []
    for guard in guards:
        failing += guard.flush(may_raise=False)
    return failing


@atexit.register
def _flush_at_exit() -> None:
    """Nothing found is dropped: deferred readings still pending at exit are read, and what
    they found is printed (nothing can be raised into the program any more)."""
    try:
        failing = flush_all()
    except Exception as error:  # never turn a clean exit into a traceback
        print(f"cediag: could not read deferred checks at exit: {error}", file=sys.stderr)
        return
    for report in failing:
        print(f"cediag: found after the last read (sync='deferred'):\n{report}", file=sys.stderr)


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
    included, once the loss has accepted the call (the pytest plugin uses it to fail the test
    that made the call). Thread-safe: counters and queues are changed under one lock.
    """

    def __init__(self, overrides: dict[str, Any] | None = None, *, sink=None):
        self.overrides = validate_overrides(overrides or {})
        self._sink = sink
        self._lock = threading.Lock()
        self._resolved: tuple[GuardOptions | None, GuardOptions | None] = (None, None)
        # (id(code), instruction) of the user's frame -> its state; the code objects are kept
        # in _site_codes, so an id stays its own.
        self._sites: dict[tuple[int, int] | None, _SiteState] = {}
        self._site_codes: list[CodeType] = []
        self._sites_by_name: dict[tuple[str, int], _SiteState] = {}
        # Call signatures whose structure checks raised no error: structure rules read nothing
        # else, so a repeat needs no re-check (training loops repeat a handful of shapes).
        self._signatures: dict[tuple, _Signature] = {}
        self._readings: list[_PendingReading] = []
        self._checks: list[_PendingCheck] = []
        # The optional overhead budget's books: when the first call was looked at, and the
        # seconds spent looking at calls since.
        self._started: float | None = None
        self._spent = 0.0
        self._over_budget_until = 0  # calls still to let through before the clock is read

    def options(self) -> GuardOptions:
        """The context's default with this entry point's options on top (cached per default)."""
        base = current_options()
        cached_base, resolved = self._resolved
        if cached_base is not base or resolved is None:
            resolved = resolve(self.overrides)
            self._resolved = (base, resolved)
        return resolved

    def sink(self, report: Report) -> None:
        if self._sink is not None:
            self._sink(report)

    # ------------------------------------------------------------------ optional budget
    def within_budget(self, opts: GuardOptions) -> bool:
        """With a user-set `budget`: whether to check this call. While the time spent in the
        guard is over `budget` of the wall time since its first call, the next `_LET_THROUGH`
        calls go straight to the loss, unchecked and counted; then the clock is read again.
        The first call from a line not seen before is checked regardless."""
        with self._lock:
            if self._over_budget_until:
                self._over_budget_until -= 1
                COLLECTOR.count_let_through()
                return False
            started, spent = self._started, self._spent
        if started is None or spent <= opts.budget_fraction * (perf_counter() - started):
            return True
        frame = user_frame(sys._getframe(1))
        if frame is not None and (id(frame.f_code), frame.f_lasti) not in self._sites:
            return True
        with self._lock:
            self._over_budget_until = _LET_THROUGH
        COLLECTOR.count_let_through()
        return False

    # ------------------------------------------------------------------ before the loss
    def before_call(
        self,
        opts: GuardOptions,
        binder: Any,
        args: tuple,
        kwargs: dict,
        *,
        criterion: Any = None,
        loss: str = "cross_entropy",
    ) -> list[Report]:
        """Check one call before the loss runs. Returns the failing reports for the sink.
        Raises only CrossEntropyInputError, and only when `on_error="raise"`."""
        if opts.budget_fraction is None:
            return self._look(opts, binder, args, kwargs, criterion, loss)
        start = perf_counter()
        try:
            return self._look(opts, binder, args, kwargs, criterion, loss)
        finally:
            end = perf_counter()
            with self._lock:
                if self._started is None:
                    self._started = start
                self._spent += end - start

    def _look(self, opts, binder, args, kwargs, criterion, loss) -> list[Report]:
        state = self._site_state(user_frame(sys._getframe(1)))
        failing: list[Report] = []
        if self._readings or self._checks:  # first: a late hint asks for this call's full check
            failing += self._drain(opts, block=False, may_raise=True)
        with self._lock:
            state.calls += 1
            n = state.calls
            hinted, state.full_next = state.full_next, False
            full = hinted or opts.full_check(n)
        try:
            key = structure_key(args, kwargs, criterion, loss, opts)
            signature = None if full else _lookup(self._signatures, key)
            if signature is None:
                bound = binder.bind(args, kwargs)
                if bound is None:
                    COLLECTOR.count_call(values=False)
                    return failing
                call = bind(loss, bound, criterion)
                # A full check a late hint asked for is read at once, not deferred again.
                hint = "a hint in a reading read late (sync='deferred')" if hinted else None
                report, why = self._first_look(call, opts, full, state, n, key, hint)
            else:
                report, why = self._sentinel(signature, binder, args, kwargs, opts, state, n)
                call = None
                if why:  # a suspicion: the full check, on this same call
                    call = bind(loss, binder.bind(args, kwargs), criterion)
                    report = self._full(call, opts, state, n, f"the per-call check saw {why}")
        except Exception as error:  # a checker must not break the step it guards
            COLLECTOR.note(f"check at {state.site.name} failed: {type(error).__name__}: {error}")
            return failing
        if report is not None:
            failing += self.handle(report, call, state, n, opts, may_raise=True)
        return failing

    def _site_state(self, frame: FrameType | None) -> _SiteState:
        key = None if frame is None else (id(frame.f_code), frame.f_lasti)
        state = self._sites.get(key)
        if state is None:
            site = site_of(frame)
            with self._lock:
                state = self._sites_by_name.setdefault(site.key, _SiteState(site))
                self._sites[key] = state
                if frame is not None:
                    self._site_codes.append(frame.f_code)  # keeps id(code) its own
        return state

    def _first_look(
        self,
        call: FamilyCall,
        opts: GuardOptions,
        full: bool,
        state: _SiteState,
        n: int,
        key: tuple,
        why: str | None,
    ) -> tuple[Report | None, str]:
        """A signature not seen before (or a full check): the structure rules, then the full
        check or the sentinel. `why`: a reason to read the full check now, even when deferred."""
        if full:
            COLLECTOR.count_call(values=True)
            return self._full(call, opts, state, n, why), ""
        rules = _rules(opts)
        ctx = _engine.check_structure(call, rules)
        if ctx.has_error() or not call.tensors_ok or (not ctx.found and ctx.rejection):
            # torch will reject the call (or we cannot tell): nothing to measure, and the
            # signature is not remembered, so the finding is reported on every such call.
            COLLECTOR.count_call(values=False)
            ctx.notes.append("values not checked: torch rejects this call's shapes or options")
            return _engine.build_report(_engine.evaluate(ctx, rules, None, None)), ""
        structure = _engine.build_report(ctx) if ctx.found else None
        sentinel = family_of(call.loss).sentinel
        signature = _Signature(sentinel(call) if sentinel is not None else None, structure)
        if len(self._signatures) < _MAX_SIGNATURES:
            with contextlib.suppress(TypeError), self._lock:  # unhashable: not remembered
                self._signatures[key] = signature
        report, why = self._sentinel(signature, None, (call.input, call.target), {}, opts, state, n)
        if why:
            return self._full(call, opts, state, n, f"the per-call check saw {why}"), ""
        return report, ""

    def _sentinel(
        self,
        signature: _Signature,
        binder: Any,
        args: tuple,
        kwargs: dict,
        opts: GuardOptions,
        state: _SiteState,
        n: int,
    ) -> tuple[Report | None, str]:
        """The per-call check: returns the structure findings to re-count, and why the call
        needs the full check now ("" when it does not)."""
        plan = signature.plan
        if plan is None:
            COLLECTOR.count_call(values=False)
            return signature.report, ""
        x, t = (args[0], args[1]) if binder is None else binder.pair(args, kwargs)
        COLLECTOR.count_call(values=True)
        if type(x) is not torch.Tensor or type(t) is not torch.Tensor:  # read subclasses plainly
            with torch._C.DisableTorchFunctionSubclass():
                return self._measure(signature, plan, x, t, opts, state, n)
        return self._measure(signature, plan, x, t, opts, state, n)

    def _measure(
        self,
        signature: _Signature,
        plan: SentinelPlan,
        x: torch.Tensor,
        t: torch.Tensor,
        opts: GuardOptions,
        state: _SiteState,
        n: int,
    ) -> tuple[Report | None, str]:
        if opts.sync == "deferred":
            reading = plan.measure(x, t)
            with self._lock:  # read by the call that finds `sync_every` of them waiting
                self._readings.append(_PendingReading(opts, plan, reading, state, n))
            with _WITH_PENDING_LOCK:
                _WITH_PENDING.add(self)
            return signature.report, ""
        found = plan.read_now(x, t)
        return signature.report, self._follow(state, found, plan)

    @staticmethod
    def _follow(state: _SiteState, found: tuple[str, ...], plan: SentinelPlan) -> str:
        """Which of a reading's reasons to follow with a full check: every exact fault; a hint
        only while armed (re-armed by a call without it)."""
        if not found and not state.disarmed:  # the healthy call: nothing to do
            return ""
        follow = [reason for reason in found if reason in plan.exact]
        for hint in plan.hints:
            if hint not in found:
                state.disarmed.discard(hint)
            elif hint not in state.disarmed:
                follow.append(hint)
                state.disarmed.add(hint)
        return ", ".join(plan.explain(reason) for reason in follow)

    def _full(
        self, call: FamilyCall, opts: GuardOptions, state: _SiteState, n: int, why: str | None
    ) -> Report | None:
        """Every rule, with one statistics pass: read now, or (deferred) when it has arrived.
        The call itself was counted by the caller.

        Tensor subclasses are read as the tensors they hold (their __torch_function__ is for
        the loss), and autocast is off for the value rules' own second looks."""
        COLLECTOR.count_full()
        device = call.input.device.type if call.tensors_ok else "cpu"
        autocast = torch.autocast(device, enabled=False) if call.autocast else nullcontext()
        with torch._C.DisableTorchFunctionSubclass(), autocast:
            return self._full_inner(call, opts, state, n, why)

    def _full_inner(
        self, call: FamilyCall, opts: GuardOptions, state: _SiteState, n: int, why: str | None
    ) -> Report | None:
        rules = _rules(opts)
        ctx = _engine.check_structure(call, rules)
        deferred = opts.sync == "deferred" and why is None and not ctx.has_error()
        if ctx.values_meaningless:
            return _engine.finish(ctx, rules, None, None)
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
        with contextlib.suppress(TypeError):  # a call object that is not a dataclass
            ctx.call = dataclasses.replace(call, input=call.input.detach())
        with self._lock:
            self._checks.append(_PendingCheck(opts, ctx, rules, plan, host, event, state, n))
        with _WITH_PENDING_LOCK:
            _WITH_PENDING.add(self)
        return None

    # ------------------------------------------------------------------ deferred work
    def _drain(self, opts: GuardOptions, *, block: bool, may_raise: bool) -> list[Report]:
        """Finish this guard's deferred work: the sentinel readings once `sync_every` have
        piled up (all of them when `block`), and the full checks whose statistics arrived."""
        with self._lock:
            readings: list[_PendingReading] = []
            if block or len(self._readings) >= opts.sync_every:
                readings, self._readings = self._readings, []
            checks = [p for p in self._checks if block or p.ready()]
            if checks:
                self._checks = [p for p in self._checks if p not in checks]  # by identity
        failing: list[Report] = []
        first_error: CrossEntropyInputError | None = None
        if readings:
            values = _read_all([r.reading for r in readings])
            for pending, reading in zip(readings, values, strict=True):
                found = pending.plan.reasons(reading)
                if any(hint in found for hint in pending.plan.hints):
                    pending.state.full_next = True  # a hint: the full check on the next call
                report = pending.plan.late_report(reading, pending.n)
                if report is not None:
                    try:
                        failing += self.handle(
                            report, None, pending.state, pending.n, pending.options,
                            may_raise=may_raise,
                        )  # fmt: skip
                    except CrossEntropyInputError as error:
                        first_error = first_error or error
        for p in checks:
            try:
                report = _engine.finish(p.ctx, p.rules, p.plan, p.read())
                failing += self.handle(
                    report, p.ctx.call, p.state, p.n, p.options, may_raise=may_raise
                )
            except CrossEntropyInputError as error:
                first_error = first_error or error
            except Exception as error:  # never break the training step
                COLLECTOR.note(
                    f"deferred check at {p.state.site.name} failed: {type(error).__name__}: {error}"
                )
        if first_error is not None:
            raise first_error
        return failing

    def flush(self, *, may_raise: bool) -> list[Report]:
        """Read all of this guard's deferred work now. Returns the failing reports; raises the
        first of them when `may_raise` and `on_error="raise"`."""
        try:
            return self._drain(self.options(), block=True, may_raise=may_raise)
        finally:
            with self._lock:
                empty = not self._readings and not self._checks
            if empty:
                with _WITH_PENDING_LOCK:
                    _WITH_PENDING.discard(self)

    # ------------------------------------------------------------------ findings
    def report_external(self, report: Report, frame: FrameType | None = None) -> None:
        """Hand a report made outside a loss call (a check of the batch a model receives) to
        this guard's policy: counted and de-duplicated at the user's line, then raised, warned
        or logged like any finding. `frame`: where to attribute it (default: the caller's user
        frame)."""
        state = self._site_state(user_frame(frame if frame is not None else sys._getframe(1)))
        failing = self.handle(report, None, state, state.calls + 1, self.options(), may_raise=True)
        for failed in failing:
            self.sink(failed)

    def handle(
        self,
        report: Report,
        call: FamilyCall | None,
        state: _SiteState,
        n: int,
        opts: GuardOptions,
        *,
        may_raise: bool,
    ) -> list[Report]:
        """Count the findings, write a reproducer, and raise / warn / log as configured.
        Returns the report when it has findings at `fail_on` or worse (for the sink)."""
        site = state.site
        if not report.diagnostics:
            readable = call is not None and call.tensors_ok and not call.on_meta
            if report.notes and not report.values_checked and readable:
                for note in report.notes:
                    COLLECTOR.note(f"{site.name}: {note}")
            return []
        report = report.model_copy(update={"source": site.name})
        failing = report.at_least(opts.fail_on)
        new = {d.code for d in report.diagnostics if COLLECTOR.record(site.key, d, n)}
        first_time = any(d.code in new for d in failing)
        if failing and first_time and call is not None and opts.dump_dir is not None:
            report = self._dump(report, call, site, n, opts, failing)
        if failing and opts.on_error == "raise" and may_raise:
            raise CrossEntropyInputError(report)
        for d in report.diagnostics:
            if d.code in new and d.severity.rank >= Severity.warning.rank:
                self._emit(d, report, site, n, opts)
        return [report] if failing else []

    def _dump(self, report, call, site, n, opts, failing) -> Report:
        stem = f"cediag-{os.path.basename(site.filename)}-{site.lineno}"
        stem += f"c{site.column}" if site.column else ""
        stem += f"-{failing[0].code}-call{n}"
        rank = _process_rank()
        stem += f"-rank{rank}" if rank is not None else ""  # ranks failing at one site
        if not COLLECTOR.take_dump_slot(MAX_DUMPS):
            note = (
                f"reproducer not saved: {MAX_DUMPS} were saved already in this process (the cap); "
                "every finding is still in cediag.summary()"
            )
            COLLECTOR.note(note)
            return report.model_copy(update={"notes": [*report.notes, note]})
        try:
            path = str(write_dump(opts.dump_dir, stem, call, report, site.name))
        except Exception as error:  # a failed dump must not hide the finding
            note = f"reproducer not saved: {type(error).__name__}: {error}"
            COLLECTOR.note(f"{site.name}: {note}")
            return report.model_copy(update={"notes": [*report.notes, note]})
        for d in failing:
            COLLECTOR.set_dump(site.key, d.code, path)
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
# Reproducers one process saves at most: a loop failing at many lines must not fill the disk.
MAX_DUMPS = 20


def _process_rank() -> int | None:
    """This process's rank in a distributed job, else None."""
    distributed = getattr(torch, "distributed", None)
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank()
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


# With a user-set budget, calls let through before the clock is read again.
_LET_THROUGH = 16


def structure_key(
    args: tuple, kwargs: dict, criterion: Any, loss: str, opts: GuardOptions
) -> tuple:
    """What the structure rules depend on, read straight off the arguments (no binding): each
    tensor's shape, dtype, device and layout, other arguments by type and value, the options a
    criterion module holds, the loss kind, autocast, and the rule selection. It may hold
    unhashable values (a list for an option): look it up with `_lookup`."""
    device = None
    parts: list[Any] = [loss, opts.select, opts.ignore]
    for value in args:
        if isinstance(value, torch.Tensor):
            device = device or value.device
            parts.append((value.shape, value.dtype, value.device, value.layout))
        else:
            parts.append(_object_key(value))
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            device = device or value.device
            parts.append((name, value.shape, value.dtype, value.device, value.layout))
        else:
            parts.append((name, _object_key(value)))
    if criterion is not None:
        parts.append(_criterion_options(criterion, loss))
    parts.append(device is not None and any_autocast() and autocast_enabled(device.type))
    return tuple(parts)


_PLAIN = (int, float, str, bool, type(None))


def _object_key(value: Any) -> Any:
    """A non-tensor argument in the structure key: a plain value as itself; an object (a loss
    instance whose method is patched, say) by identity plus the plain attributes it holds, so
    that changing `loss.ignore_index` between calls is seen."""
    if type(value) in _PLAIN:
        return (type(value), value)  # 3 and 3.0 are different ignore_index values to torch
    state = getattr(value, "__dict__", None)
    if state is None:
        return (type(value), value)
    return (
        type(value),
        id(value),
        tuple((k, v) for k, v in state.items() if type(v) in _PLAIN),
    )


def _lookup(signatures: dict[tuple, _Signature], key: tuple) -> _Signature | None:
    try:
        return signatures.get(key)
    except TypeError:  # an unhashable argument: such calls always get the structure rules
        return None


def _criterion_options(criterion: Any, loss: str) -> tuple:
    """The options the family's binding reads from a loss module (`Option.criterion`), read
    from its `__dict__`: nn.Module.__getattr__ costs half a microsecond per buffer or missing
    attribute."""
    state = getattr(criterion, "__dict__", None)
    if state is None:
        return (criterion,)
    parts = []
    for option in _criterion_attributes(loss):
        value = state.get(option, _ABSENT)
        if value is _ABSENT:
            value = state.get("_buffers", {}).get(option, _ABSENT)
        if value is _ABSENT:
            value = state.get("_parameters", {}).get(option)
        if isinstance(value, torch.Tensor):
            value = (value.shape, value.dtype, value.device, value.layout)
        parts.append(value)
    return tuple(parts)


_ABSENT = object()
_ATTRIBUTES: dict[str, tuple[str, ...]] = {}


def _criterion_attributes(loss: str) -> tuple[str, ...]:
    names = _ATTRIBUTES.get(loss)
    if names is None:
        options = family_of(loss).options
        names = tuple(o.criterion for o in options if o.criterion is not None)
        _ATTRIBUTES[loss] = names
    return names


def bind(loss: str, bound: tuple[Any, Any, dict[str, Any]] | None, criterion: Any) -> FamilyCall:
    """The family's call object for one bound (input, target, options)."""
    if bound is None:
        raise TypeError("the loss was called without an input and a target")
    return family_of(loss).bind(loss, bound[0], bound[1], bound[2], criterion)
