"""What torch itself accepts: a metadata-only mirror of F.cross_entropy / F.nll_loss validation.

The structure rules explain mistakes in the caller's terms; this module only answers "would
torch raise on these shapes, dtypes and options, and with what complaint?". The engine uses it as
a safety net: if torch would reject a call and no rule has said so, a `shape-mismatch` error
carries torch's reason. The differential test in tests/test_differential.py holds this mirror
against torch on generated calls.

Mirrors the CPU kernels of torch 2.x (aten/src/ATen/native/LossNLL.cpp, LossNLL2d.cpp), the
argument parser that reads the options, autograd's refusal of a weight that requires grad, and,
for meta tensors, the few checks where torch's meta kernels are stricter than the CPU ones.
"""

from __future__ import annotations

import torch

from ..._call import (
    FLOAT_DTYPES,
    INDEX_DTYPES,
    dtype_name,
    option_text,
    shape_str,
    torch_float,
    torch_int,
    torch_reduction,
)
from .call import Call


def torch_rejection(call: Call) -> str | None:
    """torch's complaint about this call's metadata, or None if torch would run it."""
    x, t, w = call.input, call.target, call.weight
    if not isinstance(x, torch.Tensor) or not isinstance(t, torch.Tensor):
        return "input and target must both be tensors"
    if not call.tensors_ok:
        return "sparse and nested tensors are not supported by cross_entropy"
    reason = option_rejection(call)
    if reason is not None:
        return reason
    if w is not None and not isinstance(w, torch.Tensor):
        return "weight must be a tensor or None"
    devices = {a.device for a in (x, t, w) if isinstance(a, torch.Tensor)}
    if len(devices) > 1:
        return f"tensors on different devices: {sorted(map(str, devices))}"
    if x.dim() == 0:
        return "input must have at least 1 dimension"
    if x.dtype not in FLOAT_DTYPES:
        return f"log_softmax is not implemented for {dtype_name(x.dtype)} input"
    if w is not None and not weight_shape_ok(call):
        return (
            f"weight tensor should be defined either for all {call.n_classes} classes "
            f"or no classes but got weight tensor of shape: {list(w.shape)}"
        )
    if call.probability_targets:
        if t.dtype not in FLOAT_DTYPES:
            return (
                "Expected floating point type for target with class probabilities, "
                f"got {dtype_name(t.dtype)}"
            )
        if torch_int(call.ignore_index) >= 0:  # type: ignore[operator]  # parsed above
            return "ignore_index is not supported for floating point target"
        return None
    if w is not None and w.requires_grad and torch.is_grad_enabled():
        return weight_grad_reason(call)
    reason = _index_target_rejection(call)
    if reason is None and call.on_meta:
        reason = _meta_rejection(call)
    return reason


def option_rejection(call: Call) -> str | None:
    """torch's complaint about reduction, ignore_index or label_smoothing, or None."""
    if torch_reduction(call.reduction) is None:
        return f"{option_text(call.reduction)} is not a valid value for reduction"
    if torch_int(call.ignore_index) is None:
        if isinstance(call.ignore_index, int) and not isinstance(call.ignore_index, bool):
            return "ignore_index does not fit in int64 (Overflow when unpacking long long)"
        return f"ignore_index must be int, not {type(call.ignore_index).__name__}"
    smoothing = torch_float(call.label_smoothing)
    if smoothing is None:
        if isinstance(call.label_smoothing, int):
            return "label_smoothing is too large to convert to float"
        return f"label_smoothing must be float, not {type(call.label_smoothing).__name__}"
    if call.loss == "cross_entropy" and smoothing > 1.0:  # torch checks only the upper bound
        return f"label_smoothing must be between 0.0 and 1.0. Got: {smoothing}"
    if call.loss == "nll" and smoothing != 0.0:
        return "nll_loss has no label_smoothing"
    return None


def weight_grad_reason(call: Call) -> str:
    kernel = "nll_loss_forward" if call.input.dim() <= 2 else "nll_loss2d_forward"
    return (
        f"The function '{kernel}' is not differentiable with respect to argument 'weight'. "
        "This input cannot have requires_grad True."
    )


def _smoothing(call: Call) -> float:
    return torch_float(call.label_smoothing) or 0.0


def _meta_rejection(call: Call) -> str | None:
    """Where the meta kernels refuse what the CPU kernels take (torch 2.x)."""
    x, t, w = call.input, call.target, call.weight
    if x.dim() == 1 and t.dim() == 1:
        return f"size mismatch (got input: {list(x.shape)}, target: {list(t.shape)}) (meta)"
    if t.dtype == torch.uint8 and t.numel() > 0:  # the meta kernels gather with the target
        return "gather(): Expected dtype int32/int64 for index, but got torch.uint8 (meta)"
    if w is not None and x.dim() >= 3 and (w.dim() == 0 or w.shape[0] != w.numel()):
        return f"shape '[1, 1, 1, 1]' is invalid for a weight of shape {list(w.shape)} (meta)"
    return None


def _index_target_rejection(call: Call) -> str | None:
    x, t, w = call.input, call.target, call.weight
    # Under autocast, cross_entropy casts float16 and bfloat16 to float32 first.
    if w is not None and call.loss_dtype(w.dtype) != call.loss_dtype(x.dtype):
        found, expected = dtype_name(call.loss_dtype(w.dtype)), dtype_name(call.loss_dtype(x.dtype))
        return f"expected scalar type {expected} but found {found} (weight)"
    if t.dtype not in INDEX_DTYPES:
        return f"expected target dtype to be Long or Byte, but got {dtype_name(t.dtype)}"
    if (
        t.dtype == torch.uint8
        and w is not None
        and _smoothing(call) > 0
        and call.reduction == "mean"
        and t.numel() > 0
    ):  # the weighted mean gathers the weights with the target as index
        return "gather(): Expected dtype int32/int64 for index (uint8 target, weight, label_smoothing, mean)"
    if x.dim() == 1:
        if t.dim() > 1:
            return "0D or 1D target tensor expected, multi-target not supported"
        if t.dim() == 1 and t.shape[0] != 1:
            return f"For 1D input, 1D target must have size 1, but got target size: {t.shape[0]}"
        if t.dim() == 1 and _smoothing(call) > 0:
            return "output with shape [] doesn't match the broadcast shape [1] (label_smoothing needs a 0-d target for (C,) input)"
        return None
    if t.dim() == 0 or t.shape[0] != x.shape[0]:
        batch = 0 if t.dim() == 0 else t.shape[0]
        return f"Expected input batch_size ({x.shape[0]}) to match target batch_size ({batch})."
    if x.dim() == 2:
        if t.dim() != 1:
            return "0D or 1D target tensor expected, multi-target not supported"
        return None
    # The K-dim kernel returns early for an empty target under "mean" and "sum", before its
    # dtype check.
    if t.dtype != torch.int64 and not (t.numel() == 0 and call.reduction != "none"):
        return f"expected scalar type Long but found {dtype_name(t.dtype)}"
    expected = (x.shape[0], *x.shape[2:])
    if x.dim() == 4 and t.dim() != 3:
        return f"only batches of spatial targets supported (3D tensors) but got targets of dimension: {t.dim()}"
    if tuple(t.shape) != tuple(expected):
        return f"Expected target size {shape_str(expected)}, got {shape_str(t.shape)}"
    if x.dim() != 4 and x.numel() == 0 and t.numel() > 0:
        return f"input of shape {shape_str(x.shape)} has no elements to view against the target"
    return None


def weight_shape_ok(call: Call) -> bool:
    """torch wants a (C,) weight; the K-dim index path (nll_loss2d, no label smoothing) only
    checks its numel."""
    w = call.weight
    if w is None:
        return True
    if not call.probability_targets and call.input.dim() >= 3 and not _smoothing(call) > 0:
        return w.numel() == call.n_classes
    return w.dim() == 1 and w.numel() == call.n_classes
