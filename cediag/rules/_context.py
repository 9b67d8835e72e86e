"""What a rule sees: the bound call (a family's call object), the statistics (value rules), the
graph, and earlier findings. Nothing here names a family."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from .._call import dtype_name
from .._graph import _RESHAPING, _SAME_LAYOUT, ActivationNode
from .._report import Diagnostic, TensorEvidence

# Autograd nodes that compute raw scores: an affine map, a matmul, a convolution, an embedding
# lookup, a normalisation layer. When the graph behind the input ends in one of these (past
# copies, casts and reshapes), nothing was applied after it: no softmax, sigmoid or ReLU, so
# the value heuristics of the CE30x rules stand down whatever the numbers look like.
SCORE_PRODUCERS = frozenset(
    {
        "AddmmBackward0",
        "MmBackward0",
        "BmmBackward0",
        "BaddbmmBackward0",
        "AddmvBackward0",
        "MvBackward0",
        "LinearBackward0",
        "ConvolutionBackward0",
        "ConvolutionBackwardOverrideable",
        "MkldnnConvolutionBackward0",
        "CudnnConvolutionBackward0",
        "EmbeddingBackward0",
        "EmbeddingBagBackward0",
        "NativeLayerNormBackward0",
        "NativeBatchNormBackward0",
        "TrilinearBackward0",
    }
)
_MAX_GRAPH_STEPS = 32


@dataclass
class Context:
    call: Any  # the family's call object (cediag.families._declaration.FamilyCall)
    activation: ActivationNode | None = None
    stats: Any = None  # what the family's statistics plan read
    found: list[Diagnostic] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # second looks shared between rules
    # Set by a structure rule that finds the values cannot be read as this loss's at all (hidden
    # states passed as logits): the value rules do not run, and the report says why.
    values_meaningless: str | None = None

    @cached_property
    def rejection(self) -> str | None:
        """What torch would say about the call's metadata, or None if it accepts it."""
        return self.call.rejection()

    @cached_property
    def graph_origin(self) -> str | None:
        """The autograd node that made the input, past copies, casts and reshapes, or None
        when the input has no graph (a leaf, or computed under no_grad / inference_mode)."""
        node = getattr(self.call.input, "grad_fn", None)
        for _ in range(_MAX_GRAPH_STEPS):
            if node is None:
                return None
            name = type(node).__name__
            if name not in _SAME_LAYOUT and name not in _RESHAPING:
                return name
            inputs = [n for n, _ in node.next_functions if n is not None]
            node = inputs[0] if inputs else None
        return None

    @property
    def graph_proves_raw_scores(self) -> bool:
        """Whether the graph shows the input straight out of a layer that makes raw scores
        (nn.Linear, a matmul, a convolution, ...): proof that no activation followed."""
        return self.graph_origin in SCORE_PRODUCERS

    def has_error(self) -> bool:
        return any(d.severity.value == "error" for d in self.found)

    def fired(self, slug: str) -> bool:
        return any(d.rule == slug for d in self.found)


def tensor_evidence(role: str, t: torch.Tensor) -> TensorEvidence:
    return TensorEvidence(
        role=role, shape=list(t.shape), dtype=dtype_name(t.dtype), device=str(t.device)
    )


def call_evidence(call: Any) -> list[TensorEvidence]:
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
