"""BCE4xx: the loss options (weight, pos_weight, reduction)."""

from __future__ import annotations

import torch

from ...._call import REDUCTIONS, dtype_name, option_text, shape_str, torch_reduction
from ...._report import OptionEvidence
from ....rules._context import Context, tensor_evidence
from ....rules._registry import Finding, rule
from ..call import Call
from ..contract import broadcasts_into, grad_rejection, is_numeric, mutually_broadcastable


def _layout_fix(call: Call, role: str, w: torch.Tensor) -> tuple[str, str] | None:
    """(what went wrong, the fix) for the two layouts people mean and broadcasting misreads:
    a per-sample (N,) tensor against (N, C, ...) input, and a per-class (C,) tensor against
    (N, C, d1, ...) input (it lines up with the last dim)."""
    x = call.input
    if w.dim() != 1 or x.dim() < 2:
        return None
    n, c, last = x.shape[0], x.shape[1], x.shape[-1]
    size = w.shape[0]
    if x.dim() >= 3 and size == c and c != last:
        ones = ", 1" * (x.dim() - 2)
        return (
            f"{role} ({c},) has one entry per class, but broadcasting lines it up with the last "
            f"dim of input {shape_str(x.shape)} (size {last}), not with the class dim 1",
            f"{role}={role}.view({c}{ones})  # ({c}{ones}): one entry per class, along dim 1",
        )
    if size == n and n != last:
        if role == "pos_weight":
            return (
                f"pos_weight ({n},) has one entry per sample (the batch size), but pos_weight is "
                f"per class: it broadcasts along the last dim, which has {last} entries",
                f"pos_weight=torch.full(({last},), ratio)  # per class, e.g. "
                "(target == 0).sum(0) / (target == 1).sum(0).clamp(min=1); a per-sample weight "
                "goes in weight=w.unsqueeze(1)",
            )
        return (
            f"weight ({n},) has one entry per sample (the batch size), but broadcasting lines it "
            f"up with the last dim of input {shape_str(x.shape)} (size {last})",
            f"weight=weight.view({n}{', 1' * (x.dim() - 1)})  # one weight per sample",
        )
    return None


def _shape_finding(call: Call, role: str) -> Finding | None:
    w, x = getattr(call, role), call.input
    if not isinstance(w, torch.Tensor) or not isinstance(x, torch.Tensor):
        return None
    if tuple(call.target.shape) != tuple(x.shape):
        return None  # the shape rules speak first; the broadcast is judged against equal shapes
    if broadcasts_into(w.shape, x.shape):
        return None
    layout = _layout_fix(call, role, w)
    if layout is not None:
        why, fix = layout
    else:
        grows = mutually_broadcastable(w.shape, x.shape)
        why = (
            f"{role} {shape_str(w.shape)} has more dims or larger sizes than input "
            f"{shape_str(x.shape)}, and the loss never grows its output"
            if grows
            else f"{role} {shape_str(w.shape)} does not broadcast to input {shape_str(x.shape)}"
        )
        if role == "pos_weight" and x.dim() >= 1:
            fix = f"pos_weight of shape ({x.shape[-1]},)  # one entry per class, the last dim"
        else:
            fix = f"{role} of a shape that broadcasts to {shape_str(x.shape)}, e.g. {shape_str(x.shape[-1:])}"
    return Finding(
        f"{why}: torch raises.",
        fix,
        [tensor_evidence(role, w), tensor_evidence("input", x)],
    )


# ---------------------------------------------------------------------------------------------


@rule("BCE401", "bce-invalid-reduction", "error", "structure", "reduction is not mean, sum or none")
def invalid_reduction(ctx: Context) -> Finding | None:
    """`reduction` is not one of "mean", "sum", "none".

    ## What it does
    Fires when `reduction` is anything torch does not read as "mean", "sum" or "none" (the
    deprecated "elementwise_mean" still counts as "mean").

    ## Why is this bad?
    torch raises "... is not a valid value for reduction".

    ## Example
    ```python
    nn.BCEWithLogitsLoss(reduction="avg")
    ```

    ## Use instead
    ```python
    nn.BCEWithLogitsLoss(reduction="mean")
    ```
    """
    call = ctx.call
    if torch_reduction(call.reduction) is not None:
        return None
    text = option_text(call.reduction)
    return Finding(
        f"reduction={text} is not one of {', '.join(map(repr, REDUCTIONS))}: torch raises.",
        f'{call.function}({call.input_name}, target, reduction="mean")  # or "sum", "none"',
        [OptionEvidence(name="reduction", value=text)],
    )


@rule(
    "BCE402",
    "bce-pos-weight-shape",
    "error",
    "structure",
    "pos_weight does not broadcast to the target, classes along the last dim",
)
def pos_weight_shape(ctx: Context) -> Finding | None:
    """`pos_weight` does not broadcast to the target's shape.

    ## What it does
    Fires when `pos_weight` does not broadcast to the input's shape (torch lines it up with the
    last dims), naming the two layouts that usually cause it: a per-sample (N,) pos_weight where
    a per-class (C,) one belongs, and a (C,) pos_weight for (N, C, H, W) logits, which lines up
    with W.

    ## Why is this bad?
    torch raises "The size of tensor a (N) must match the size of tensor b (C)". pos_weight is
    the weight of the positive term *per class*: the ratio of negatives to positives of each
    label.

    ## Example
    ```python
    nn.BCEWithLogitsLoss(pos_weight=torch.full((32,), 3.0))(torch.randn(32, 5), target)
    ```

    ## Use instead
    ```python
    nn.BCEWithLogitsLoss(pos_weight=torch.full((5,), 3.0))       # one per class
    nn.BCEWithLogitsLoss(pos_weight=pw.view(5, 1, 1))           # (N, 5, H, W) logits
    ```
    """
    call = ctx.call
    if call.loss != "bce_with_logits":
        return None
    return _shape_finding(call, "pos_weight")


@rule(
    "BCE403",
    "bce-weight-shape",
    "error",
    "structure",
    "weight does not broadcast to the input's shape",
)
def weight_shape(ctx: Context) -> Finding | None:
    """`weight` does not broadcast to the input's shape.

    ## What it does
    Fires when `weight` does not broadcast to the input's shape, naming the usual cause: a
    per-sample (N,) weight (as BCELoss's documentation describes it), which broadcasting lines
    up with the *last* dim of (N, C) input, not with the batch.

    ## Why is this bad?
    torch raises "The size of tensor a (C) must match the size of tensor b (N)". When N happens
    to equal C, it runs and weighs classes instead of samples.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(torch.randn(32, 5), target, weight=sample_weight)  # (32,)
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, target, weight=sample_weight.unsqueeze(1))
    ```
    """
    return _shape_finding(ctx.call, "weight")


@rule(
    "BCE404",
    "bce-pos-weight-with-bce",
    "error",
    "structure",
    "pos_weight given to binary_cross_entropy, which has none",
)
def pos_weight_with_bce(ctx: Context) -> Finding | None:
    """`pos_weight` given to `binary_cross_entropy`.

    ## What it does
    Fires when a check of `F.binary_cross_entropy` / `nn.BCELoss` gets `pos_weight`.

    ## Why is this bad?
    Only `binary_cross_entropy_with_logits` has a `pos_weight`; `F.binary_cross_entropy` raises
    a TypeError, and `nn.BCELoss` has no such argument.

    ## Example
    ```python
    F.binary_cross_entropy(torch.sigmoid(logits), target, pos_weight=pw)
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)  # raw logits
    ```
    """
    call = ctx.call
    if call.loss != "bce" or call.pos_weight is None:
        return None
    return Finding(
        "pos_weight was given to F.binary_cross_entropy, which has no pos_weight argument.",
        "F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)  # pass the "
        "raw logits, before the sigmoid",
        [OptionEvidence(name="pos_weight", value=option_text(call.pos_weight))],
    )


@rule(
    "BCE405",
    "bce-weight-not-tensor",
    "error",
    "structure",
    "weight or pos_weight is not a tensor",
)
def weight_not_tensor(ctx: Context) -> Finding | None:
    """`weight` or `pos_weight` is not a tensor.

    ## What it does
    Fires when `weight` or `pos_weight` is a list, a NumPy array or a number.

    ## Why is this bad?
    torch raises "argument 'pos_weight' must be Tensor, not list".

    ## Example
    ```python
    nn.BCEWithLogitsLoss(pos_weight=[1.0, 3.0, 10.0])
    ```

    ## Use instead
    ```python
    nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 3.0, 10.0]))
    ```
    """
    call = ctx.call
    bad = [
        role
        for role in ("weight", "pos_weight")
        if getattr(call, role) is not None and not isinstance(getattr(call, role), torch.Tensor)
    ]
    if not bad or (bad == ["pos_weight"] and call.loss == "bce"):
        return None
    role = bad[0]
    kind = type(getattr(call, role)).__name__
    return Finding(
        f"{role} is a {kind}; the loss takes a tensor (or None).",
        f"{role}=torch.as_tensor({role}, dtype=torch.float32, device={call.input_name}.device)",
        [OptionEvidence(name=role, value=option_text(getattr(call, role)))],
    )


@rule(
    "BCE406",
    "bce-weight-requires-grad",
    "error",
    "structure",
    "weight or pos_weight requires grad",
)
def weight_requires_grad(ctx: Context) -> Finding | None:
    """`weight` or `pos_weight` requires grad.

    ## What it does
    Fires when `weight` or `pos_weight` requires grad while grad mode is on, as when it is an
    `nn.Parameter` or computed from one.

    ## Why is this bad?
    torch does not differentiate the loss with respect to them, and raises "The function
    'binary_cross_entropy_with_logits' is not differentiable with respect to argument
    'pos_weight'".

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(logits, target, pos_weight=nn.Parameter(torch.ones(5)))
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight.detach())
    ```
    """
    call = ctx.call
    reason = grad_rejection(call)
    if reason is None or (call.loss == "bce" and not _grad(call.weight)):
        return None
    role = "weight" if _grad(call.weight) else "pos_weight"
    return Finding(
        f"{role} requires grad: torch does not differentiate the loss with respect to it.",
        f"{call.function}({call.input_name}, target, {role}={role}.detach())  # or keep it "
        f"in a buffer: module.register_buffer('{role}', {role})",
        [tensor_evidence(role, getattr(call, role))],
    )


def _grad(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def _dtype_refused(call: Call, role: str) -> bool:
    w = getattr(call, role)
    if not isinstance(w, torch.Tensor) or (role == "pos_weight" and call.loss == "bce"):
        return False
    if role == "pos_weight":
        return w.dtype == torch.bool or not is_numeric(w.dtype)
    target_complex = isinstance(call.target, torch.Tensor) and call.target.dtype.is_complex
    logits_loss = call.loss == "bce_with_logits"
    return not (is_numeric(w.dtype) or (w.dtype.is_complex and target_complex and logits_loss))


@rule(
    "BCE407",
    "bce-weight-dtype",
    "error",
    "structure",
    "weight or pos_weight of a dtype torch refuses (bool pos_weight, complex, float8)",
)
def weight_dtype(ctx: Context) -> Finding | None:
    """`weight` or `pos_weight` has a dtype the loss cannot use.

    ## What it does
    Fires when `pos_weight` is bool, or `weight` / `pos_weight` is complex or a float8 type.

    ## Why is this bad?
    torch computes `pos_weight - 1`, which it refuses for bool ("Subtraction, the `-` operator,
    with a bool tensor is not supported"), and cannot multiply a float loss by a complex or
    float8 weight in place. A bool pos_weight usually comes from a mask (`counts > 0`) where a
    ratio was meant.

    ## Example
    ```python
    nn.BCEWithLogitsLoss(pos_weight=positives > 0)
    ```

    ## Use instead
    ```python
    nn.BCEWithLogitsLoss(pos_weight=(negatives / positives.clamp(min=1)).float())
    ```
    """
    call = ctx.call
    role = next((r for r in ("weight", "pos_weight") if _dtype_refused(call, r)), None)
    if role is None:
        return None
    w = getattr(call, role)
    return Finding(
        f"{role} is {dtype_name(w.dtype)}; the loss needs a real float (or integer) {role}"
        + (": it computes pos_weight - 1, which bool refuses." if w.dtype == torch.bool else "."),
        f"{call.function}({call.input_name}, target, {role}={role}.float())",
        [tensor_evidence(role, w)],
    )
