"""`watch()`: check every loss call made inside a block, through each family's entry points
(`_integrations.TARGETS`): `F.cross_entropy` / `F.nll_loss`, `F.binary_cross_entropy(_with_logits)`,
`F.linear_cross_entropy` (which cover their `nn` modules: their forward calls the functions
through the module), and the third-party implementations the families declare (timm,
transformers' label smoother, segmentation_models_pytorch, Liger, cut-cross-entropy).

How: each target is replaced while at least one `watch()` is open anywhere, and the
replacement checks only when the current context (thread, asyncio task) is inside an open
`watch()` (a ContextVar). Outside, the cost is a compile-mode test and one ContextVar read per
cross-entropy call, and nothing on any other torch call. A third-party target is patched only
once its module is imported: before the block, or inside it (an import hook on
`sys.meta_path`, there only while a block is open). A `TorchFunctionMode` would see calls made
through other references too, but costs on every torch call of the step while active;
benchmarks/watch_overhead.py measures both (docs/guard.md has the numbers).

Leaving the last block restores each patched attribute only if it still holds our function;
another tool's patch installed inside the block stays, and our function left in its chain
becomes a pass-through. Entering and leaving survive a KeyboardInterrupt at any point: each
step is recorded before it is taken, leaving is idempotent and done twice, and a block that
an interrupt kept from leaving is closed when its `watch` object is freed.

Limit: code that bound a function before the block (`from torch.nn.functional import
cross_entropy`) keeps the original; use `wrap`/`checked` there.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.abc
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._bind import binder_for
from ._guard import _IN_LOSS, Guard, check_then_call, is_compiling
from ._integrations import TARGETS, Target

_MARK = "__cediag_watch__"


class _Block:
    """One entered `watch()`: its guard, whether it is still open, and the context's block
    before it (restored on leaving)."""

    __slots__ = ("__weakref__", "detach", "guard", "open", "previous")

    def __init__(self, guard: Guard, previous: _Block | None):
        self.guard = guard
        self.previous = previous
        self.open = False
        self.detach: Any = None  # removes the model's batch hook (watch(model=...))


_ACTIVE: contextvars.ContextVar[_Block | None] = contextvars.ContextVar(
    "cediag_watch", default=None
)
# Reentrant: a block freed by the garbage collector inside a locked section closes itself.
_LOCK = threading.RLock()
_OPEN: set[_Block] = set()


class _Patch:
    """One replaced attribute: where, what was there, our function, and whether it still checks."""

    __slots__ = ("live", "name", "original", "owner", "wrapper")

    def __init__(self, owner: Any, name: str, original: Callable):
        self.owner = owner
        self.name = name
        self.original = original
        self.wrapper: Callable | None = None
        self.live = True


_PATCHES: list[_Patch] = []
_BINDERS: dict[tuple[Target, Callable], Any] = {}


def _ours(function: Any) -> bool:
    return getattr(function, _MARK, False) is True


def _unwrap(function: Any) -> Any:
    """The first function under our own wrappers."""
    while _ours(function):
        function = function.__cediag_original__
    return function


def _wrapper(target: Target, original: Callable, patch: _Patch) -> Callable:
    key = (target, original)
    binder = _BINDERS.get(key)
    if binder is None:
        binder = _BINDERS[key] = binder_for(target, original)
    loss = target.loss

    @functools.wraps(original)
    def watched(*args: Any, **kwargs: Any) -> Any:
        if is_compiling():  # first: nothing below may become part of a compiled graph
            return original(*args, **kwargs)
        block = _ACTIVE.get()
        if block is None or _IN_LOSS.get() or not block.open or not patch.live:
            return original(*args, **kwargs)
        return check_then_call(
            block.guard, original, binder, args, kwargs, criterion=None, loss=loss
        )

    setattr(watched, _MARK, True)
    watched.__cediag_original__ = original  # type: ignore[attr-defined]
    return watched


def _location(target: Target) -> tuple[Any, str] | None:
    """(object, attribute name) that holds the target, once its module is imported."""
    module = sys.modules.get(target.module)
    if module is None:
        return None
    *path, name = target.attribute.split(".")
    owner: Any = module
    for part in path:
        owner = vars(owner).get(part)
        if owner is None:
            return None
    return owner, name


def _patch(target: Target) -> None:
    """Replace the target with a checking wrapper, unless our live wrapper is already there.
    The patch is recorded before it is applied, so an interrupt in between leaves nothing
    that leaving the block would miss."""
    location = _location(target)
    if location is None:
        return
    owner, name = location
    current = vars(owner).get(name)
    if not callable(current):
        return
    if _ours(current) and any(p.live and p.wrapper is current for p in _PATCHES):
        # Our live function, put here by someone (Liger assigns its function to
        # F.cross_entropy): nothing to wrap, but this place is restored on leaving too.
        if not any(p.live and p.owner is owner and p.name == name for p in _PATCHES):
            adopted = _Patch(owner, name, _unwrap(current))
            adopted.wrapper = current
            _PATCHES.append(adopted)
        return
    patch = _Patch(owner, name, _unwrap(current))
    _PATCHES.append(patch)
    patch.wrapper = _wrapper(target, patch.original, patch)
    setattr(owner, name, patch.wrapper)


def _unpatch(patch: _Patch) -> None:
    """Restore the attribute if it still holds one of our functions; a function of someone
    else's stays, and ours, if still in its chain, stops checking."""
    current = vars(patch.owner).get(patch.name)
    if _ours(current):
        setattr(patch.owner, patch.name, _unwrap(current))
    patch.live = False


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then patches the module's targets."""

    def __init__(self, loader: Any):
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        create = getattr(self.loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: Any) -> None:
        spec = getattr(module, "__spec__", None)  # nothing of ours stays in the module
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        self.loader.exec_module(module)
        _imported(module.__name__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class _ImportHook(importlib.abc.MetaPathFinder):
    """While a block is open: a target's module imported inside it is patched once it ran."""

    modules = frozenset(t.module for t in TARGETS)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.modules:
            return None
        try:
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    if hasattr(spec.loader, "exec_module"):
                        spec.loader = _PatchingLoader(spec.loader)
                    return spec
        except Exception:  # never break an import: the module then runs unpatched
            return None
        return None


_HOOK = _ImportHook()


def _imported(module: str) -> None:
    with _LOCK:
        if _OPEN:
            for target in TARGETS:
                if target.module == module:
                    _patch(target)


def _reconcile() -> None:
    """Make the patches match the open blocks: every imported target patched while any block is
    open, nothing of ours installed otherwise. Idempotent; the caller holds `_LOCK`."""
    if _OPEN:
        if _HOOK not in sys.meta_path:
            sys.meta_path.insert(0, _HOOK)
        for target in TARGETS:
            _patch(target)
        return
    while _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
    while _PATCHES:
        patch = _PATCHES[-1]
        _unpatch(patch)
        if _PATCHES and _PATCHES[-1] is patch:  # (a block freed meanwhile may have popped it)
            _PATCHES.pop()


def _close(block: _Block) -> None:
    """Leave a block; safe to call again, from any thread or task, in any order."""
    block.open = False
    if _ACTIVE.get() is block:  # another task's context keeps the closed block: inert
        _ACTIVE.set(block.previous)
    detach, block.detach = block.detach, None
    if detach is not None:
        detach()
    with _LOCK:
        _OPEN.discard(block)
        _reconcile()


def _open(cm: watch) -> Guard:
    block = _Block(Guard(cm._options, sink=cm._sink), _ACTIVE.get())
    cm._block = block
    cm._finalizer = weakref.finalize(cm, _close, block)  # from here on, leaving is certain
    try:
        with _LOCK:
            _OPEN.add(block)
            _reconcile()
        if cm._model is not None:  # the batches the model receives: their (B, T) context
            from ..sequence._hooks import attach

            block.detach = attach(cm._model, block.guard, cm._tokenizer)
        block.open = True
        _ACTIVE.set(block)
        return block.guard
    except BaseException:
        _close(block)
        raise


class watch(contextlib.ContextDecorator):  # noqa: N801 - used like a function
    """Check every loss call made in this block (this thread or task only): every entry point
    of every family (cross-entropy, NLL, binary cross-entropy, linear cross-entropy, and the
    libraries docs/integrations.md lists).

    Takes the same options as `wrap`. Blocks nest: the innermost block's options apply. Read
    the findings with `cediag.summary()`. `with cediag.watch() as guard:` gives the block's
    `Guard`; `@cediag.watch(...)` guards each call of a function.

    `model=` (and `tokenizer=`): also check every batch the model's forward receives with
    `labels`, with its (B, T) structure, attention mask and pad/EOS ids (the CE5xx rules of
    `cediag.check_batch`); the hook is removed when the block ends.
    """

    def __init__(
        self, *, model: Any = None, tokenizer: Any = None, _sink: Any = None, **options: Any
    ):
        self._options = options
        self._sink = _sink
        self._model, self._tokenizer = model, tokenizer
        self._block: _Block | None = None
        self._finalizer: Any = None

    def _recreate_cm(self) -> watch:  # a decorated function's calls each get their own block
        return watch(
            model=self._model, tokenizer=self._tokenizer, _sink=self._sink, **self._options
        )

    def __enter__(self) -> Guard:
        if self._block is not None and self._block.open:
            raise RuntimeError("this watch() block is already open; call cediag.watch() again")
        return _open(self)

    def __exit__(self, *exc_info: Any) -> None:
        try:
            _close(self._block)  # type: ignore[arg-type]
        finally:  # again: completes a leave that an interrupt cut short
            _close(self._block)  # type: ignore[arg-type]
            self._finalizer.detach()
        # Nothing is dropped: deferred readings are read as the block ends, and raised here
        # (on_error="raise") unless the block is already leaving with an exception.
        self._block.guard.flush(may_raise=exc_info[0] is None)  # type: ignore[union-attr]


def watching() -> bool:
    """Whether the current context is inside an open `watch()` block."""
    block = _ACTIVE.get()
    return block is not None and block.open
