"""What a loss family declares, and the protocols its objects follow.

A family is one folder under `cediag/families/` whose `__init__.py` builds one `LossFamily`.
The engine, the guard, dumps, loading, the CLI and the report read the declaration; none of
them names a family. Adding a family is that folder plus one line in `families/__init__.py`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import torch

    from .._report import CallSummary, Report

OptionKind = Literal["tensor", "int", "float", "str"]
_ABSENT = object()
# What an entry point's mapping makes of one call: (input, target, options), as check() takes them.
Mapped = tuple[Any, Any, dict[str, Any]]


@dataclass(frozen=True)
class EntryPoint:
    """One implementation `watch()` patches: the module that defines it, the attribute (a
    function, or "Class.method"), and a mapping from the call's arguments (by the names its own
    signature uses) to the family's `(input, target, options)`, or None when that call cannot be
    expressed faithfully (it then runs unchecked). `mapping=None`: the function takes
    `(input, target, **options)` by the family's option names."""

    module: str
    attribute: str
    mapping: Callable[[dict[str, Any]], Mapped | None] | None
    loss: str = "cross_entropy"
    library: str = "torch"  # the distribution, for the docs


@dataclass(frozen=True)
class Option:
    """One keyword of the loss besides input and target (`weight`, `ignore_index`, ...).

    `kind` says how the CLI parses it and how a dump writes it (a tensor is saved next to
    input and target; a scalar goes to the metadata as given). `criterion` is the attribute a
    criterion module (`nn.CrossEntropyLoss`) holds it under: when a check gets `criterion=`,
    an option the call does not give is read from there (`LossFamily.options_with`).
    """

    name: str
    default: Any
    kind: OptionKind
    help: str
    criterion: str | None = None


class FamilyCall(Protocol):
    """One bound call, as a family's rules see it. Building it reads metadata only."""

    loss: str
    input: Any  # the tensor the graph rules and the device come from
    target: Any
    autocast: bool  # inside torch.autocast for the input's device

    @property
    def tensors_ok(self) -> bool: ...  # every main argument a dense strided tensor

    @property
    def on_meta(self) -> bool: ...

    def summary(self) -> CallSummary: ...

    def rejection(self) -> str | None:
        """torch's complaint about the call's metadata, or None when torch would run it."""
        ...

    def statistics(self) -> StatisticsPlan | None:
        """The plan of the one statistics pass, or None when the values cannot be read."""
        ...

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor argument by role (input, target, weight, ...): what a dump saves."""
        ...

    def written_options(self) -> dict[str, Any]:
        """The scalar options as the loss received them, for a dump (invalid ones as given)."""
        ...


class StatisticsPlan(Protocol):
    def compute(self) -> torch.Tensor:
        """Launch the pass; one packed float64 tensor on the device, without a host sync."""
        ...

    def read(self, values: list[float]) -> Any:
        """The statistics the value rules read (`ctx.stats`), from the packed values."""
        ...


class SentinelPlan(Protocol):
    """The per-call check of one call signature: a read of the input and a few reductions of
    the target, on every guarded call between the full checks."""

    on_cpu: bool
    exact: tuple[str, ...]  # reasons that are faults: the full check follows every time
    hints: tuple[str, ...]  # reasons that may be legal: followed once until a call without

    def read_now(self, input: torch.Tensor, target: torch.Tensor) -> tuple[str, ...]:
        """Measure and read at once; the reasons to run the full check, () when healthy."""
        ...

    def measure(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """A reading left on the device (sync="deferred"): a 1-D float64 tensor."""
        ...

    def reasons(self, values: list[float]) -> tuple[str, ...]: ...

    def late_report(self, values: list[float], call_number: int) -> Report | None:
        """A report of the exact faults in a reading read on a later call."""
        ...

    def explain(self, reason: str) -> str:
        """A few words for a reason, as the report's note says why the full check ran."""
        ...


class Deferred:
    """A function or value named by "module:attribute" in a family's package, imported the
    first time it is used: declarations stay cheap to import (no torch), and a family's
    `__init__.py` holds nothing but its declaration. Calling it calls the function (`call=True`)
    or returns the value."""

    __slots__ = ("call", "package", "reference", "target")

    def __init__(self, package: str, reference: str, *, call: bool):
        self.package, self.reference, self.call = package, reference, call
        self.target: Any = None

    def resolve(self) -> Any:
        if self.target is None:
            module, _, attribute = self.reference.partition(":")
            found: Any = importlib.import_module(module, self.package)
            for part in attribute.split("."):
                found = getattr(found, part)
            self.target = found
        return self.target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        found = self.resolve()
        return found(*args, **kwargs) if self.call else found

    def __repr__(self) -> str:
        return f"Deferred({self.package}{self.reference})"


@dataclass(frozen=True)
class LossFamily:
    """Everything the rest of cediag knows about one family of losses.

    `bind`, `sentinel` and `entry_points` may be given as "module:attribute" strings relative to
    `package` (the family's own package, `__name__` in its `__init__.py`): they are imported on
    first use.
    """

    name: str  # "cross_entropy"
    title: str  # "Cross-entropy and NLL"
    prefix: str  # rule codes: CE101, BCE201, ...
    categories: Mapping[str, str]  # the hundreds digit of a code -> its title
    losses: tuple[str, ...]  # what `loss=` names: ("cross_entropy", "nll")
    options: tuple[Option, ...]
    # bind(loss, input, target, options: dict, criterion) -> call object
    bind: Callable[..., FamilyCall] | str
    rules: str  # the module whose import registers the family's rules (".rules")
    # criterion classes, by dotted path ("torch.nn.BCELoss") -> loss; a subclass counts, the
    # first match wins. Paths, not classes: declarations are read before torch is imported.
    criteria: tuple[tuple[str, str], ...] = ()
    # what watch() patches: a function returning EntryPoints, or "module:CONSTANT"
    entry_points: Callable[[], tuple[EntryPoint, ...]] | str = tuple
    # sentinel(call) -> SentinelPlan or None (None: the guard runs the structure rules only
    # between full checks)
    sentinel: Callable[[Any], SentinelPlan | None] | str | None = None
    # Rules of other families this one runs too, by code prefix ("CE2": cross-entropy's target
    # rules, which linear cross-entropy runs on the logits it never builds). Its call object
    # must then answer what those rules ask of their own family's call.
    reuses: tuple[str, ...] = ()
    docs: str = ""  # a paragraph for docs/rules.md and `cediag rules`
    package: str = ""  # where "module:attribute" references are looked up

    def __post_init__(self) -> None:
        for name, calls in (("bind", True), ("sentinel", True), ("entry_points", False)):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Deferred(self.package, value, call=calls))

    def options_with(self, criterion: Any, options: dict[str, Any]) -> dict[str, Any]:
        """`options`, plus each option the call did not give read from the criterion module
        (`Option.criterion`): how `check(x, t, criterion=ce)` sees what `ce(x, t)` sees. An
        option given explicitly wins, even when it equals the default."""
        if criterion is None:
            return options
        got = dict(options)
        for option in self.options:
            if option.name in got or option.criterion is None:
                continue
            value = getattr(criterion, option.criterion, _ABSENT)
            if value is not _ABSENT:
                got[option.name] = value
        return got

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)
