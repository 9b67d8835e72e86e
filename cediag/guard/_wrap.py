"""`wrap(criterion)` and `@checked`: guard one loss callable.

The loss is always called with the very objects it was given, after the check: the result and
the gradients are the loss's own. An `nn.Module` is guarded in place (its `forward` is replaced
on the instance), so it stays the same object: same class, attributes, parameters, buffers and
`state_dict()` keys. `cediag.unwrap(module)` restores it. Anything else callable gets a
`functools.wraps` wrapper.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from ..families import all_entry_points, family_of, loss_of_criterion
from ..families._declaration import EntryPoint
from ._bind import ArgumentBinder, binder_for
from ._guard import _IN_LOSS, Guard, check_then_call, is_compiling

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "__cediag_guard__"


def _loss_kind(function: Any, loss: str | None) -> str:
    """The loss to check `function` as: `loss` when given (validated), else what a family
    declares for its class or its entry point, else "nll" for a function named *nll*, else
    cross-entropy."""
    if loss is not None:
        family_of(loss)  # ValueError naming the known losses
        return loss
    from_class = loss_of_criterion(function)
    if from_class is not None:
        return from_class
    entry = _entry_point(function)
    if entry is not None:
        return entry.loss
    name = getattr(function, "__name__", type(function).__name__).lower()
    return "nll" if "nll" in name else "cross_entropy"


def _entry_point(function: Any) -> EntryPoint | None:
    """The family entry point `function` is (a function some family declares, by module and
    name), or whose class's method it is (Liger's fused loss module): its mapping knows the
    library's argument order."""
    if isinstance(function, torch.nn.Module):
        module, name = type(function).__module__, f"{type(function).__qualname__}.forward"
    else:
        module = getattr(function, "__module__", None)
        name = getattr(function, "__qualname__", None)
    for entry in all_entry_points():
        if entry.module == module and entry.attribute == name:
            return entry
    return None


def _binder(
    function: Callable,
    loss: str,
    input_arg: str | None,
    target_arg: str | None,
    option_args: dict[str, str] | None = None,
):
    """How to find (input, target, options) in a call of `function`: the arguments named
    `input_arg` / `target_arg`, else the first two, and the family's options by name (or by
    the parameter `option_args` names for one)."""
    options = family_of(loss).option_names
    return ArgumentBinder(function, input_arg, target_arg, options, option_args)


def _guarded(
    function: Callable, binder: ArgumentBinder, guard: Guard, criterion: Any, loss: str
) -> Callable:
    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if is_compiling():  # first: nothing below may become part of a compiled graph
            return function(*args, **kwargs)
        if _IN_LOSS.get():
            return function(*args, **kwargs)
        return check_then_call(
            guard, function, binder, args, kwargs, criterion=criterion, loss=loss
        )

    setattr(guarded, _MARK, guard)
    return guarded


class _GuardedForward:
    """The `forward` a guarded module carries in its instance `__dict__`.

    It calls the class's own `forward` on the module it belongs to, so that `copy.deepcopy`
    (which copies the module's `__dict__`, this object with it, and re-points `module` at the
    copy) gives a copy that computes with its own weights, and `pickle` / `torch.save` store the
    options, not a closure: the guard is rebuilt when the module is loaded.
    """

    def __init__(
        self, module: torch.nn.Module, loss: str, input_arg, target_arg, options, option_args=None
    ):
        self.module = module
        self.loss = loss
        self.input_arg, self.target_arg = input_arg, target_arg
        self.option_args = dict(option_args or {})
        self.options = dict(options)
        self._start()

    def _start(self) -> None:
        forward = type(self.module).forward.__get__(self.module)
        self._forward = forward
        named = self.input_arg is self.target_arg is None and not self.option_args
        entry = _entry_point(self.module) if named else None
        # A library's loss module (Liger's fused one): its entry point's mapping reads the
        # arguments in the library's order, and the options from the module.
        self._binder = (
            _SelfBinder(binder_for(entry, type(self.module).forward), self.module)
            if entry is not None and entry.mapping is not None
            else _binder(forward, self.loss, self.input_arg, self.target_arg, self.option_args)
        )
        self.guard = Guard(self.options)
        self.__wrapped__ = forward
        setattr(self, _MARK, self.guard)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward = self._forward
        if is_compiling():  # first: nothing below may become part of a compiled graph
            return forward(*args, **kwargs)
        if _IN_LOSS.get():
            return forward(*args, **kwargs)
        return check_then_call(
            self.guard, forward, self._binder, args, kwargs, criterion=self.module, loss=self.loss
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "loss": self.loss,
            "input_arg": self.input_arg,
            "target_arg": self.target_arg,
            "option_args": self.option_args,
            "options": self.options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("option_args", {})  # saved before option_args existed
        self.__dict__.update(state)
        self._start()


def wrap(
    criterion: F,
    /,
    *,
    loss: str | None = None,
    input_arg: str | None = None,
    target_arg: str | None = None,
    option_args: dict[str, str] | None = None,
    **options: Any,
) -> F:
    """Guard a loss: every call is checked before it runs.

    `criterion`: a torch loss module (`nn.CrossEntropyLoss`, `nn.BCEWithLogitsLoss`, ...; options
    are read from it), a library's loss a family declares (Liger's fused linear cross-entropy),
    or any loss module or function taking `(input, target, ...)`. `loss=` names the loss to check
    it as ("nll", "bce_with_logits", "linear_cross_entropy", ...; inferred from the class, the
    entry point, or a function named `*nll*`, else "cross_entropy"). `input_arg` / `target_arg`
    name the arguments when they are not the first two; `option_args` the parameter that holds an
    option under another name (`{"linear_weight": "weight"}` for a fused loss of your own). `options`: `on_error`, `fail_on`, `first`,
    `every`, `budget`, `sync`, `sync_every`, `dump_dir`, `select`, `ignore`, `enabled` (see
    `cediag.guard.GuardOptions`).
    Modules are guarded in place and returned (they deep-copy, pickle and `torch.save` like the
    module they are); functions are returned wrapped.
    """
    kind = _loss_kind(criterion, loss)
    if isinstance(criterion, torch.nn.Module):
        unwrap(criterion)
        if "forward" in criterion.__dict__:  # a forward of its own: guard that callable
            guard = Guard(options)
            forward = criterion.forward
            binder = _binder(forward, kind, input_arg, target_arg, option_args)
            criterion.forward = _guarded(forward, binder, guard, criterion, kind)
            return criterion
        criterion.forward = _GuardedForward(
            criterion, kind, input_arg, target_arg, options, option_args
        )
        return criterion
    if not callable(criterion):
        raise TypeError(f"cediag.wrap expects a loss callable, got {type(criterion).__name__}")
    guard = Guard(options)
    named = input_arg is target_arg is None and not option_args
    entry = _entry_point(criterion) if named else None
    if entry is not None and entry.mapping is not None:
        binder = binder_for(entry, criterion)
    else:
        binder = _binder(criterion, kind, input_arg, target_arg, option_args)
    return _guarded(criterion, binder, guard, None, kind)  # type: ignore[return-value]


class _SelfBinder:
    """An entry point's binder for a method, bound to one module: the mapping reads `self`."""

    __slots__ = ("binder", "module")

    def __init__(self, binder: Any, module: Any):
        self.binder, self.module = binder, module

    def bind(self, args: tuple, kwargs: dict) -> Any:
        return self.binder.bind((self.module, *args), kwargs)

    def pair(self, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        bound = self.bind(args, kwargs)
        if bound is None:
            raise TypeError("the loss was called without an input and a target")
        return bound[0], bound[1]


def unwrap(criterion: Any) -> Any:
    """Undo `wrap` on a module (in place) or return the function a wrapper guards."""
    if isinstance(criterion, torch.nn.Module):
        forward = criterion.__dict__.get("forward")
        if forward is not None and hasattr(forward, _MARK):
            del criterion.__dict__["forward"]
        return criterion
    while hasattr(criterion, _MARK) and hasattr(criterion, "__wrapped__"):
        criterion = criterion.__wrapped__
    return criterion


def checked(
    function: Callable | None = None,
    /,
    *,
    loss: str | None = None,
    input_arg: str | None = None,
    target_arg: str | None = None,
    option_args: dict[str, str] | None = None,
    **options: Any,
):
    """Decorator form of `wrap` for a loss function with an `(input, target, ...)` signature.

    `@cediag.checked` or `@cediag.checked(on_error="warn", input_arg="logits")`.
    """

    def decorate(f: Callable) -> Callable:
        return wrap(
            f,
            loss=loss,
            input_arg=input_arg,
            target_arg=target_arg,
            option_args=option_args,
            **options,
        )

    return decorate if function is None else decorate(function)
