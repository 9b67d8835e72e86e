"""Call binding for cross-entropy and NLL: one normalised record of a call, and what its
metadata implies.

Nothing here reads tensor data: only shapes, dtypes, devices and options, so building a
`Call` never launches a kernel or synchronises a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch

from ..._call import (
    FLOAT_DTYPES,
    INT64_MAX,
    INT64_MIN,
    BeyondInt64,
    argument_summary,
    autocast_on,
    option_text,
    torch_float,
    torch_int,
    torch_reduction,
    values_readable,
)
from ..._report import CallSummary

LossKind = Literal["cross_entropy", "nll"]


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

    def loss_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype the loss computes a tensor of `dtype` in: autocast runs cross_entropy in
        float32, casting float16 and bfloat16 up and leaving float64 (and integers) alone."""
        if self.autocast and dtype in (torch.float16, torch.bfloat16):
            return torch.float32
        return dtype

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
            input=argument_summary(self.input),
            target=argument_summary(self.target),
            weight=None if self.weight is None else argument_summary(self.weight),
            ignore_index=self.ignore_index
            if type(self.ignore_index) is int
            else option_text(self.ignore_index),
            reduction=self.reduction
            if type(self.reduction) is str
            else option_text(self.reduction),
            label_smoothing=_float_or_repr(self.label_smoothing),
        )

    # ------------------------------------------------------------ what the engine asks a family call
    def rejection(self) -> str | None:
        from .contract import torch_rejection

        return torch_rejection(self)

    def cross_entropy_rejection(self) -> str | None:
        """What torch's cross-entropy kernels alone would say (a family that reuses these
        rules answers for the cross-entropy step of its loss)."""
        return self.rejection()

    # ------------------------------------------------------------ how a fix writes the call
    def call_text(self, target: str = "target", extra: str = "") -> str:
        """The loss call a fix shows, with `target` (an expression) and `extra` options."""
        return f"F.cross_entropy(logits, {target}{extra})"

    def criterion_text(self, options: str) -> str:
        return f"nn.CrossEntropyLoss({options})"

    def grow_text(self, classes: int) -> str:
        """How a fix says: give the model `classes` outputs."""
        return f"make the model output {classes} classes (e.g. nn.Linear(in_features, {classes}))"

    def statistics(self):
        """The statistics plan, or None when the tensors hold nothing readable (meta, odd
        dtypes)."""
        if not values_readable(self):
            return None
        from .statistics import StatisticsPlan

        return StatisticsPlan(self)

    def tensors(self) -> dict[str, Any]:
        found = {"input": self.input, "target": self.target}
        if isinstance(self.weight, torch.Tensor):
            found["weight"] = self.weight
        return found

    def written_options(self) -> dict[str, Any]:
        return {
            "ignore_index": self.ignore_index,
            "reduction": self.reduction,
            "label_smoothing": self.label_smoothing,
        }


def looks_class_dim_last(call: Call) -> bool:
    """(B, T, C) / (N, H, W, C) logits whose targets have the leading (B, T) / (N, H, W) shape."""
    x, t = call.input, call.target
    if call.probability_targets or x.dim() < 3 or t.dim() != x.dim() - 1:
        return False
    # When the last dim equals dim 1 the layout is ambiguous and torch accepts it: stay silent.
    return tuple(t.shape) == tuple(x.shape[:-1]) and x.shape[1] != x.shape[-1]


def _float_or_repr(value: Any) -> float | str:
    parsed = torch_float(value)
    return parsed if parsed is not None else option_text(value)


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
    """Normalise a call. The options a criterion holds are read by the family's declaration
    (`LossFamily.options_with`) before this; `criterion` says only which loss it computes."""
    if isinstance(criterion, torch.nn.NLLLoss):
        loss = "nll"
    autocast = isinstance(input, torch.Tensor) and autocast_on(input)
    # Options torch accepts are kept as the value torch reads (np.int64(3) -> 3, "elementwise_mean"
    # -> "mean"); options it rejects are kept as given, for the rule that names them.
    if type(ignore_index) is not int or not INT64_MIN <= ignore_index <= INT64_MAX:
        parsed = torch_int(ignore_index)
        if parsed is not None:
            ignore_index = parsed
        elif type(ignore_index) is int:
            ignore_index = BeyondInt64(ignore_index)
    if type(label_smoothing) is not float:
        parsed = torch_float(label_smoothing)
        label_smoothing = label_smoothing if parsed is None else parsed
    reduction = torch_reduction(reduction) or reduction
    return Call(input, target, weight, ignore_index, reduction, label_smoothing, loss, autocast)


def bind(loss: str, input: Any, target: Any, options: dict[str, Any], criterion: Any):
    """The family's binding, as the engine calls it (`LossFamily.bind`)."""
    from . import FAMILY

    options = FAMILY.options_with(criterion, options)
    return bind_call(input, target, criterion=criterion, loss=loss, **options)  # type: ignore[arg-type]
