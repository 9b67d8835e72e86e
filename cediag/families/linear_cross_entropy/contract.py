"""What torch checks before the logits exist: a metadata-only mirror of the reference path of
`F.linear_cross_entropy` (torch 2.13, `options=None`), up to and including `linear()`.

After these, torch reshapes the logits and calls `cross_entropy`: the call's `rejection()`
asks cross-entropy's contract about the stand-in logits for that part. The differential test in
tests/test_family_linear_cross_entropy.py holds both against torch on generated calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..._call import torch_scalar_name

if TYPE_CHECKING:
    from .call import LinearCall


def cast_dtype(call: LinearCall, dtype: torch.dtype) -> torch.dtype:
    """The dtype linear() sees a tensor of `dtype` in: autocast casts the floating dtypes other
    than float64 to its lower precision, and leaves the rest alone."""
    from .call import logits_dtype

    return logits_dtype(call.hidden.device.type, dtype, call.autocast)


def linear_rejection(call: LinearCall) -> str | None:
    """torch's complaint about the hidden states, linear_weight, linear_bias and the
    probability/ignore_index pairing, or None when the call reaches cross_entropy."""
    h, w, b, t = call.hidden, call.linear_weight, call.linear_bias, call.target
    for role, value in (("input", h), ("linear_weight", w), ("target", t)):
        if not isinstance(value, torch.Tensor):
            return f"{role} must be a tensor, not {type(value).__name__}"
    if b is not None and not isinstance(b, torch.Tensor):
        return f"linear_bias must be a tensor or None, not {type(b).__name__}"
    if any(a is not None and a.is_nested for a in (h, w, b, t)):
        return "nested tensors are not supported by linear_cross_entropy"
    if t.layout is not torch.strided:  # linear() takes sparse hidden states and weights
        return f"a {t.layout} target is not supported by cross_entropy"
    if h.dim() < 1 or h.dim() > 2:
        return f"expected input with dimensionality 1 or 2, got {h.dim()}"
    if w.dim() < 2:
        return f"expected linear_weight with dimensionality at least 2, got {w.dim()}"
    in_features = h.shape[-1]
    if in_features != w.shape[-1]:
        return (
            "expected equal input and linear_weight last dimensions (in_features), "
            f"got {in_features} and {w.shape[-1]}, respectively"
        )
    classes, out_features = int(w.shape[0]), tuple(int(d) for d in w.shape[1:-1])
    if b is not None and tuple(b.shape) != (classes, *out_features):
        return f"expected linear_bias shape {(classes, *out_features)}, got {tuple(b.shape)}"
    if out_features and h.dim() == 1:
        return (
            f"K-dimensional loss defined by linear_weight shape {tuple(w.shape)} requires "
            f"batched input, (N, {in_features}), got unbatched input with shape {tuple(h.shape)}"
        )
    if call.probability_targets and call.ignore_index_given is not None:
        return "ignore_index cannot be specified when target contains probabilities"
    devices = {a.device for a in (h, w, b) if a is not None}
    if len(devices) > 1:
        return (
            f"Expected all tensors to be on the same device, but found {sorted(map(str, devices))}"
        )
    hd, wd = cast_dtype(call, h.dtype), cast_dtype(call, w.dtype)
    if hd != wd:
        return (
            "expected m1 and m2 to have the same dtype, but got: "
            f"{torch_scalar_name(hd)} != {torch_scalar_name(wd)}"
        )
    if b is not None and cast_dtype(call, b.dtype) != hd:
        return (
            "self and mat2 must have the same dtype, but got "
            f"{torch_scalar_name(cast_dtype(call, b.dtype))} and {torch_scalar_name(hd)}"
        )
    return None
