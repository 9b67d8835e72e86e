"""Call binding for linear cross-entropy: `F.linear_cross_entropy(input, linear_weight, target,
linear_bias=, weight=, reduction=, ignore_index=, label_smoothing=)`.

The bound call is a cross-entropy `Call` whose `input` stands in for the logits torch would
build: `torch.zeros((), dtype).expand(logits_shape)`, no memory at all. Cross-entropy's target
and option rules read shapes, dtypes and the target against it unchanged, with C the vocabulary
(`linear_weight.shape[0]`). The real arguments are the extra fields `hidden`, `linear_weight` and
`linear_bias`; the statistics pass reads their values (`statistics.py`).

Nothing here reads tensor data.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from ..._call import (
    argument_summary,
    autocast_on,
    dtype_name,
    option_text,
    readable_dtype,
)
from ..._report import CallSummary
from ..cross_entropy.call import Call, bind_call

LOSS = "linear_cross_entropy"


def _dense(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.layout is torch.strided and not value.is_nested


@dataclass
class LinearCall(Call):
    """One linear cross-entropy call. `input` is the logits stand-in (shape and dtype only);
    `hidden` is what the caller passed as `input`. `ignore_index_given` is the option as given
    (None: torch's default, -100 for class indices); `ignore_index` is what cross_entropy
    receives."""

    hidden: Any = None
    linear_weight: Any = None
    linear_bias: Any = None
    ignore_index_given: Any = None
    softcap: Any = None  # Liger's and cut-cross-entropy's logit cap; torch has none

    # ------------------------------------------------------------ what kind of call is this
    @cached_property
    def tensors_ok(self) -> bool:
        """hidden, linear_weight and target dense strided tensors, linear_bias too if given."""
        main = (self.hidden, self.linear_weight, self.target)
        bias_ok = self.linear_bias is None or _dense(self.linear_bias)
        return all(_dense(t) for t in main) and bias_ok and isinstance(self.input, torch.Tensor)

    @cached_property
    def probability_targets(self) -> bool:
        """torch's switch: a target of exactly the logits' shape holds probabilities."""
        return tuple(self.input.shape) == tuple(self.target.shape)

    @cached_property
    def on_meta(self) -> bool:
        found = (self.hidden, self.linear_weight, self.linear_bias, self.target, self.weight)
        return any(isinstance(t, torch.Tensor) and t.is_meta for t in found)

    @cached_property
    def vocabulary(self) -> int:
        """The number of classes the target is checked against: the stand-in's class dim."""
        return int(self.n_classes or 0)

    @cached_property
    def transposed_weight(self) -> bool:
        """A 2-D linear_weight given as (in_features, V), the other orientation matching."""
        h, w = self.hidden, self.linear_weight
        return (
            _dense(h)
            and _dense(w)
            and h.dim() >= 1
            and w.dim() == 2
            and w.shape[-1] != h.shape[-1]
            and w.shape[0] == h.shape[-1]
        )

    @cached_property
    def cross_entropy_view(self) -> Call:
        """The reference path's cross_entropy call on the stand-in logits."""
        return Call(
            self.input,
            self.target,
            self.weight,
            self.ignore_index,
            self.reduction,
            self.label_smoothing,
            "cross_entropy",
            self.autocast,
        )

    # ------------------------------------------------------------ summary for the report
    def summary(self) -> CallSummary:
        base = self.cross_entropy_view.summary()
        arguments = {"linear_weight": argument_summary(self.linear_weight)}
        if self.linear_bias is not None:
            arguments["linear_bias"] = argument_summary(self.linear_bias)
        ignore = None if self.ignore_index_given is None else base.ignore_index
        return base.model_copy(
            update={
                "loss": self.loss,
                "input": argument_summary(self.hidden),
                "ignore_index": ignore,
                "arguments": arguments,
                "options": {} if self.softcap is None else {"softcap": _scalar(self.softcap)},
            }
        )

    # ------------------------------------------------------------ what the engine asks
    def linear_rejection(self) -> str | None:
        from .contract import linear_rejection

        return linear_rejection(self)

    def rejection(self) -> str | None:
        """The linear checks torch makes first, then cross_entropy's on the stand-in."""
        from ..cross_entropy.contract import torch_rejection

        reason = self.linear_rejection()
        return reason if reason is not None else torch_rejection(self.cross_entropy_view)

    def cross_entropy_rejection(self) -> str | None:
        """The cross-entropy step alone, on the stand-in logits (the reused CE rules ask)."""
        return self.cross_entropy_view.rejection()

    def call_text(self, target: str = "target", extra: str = "") -> str:
        return f"F.linear_cross_entropy(hidden, linear_weight, {target}{extra})"

    def criterion_text(self, options: str) -> str:
        return f"nn.LinearCrossEntropyLoss(in_features, num_classes, {options})"

    def grow_text(self, classes: int) -> str:
        return (
            f"grow the classifier to {classes} rows (a Hugging Face model: "
            f"model.resize_token_embeddings({classes}))"
        )

    def statistics(self):
        if not self.tensors_ok or self.on_meta:
            return None
        tensors = [self.hidden, self.linear_weight, self.target, self.input]
        if self.linear_bias is not None:
            tensors.append(self.linear_bias)
        if not all(readable_dtype(t.dtype) for t in tensors):
            return None
        from .statistics import LinearStatisticsPlan

        return LinearStatisticsPlan(self)

    def tensors(self) -> dict[str, Any]:
        found = {
            "input": self.hidden,
            "linear_weight": self.linear_weight,
            "linear_bias": self.linear_bias,
            "target": self.target,
            "weight": self.weight,
        }
        return {role: t for role, t in found.items() if isinstance(t, torch.Tensor)}

    def written_options(self) -> dict[str, Any]:
        written = {
            "ignore_index": None if self.ignore_index_given is None else self.ignore_index,
            "reduction": self.reduction,
            "label_smoothing": self.label_smoothing,
        }
        if self.softcap is not None:
            written["softcap"] = self.softcap
        return written


def _scalar(value: Any) -> int | float | str | bool | None:
    if value is None or type(value) in (int, float, str, bool):
        return value
    return option_text(value)


# ---------------------------------------------------------------------- the stand-in


def logits_shape(hidden: torch.Tensor, linear_weight: torch.Tensor) -> tuple[int, ...]:
    """(*hidden.shape[:-1], V, *out_features), the shape torch reshapes the logits to. A
    linear_weight that looks transposed, (in_features, V), gives V from its last dim, so the
    target is checked against the vocabulary the caller meant. Defined for any dims (torch
    rejects some of them first: the rules say why)."""
    batch = tuple(hidden.shape[:-1]) if hidden.dim() >= 1 else ()
    w = linear_weight
    if w.dim() == 0:
        return (*batch, 1)
    if w.dim() == 1:
        return (*batch, int(w.shape[0]))
    transposed = (
        w.dim() == 2 and hidden.dim() >= 1 and w.shape[-1] != hidden.shape[-1]
        and w.shape[0] == hidden.shape[-1]
    )  # fmt: skip
    classes = int(w.shape[-1] if transposed else w.shape[0])
    return (*batch, classes, *(int(d) for d in w.shape[1:-1]))


def logits_dtype(device_type: str, dtype: torch.dtype, autocast: bool) -> torch.dtype:
    """The dtype linear() computes a tensor of `dtype` in: as given (torch wants hidden,
    linear_weight and linear_bias to agree), or under autocast its lower precision for the
    float dtypes autocast casts (not float64)."""
    if autocast and dtype.is_floating_point and dtype != torch.float64:
        try:
            return torch.get_autocast_dtype(device_type)
        except (AttributeError, RuntimeError):  # older torch, or a device autocast lacks
            return dtype
    return dtype


def stand_in(hidden: torch.Tensor, linear_weight: torch.Tensor, autocast: bool) -> torch.Tensor:
    """Zero bytes that have the logits' shape, dtype and device."""
    dtype = logits_dtype(hidden.device.type, hidden.dtype, autocast)
    zero = torch.zeros((), dtype=dtype, device=hidden.device)
    return zero.expand(logits_shape(hidden, linear_weight))


# ---------------------------------------------------------------------- binding


def _from_criterion(criterion: Any, options: dict[str, Any]) -> dict[str, Any]:
    """nn.LinearCrossEntropyLoss: its linear layer's weight and bias, reshaped as its forward
    does, and the options the call did not give (`LossFamily.options_with`)."""
    got = dict(options)
    linear = getattr(criterion, "linear", None)
    classes = getattr(criterion, "num_classes", None)
    out = tuple(getattr(criterion, "out_features", ()) or ())
    if linear is not None and classes is not None:
        with torch.no_grad():
            if got.get("linear_weight") is None:
                got["linear_weight"] = linear.weight.reshape((classes, *out, linear.in_features))
            if got.get("linear_bias") is None and linear.bias is not None:
                got["linear_bias"] = linear.bias.reshape((classes, *out))
    from . import FAMILY

    return FAMILY.options_with(criterion, got)


def bind_linear_call(
    hidden: Any, target: Any, options: dict[str, Any], criterion: Any = None
) -> LinearCall:
    """Normalise a call: the options as torch reads them (cross-entropy's binding), the stand-in
    logits, and `ignore_index=None` read as -100 for class indices."""
    if criterion is not None:
        options = _from_criterion(criterion, options)
    w = options.get("linear_weight")
    given = options.get("ignore_index")
    tensors = isinstance(hidden, torch.Tensor) and isinstance(w, torch.Tensor)
    autocast = isinstance(hidden, torch.Tensor) and autocast_on(hidden)
    logits = stand_in(hidden, w, autocast) if tensors else hidden
    base = bind_call(
        logits,
        target,
        weight=options.get("weight"),
        ignore_index=-100 if given is None else given,
        reduction=options.get("reduction", "mean"),
        label_smoothing=options.get("label_smoothing", 0.0),
    )
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    fields.update(loss=LOSS, autocast=autocast)
    return LinearCall(
        **fields,
        hidden=hidden,
        linear_weight=w,
        linear_bias=options.get("linear_bias"),
        ignore_index_given=given,
        softcap=options.get("softcap"),
    )


def full_logits_bytes(call: LinearCall) -> int:
    """What the logits torch builds would take: N x V x itemsize."""
    x = call.input
    return math.prod(x.shape) * x.element_size()


def describe(t: Any) -> str:
    """`(4, 64) float32` for a tensor, the type name otherwise (messages)."""
    from ..._call import shape_str

    if not isinstance(t, torch.Tensor):
        return type(t).__name__
    return f"{shape_str(t.shape)} {dtype_name(t.dtype)}"


def bind(loss: str, input: Any, target: Any, options: dict[str, Any], criterion: Any):
    """The family's binding, as the engine calls it (`LossFamily.bind`)."""
    return bind_linear_call(input, target, options, criterion)
