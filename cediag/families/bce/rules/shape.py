"""BCE1xx: shape and layout. Structure rules read shapes, dtypes and devices only."""

from __future__ import annotations

import torch

from ...._call import FLOAT_DTYPES, dtype_name, shape_str
from ....rules._common import not_dense
from ....rules._context import Context, call_evidence
from ....rules._registry import Finding, rule
from ..call import Call
from ..contract import device_rejection


def _shapes_differ(call: Call) -> bool:
    return tuple(call.input.shape) != tuple(call.target.shape)


def singleton_difference(call: Call) -> tuple[str, int] | None:
    """("input" | "target", dim) when the two shapes differ by one size-1 dim of that side."""
    x, t = tuple(call.input.shape), tuple(call.target.shape)
    for side, longer, shorter in (("input", x, t), ("target", t, x)):
        if len(longer) != len(shorter) + 1:
            continue
        for dim, size in enumerate(longer):
            if size == 1 and longer[:dim] + longer[dim + 1 :] == shorter:
                return side, dim
    return None


def class_index_target(call: Call) -> bool:
    """Integer class indices (N,) / (N, d1, ...) for multi-label (N, C, ...) logits."""
    x, t = call.input, call.target
    if x.dim() < 2 or x.shape[1] < 2 or t.dtype in FLOAT_DTYPES or t.dtype == torch.bool:
        return False
    if t.dtype.is_floating_point or t.dtype.is_complex:
        return False
    return tuple(t.shape) == (x.shape[0], *x.shape[2:])


def _permutation(call: Call) -> list[int] | None:
    """The dims of the target that give the input's shape, when its sizes are all distinct."""
    x, t = tuple(call.input.shape), tuple(call.target.shape)
    if len(set(x)) != len(x) or sorted(x) != sorted(t) or x == t:
        return None
    return [t.index(size) for size in x]


# ---------------------------------------------------------------------------------------------


@rule("BCE101", "bce-not-a-tensor", "error", "arguments", "input or target is not a dense tensor")
def not_a_tensor(ctx: Context) -> Finding | None:
    """An argument is not a dense `torch.Tensor`.

    ## What it does
    Fires when the input or the target is a list, a NumPy array, a scalar, or a sparse or
    nested tensor.

    ## Why is this bad?
    Both losses take dense tensors only: torch raises an AttributeError or a TypeError (or
    NotImplementedError for sparse tensors) on anything else.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(logits, [0.0, 1.0, 1.0])
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0, 1.0]))
    ```
    """
    call = ctx.call
    bad = not_dense({"input": call.input, "target": call.target})
    if not bad:
        return None
    return Finding(
        "; ".join(bad) + f": {call.function} takes dense torch tensors.",
        f"{call.function}({call.input_name}, torch.as_tensor(target, dtype=torch.float32))  "
        "# or value.to_dense()",
    )


@rule(
    "BCE102",
    "bce-shape-mismatch",
    "error",
    "structure",
    "input and target do not have the same shape",
)
def shape_mismatch(ctx: Context) -> Finding | None:
    """Input and target have different shapes.

    ## What it does
    Fires when the target's shape is not the input's, and no more precise rule
    (`bce-singleton-dim`, `bce-class-index-target`) names the mistake.

    ## Why is this bad?
    Binary cross-entropy compares input and target element by element, so torch requires equal
    shapes and raises "Target size (...) must be the same as input size (...)". A permuted or
    flattened target, or one from another batch, is the usual cause.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(torch.randn(8, 5, 32, 32), masks)  # masks (8, 32, 32, 5)
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, masks.permute(0, 3, 1, 2))
    ```
    """
    call = ctx.call
    if not _shapes_differ(call) or singleton_difference(call) or class_index_target(call):
        return None
    x, t = call.input, call.target
    head = f"{call.function}({call.input_name}, "
    if (order := _permutation(call)) is not None:
        fix = f"{head}target.permute{tuple(order)})"
        why = "the target holds the input's dims in another order"
    elif t.numel() == x.numel():
        fix = f"{head}target.reshape({call.input_name}.shape))"
        why = "they hold as many elements, in another layout"
    elif x.dim() >= 1 and t.dim() >= 1 and x.shape[0] != t.shape[0]:
        fix = (
            f"{head}target)  # both from the same batch: shapes {shape_str(x.shape)}; if one "
            "side is sliced or the last batch is short, slice both the same way"
        )
        why = f"their batch sizes differ ({x.shape[0]} and {t.shape[0]})"
    else:
        fix = f"{head}target)  # one target value per input element: shape {shape_str(x.shape)}"
        why = "each input element needs its own target"
    return Finding(
        f"input {shape_str(x.shape)} and target {shape_str(t.shape)} differ in shape ({why}); "
        f"{call.function} needs a target of exactly the input's shape.",
        fix,
        call_evidence(call),
    )


@rule(
    "BCE103",
    "bce-singleton-dim",
    "error",
    "structure",
    "input and target differ by a size-1 dim: (N, 1) against (N,)",
)
def singleton_dim(ctx: Context) -> Finding | None:
    """Input and target differ by one size-1 dim, as (N, 1) logits with an (N,) target.

    ## What it does
    Fires when removing one size-1 dim from the input or from the target makes their shapes
    equal: `nn.Linear(features, 1)` outputs (N, 1) while the labels are (N,), or the other way
    round.

    ## Why is this bad?
    torch raises "Target size ... must be the same as input size". Older versions broadcast the
    pair to (N, N) instead and trained on a loss that compares every sample with every label.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(torch.randn(32, 1), torch.randint(0, 2, (32,)).float())
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits.squeeze(1), target)   # or target.unsqueeze(1)
    ```
    """
    call = ctx.call
    found = singleton_difference(call)
    if found is None:
        return None
    side, dim = found
    name = call.input_name
    if side == "input":
        fix = (
            f"{call.function}({name}.squeeze({dim}), target)  "
            f"# or: {call.function}({name}, target.unsqueeze({dim}))"
        )
    else:
        fix = (
            f"{call.function}({name}, target.squeeze({dim}))  "
            f"# or: {call.function}({name}.unsqueeze({dim}), target)"
        )
    return Finding(
        f"input {shape_str(call.input.shape)} and target {shape_str(call.target.shape)} differ "
        f"only by the size-1 dim {dim} of the {side}: torch needs equal shapes.",
        fix,
        call_evidence(call),
    )


@rule(
    "BCE104",
    "bce-class-index-target",
    "error",
    "structure",
    "integer class indices (N,) given for multi-label (N, C) logits",
)
def class_index(ctx: Context) -> Finding | None:
    """Class indices given where binary cross-entropy wants one 0/1 target per class.

    ## What it does
    Fires when the logits are (N, C) or (N, C, d1, ...) and the target is an integer tensor of
    shape (N,) or (N, d1, ...): one class index per sample, as `cross_entropy` takes.

    ## Why is this bad?
    Binary cross-entropy scores every class on its own and needs a float target of the logits'
    shape: 1 where a class applies, 0 where it does not. torch raises on the shapes (and on the
    integer dtype).

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(torch.randn(32, 5), torch.randint(0, 5, (32,)))
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, F.one_hot(target, num_classes=5).float())
    F.cross_entropy(logits, target)  # if each sample has exactly one class
    ```
    """
    call = ctx.call
    if not class_index_target(call):
        return None
    x, t = call.input, call.target
    c = x.shape[1]
    hot = f"F.one_hot(target.long(), num_classes={c})"
    if x.dim() > 2:
        hot += ".movedim(-1, 1)"
    return Finding(
        f"target {shape_str(t.shape)} {dtype_name(t.dtype)} holds one class index per sample, but "
        f"input {shape_str(x.shape)} has {c} classes scored one by one: binary cross-entropy "
        f"needs a float target of shape {shape_str(x.shape)}.",
        f"{call.function}({call.input_name}, {hot}.float())  "
        f"# single-label? F.cross_entropy(logits, target)",
        call_evidence(call),
    )


@rule(
    "BCE105",
    "bce-device-mismatch",
    "error",
    "structure",
    "input, target, weight and pos_weight are on different devices",
)
def device_mismatch(ctx: Context) -> Finding | None:
    """The tensors of one call live on different devices.

    ## What it does
    Fires when input, target, weight or pos_weight are not all on the same device (a 0-d CPU
    weight is fine with `binary_cross_entropy_with_logits`: torch reads it as a number).

    ## Why is this bad?
    torch raises "Expected all tensors to be on the same device".

    ## Example
    ```python
    nn.BCEWithLogitsLoss(pos_weight=torch.ones(5))(logits.cuda(), target.cuda())
    ```

    ## Use instead
    ```python
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.ones(5)).to("cuda")  # moves pos_weight
    ```
    """
    call = ctx.call
    if device_rejection(call) is None:
        return None
    places = {
        role: value.device
        for role in ("input", "target", "weight", "pos_weight")
        if isinstance(value := getattr(call, role), torch.Tensor)
    }
    where = ", ".join(f"{role} on {device}" for role, device in places.items())
    moves = [
        f"{role}.to({call.input_name}.device)"
        for role, device in places.items()
        if role != "input" and device != places["input"]
    ]
    return Finding(f"{where}: all must be on one device.", "; ".join(moves), call_evidence(call))


@rule(
    "BCE106",
    "bce-input-not-float",
    "error",
    "structure",
    "the input is not a float tensor",
)
def input_not_float(ctx: Context) -> Finding | None:
    """The input is not a floating-point tensor.

    ## What it does
    Fires when the input's dtype is an integer, bool, complex, or a float type the loss does
    not compute in (float8).

    ## Why is this bad?
    torch raises ("log_sigmoid" / "binary_cross_entropy" not implemented for 'Long'). Integer
    input usually means thresholded predictions (`logits > 0`) or the labels passed first.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits((logits > 0).long(), target)
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, target)  # the raw float model output
    ```
    """
    call = ctx.call
    x, t = call.input, call.target
    if x.dtype in FLOAT_DTYPES:
        return None
    what = "raw float logits" if call.loss == "bce_with_logits" else "float probabilities"
    if x.dtype.is_floating_point:
        fix = f"{call.function}({call.input_name}.float(), target)"
    elif t.dtype in FLOAT_DTYPES and tuple(t.shape) == tuple(x.shape):
        fix = (
            f"{call.function}({call.input_name}, target)  # {call.input_name} first, the "
            "labels second: the two look swapped"
        )
    else:
        fix = f"{call.function}(model_output, target)  # the {what}, not thresholded predictions"
    return Finding(
        f"input {shape_str(x.shape)} is {dtype_name(x.dtype)}; {call.function} needs {what} "
        "(float32, bfloat16, float16 or float64).",
        fix,
        call_evidence(call),
    )


@rule(
    "BCE107",
    "bce-torch-rejects",
    "error",
    "final",
    "torch rejects the call in another way",
)
def torch_rejects(ctx: Context) -> Finding | None:
    """Any other combination of shapes, dtypes, devices or options that torch rejects.

    ## What it does
    The safety net: fires when torch would refuse the call and no more specific rule explains
    why. It carries torch's own reason.

    ## Why is this bad?
    The loss raises. `binary_cross_entropy_with_logits` takes float logits, a float target of
    the same shape, and a `weight` and `pos_weight` that broadcast to that shape;
    `binary_cross_entropy` takes input and target of one float dtype.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.ones(5) > 0)  # bool
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.ones(5))
    ```
    """
    call = ctx.call
    reason = ctx.rejection
    if reason is None or ctx.has_error():
        return None
    x, t = call.input, call.target
    return Finding(
        f"torch rejects input {shape_str(x.shape)} {dtype_name(x.dtype)} with target "
        f"{shape_str(t.shape)} {dtype_name(t.dtype)}: {reason}.",
        f"{call.function}({call.input_name}, target)  # float tensors of one shape, "
        f"{shape_str(x.shape)}, with weight / pos_weight that broadcast to it",
        call_evidence(call),
    )
