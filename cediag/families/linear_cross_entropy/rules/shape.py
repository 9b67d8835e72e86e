"""LCE1xx: the hidden states, the classifier and the target's shape, dtypes and devices. Structure
rules: metadata only."""

from __future__ import annotations

import math

import torch

from ...._call import FLOAT_DTYPES, dtype_name, shape_str
from ....rules._context import Context, tensor_evidence
from ....rules._registry import Finding, rule
from ..call import LinearCall, describe
from ..contract import cast_dtype

SIGNATURE = "F.linear_cross_entropy(hidden, linear_weight, target)"


def linear_evidence(call: LinearCall) -> list:
    """The arguments as the caller passed them: hidden states (role "input"), classifier,
    bias, target. Never the stand-in logits."""
    found = [
        ("input", call.hidden),
        ("linear_weight", call.linear_weight),
        ("linear_bias", call.linear_bias),
        ("target", call.target),
    ]
    return [tensor_evidence(role, t) for role, t in found if isinstance(t, torch.Tensor)]


def _shapes_known(call: LinearCall) -> bool:
    h, w = call.hidden, call.linear_weight
    return call.tensors_ok and h.dim() >= 1 and w.dim() >= 1


# ---------------------------------------------------------------------------------------------


@rule(
    "LCE101",
    "linear-argument-not-a-tensor",
    "error",
    "arguments",
    "hidden states, linear_weight or target is not a dense tensor",
)
def linear_argument_not_a_tensor(ctx: Context) -> Finding | None:
    """An argument of `F.linear_cross_entropy` is not a dense `torch.Tensor`.

    ## What it does
    Fires when the hidden states, `linear_weight` or the target is missing, a list, a NumPy
    array, a scalar or a nested tensor (or the target a sparse one), or when `linear_bias` is
    neither None nor a tensor. Sparse hidden states and weights, which torch's `linear()`
    takes, are not checked: a note says so.

    ## Why is this bad?
    torch reads `.dim()` and `.shape` of each before anything else and raises an
    AttributeError; the fused kernels of other libraries fail deeper down.

    ## Example
    ```python
    F.linear_cross_entropy(hidden, lm_head, target)        # the module, not its weight
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(hidden, lm_head.weight, target, linear_bias=lm_head.bias)
    ```
    """
    call = ctx.call
    found = [("hidden states (input)", call.hidden), ("linear_weight", call.linear_weight)]
    found += [("target", call.target), ("linear_bias", call.linear_bias)]
    bad, sparse = [], []
    for role, value in found:
        if value is None:
            if role != "linear_bias":
                bad.append(f"{role} is missing")
        elif not isinstance(value, torch.Tensor):
            bad.append(f"{role} is a {type(value).__name__}")
        elif value.is_nested:
            bad.append(f"{role} is a nested tensor")
        elif value.layout is not torch.strided:
            (bad if role == "target" else sparse).append(f"{role} is a {value.layout} tensor")
    if sparse and not bad:  # linear() takes them; cediag reads dense tensors only
        ctx.notes.append(
            f"not checked: {'; '.join(sparse)} (torch takes it; cediag reads dense tensors)"
        )
    if not bad:
        return None
    if isinstance(call.linear_weight, torch.nn.Module):
        fix = "pass the layer's parameters: linear_weight=lm_head.weight, linear_bias=lm_head.bias"
    elif call.linear_weight is None:
        fix = f"{SIGNATURE}  # linear_weight: the (V, H) classifier, e.g. lm_head.weight"
    else:
        fix = "torch.as_tensor(value)  # or value.to_dense()"
    return Finding("; ".join(bad) + ": linear_cross_entropy takes dense torch tensors.", fix)


@rule(
    "LCE102",
    "hidden-not-flattened",
    "error",
    "structure",
    "(B, T, H) hidden states: linear_cross_entropy takes (N, H) or (H,)",
)
def hidden_not_flattened(ctx: Context) -> Finding | None:
    """Hidden states of a sequence model passed without flattening the batch dims.

    ## What it does
    Fires when the hidden states have 3 or more dims, such as the (B, T, H) output of a
    transformer.

    ## Why is this bad?
    `F.linear_cross_entropy` takes (H,) or (N, H) input only and raises "expected input with
    dimensionality 1 or 2". Unlike `F.cross_entropy`, it has no K-dimensional input: the extra
    dims belong in N.

    ## Example
    ```python
    hidden = model.transformer(input_ids).last_hidden_state        # (B, T, H)
    F.linear_cross_entropy(hidden, model.lm_head.weight, labels)   # labels (B, T)
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(hidden.flatten(0, -2), model.lm_head.weight, labels.flatten())
    ```
    """
    call = ctx.call
    h, t = call.hidden, call.target
    if h.dim() < 3:
        return None
    batch = tuple(h.shape[:-1])
    rows = math.prod(batch)
    if tuple(t.shape) == batch:
        fix = "F.linear_cross_entropy(hidden.flatten(0, -2), linear_weight, target.flatten())"
    elif t.dim() <= 1 and t.numel() == rows:
        fix = "F.linear_cross_entropy(hidden.flatten(0, -2), linear_weight, target)"
    else:
        fix = (
            f"flatten both: hidden.flatten(0, -2) is ({rows}, {h.shape[-1]}); the target must "
            f"then be ({rows},) class indices"
        )
    return Finding(
        f"hidden states {shape_str(h.shape)} have {h.dim()} dims; linear_cross_entropy takes "
        f"(N, {h.shape[-1]}) or ({h.shape[-1]},): flatten the {shape_str(batch)} batch dims into N.",
        fix,
        linear_evidence(call),
    )


@rule(
    "LCE103",
    "classifier-transposed",
    "error",
    "structure",
    "linear_weight is (H, V): nn.Linear stores (out_features, in_features)",
)
def classifier_transposed(ctx: Context) -> Finding | None:
    """The classifier matrix is given as (in_features, V) instead of (V, in_features).

    ## What it does
    Fires when a 2-D `linear_weight` does not match the hidden size in its last dim but does in
    its first: the other orientation would be right.

    ## Why is this bad?
    torch raises "expected equal input and linear_weight last dimensions (in_features)". The
    weight is `nn.Linear.weight`, (out_features, in_features); a matrix written for
    `hidden @ W` (an embedding matrix's transpose, a JAX/NumPy port) is (in_features, V).

    ## Example
    ```python
    F.linear_cross_entropy(hidden, model.lm_head.weight.T, target)    # (H, V)
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(hidden, model.lm_head.weight, target)      # (V, H)
    ```
    """
    call = ctx.call
    if not _shapes_known(call) or not call.transposed_weight:
        return None
    w, h = call.linear_weight, call.hidden
    return Finding(
        f"linear_weight {shape_str(w.shape)} has the hidden size {h.shape[-1]} in dim 0 and "
        f"{w.shape[1]} in dim 1: it is (in_features, V), but linear_cross_entropy takes "
        f"(V, in_features), as nn.Linear.weight stores it.",
        "F.linear_cross_entropy(hidden, linear_weight.T, target)  # or pass lm_head.weight "
        "itself, not its transpose",
        linear_evidence(call),
    )


@rule(
    "LCE104",
    "in-features-mismatch",
    "error",
    "structure",
    "the hidden size differs from linear_weight's in_features (last dim)",
)
def in_features_mismatch(ctx: Context) -> Finding | None:
    """The hidden states' last dim is not the classifier's `in_features`.

    ## What it does
    Fires when `hidden.shape[-1] != linear_weight.shape[-1]` and no transpose explains it.

    ## Why is this bad?
    torch raises "expected equal input and linear_weight last dimensions (in_features)". The
    hidden states come from another layer than the head was built for (a projection skipped,
    the wrong checkpoint's head, pre-norm features of another width).

    ## Example
    ```python
    F.linear_cross_entropy(torch.randn(8, 512), torch.randn(32000, 768), target)
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(final_norm(hidden), lm_head.weight, target)   # (8, 768) x (32000, 768)
    ```
    """
    call = ctx.call
    if not _shapes_known(call) or call.linear_weight.dim() < 2 or call.transposed_weight:
        return None
    h, w = call.hidden, call.linear_weight
    if h.shape[-1] == w.shape[-1] or h.dtype not in FLOAT_DTYPES:
        return None  # integer "hidden states" are token ids: hidden-not-float says so
    return Finding(
        f"hidden states {shape_str(h.shape)} have {h.shape[-1]} features (last dim) but "
        f"linear_weight {shape_str(w.shape)} takes {w.shape[-1]} (its last dim).",
        f"pass hidden states of width {w.shape[-1]} (the layer the head was built on), or the "
        f"head for width {h.shape[-1]}: linear_weight of shape ({w.shape[0]}, {h.shape[-1]})",
        linear_evidence(call),
    )


@rule(
    "LCE105",
    "linear-bias-shape-mismatch",
    "error",
    "structure",
    "linear_bias is not (V,) (or (V, d1, ...) for a K-dim weight)",
)
def linear_bias_shape_mismatch(ctx: Context) -> Finding | None:
    """The classifier's bias does not have one entry per output.

    ## What it does
    Fires when `linear_bias` is not of shape `linear_weight.shape[:-1]`: (V,) for a (V, H)
    weight, (C, d1, ...) for a K-dimensional one.

    ## Why is this bad?
    torch raises "expected linear_bias shape (V,), got ...". Unlike `nn.Linear`, it does not
    broadcast a (1, V) bias or flatten a K-dimensional one.

    ## Example
    ```python
    F.linear_cross_entropy(hidden, W, target, linear_bias=bias.unsqueeze(0))   # (1, V)
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(hidden, W, target, linear_bias=bias)                # (V,)
    ```
    """
    call = ctx.call
    b, w = call.linear_bias, call.linear_weight
    if b is None or not _shapes_known(call) or w.dim() < 2:
        return None
    wanted = tuple(int(d) for d in w.shape[:-1])
    if tuple(b.shape) == wanted:
        return None
    if b.numel() == math.prod(wanted):
        fix = (
            f"linear_bias=linear_bias.reshape{wanted}"
            if len(wanted) > 1
            else (f"linear_bias=linear_bias.reshape({wanted[0]})")
        )
    else:
        fix = (
            f"a linear_bias of shape {shape_str(wanted)}: one entry per class "
            f"(linear_weight.shape[:-1]), or none"
        )
    return Finding(
        f"linear_bias {shape_str(b.shape)} does not match linear_weight {shape_str(w.shape)}: "
        f"torch wants a bias of shape {shape_str(wanted)}.",
        fix,
        linear_evidence(call),
    )


@rule(
    "LCE106",
    "linear-dtype-mismatch",
    "error",
    "structure",
    "hidden states, linear_weight and linear_bias of different float dtypes",
)
def linear_dtype_mismatch(ctx: Context) -> Finding | None:
    """Hidden states and classifier in different float dtypes.

    ## What it does
    Fires when the hidden states, `linear_weight` and `linear_bias` are floats but not all of
    one dtype (outside autocast, which casts float16, bfloat16 and float32 to one, and leaves
    float64 alone).

    ## Why is this bad?
    The projection is a matmul: torch raises "expected m1 and m2 to have the same dtype". It
    happens when a final norm upcasts the hidden states to float32 while the head is bfloat16,
    or the head was loaded in another precision than the model.

    ## Example
    ```python
    F.linear_cross_entropy(hidden.float(), lm_head.weight, target)    # the head is bfloat16
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(hidden.to(lm_head.weight.dtype), lm_head.weight, target)
    ```
    """
    call = ctx.call
    h, w, b = call.hidden, call.linear_weight, call.linear_bias
    parts = [("hidden states", h), ("linear_weight", w)] + (
        [("linear_bias", b)] if b is not None else []
    )
    if any(t.dtype not in FLOAT_DTYPES for _, t in parts):
        return None  # hidden-not-float speaks
    seen = {cast_dtype(call, t.dtype) for _, t in parts}
    if len(seen) == 1:
        return None
    listed = ", ".join(f"{role} {dtype_name(t.dtype)}" for role, t in parts)
    fixes = []
    if cast_dtype(call, h.dtype) != cast_dtype(call, w.dtype):
        fixes.append("hidden.to(linear_weight.dtype)")
    if b is not None and cast_dtype(call, b.dtype) != cast_dtype(call, w.dtype):
        fixes.append("linear_bias.to(linear_weight.dtype)")
    under = " (autocast casts float16/bfloat16/float32, not float64)" if call.autocast else ""
    return Finding(
        f"{listed}: the projection needs one dtype{under}.",
        "; ".join(fixes) + "  # or run the loss under torch.autocast",
        linear_evidence(call),
    )


@rule(
    "LCE107",
    "hidden-not-float",
    "error",
    "structure",
    "integer hidden states or classifier: token ids instead of hidden states?",
)
def hidden_not_float(ctx: Context) -> Finding | None:
    """The hidden states (or the classifier) are not floating point.

    ## What it does
    Fires when the hidden states or `linear_weight` are integer, bool or complex tensors, or a
    float type the loss does not support (float8).

    ## Why is this bad?
    torch raises: the matmul or the log_softmax is not implemented for the dtype, or the
    dtypes of the two differ. Integer hidden states are usually the token ids (`input_ids`)
    passed where the model's last hidden states belong.

    ## Example
    ```python
    F.linear_cross_entropy(batch["input_ids"], lm_head.weight, labels)
    ```

    ## Use instead
    ```python
    hidden = model.model(batch["input_ids"]).last_hidden_state.flatten(0, -2)
    F.linear_cross_entropy(hidden, lm_head.weight, labels.flatten())
    ```
    """
    call = ctx.call
    h, w = call.hidden, call.linear_weight
    bad = [(role, t) for role, t in (("hidden states", h), ("linear_weight", w))
           if t.dtype not in FLOAT_DTYPES]  # fmt: skip
    if not bad:
        return None
    listed = " and ".join(f"{role} {describe(t)}" for role, t in bad)
    if h.dtype in FLOAT_DTYPES:
        fix = "linear_weight.to(hidden.dtype)  # the head's float weights"
    elif not h.dtype.is_floating_point and not h.dtype.is_complex:
        fix = "pass the model's last hidden states (float), not token ids: hidden = " \
              "model.model(input_ids).last_hidden_state"  # fmt: skip
    else:
        fix = "hidden.float()"
    return Finding(
        f"{listed}: linear_cross_entropy needs float hidden states and classifier (float32, "
        "bfloat16, float16 or float64).",
        fix,
        linear_evidence(call),
    )


@rule(
    "LCE108",
    "linear-target-not-flattened",
    "error",
    "structure",
    "(B, T) or (N, 1) targets for flattened (N, H) hidden states",
)
def linear_target_not_flattened(ctx: Context) -> Finding | None:
    """The class-index target keeps dims the flattened hidden states no longer have.

    ## What it does
    Fires when the hidden states are (N, H), the classifier is (V, H), and the target has
    N elements in 2 or more dims: (B, T) labels, or (N, 1).

    ## Why is this bad?
    torch raises "0D or 1D target tensor expected, multi-target not supported" (or a batch-size
    mismatch). Flattening the hidden states of a sequence model without the labels does it.

    ## Example
    ```python
    F.linear_cross_entropy(hidden.flatten(0, 1), lm_head.weight, labels)   # labels (B, T)
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(hidden.flatten(0, 1), lm_head.weight, labels.flatten())
    ```
    """
    call = ctx.call
    h, w, t = call.hidden, call.linear_weight, call.target
    if h.dim() != 2 or w.dim() != 2 or t.dim() < 2 or call.probability_targets:
        return None
    if t.numel() != h.shape[0]:
        return None
    return Finding(
        f"target {shape_str(t.shape)} has {t.dim()} dims for hidden states {shape_str(h.shape)}: "
        f"the class-index target must be ({h.shape[0]},).",
        "F.linear_cross_entropy(hidden, linear_weight, target.flatten())",
        linear_evidence(call),
    )


@rule(
    "LCE109",
    "linear-device-mismatch",
    "error",
    "structure",
    "hidden states, classifier, target and weight on different devices",
)
def linear_device_mismatch(ctx: Context) -> Finding | None:
    """The tensors of one call live on different devices.

    ## What it does
    Fires when the hidden states, `linear_weight`, `linear_bias`, the target and the class
    `weight` are not all on one device.

    ## Why is this bad?
    torch raises "Expected all tensors to be on the same device". A head kept on the CPU for
    memory, or labels never moved to the GPU, are the usual causes.

    ## Example
    ```python
    F.linear_cross_entropy(hidden.cuda(), lm_head.weight.cuda(), labels)  # labels on the CPU
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(hidden, linear_weight, labels.to(hidden.device))
    ```
    """
    call = ctx.call
    found = (
        ("hidden", call.hidden),
        ("linear_weight", call.linear_weight),
        ("linear_bias", call.linear_bias),
        ("target", call.target),
        ("weight", call.weight),
    )
    places = {role: t.device for role, t in found if isinstance(t, torch.Tensor)}
    if len(set(places.values())) <= 1:
        return None
    where = ", ".join(f"{role} on {device}" for role, device in places.items())
    moves = [f"{role}.to(hidden.device)" for role, device in places.items()
             if device != places["hidden"]]  # fmt: skip
    return Finding(f"{where}: all must be on one device.", "; ".join(moves), linear_evidence(call))


@rule(
    "LCE110",
    "linear-cross-entropy-rejected",
    "error",
    "final",
    "torch rejects the call in another way",
)
def linear_cross_entropy_rejected(ctx: Context) -> Finding | None:
    """Any other call torch's `linear_cross_entropy` refuses.

    ## What it does
    The safety net: fires with torch's own reason when torch would refuse the call and no
    more specific rule has said why: a K-dimensional classifier with unbatched hidden states, a
    target of the wrong size, a class `weight` that requires grad, ...

    ## Why is this bad?
    `F.linear_cross_entropy` takes (H,) or (N, H) hidden states, a (V, H) or (V, d1, ..., H)
    classifier, and a target of class indices (N,) / (N, d1, ...) int64 in [0, V), or of
    probabilities shaped like the logits (N, V, d1, ...). Anything else raises.

    ## Example
    ```python
    F.linear_cross_entropy(torch.randn(8, 64), torch.randn(100, 64), torch.randint(0, 100, (7,)))
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(hidden, linear_weight, target)   # (8, 64), (100, 64), (8,)
    ```
    """
    call = ctx.call
    if ctx.has_error():
        return None
    reason = ctx.rejection
    if reason is None:
        return None
    parts = [
        f"hidden states {describe(call.hidden)}",
        f"linear_weight {describe(call.linear_weight)}",
    ]
    if call.linear_bias is not None:
        parts.append(f"linear_bias {describe(call.linear_bias)}")
    parts.append(f"target {describe(call.target)}")
    logits = shape_str(call.input.shape)
    return Finding(
        f"torch rejects {', '.join(parts)} (logits {logits}): {reason.rstrip('.')}.",
        f"pass (N, H) hidden states, a (V, H) linear_weight and a (N,) int64 target in [0, V), "
        f"or probabilities of the logits' shape {logits}",
        linear_evidence(call),
    )
