"""`watch()`: check every `F.cross_entropy` / `F.nll_loss` call made inside a block (which covers
`nn.CrossEntropyLoss` / `nn.NLLLoss`: their forward calls the functions through the module).

How: the two functions in `torch.nn.functional` are replaced while at least one `watch()` is
open anywhere (a reference count), and the replacement checks only when the current context
(thread, asyncio task) is inside a `watch()` (a ContextVar). Outside, the cost is one ContextVar
read per cross-entropy call and nothing on any other torch call. A `TorchFunctionMode` would see
calls made through other references too, but costs on every torch call of the step while
active; benchmarks/watch_overhead.py measures both (docs/guard.md has the numbers).

Limit: code that bound the function before the block (`from torch.nn.functional import
cross_entropy`) keeps the original; use `wrap`/`checked` there.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Iterator
from typing import Any

import torch.nn.functional as F

from ._bind import ArgumentBinder
from ._guard import _IN_LOSS, Guard, check_then_call, is_compiling

_ACTIVE: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("cediag_watch", default=None)
_LOCK = threading.Lock()
_ORIGINALS: dict[str, Any] = {}
_DEPTH = 0


def _patched(name: str, original: Any) -> Any:
    binder = ArgumentBinder(original)
    loss = "nll" if name == "nll_loss" else "cross_entropy"

    @functools.wraps(original)
    def watched(*args: Any, **kwargs: Any) -> Any:
        if is_compiling():
            return original(*args, **kwargs)
        guard = _ACTIVE.get()
        if guard is None:
            return original(*args, **kwargs)
        if guard.countdown:  # over budget: straight to the loss (see Guard.within_budget)
            guard.let_through()
            return original(*args, **kwargs)
        if _IN_LOSS.get():
            return original(*args, **kwargs)
        return check_then_call(guard, original, binder, args, kwargs, criterion=None, loss=loss)

    watched.__cediag_original__ = original  # type: ignore[attr-defined]
    return watched


def _install() -> None:
    global _DEPTH
    with _LOCK:
        if _DEPTH == 0:
            for name in ("cross_entropy", "nll_loss"):
                original = getattr(F, name)
                _ORIGINALS[name] = original
                setattr(F, name, _patched(name, original))
        _DEPTH += 1


def _uninstall() -> None:
    global _DEPTH
    with _LOCK:
        _DEPTH -= 1
        if _DEPTH == 0:
            for name, original in _ORIGINALS.items():
                setattr(F, name, original)
            _ORIGINALS.clear()


@contextlib.contextmanager
def watch(*, _sink: Any = None, **options: Any) -> Iterator[Guard]:
    """Check every cross-entropy / NLL call made in this block (this thread or task only).

    Takes the same options as `wrap`. Blocks nest: the innermost block's options apply. Read
    the findings with `cediag.summary()`.
    """
    guard = Guard(options, sink=_sink)
    _install()
    token = _ACTIVE.set(guard)
    try:
        yield guard
    finally:
        _ACTIVE.reset(token)
        _uninstall()


def watching() -> bool:
    """Whether the current context is inside a `watch()` block."""
    return _ACTIVE.get() is not None
