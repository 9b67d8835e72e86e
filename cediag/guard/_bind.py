"""Find (input, target) and the loss options among a loss function's arguments, by position or
by name, without `inspect.Signature.bind` on the hot path (it costs microseconds per call).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

OPTION_NAMES = ("weight", "ignore_index", "reduction", "label_smoothing")
_LEGACY = ("size_average", "reduce")
_MISSING = object()


class ArgumentBinder:
    """Knows where a callable takes its input, target and options.

    Input and target are the parameters named `input_arg` / `target_arg`, else the first two
    positional parameters. Options are taken from parameters named like F.cross_entropy's
    (`weight`, `ignore_index`, `reduction`, `label_smoothing`), passed or defaulted.
    """

    def __init__(
        self, function: Callable, input_arg: str | None = None, target_arg: str | None = None
    ):
        self.names: list[str] = []
        self.defaults: dict[str, Any] = {}
        try:
            params = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):  # builtins without a signature: (input, target) first
            params = []
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for p in params:
            if p.kind in positional:
                self.names.append(p.name)
            if p.default is not inspect.Parameter.empty and p.name in OPTION_NAMES + _LEGACY:
                self.defaults[p.name] = p.default
        named = [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
        for arg in (input_arg, target_arg):
            if arg is not None and arg not in named:
                raise TypeError(
                    f"{getattr(function, '__name__', function)!r} has no argument {arg!r}"
                )
        self.input_name = input_arg or (self.names[0] if self.names else None)
        self.target_name = target_arg or (self.names[1] if len(self.names) > 1 else None)
        self.options = [n for n in OPTION_NAMES + _LEGACY if n in named]
        # Input and target are the first two positional parameters: read them by position.
        self.positional_pair = self.names[:2] == [self.input_name, self.target_name] or (
            not self.names and input_arg is None and target_arg is None
        )

    def _get(self, name: str | None, fallback: int, args: tuple, kwargs: dict) -> Any:
        if name is None:
            return args[fallback] if len(args) > fallback else _MISSING
        if name in kwargs:
            return kwargs[name]
        try:
            index = self.names.index(name)
        except ValueError:
            return self.defaults.get(name, _MISSING)
        if index < len(args):
            return args[index]
        return self.defaults.get(name, _MISSING)

    def pair(self, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        """(input, target) alone: what the per-call check reads, on every call."""
        if self.positional_pair and len(args) >= 2:
            return args[0], args[1]
        bound = self.bind(args, kwargs)
        if bound is None:
            raise TypeError("the loss was called without an input and a target")
        return bound[0], bound[1]

    def bind(self, args: tuple, kwargs: dict) -> tuple[Any, Any, dict[str, Any]] | None:
        """(input, target, options) of one call, or None when input or target is missing."""
        x = self._get(self.input_name, 0, args, kwargs)
        t = self._get(self.target_name, 1, args, kwargs)
        if x is _MISSING or t is _MISSING:
            return None
        options: dict[str, Any] = {}
        for name in self.options:
            value = self._get(name, -1, args, kwargs)
            if value is not _MISSING:
                options[name] = value
        size_average, reduce = options.pop("size_average", None), options.pop("reduce", None)
        if size_average is not None or reduce is not None:
            from torch.nn import _reduction

            options["reduction"] = _reduction.legacy_get_string(
                size_average, reduce, emit_warning=False
            )
        return x, t, options
