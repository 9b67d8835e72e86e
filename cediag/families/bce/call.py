"""Call binding for binary cross-entropy: one normalised record of a call, and what its metadata
implies.

Nothing here reads tensor data: only shapes, dtypes, devices and options, so building a `Call`
never launches a kernel or synchronises a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch

from ..._call import (
    FLOAT_DTYPES,
    argument_summary,
    autocast_on,
    option_text,
    torch_reduction,
    values_readable,
)
from ..._report import CallSummary

LossKind = Literal["bce_with_logits", "bce"]

# How the fixes name the input of each loss, and the function that takes it.
FUNCTION = {
    "bce_with_logits": "F.binary_cross_entropy_with_logits",
    "bce": "F.binary_cross_entropy",
}
INPUT_NAME = {"bce_with_logits": "logits", "bce": "probs"}


@dataclass
class Call:
    """The arguments of one F.binary_cross_entropy_with_logits / F.binary_cross_entropy call.

    Read-only once bound: what the metadata implies is computed once per call, so replacing a
    tensor must keep its shape, dtype and device.
    """

    input: Any
    target: Any
    weight: Any = None
    pos_weight: Any = None
    reduction: Any = "mean"
    loss: LossKind = "bce_with_logits"
    autocast: bool = False  # inside torch.autocast for the input's device

    # ------------------------------------------------------------ what kind of call is this
    @cached_property
    def tensors_ok(self) -> bool:
        """Both main arguments are dense, strided tensors (the only kind we analyse)."""
        return all(
            isinstance(t, torch.Tensor) and t.layout is torch.strided and not t.is_nested
            for t in (self.input, self.target)
        )

    @cached_property
    def on_meta(self) -> bool:
        return any(
            isinstance(t, torch.Tensor) and t.is_meta
            for t in (self.input, self.target, self.weight, self.pos_weight)
        )

    @cached_property
    def class_dim(self) -> int | None:
        """The dim that holds the classes of multi-label logits, (N, C) or (N, C, d1, ...):
        dim 1, as for every classification loss; None for 0-d and 1-d (binary) input."""
        return 1 if self.input.dim() >= 2 else None

    @cached_property
    def n_classes(self) -> int | None:
        return None if self.class_dim is None else int(self.input.shape[1])

    @property
    def function(self) -> str:
        """The torch function this call stands for, as a fix writes it."""
        return FUNCTION[self.loss]

    @property
    def input_name(self) -> str:
        return INPUT_NAME[self.loss]

    def loss_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype the loss computes a tensor of `dtype` in: autocast runs both losses in
        float32 (on CPU; on CUDA `binary_cross_entropy` refuses autocast altogether), casting
        float16 and bfloat16 up and leaving float64 (and integers) alone."""
        if self.autocast and dtype in (torch.float16, torch.bfloat16):
            return torch.float32
        return dtype

    # ------------------------------------------------------------ summary for the report
    def summary(self) -> CallSummary:
        arguments = {}
        if self.pos_weight is not None:
            arguments["pos_weight"] = argument_summary(self.pos_weight)
        return CallSummary(
            loss=self.loss,
            input=argument_summary(self.input),
            target=argument_summary(self.target),
            weight=None if self.weight is None else argument_summary(self.weight),
            ignore_index=None,
            reduction=self.reduction
            if type(self.reduction) is str
            else option_text(self.reduction),
            label_smoothing=None,
            arguments=arguments,
        )

    # ------------------------------------------------------------ what the engine asks a family call
    def rejection(self) -> str | None:
        from .contract import torch_rejection

        return torch_rejection(self)

    def statistics(self):
        """The statistics plan, or None when the tensors hold nothing readable (meta, odd
        dtypes)."""
        if not values_readable(self):
            return None
        from .statistics import StatisticsPlan

        return StatisticsPlan(self)

    def tensors(self) -> dict[str, Any]:
        found = {"input": self.input, "target": self.target}
        for role in ("weight", "pos_weight"):
            value = getattr(self, role)
            if isinstance(value, torch.Tensor):
                found[role] = value
        return found

    def written_options(self) -> dict[str, Any]:
        return {"reduction": self.reduction}

    @property
    def float_input(self) -> bool:
        return self.input.dtype in FLOAT_DTYPES

    @property
    def float_target(self) -> bool:
        return self.target.dtype in FLOAT_DTYPES


def bind_call(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    reduction: Any = "mean",
    criterion: Any = None,
    loss: LossKind = "bce_with_logits",
) -> Call:
    """Normalise a call. The options a criterion holds are read by the family's declaration
    (`LossFamily.options_with`) before this; `criterion` says only which loss it computes."""
    if criterion is not None:
        if isinstance(criterion, torch.nn.BCEWithLogitsLoss):
            loss = "bce_with_logits"
        elif isinstance(criterion, torch.nn.BCELoss):
            loss = "bce"
    autocast = isinstance(input, torch.Tensor) and autocast_on(input)
    # A reduction torch accepts is kept as the value torch reads ("elementwise_mean" -> "mean");
    # one it rejects is kept as given, for the rule that names it.
    reduction = torch_reduction(reduction) or reduction
    return Call(input, target, weight, pos_weight, reduction, loss, autocast)


def bind(loss: str, input: Any, target: Any, options: dict[str, Any], criterion: Any):
    """The family's binding, as the engine calls it (`LossFamily.bind`)."""
    from . import FAMILY

    options = FAMILY.options_with(criterion, options)
    return bind_call(input, target, criterion=criterion, loss=loss, **options)  # type: ignore[arg-type]
