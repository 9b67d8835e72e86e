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

from ._bind import ArgumentBinder
from ._guard import _IN_LOSS, Guard, check_then_call, is_compiling

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "__cediag_guard__"


def _loss_kind(function: Any, loss: str | None) -> str:
    if loss is not None:
        if loss not in ("cross_entropy", "nll"):
            raise ValueError(f"Expected `loss` to be 'cross_entropy' or 'nll', but got {loss!r}")
        return loss
    if isinstance(function, torch.nn.NLLLoss):
        return "nll"
    name = getattr(function, "__name__", type(function).__name__).lower()
    return "nll" if "nll" in name else "cross_entropy"


def _guarded(
    function: Callable, binder: ArgumentBinder, guard: Guard, criterion: Any, loss: str
) -> Callable:
    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if is_compiling():  # first: nothing below may become part of a compiled graph
            return function(*args, **kwargs)
        if guard.countdown:  # over budget: straight to the loss (see Guard.within_budget)
            guard.let_through()
            return function(*args, **kwargs)
        if _IN_LOSS.get():
            return function(*args, **kwargs)
        return check_then_call(
            guard, function, binder, args, kwargs, criterion=criterion, loss=loss
        )

    setattr(guarded, _MARK, guard)
    return guarded


def wrap(
    criterion: F,
    /,
    *,
    loss: str | None = None,
    input_arg: str | None = None,
    target_arg: str | None = None,
    **options: Any,
) -> F:
    """Guard a cross-entropy-like loss: every call is checked (on a schedule) before it runs.

    `criterion`: an `nn.CrossEntropyLoss` / `nn.NLLLoss` (options are read from it), any loss
    module or function taking `(input, target, ...)`. `loss="nll"` checks it as `F.nll_loss`
    (inferred for `nn.NLLLoss` and functions named `*nll*`). `input_arg` / `target_arg` name the
    arguments when they are not the first two. `options`: `on_error`, `fail_on`, `first`,
    `every`, `budget`, `sync`, `dump_dir`, `select`, `ignore`, `enabled` (see
    `cediag.guard.GuardOptions`).
    Modules are guarded in place and returned; functions are returned wrapped.
    """
    guard = Guard(options)
    kind = _loss_kind(criterion, loss)
    if isinstance(criterion, torch.nn.Module):
        unwrap(criterion)
        forward = criterion.forward
        binder = ArgumentBinder(forward, input_arg, target_arg)
        criterion.forward = _guarded(forward, binder, guard, criterion, kind)
        return criterion
    if not callable(criterion):
        raise TypeError(f"cediag.wrap expects a loss callable, got {type(criterion).__name__}")
    binder = ArgumentBinder(criterion, input_arg, target_arg)
    return _guarded(criterion, binder, guard, None, kind)  # type: ignore[return-value]


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
    **options: Any,
):
    """Decorator form of `wrap` for a loss function with an `(input, target, ...)` signature.

    `@cediag.checked` or `@cediag.checked(on_error="warn", input_arg="logits")`.
    """

    def decorate(f: Callable) -> Callable:
        return wrap(f, loss=loss, input_arg=input_arg, target_arg=target_arg, **options)

    return decorate if function is None else decorate(function)
