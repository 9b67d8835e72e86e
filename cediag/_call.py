"""What every family's call binding shares: dtype and shape names, argument summaries, options
read as torch's argument parser reads them, the autocast probe, and the report of a check that
failed in cediag itself.

Nothing here reads tensor data: only shapes, dtypes, devices and option values.
"""

from __future__ import annotations

import operator
import sys
from typing import Any

import torch

from ._report import ArgumentSummary, CallSummary, Report

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


READABLE_DTYPES = (
    *FLOAT_DTYPES,
    torch.bool,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
)


def readable_dtype(dtype: torch.dtype) -> bool:
    """Whether the statistics pass can read a tensor of this dtype."""
    return dtype in READABLE_DTYPES


def values_readable(call: Any) -> bool:
    """Whether a call's input and target hold data a statistics pass can read (not meta, not
    an exotic dtype)."""
    return (
        call.tensors_ok
        and not call.on_meta
        and readable_dtype(call.input.dtype)
        and readable_dtype(call.target.dtype)
    )


# torch's C++ names for the dtypes its messages quote.
_TORCH_SCALAR_NAMES = {
    torch.float32: "Float",
    torch.float64: "Double",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def torch_scalar_name(dtype: torch.dtype) -> str:
    """A dtype as torch's C++ messages spell it: Float, BFloat16, Long, ..."""
    return _TORCH_SCALAR_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def dtype_name(dtype: torch.dtype) -> str:
    return _SHORT_DTYPE.get(dtype, str(dtype).removeprefix("torch."))


def shape_str(shape) -> str:
    """(4, 3) for a shape, with the trailing comma of a 1-tuple: (4,)."""
    dims = tuple(int(d) for d in shape)
    return f"({dims[0]},)" if len(dims) == 1 else str(dims)


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


# One call that answers for every device type (torch >= 2.4); else assume it may be on.
any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)


def autocast_on(tensor: torch.Tensor) -> bool:
    """Whether autocast is on for the tensor's device. The cheap any-device probe comes first:
    reading `tensor.device.type` costs most of a microsecond, and autocast is off in most
    steps."""
    return any_autocast() and autocast_enabled(tensor.device.type)


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for `device_type` (read on every guarded call: one cheap probe
    first, since autocast is off in most steps)."""
    if not any_autocast():
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


def subclass_notes(call: Any) -> list[str]:
    """A note for each argument of a torch.Tensor subclass with a `__torch_function__` of its
    own: the check reads its data as a plain tensor, the loss goes through the subclass."""
    notes = []
    for role, value in call.tensors().items():
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
            loss=loss if type(loss) is str and len(loss) <= 40 else option_text(loss),
            input=summary(input),
            target=summary(target),
        ),
        values_checked=False,
        notes=[f"not checked: {error_text(error)}"],
    )
