"""What torch itself accepts: a metadata-only mirror of F.cross_entropy / F.nll_loss validation.

The structure rules explain mistakes in the caller's terms; this module only answers "would
torch raise on these shapes, dtypes and options, and with what complaint?". The engine uses it as
a safety net: if torch would reject a call and no rule has said so, a `shape-mismatch` error
carries torch's reason. The differential test in tests/test_differential.py holds this mirror
against torch on generated calls.

Mirrors the CPU kernels of torch 2.x (aten/src/ATen/native/LossNLL.cpp, LossNLL2d.cpp).
"""

from __future__ import annotations

import math

import torch

from ._call import FLOAT_DTYPES, INDEX_DTYPES, REDUCTIONS, Call, dtype_name, shape_str


def torch_rejection(call: Call) -> str | None:
    """torch's complaint about this call's metadata, or None if torch would run it."""
    x, t, w = call.input, call.target, call.weight
    if not isinstance(x, torch.Tensor) or not isinstance(t, torch.Tensor):
        return "input and target must both be tensors"
    if not call.tensors_ok:
        return "sparse and nested tensors are not supported by cross_entropy"
    if call.reduction not in REDUCTIONS:
        return f"{call.reduction!r} is not a valid value for reduction"
    if type(call.ignore_index) is not int:
        return "ignore_index must be an int"
    try:
        smoothing = float(call.label_smoothing)
    except (TypeError, ValueError):
        return "label_smoothing must be a float"
    if call.loss == "cross_entropy" and smoothing > 1.0:  # torch checks only the upper bound
        return f"label_smoothing must be between 0.0 and 1.0. Got: {smoothing}"
    if call.loss == "nll" and not math.isclose(smoothing, 0.0):
        return "nll_loss has no label_smoothing"
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
        if call.ignore_index >= 0:
            return "ignore_index is not supported for floating point target"
        return None
    return _index_target_rejection(call)


def _index_target_rejection(call: Call) -> str | None:
    x, t, w = call.input, call.target, call.weight
    # Under autocast, cross_entropy casts its floating inputs to float32 first.
    if w is not None and w.dtype != x.dtype and not (call.autocast and w.dtype.is_floating_point):
        return (
            f"expected scalar type {dtype_name(x.dtype)} but found {dtype_name(w.dtype)} (weight)"
        )
    if t.dtype not in INDEX_DTYPES:
        return f"expected target dtype to be Long or Byte, but got {dtype_name(t.dtype)}"
    if (
        t.dtype == torch.uint8
        and w is not None
        and float(call.label_smoothing) > 0
        and call.reduction == "mean"
        and t.numel() > 0
    ):  # the weighted mean gathers the weights with the target as index
        return "gather(): Expected dtype int32/int64 for index (uint8 target, weight, label_smoothing, mean)"
    if x.dim() == 1:
        if t.dim() > 1:
            return "0D or 1D target tensor expected, multi-target not supported"
        if t.dim() == 1 and t.shape[0] != 1:
            return f"For 1D input, 1D target must have size 1, but got target size: {t.shape[0]}"
        if t.dim() == 1 and float(call.label_smoothing) > 0:
            return "output with shape [] doesn't match the broadcast shape [1] (label_smoothing needs a 0-d target for (C,) input)"
        return None
    if t.dim() == 0 or t.shape[0] != x.shape[0]:
        batch = 0 if t.dim() == 0 else t.shape[0]
        return f"Expected input batch_size ({x.shape[0]}) to match target batch_size ({batch})."
    if x.dim() == 2:
        if t.dim() != 1:
            return "0D or 1D target tensor expected, multi-target not supported"
        return None
    if t.dtype != torch.int64:
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
    smoothing = (
        float(call.label_smoothing) if isinstance(call.label_smoothing, (int, float)) else 0.0
    )
    if not call.probability_targets and call.input.dim() >= 3 and not smoothing > 0:
        return w.numel() == call.n_classes
    return w.dim() == 1 and w.numel() == call.n_classes
