"""Read the autograd graph behind the logits: free, exact evidence of a final activation.

Walking `input.grad_fn` past copies, casts and reshapes to a SoftmaxBackward0 node proves a
softmax was applied, and the node records its dim. No tensor data is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Activation = Literal["softmax", "log_softmax", "sigmoid", "relu"]

ACTIVATION_NODES: dict[str, Activation] = {
    "SoftmaxBackward0": "softmax",
    "LogSoftmaxBackward0": "log_softmax",
    "SigmoidBackward0": "sigmoid",
    "SigmoidBackward1": "sigmoid",
    "ReluBackward0": "relu",
}
# Nodes whose output has the same shape and element order as their input: a dim stays a dim.
_SAME_LAYOUT = {"CloneBackward0", "ToCopyBackward0", "AliasBackward0", "ContiguousBackward0"}
# Nodes that move or select elements: the activation is still there, its dim is no longer known.
_RESHAPING = {
    "ViewBackward0",
    "ReshapeAliasBackward0",
    "UnsafeViewBackward0",
    "PermuteBackward0",
    "TransposeBackward0",
    "TransposeBackward1",
    "TBackward0",
    "SqueezeBackward0",
    "SqueezeBackward1",
    "SqueezeBackward2",
    "SqueezeBackward3",
    "SqueezeBackward4",
    "UnsqueezeBackward0",
    "SliceBackward0",
    "SelectBackward0",
    "ExpandBackward0",
    "AsStridedBackward0",
    "UnbindBackward0",
    "SplitBackward0",
    "SplitWithSizesBackward0",
}
_MAX_STEPS = 32


@dataclass(frozen=True)
class ActivationNode:
    kind: Activation
    node: str
    dim: int | None  # in the checked tensor's dims; None when a reshape lies in between


def final_activation(x: torch.Tensor) -> ActivationNode | None:
    """The activation that produced `x`, looking through copies and reshapes, or None."""
    node = getattr(x, "grad_fn", None)
    exact = True
    for _ in range(_MAX_STEPS):
        if node is None:
            return None
        name = type(node).__name__
        if name in ACTIVATION_NODES:
            return ActivationNode(
                ACTIVATION_NODES[name], name, _saved_dim(node, x.dim()) if exact else None
            )
        if name in _RESHAPING:
            exact = False
        elif name not in _SAME_LAYOUT:
            return None
        inputs = [n for n, _ in node.next_functions if n is not None]
        node = inputs[0] if inputs else None
    return None


def _saved_dim(node, ndim: int) -> int | None:
    dim = getattr(node, "_saved_dim", None)
    if not isinstance(dim, int) or ndim == 0:
        return None
    return dim % ndim
