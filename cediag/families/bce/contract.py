"""What torch itself accepts: a metadata-only mirror of the validation in
F.binary_cross_entropy_with_logits and F.binary_cross_entropy (torch 2.13).

The structure rules explain mistakes in the caller's terms; this module only answers "would
torch raise on these shapes, dtypes, devices and options, and with what complaint?". The engine
uses it as the safety net (`bce-torch-rejects`). tests/test_family_bce.py holds it against torch
on generated calls.

What it mirrors:

- The Python functions: `reduction` read by `_Reduction.get_enum`, then `target.size() ==
  input.size()`, else a ValueError. `F.binary_cross_entropy` broadcasts `weight` with the
  target in Python (`torch.broadcast_shapes`) and has no `pos_weight`.
- `binary_cross_entropy_with_logits` (aten/src/ATen/native/Loss.cpp) is a composite:
  `log_sigmoid(input)`, then `log_sigmoid_input.mul_((pos_weight - 1).mul(target).add_(1))`,
  `loss = (1 - target).mul_(input).sub_(log_sigmoid_input)`, `loss.mul_(weight)`. So the input
  must be float, the target float (`1 - target` refuses bool; an integer target cannot hold the
  float product in place), and `weight` and `pos_weight` must broadcast *into* the input's
  shape (in-place ops never grow their output). Float dtypes mix freely: the loss takes the
  target's dtype. Autograd refuses a weight or pos_weight that requires grad (in grad mode).
- `binary_cross_entropy` (Loss.cpp, CPU and CUDA alike): a TensorIterator over input and
  target that wants one dtype, a floating one, then `loss.mul_(weight)`. Values outside
  [0, 1] raise at run time; that is the value rules' business, not this module's. CUDA's
  autocast bans it outright; CPU's autocast runs it in float32.

Meta tensors are held to the CPU kernels: a check on meta tensors stands for the run that will
follow on a real device (torch's meta kernels are laxer: they accept a bigger pos_weight and
mixed dtypes for `binary_cross_entropy`).
"""

from __future__ import annotations

import torch

from ..._call import FLOAT_DTYPES, option_text, torch_reduction, torch_scalar_name
from .call import Call

AUTOCAST_BAN = (
    "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast "
    "(combine the sigmoid and the loss: torch.nn.functional.binary_cross_entropy_with_logits "
    "or torch.nn.BCEWithLogitsLoss are safe to autocast)"
)


def is_numeric(dtype: torch.dtype) -> bool:
    """Float of a dtype torch computes in, or integer: what a weight may be (bool too)."""
    if dtype in FLOAT_DTYPES or dtype == torch.bool:
        return True
    return not dtype.is_floating_point and not dtype.is_complex


def torch_rejection(call: Call) -> str | None:
    """torch's complaint about this call's metadata, or None if torch would run it."""
    x, t = call.input, call.target
    if not isinstance(x, torch.Tensor) or not isinstance(t, torch.Tensor):
        return "input and target must both be tensors"
    if not call.tensors_ok:
        return "sparse and nested tensors are not supported by binary cross-entropy"
    if torch_reduction(call.reduction) is None:
        return f"{option_text(call.reduction)} is not a valid value for reduction"
    if call.loss == "bce" and call.pos_weight is not None:
        return "binary_cross_entropy() got an unexpected keyword argument 'pos_weight'"
    if tuple(t.shape) != tuple(x.shape):
        return f"Target size ({_size(t.shape)}) must be the same as input size ({_size(x.shape)})"
    for role in ("weight", "pos_weight"):
        value = getattr(call, role)
        if value is not None and not isinstance(value, torch.Tensor):
            return f"argument '{role}' must be Tensor, not {type(value).__name__}"
    reason = device_rejection(call)
    if reason is not None:
        return reason
    if call.loss == "bce":
        return _probability_rejection(call)
    return _logits_rejection(call)


def _size(shape) -> str:
    return f"torch.Size({list(shape)})"


def device_rejection(call: Call) -> str | None:
    """Tensors on different devices. A 0-d CPU weight or pos_weight joins any device (torch
    reads it as a scalar), unless `binary_cross_entropy` expands it to the target's shape."""
    x = call.input
    devices = {x.device, call.target.device}
    for role in ("weight", "pos_weight"):
        w = getattr(call, role)
        if not isinstance(w, torch.Tensor):
            continue
        scalar = w.dim() == 0 and w.device.type == "cpu"
        if scalar and (call.loss == "bce_with_logits" or x.dim() == 0):
            continue
        devices.add(w.device)
    if len(devices) > 1:
        return (
            "Expected all tensors to be on the same device, but found at least two devices: "
            + ", ".join(sorted(map(str, devices)))
        )
    return None


def grad_rejection(call: Call) -> str | None:
    """Autograd's refusal of a weight or pos_weight that requires grad, in grad mode."""
    if not torch.is_grad_enabled():
        return None
    function = (
        "binary_cross_entropy_with_logits"
        if call.loss == "bce_with_logits"
        else "binary_cross_entropy"
    )
    for role in ("weight", "pos_weight"):
        w = getattr(call, role)
        if isinstance(w, torch.Tensor) and w.requires_grad:
            return (
                f"The function '{function}' is not differentiable with respect to argument "
                f"'{role}'. This input cannot have requires_grad True."
            )
    return None


def broadcasts_into(shape, into) -> bool:
    """Whether a tensor of `shape` broadcasts to exactly `into`, as an in-place op's operand
    must: no more dims, and each of its dims 1 or the same size."""
    shape, into = tuple(shape), tuple(into)
    if len(shape) > len(into):
        return False
    return all(s in (1, o) for s, o in zip(reversed(shape), reversed(into), strict=False))


def mutually_broadcastable(a, b) -> bool:
    return all(
        p == q or 1 in (p, q) for p, q in zip(reversed(tuple(a)), reversed(tuple(b)), strict=False)
    )


def broadcast_reason(shape, into) -> str:
    """torch's message for an operand of `shape` that does not broadcast into `into`."""
    shape, into = tuple(shape), tuple(into)
    if not mutually_broadcastable(shape, into):
        for k, (s, o) in enumerate(zip(reversed(shape), reversed(into), strict=False)):
            if s != o and 1 not in (s, o):
                dim = max(len(shape), len(into)) - 1 - k
                return (
                    f"The size of tensor a ({s}) must match the size of tensor b ({o}) at "
                    f"non-singleton dimension {dim}"
                )
    grown = torch.broadcast_shapes(shape, into) if mutually_broadcastable(shape, into) else shape
    return f"output with shape {list(into)} doesn't match the broadcast shape {list(grown)}"


def _logits_rejection(call: Call) -> str | None:
    x, t, w, pw = call.input, call.target, call.weight, call.pos_weight
    reason = grad_rejection(call)
    if reason is not None:
        return reason
    if x.dtype not in FLOAT_DTYPES:  # log_sigmoid(input)
        return f"\"log_sigmoid_cpu\" not implemented for '{torch_scalar_name(x.dtype)}'"
    if pw is not None:  # log_sigmoid(input).mul_((pos_weight - 1).mul(target).add_(1))
        if pw.dtype == torch.bool:
            return "Subtraction, the `-` operator, with a bool tensor is not supported (pos_weight - 1)"
        if not is_numeric(pw.dtype) or t.dtype.is_complex:
            return f"result type {torch_scalar_name(pw.dtype)} can't be cast to the desired output type {torch_scalar_name(x.dtype)} (pos_weight)"
        if not broadcasts_into(pw.shape, x.shape):
            return broadcast_reason(pw.shape, x.shape) + " (pos_weight)"
    # (1 - target).mul_(input): the loss takes the target's dtype
    if t.dtype == torch.bool:
        return "Subtraction, the `-` operator, with two bool tensors is not supported (target)"
    if not t.dtype.is_floating_point and not t.dtype.is_complex:
        return f"result type {torch_scalar_name(x.dtype)} can't be cast to the desired output type {torch_scalar_name(t.dtype)} (target)"
    if t.dtype.is_floating_point and t.dtype not in FLOAT_DTYPES:
        return f"\"add_stub\" not implemented for '{torch_scalar_name(t.dtype)}' (target)"
    if w is not None:  # loss.mul_(weight)
        if not (is_numeric(w.dtype) or (w.dtype.is_complex and t.dtype.is_complex)):
            return f"result type {torch_scalar_name(w.dtype)} can't be cast to the desired output type {torch_scalar_name(t.dtype)} (weight)"
        if not broadcasts_into(w.shape, x.shape):
            return broadcast_reason(w.shape, x.shape) + " (weight)"
    return None


def _probability_rejection(call: Call) -> str | None:
    x, t, w = call.input, call.target, call.weight
    if w is not None and not mutually_broadcastable(t.shape, w.shape):  # broadcast_shapes
        return (
            f"weight of shape {list(w.shape)} does not broadcast with the target's {list(t.shape)}"
        )
    reason = grad_rejection(call)
    if reason is not None:
        return reason
    if call.autocast and x.device.type != "cpu":
        return AUTOCAST_BAN
    in_dtype, t_dtype = call.loss_dtype(x.dtype), call.loss_dtype(t.dtype)
    if t_dtype != in_dtype:  # one TensorIterator over loss, input and target
        return (
            f"Found dtype {torch_scalar_name(t_dtype)} but expected {torch_scalar_name(in_dtype)}"
        )
    if in_dtype not in FLOAT_DTYPES:
        return f"\"binary_cross_entropy\" not implemented for '{torch_scalar_name(in_dtype)}'"
    if w is not None:  # loss.mul_(weight.expand(broadcast(target, weight)))
        if not is_numeric(w.dtype):
            return f"result type {torch_scalar_name(w.dtype)} can't be cast to the desired output type {torch_scalar_name(in_dtype)} (weight)"
        if not broadcasts_into(w.shape, x.shape):
            return broadcast_reason(w.shape, x.shape) + " (weight)"
    return None
