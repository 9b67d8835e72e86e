"""Find (input, target) and the loss options among a loss function's arguments, by position or
by name, without `inspect.Signature.bind` on the hot path (it costs microseconds per call).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

Mapped = tuple[Any, Any, dict[str, Any]]

_LEGACY = ("size_average", "reduce")
_MISSING = object()


class ArgumentBinder:
    """Knows where a callable takes its input, target and options.

    Input and target are the parameters named `input_arg` / `target_arg`, else the first two
    positional parameters. Options are taken from parameters named like the family's (`options`;
    by default F.cross_entropy's `weight`, `ignore_index`, `reduction`, `label_smoothing`),
    passed or defaulted. `option_args` maps an option to the parameter that holds it in this
    function (`{"linear_weight": "weight"}`). (A library's loss a family declares is bound by
    its entry point's mapping: `MappedBinder`.)
    """

    def __init__(
        self,
        function: Callable,
        input_arg: str | None = None,
        target_arg: str | None = None,
        options: tuple[str, ...] | None = None,
        option_args: dict[str, str] | None = None,
    ):
        if options is None:  # F.cross_entropy's, as its family declares them
            from ..families import family_of

            options = family_of("cross_entropy").option_names
        option_args = dict(option_args or {})
        unknown = sorted(set(option_args) - set(options))
        if unknown:
            raise TypeError(
                f"option_args names {', '.join(map(repr, unknown))}, not an option of this loss "
                f"(its options: {', '.join(options)})"
            )
        # The parameter that holds each option; one holding an option under another's name
        # (a `weight` parameter that is the classifier) no longer stands for that one.
        held = {name: option_args.get(name, name) for name in options}
        taken = set(option_args.values())
        held = {n: p for n, p in held.items() if n in option_args or p not in taken}
        self._option_of = {parameter: name for name, parameter in held.items()}
        wanted = tuple(held.values())
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
            if p.default is not inspect.Parameter.empty and p.name in wanted + _LEGACY:
                self.defaults[p.name] = p.default
        named = [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
        for arg in (input_arg, target_arg, *option_args.values()):
            if arg is not None and arg not in named:
                raise TypeError(
                    f"{getattr(function, '__name__', function)!r} has no argument {arg!r}"
                )
        self.input_name = input_arg or (self.names[0] if self.names else None)
        self.target_name = target_arg or (self.names[1] if len(self.names) > 1 else None)
        self.options = [n for n in wanted + _LEGACY if n in named]
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
                options[self._option_of.get(name, name)] = value
        size_average, reduce = options.pop("size_average", None), options.pop("reduce", None)
        if size_average is not None or reduce is not None:
            from torch.nn import _reduction

            options["reduction"] = _reduction.legacy_get_string(
                size_average, reduce, emit_warning=False
            )
        return x, t, options


class MappedBinder:
    """Binds a call to the parameter names of the library's function, then applies the entry's
    mapping. Never raises: a call the mapping cannot read is not checked."""

    __slots__ = ("defaults", "mapping", "names")

    def __init__(self, function: Callable, mapping: Callable[[dict[str, Any]], Mapped | None]):
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        parameters = inspect.signature(function).parameters.values()
        self.names = [p.name for p in parameters if p.kind in positional]
        self.defaults = {
            p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty
        }
        self.mapping = mapping

    def bind(self, args: tuple, kwargs: dict) -> Mapped | None:
        try:
            arguments = dict(self.defaults)
            arguments.update(zip(self.names, args, strict=False))
            arguments.update(kwargs)
            return self.mapping(arguments)
        except Exception:  # an argument missing or of an odd kind: the library will say
            return None

    def pair(self, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        """(input, target) after the mapping (which may take views: a shift, a movedim)."""
        bound = self.bind(args, kwargs)
        if bound is None:
            raise TypeError("the call could not be mapped onto (input, target)")
        return bound[0], bound[1]


def binder_for(entry: Any, function: Callable) -> ArgumentBinder | MappedBinder:
    """How a guard finds (input, target, options) in calls of a family's entry point: its
    mapping, or the family's option names when it takes them as they are."""
    if entry.mapping is None:
        from ..families import family_of

        return ArgumentBinder(function, options=family_of(entry.loss).option_names)
    return MappedBinder(function, entry.mapping)
