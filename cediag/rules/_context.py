"""What a rule sees: the bound call, the statistics (value rules), the graph, and earlier findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from .._call import Call, dtype_name
from .._contract import torch_rejection
from .._graph import ActivationNode
from .._report import Diagnostic, TensorEvidence
from .._statistics import Statistics


@dataclass
class Context:
    call: Call
    activation: ActivationNode | None = None
    stats: Statistics | None = None
    found: list[Diagnostic] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # second looks shared between rules

    @cached_property
    def rejection(self) -> str | None:
        """What torch would say about the call's metadata, or None if it accepts it."""
        return torch_rejection(self.call)

    def has_error(self) -> bool:
        return any(d.severity.value == "error" for d in self.found)

    def fired(self, slug: str) -> bool:
        return any(d.rule == slug for d in self.found)


def tensor_evidence(role: str, t: torch.Tensor) -> TensorEvidence:
    return TensorEvidence(
        role=role, shape=list(t.shape), dtype=dtype_name(t.dtype), device=str(t.device)
    )


def call_evidence(call: Call) -> list[TensorEvidence]:
    return [tensor_evidence("input", call.input), tensor_evidence("target", call.target)]


def fmt(value: float) -> str:
    """A number for a message: integers without a fraction, others to 4 significant digits."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def fmt_range(low: float, high: float) -> str:
    """`0.98..1.02`, or a single number when both ends agree to the digits shown."""
    a, b = fmt(low), fmt(high)
    return a if a == b else f"{a}..{b}"
