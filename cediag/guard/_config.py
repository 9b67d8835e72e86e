"""Guard options: one set of names for `wrap`, `checked` and `watch`, a context-local default
set by `configure(...)`, and the `CEDIAG_DISABLE` switch.

No module-level mutable singleton: the default lives in a ContextVar, so `configure()` inside a
thread or an asyncio task changes that context only.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._report import Severity

OnError = Literal["raise", "warn", "log"]
Sync = Literal["eager", "deferred"]
ENV_DISABLE = "CEDIAG_DISABLE"
DEFAULT_FIRST, DEFAULT_EVERY = 10, 100
DEFAULT_SYNC_EVERY = 16


@dataclass(frozen=True)
class GuardOptions:
    """What a guarded loss does with its inputs.

    on_error: "raise" a CrossEntropyInputError before the loss runs, "warn" with a CediagWarning,
        or "log" through the `cediag` logger. Applies to findings of `fail_on` severity or worse;
        milder warnings are warned (raise/warn) or logged (log) once, and infos go to the summary.
    fail_on: the least severity `on_error` acts on ("error" by default; "warning" makes
        warnings raise too).
    first, every: the schedule of the full check (every rule). The first `first` calls at a call
        site get it, then every `every`-th call. Every other call gets the per-call check (the
        sentinel: out-of-range or all-ignored targets, NaN/Inf logits, probability targets that
        do not sum to 1, logits an activation gave), and anything it sees gets the full check
        on that same call.
    budget: None (the default) checks every call. A fraction (0.002 = 0.2%) caps the guard's
        share of the loop's wall time, measured from its first call: over it, calls go straight
        to the loss, unchecked, and the summary's first line says how many. The first call
        from a line not seen before is checked regardless. "auto" is accepted as None.
    sync: "eager" reads each call's check with one small transfer (a fault raises before the
        loss runs); "deferred" leaves the readings on the device and reads them every
        `sync_every` calls, at `cediag.summary()`, when a `watch()` block ends and at exit
        (no host sync on the training path; a fault is reported at most `sync_every` calls
        late).
    sync_every: with sync="deferred", how many calls' readings to read at once.
    dump_dir: where to save a reproducer (.safetensors + .json) the first time a check fails at a
        call site.
    select, ignore: rule codes, prefixes or slugs, as for `cediag.check`.
    enabled: False turns the guard off (so does CEDIAG_DISABLE=1).
    """

    on_error: OnError = "raise"
    fail_on: Severity = Severity.error
    first: int = DEFAULT_FIRST
    every: int = DEFAULT_EVERY
    budget: float | Literal["auto"] | None = None
    sync: Sync = "eager"
    sync_every: int = DEFAULT_SYNC_EVERY
    dump_dir: Path | None = None
    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    enabled: bool = True
    budget_fraction: float | None = field(init=False, repr=False, compare=False, default=None)
    """`budget` with "auto" resolved (read on every guarded call, so computed once here)."""

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "warn", "log"):
            raise ValueError(
                f"Expected `on_error` to be 'raise', 'warn' or 'log', but got {self.on_error!r}"
            )
        if self.sync not in ("eager", "deferred"):
            raise ValueError(f"Expected `sync` to be 'eager' or 'deferred', but got {self.sync!r}")
        object.__setattr__(self, "fail_on", Severity(self.fail_on))
        if not isinstance(self.first, int) or self.first < 0:
            raise ValueError(f"Expected `first` to be an int >= 0, but got {self.first!r}")
        if not isinstance(self.every, int) or self.every < 0:
            raise ValueError(
                f"Expected `every` to be an int >= 0 (0: never after `first`), but got {self.every!r}"
            )
        if self.budget != "auto" and self.budget is not None:
            if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)):
                raise ValueError(
                    f"Expected `budget` to be a fraction in (0, 1], 'auto' or None, but got "
                    f"{self.budget!r}"
                )
            if not 0 < self.budget <= 1:
                raise ValueError(
                    f"Expected `budget` to be a fraction in (0, 1] (0.002 = 0.2%), but got "
                    f"{self.budget!r}"
                )
        if isinstance(self.sync_every, bool) or not isinstance(self.sync_every, int):
            raise ValueError(
                f"Expected `sync_every` to be an int >= 1, but got {self.sync_every!r}"
            )
        if self.sync_every < 1:
            raise ValueError(
                f"Expected `sync_every` to be an int >= 1, but got {self.sync_every!r}"
            )
        fraction = None if self.budget in (None, "auto") else float(self.budget)  # type: ignore[arg-type]
        object.__setattr__(self, "budget_fraction", fraction)
        if self.dump_dir is not None:
            object.__setattr__(self, "dump_dir", Path(self.dump_dir))
        for name in ("select", "ignore"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            value = None if value is None else tuple(value)
            if value:
                _validate_patterns(value)
            object.__setattr__(self, name, value)

    def full_check(self, n: int) -> bool:
        """Whether call number `n` (1-based) at a call site gets the full (values) check."""
        if n <= self.first:
            return True
        return self.every > 0 and (n - self.first) % self.every == 0


def _validate_patterns(patterns: tuple[str, ...]) -> None:
    """A typo in `select`/`ignore` would switch rules off silently: raise ValueError instead."""
    from ..rules import validate_patterns

    validate_patterns(list(patterns))


FIELDS = frozenset(f.name for f in dataclasses.fields(GuardOptions) if f.init)

_BASE = GuardOptions()
_DEFAULT: contextvars.ContextVar[GuardOptions | None] = contextvars.ContextVar(
    "cediag_guard_options", default=None
)


def validate_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown option names at wrap time, and check the values by building the options."""
    unknown = sorted(set(overrides) - FIELDS)
    if unknown:
        raise TypeError(f"unknown cediag option(s): {', '.join(unknown)}; known: {sorted(FIELDS)}")
    dataclasses.replace(current_options(), **overrides)
    return dict(overrides)


def resolve(overrides: dict[str, Any]) -> GuardOptions:
    """The context's default with an entry point's own options on top."""
    base = _DEFAULT.get() or _BASE
    return dataclasses.replace(base, **overrides) if overrides else base


def disabled_by_env() -> bool:
    """CEDIAG_DISABLE, parsed strictly: unset, "" or "0" -> on; "1" -> off; anything else errors."""
    value = _environ_get(ENV_DISABLE)
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise ValueError(f"Expected {ENV_DISABLE} to be '0' or '1', but got {value!r}")


def _environ_get(name: str) -> str:
    """os.environ.get(name, ""), read on every guarded call: os.environ's Mapping.get costs
    half a microsecond (it encodes the key each time), its underlying dict a twentieth of that."""
    data, encode = getattr(os.environ, "_data", None), getattr(os.environ, "encodekey", None)
    if not isinstance(data, dict) or encode is None:
        return os.environ.get(name, "")
    raw = data.get(_ENCODED.get(name) or _ENCODED.setdefault(name, encode(name)))
    return "" if raw is None else os.environ.decodevalue(raw)


_ENCODED: dict[str, Any] = {}


class configure:
    """Set the default guard options for the current context.

    `cediag.configure(on_error="warn")` changes the default from here on (in this thread or
    task); `with cediag.configure(on_error="warn"): ...` restores the previous default on exit.
    """

    def __init__(self, **options: Any):
        validate_overrides(options)
        self._token = _DEFAULT.set(dataclasses.replace(current_options(), **options))

    def __enter__(self) -> GuardOptions:
        return current_options()

    def __exit__(self, *exc: object) -> None:
        _DEFAULT.reset(self._token)


def current_options() -> GuardOptions:
    return _DEFAULT.get() or _BASE
