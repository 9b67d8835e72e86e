"""Call binding: one normalised record of a cross-entropy call, and what its metadata implies.

Nothing here reads tensor data: only shapes, dtypes, devices and options, so building a
`Call` never launches a kernel or synchronises a GPU.
"""

from __future__ import annotations

import operator
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch

from ._report import ArgumentSummary, CallSummary, Report

LossKind = Literal["cross_entropy", "nll"]
REDUCTIONS = ("mean", "sum", "none")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
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


def looks_class_dim_last(call: Call) -> bool:
    """(B, T, C) / (N, H, W, C) logits whose targets have the leading (B, T) / (N, H, W) shape."""
    x, t = call.input, call.target
    if call.probability_targets or x.dim() < 3 or t.dim() != x.dim() - 1:
        return False
    # When the last dim equals dim 1 the layout is ambiguous and torch accepts it: stay silent.
    return tuple(t.shape) == tuple(x.shape[:-1]) and x.shape[1] != x.shape[-1]


def argument_summary(value: Any) -> ArgumentSummary:
    """Shape, dtype and device of a tensor; only the type name of anything else, or of a tensor
    whose shape is not plain integers (nested tensors)."""
    if not isinstance(value, torch.Tensor):
        return ArgumentSummary(type=type(value).__name__)
    kind = "Tensor" if type(value) is torch.Tensor else type(value).__name__
    try:
        shape = [int(d) for d in value.shape] if not value.is_nested else None
        dtype, device = dtype_name(value.dtype), str(value.device)
    except Exception:  # a subclass or nested tensor that will not say
        return ArgumentSummary(type=kind)
    if shape is None:
        return ArgumentSummary(dtype=dtype, device=device, type="nested Tensor")
    return ArgumentSummary(shape=shape, dtype=dtype, device=device, type=kind)


def _float_or_repr(value: Any) -> float | str:
    parsed = torch_float(value)
    return parsed if parsed is not None else option_text(value)


# ------------------------------------------------------------------ options as torch reads them
# F.cross_entropy hands `ignore_index` and `label_smoothing` to torch's C++ argument parser
# (an int64 and a double) and turns `reduction` into an enum in Python. These mirror what each
# accepts and the value it makes of it; None means torch raises.


class BeyondInt64(int):
    """An int option torch cannot read (beyond int64): kept for the message, and not an `int`
    to code that asks `type(value) is int` before using it as a class index."""


def _numpy():
    return sys.modules.get("numpy")  # never imported here: a numpy value means it is loaded


def torch_int(value: Any) -> int | None:
    """`ignore_index` as torch reads it: an int, a NumPy integer, a one-element integer tensor
    or anything with `__index__`, within int64; never a bool."""
    np = _numpy()
    if isinstance(value, bool) or (np is not None and isinstance(value, np.bool_)):
        return None
    if isinstance(value, torch.Tensor):
        if (
            value.dtype.is_floating_point
            or value.dtype.is_complex
            or value.dtype == torch.bool
            or value.is_meta
            or value.requires_grad
            or value.numel() != 1
        ):
            return None
        number = int(value.item())
    else:
        try:
            number = operator.index(value)
        except Exception:
            return None
    return number if INT64_MIN <= number <= INT64_MAX else None


def torch_float(value: Any) -> float | None:
    """`label_smoothing` as torch reads it: a Python int, float or bool, a NumPy number or bool
    (a complex one loses its imaginary part), or a 0-d tensor that does not require grad; not a
    str, Decimal, Fraction, complex or array. None also when it overflows a double."""
    np = _numpy()
    try:
        if isinstance(value, (int, float)):
            return float(value)
        if np is not None and isinstance(value, (np.number, np.bool_)):
            return float(value.real)
        if isinstance(value, torch.Tensor):
            if value.dim() != 0 or value.requires_grad or value.is_meta:
                return None
            item = value.item()
            return float(item.real if isinstance(item, complex) else item)
    except (OverflowError, TypeError, ValueError, RuntimeError):
        return None
    return None


def torch_reduction(value: Any) -> str | None:
    """`reduction` as torch reads it (compared with ==, so a NumPy string works), with the
    deprecated "elementwise_mean" read as "mean"; None for anything else."""
    if type(value) is str and value in REDUCTIONS:  # the usual case
        return value
    for name in ("none", "mean", "elementwise_mean", "sum"):
        try:
            equal = bool(value == name)
        except Exception:  # torch raises on the same comparison
            return None
        if equal:
            return "mean" if name == "elementwise_mean" else name
    return None


def option_text(value: Any, limit: int = 60) -> str:
    """A short, data-free text for an option value in a message: a tensor's metadata, never its
    contents; other reprs cut to `limit` characters."""
    if isinstance(value, torch.Tensor):
        try:
            return f"a {shape_str(value.shape)} {dtype_name(value.dtype)} tensor"
        except Exception:
            return f"a {type(value).__name__}"
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    return (
        text if len(text) <= limit else f"{text[: limit - 20]}...{text[-12:]} ({len(text)} chars)"
    )


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


# One call that answers for every device type (torch >= 2.4); else assume it may be on.
_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for `device_type` (read on every guarded call: one cheap probe
    first, since autocast is off in most steps)."""
    if not _any_autocast():
        return False
    try:
        return torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # older torch, or a device type autocast does not know
        return False


# ------------------------------------------------------------------ when the check itself fails


def error_text(error: BaseException, limit: int = 300) -> str:
    """One line naming an exception, cut to `limit` characters."""
    lines = str(error).splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def subclass_notes(call: Call) -> list[str]:
    """A note for each argument of a torch.Tensor subclass with a `__torch_function__` of its
    own: the check reads its data as a plain tensor, the loss goes through the subclass."""
    notes = []
    for role in ("input", "target", "weight"):
        value = getattr(call, role)
        kind = type(value)
        if not isinstance(value, torch.Tensor) or kind is torch.Tensor:
            continue
        own = getattr(kind, "__torch_function__", None)
        if getattr(own, "__func__", own) not in _PLAIN_TORCH_FUNCTIONS:
            notes.append(
                f"{role} is a {kind.__name__} (a torch.Tensor subclass): checked as the plain "
                "tensor it holds; its __torch_function__ decides what the loss does with it"
            )
    return notes


_PLAIN_TORCH_FUNCTIONS = {
    getattr(torch.Tensor.__torch_function__, "__func__", torch.Tensor.__torch_function__),
    torch._C._disabled_torch_function_impl,
}


def unchecked_report(input: Any, target: Any, loss: Any, error: BaseException) -> Report:
    """The report of a check that failed in cediag itself: what was passed, and why nothing
    was checked (`values_checked` False)."""

    def summary(value: Any) -> ArgumentSummary:
        try:
            with torch._C.DisableTorchFunctionSubclass():
                return argument_summary(value)
        except Exception:
            return ArgumentSummary(type=type(value).__name__)

    return Report(
        call=CallSummary(
            loss=loss if loss in ("cross_entropy", "nll") else option_text(loss),
            input=summary(input),
            target=summary(target),
        ),
        values_checked=False,
        notes=[f"not checked: {error_text(error)}"],
    )
