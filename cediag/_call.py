"""Call binding: one normalised record of a cross-entropy call, and what its metadata implies.

Nothing here reads tensor data: only shapes, dtypes, devices and options, so building a
`Call` never launches a kernel or synchronises a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch

from ._report import ArgumentSummary, CallSummary

LossKind = Literal["cross_entropy", "nll"]
REDUCTIONS = ("mean", "sum", "none")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (
    torch.int64,
    torch.uint8,
)  # what torch's nll_loss accepts (uint8 only for 1-D/2-D input)

_SHORT_DTYPE = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "bool",
}


def dtype_name(dtype: torch.dtype) -> str:
    return _SHORT_DTYPE.get(dtype, str(dtype).removeprefix("torch."))


def shape_str(shape) -> str:
    """(4, 3) for a shape, with the trailing comma of a 1-tuple: (4,)."""
    dims = tuple(int(d) for d in shape)
    return f"({dims[0]},)" if len(dims) == 1 else str(dims)


@dataclass
class Call:
    """The arguments of one F.cross_entropy / F.nll_loss call, as the checker sees them.

    Read-only once bound: what the metadata implies is computed once per call (rules ask for
    it dozens of times), so replacing a tensor must keep its shape, dtype and device.
    """

    input: Any
    target: Any
    weight: Any = None
    ignore_index: Any = -100
    reduction: Any = "mean"
    label_smoothing: Any = 0.0
    loss: LossKind = "cross_entropy"
    autocast: bool = False  # inside torch.autocast, cross_entropy runs in float32

    # ------------------------------------------------------------ what kind of call is this
    @cached_property
    def tensors_ok(self) -> bool:
        """Both main arguments are dense, strided tensors (the only kind we analyse)."""
        return all(
            isinstance(t, torch.Tensor) and t.layout is torch.strided and not t.is_nested
            for t in (self.input, self.target)
        )

    @cached_property
    def probability_targets(self) -> bool:
        """torch's own switch: a target of exactly the input's shape holds probabilities."""
        return self.loss == "cross_entropy" and tuple(self.input.shape) == tuple(self.target.shape)

    @cached_property
    def class_dim(self) -> int:
        """The dim torch normalises over: 0 for unbatched (C,) input, else 1."""
        return 0 if self.input.dim() == 1 else 1

    @cached_property
    def n_classes(self) -> int | None:
        return int(self.input.shape[self.class_dim]) if self.input.dim() >= 1 else None

    @cached_property
    def presumed_class_dim(self) -> int:
        """The dim that holds the classes in the caller's mind, for value analysis.

        Usually torch's class dim. When the logits are (B, T, C) / (N, H, W, C) with targets of
        their leading shape (a `class-dim-last` mistake), the classes are in the last dim.
        """
        if looks_class_dim_last(self):
            return self.input.dim() - 1
        return self.class_dim

    @cached_property
    def presumed_n_classes(self) -> int | None:
        if self.input.dim() == 0:
            return None
        return int(self.input.shape[self.presumed_class_dim])

    @cached_property
    def is_float_input(self) -> bool:
        return self.input.dtype in FLOAT_DTYPES

    @cached_property
    def on_meta(self) -> bool:
        return any(
            isinstance(t, torch.Tensor) and t.is_meta
            for t in (self.input, self.target, self.weight)
        )

    # ------------------------------------------------------------ summary for the report
    def summary(self) -> CallSummary:
        return CallSummary(
            loss=self.loss,
            input=_argument_summary(self.input),
            target=_argument_summary(self.target),
            weight=None if self.weight is None else _argument_summary(self.weight),
            ignore_index=self.ignore_index
            if isinstance(self.ignore_index, int)
            else repr(self.ignore_index),
            reduction=str(self.reduction),
            label_smoothing=_float_or_repr(self.label_smoothing),
        )


def looks_class_dim_last(call: Call) -> bool:
    """(B, T, C) / (N, H, W, C) logits whose targets have the leading (B, T) / (N, H, W) shape."""
    x, t = call.input, call.target
    if call.probability_targets or x.dim() < 3 or t.dim() != x.dim() - 1:
        return False
    # When the last dim equals dim 1 the layout is ambiguous and torch accepts it: stay silent.
    return tuple(t.shape) == tuple(x.shape[:-1]) and x.shape[1] != x.shape[-1]


def _argument_summary(value: Any) -> ArgumentSummary:
    if isinstance(value, torch.Tensor):
        return ArgumentSummary(
            shape=list(value.shape), dtype=dtype_name(value.dtype), device=str(value.device)
        )
    return ArgumentSummary(type=type(value).__name__)


def _float_or_repr(value: Any) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return repr(value)


def bind_call(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: Any = -100,
    reduction: Any = "mean",
    label_smoothing: Any = 0.0,
    criterion: Any = None,
    loss: LossKind = "cross_entropy",
) -> Call:
    """Normalise a call. A `criterion` (nn.CrossEntropyLoss / nn.NLLLoss) supplies the options
    that are left at their defaults here, so `check(x, t, criterion=ce)` sees what `ce(x, t)` sees.
    """
    if criterion is not None:
        if weight is None:
            weight = getattr(criterion, "weight", None)
        if ignore_index == -100:
            ignore_index = getattr(criterion, "ignore_index", -100)
        if reduction == "mean":
            reduction = getattr(criterion, "reduction", "mean")
        if label_smoothing == 0.0:
            label_smoothing = getattr(criterion, "label_smoothing", 0.0)
        if isinstance(criterion, torch.nn.NLLLoss):
            loss = "nll"
    autocast = isinstance(input, torch.Tensor) and autocast_enabled(input.device.type)
    return Call(input, target, weight, ignore_index, reduction, label_smoothing, loss, autocast)


def autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # older torch, or a device type autocast does not know
        return False
