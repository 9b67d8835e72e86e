"""CE1xx: shape and layout. Structure rules read shapes, dtypes and devices only."""

from __future__ import annotations

import dataclasses

import torch

from ...._call import FLOAT_DTYPES, dtype_name, shape_str
from ....rules._common import not_dense
from ....rules._context import Context, call_evidence, tensor_evidence
from ....rules._registry import Finding, rule
from ..call import Call, looks_class_dim_last
from ..contract import torch_rejection, weight_grad_reason, weight_shape_ok


def _index_call(call: Call) -> bool:
    return not call.probability_targets


def expected_target_shape(call: Call) -> tuple[int, ...]:
    """The index-target shape torch wants for this input: (N, d1, ...), or () for (C,) input."""
    x = call.input
    if x.dim() == 1:
        return ()
    return (x.shape[0], *x.shape[2:])


def _squeezable_dims(t: torch.Tensor, expected: tuple[int, ...]) -> list[int] | None:
    """The singleton dims of `t` whose removal leaves `expected`, or None."""
    extra = t.dim() - len(expected)
    if extra <= 0:
        return None
    for dims in _singleton_choices(t, extra):
        kept = [s for i, s in enumerate(t.shape) if i not in dims]
        if tuple(kept) == expected:
            return dims
    return None


def _singleton_choices(t: torch.Tensor, count: int) -> list[list[int]]:
    ones = [i for i, s in enumerate(t.shape) if s == 1]
    if count == 1:
        return [[i] for i in ones]
    return [ones[-count:]] if len(ones) >= count else []


def _squeeze_code(name: str, dims: list[int]) -> str:
    if len(dims) == 1:
        return f"{name}.squeeze({dims[0]})"
    return f"{name}.squeeze({tuple(dims)})"


# ---------------------------------------------------------------------------------------------


@rule(
    "CE101",
    "batch-size-mismatch",
    "error",
    "structure",
    "input and target disagree on the batch size N",
)
def batch_size_mismatch(ctx: Context) -> Finding | None:
    """Input and target have different batch sizes (dim 0).

    ## What it does
    Fires when the logits are (N, C, ...) and the class-index target's first dim is not N.

    ## Why is this bad?
    torch raises "Expected input batch_size (N) to match target batch_size (M)". It usually
    means the two come from different batches, a model that drops or adds samples, or a last
    batch that is shorter on one side only.

    ## Example
    ```python
    F.cross_entropy(torch.randn(32, 10), torch.randint(0, 10, (31,)))
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target)  # both from the same batch: (32, 10) and (32,)
    ```
    """
    call = ctx.call
    x, t = call.input, call.target
    if ctx.rejection is None or not _index_call(call) or x.dim() < 2 or t.dim() == 0:
        return None
    if t.shape[0] == x.shape[0]:
        return None
    if _explained_by_reshape(call):
        return None
    return Finding(
        f"input has batch size {x.shape[0]} (shape {shape_str(x.shape)}) but target has "
        f"{t.shape[0]} (shape {shape_str(t.shape)}).",
        f"pass the target of the same batch: shapes {shape_str(x.shape)} and "
        f"{shape_str(expected_target_shape(call))}; if one side is sliced or the last batch is "
        "short, slice both the same way (or DataLoader(..., drop_last=True))",
        call_evidence(call),
    )


def _explained_by_reshape(call: Call) -> bool:
    """A flattened/permuted layout mistake that other CE1xx rules name more precisely."""
    return (
        looks_class_dim_last(call)
        or _flattened_logits_target(call)
        or _input_extra_dim(call) is not None
    )


@rule(
    "CE102", "class-dim-last", "error", "structure", "classes are in the last dim instead of dim 1"
)
def class_dim_last(ctx: Context) -> Finding | None:
    """The logits keep their classes in the last dim, as (B, T, C) or (N, H, W, C).

    ## What it does
    Fires when the logits are (B, T, C) or (N, H, W, C) and the target is (B, T) or (N, H, W):
    the target matches every dim of the logits except the last.

    ## Why is this bad?
    `cross_entropy` reads classes from dim 1. With (B, T, C) logits torch expects a (B, C)
    target and raises "Expected target size ...". Transformers and channels-last models produce
    exactly this layout.

    ## Example
    ```python
    logits = torch.randn(8, 128, 32000)          # (B, T, C) from a language model
    F.cross_entropy(logits, torch.randint(0, 32000, (8, 128)))
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits.transpose(1, 2), target)                  # (B, C, T)
    F.cross_entropy(logits.reshape(-1, 32000), target.reshape(-1))   # or flatten both
    ```
    """
    call = ctx.call
    if ctx.rejection is None or not looks_class_dim_last(call):
        return None
    x = call.input
    n_classes = x.shape[-1]
    if x.dim() == 3:
        move = "logits.transpose(1, 2)"
    elif x.dim() == 4:
        move = "logits.permute(0, 3, 1, 2)"
    else:
        move = "logits.movedim(-1, 1)"
    return Finding(
        f"input {shape_str(x.shape)} has the target's shape {shape_str(call.target.shape)} in "
        f"its leading dims, so its {n_classes} classes are in the last dim, but cross_entropy "
        "reads classes from dim 1.",
        f"F.cross_entropy({move}, target)  # or: F.cross_entropy(logits.reshape(-1, {n_classes}), "
        "target.reshape(-1))",
        call_evidence(call),
    )


def _flattened_logits_target(call: Call) -> bool:
    """(B*T, C) logits with a (B, T) target: the logits were flattened and the target was not."""
    x, t = call.input, call.target
    return (
        x.dim() == 2 and t.dim() >= 2 and t.numel() == x.shape[0] and not call.probability_targets
    )


@rule(
    "CE103",
    "target-extra-dim",
    "error",
    "structure",
    "the target has a stray dim: (N, 1) or (B, T) for flat logits",
)
def target_extra_dim(ctx: Context) -> Finding | None:
    """The class-index target has one dim too many.

    ## What it does
    Fires on (N, 1) targets for (N, C) logits, (N, 1, H, W) masks for (N, C, H, W) logits, and
    (B, T) targets against logits already flattened to (B*T, C).

    ## Why is this bad?
    torch raises "0D or 1D target tensor expected, multi-target not supported" or "only batches
    of spatial targets supported". Such targets come from `labels.unsqueeze(1)`, a
    `ToTensor()`-converted mask with its channel dim, or flattening only the logits.

    ## Example
    ```python
    F.cross_entropy(torch.randn(32, 10), torch.randint(0, 10, (32, 1)))
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target.squeeze(1))
    ```
    """
    call = ctx.call
    if ctx.rejection is None or not _index_call(call) or call.input.dim() == 0:
        return None
    t = call.target
    expected = expected_target_shape(call)
    dims = _squeezable_dims(t, expected)
    if dims is not None:
        fix = f"F.cross_entropy(logits, {_squeeze_code('target', dims)})"
    elif _flattened_logits_target(call):
        fix = "F.cross_entropy(logits, target.reshape(-1))"
    else:
        return None
    return Finding(
        f"target {shape_str(t.shape)} has more dims than the {shape_str(expected)} class-index "
        f"target that input {shape_str(call.input.shape)} needs.",
        fix,
        call_evidence(call),
    )


def _input_extra_dim(call: Call) -> int | None:
    """A singleton dim of the logits whose removal makes the shapes agree, or None."""
    x, t = call.input, call.target
    if call.probability_targets or x.dim() < t.dim() + 2:
        return None
    for dim in range(1, x.dim()):
        if x.shape[dim] != 1:
            continue
        shape = [s for i, s in enumerate(x.shape) if i != dim]
        if len(shape) >= 2 and shape[1] > 1 and (shape[0], *shape[2:]) == tuple(t.shape):
            return dim
    return None


@rule(
    "CE104",
    "input-extra-dim",
    "error",
    "structure",
    "the logits have a stray singleton dim, e.g. (N, 1, C)",
)
def input_extra_dim(ctx: Context) -> Finding | None:
    """The logits carry a stray singleton dim.

    ## What it does
    Fires when removing one size-1 dim of the logits, e.g. (N, 1, C), would make them match the
    target.

    ## Why is this bad?
    torch reads dim 1 as the class dim, so (N, 1, C) logits look like one class over C
    positions and torch raises a size mismatch. It usually comes from `unsqueeze(1)` or a
    sequence model run on sequences of length 1.

    ## Example
    ```python
    F.cross_entropy(torch.randn(32, 1, 10), torch.randint(0, 10, (32,)))
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits.squeeze(1), target)
    ```
    """
    call = ctx.call
    dim = _input_extra_dim(call) if ctx.rejection is not None else None
    if dim is None:
        return None
    return Finding(
        f"input {shape_str(call.input.shape)} has a size-1 dim {dim} that does not match target "
        f"{shape_str(call.target.shape)}.",
        f"F.cross_entropy(logits.squeeze({dim}), target)",
        call_evidence(call),
    )


@rule(
    "CE105", "shape-mismatch", "error", "final", "torch rejects the shapes or dtypes in another way"
)
def shape_mismatch(ctx: Context) -> Finding | None:
    """Any other combination of shapes and dtypes that torch rejects.

    ## What it does
    The safety net: fires when torch would refuse the call and no more specific rule explains
    why. It states both shapes and what torch expects.

    ## Why is this bad?
    `cross_entropy` takes (N, C) or (N, C, d1, ...) logits with a (N) / (N, d1, ...) Long target
    of class indices, or a float target of the logits' exact shape holding probabilities.
    Anything else raises.

    ## Example
    ```python
    F.cross_entropy(torch.randn(4, 3, 5), torch.randint(0, 3, (4, 6)))
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target)  # logits (4, 3, 5) with a (4, 5) target
    ```
    """
    call = ctx.call
    if ctx.has_error():
        return None
    reason = ctx.rejection
    if reason is None:
        return None
    x, t = call.input, call.target
    if not isinstance(x, torch.Tensor) or not isinstance(t, torch.Tensor) or x.dim() == 0:
        wanted = "(N, C) or (N, C, d1, ...) float logits"
        return Finding(f"torch rejects this call: {reason}.", f"pass {wanted}", [])
    if reason == weight_grad_reason(call):
        return Finding(
            f"weight requires grad: torch does not differentiate the loss with respect to class "
            f"weights of class-index targets, and raises: {reason}",
            "F.cross_entropy(logits, target, weight=weight.detach())  # or keep the weights in a "
            "buffer: module.register_buffer('class_weight', weight)",
            [tensor_evidence("weight", call.weight), *call_evidence(call)],
        )
    expected = expected_target_shape(call)
    return Finding(
        f"torch rejects input {shape_str(x.shape)} {dtype_name(x.dtype)} with target "
        f"{shape_str(t.shape)} {dtype_name(t.dtype)}: {reason}.",
        f"pass a {shape_str(expected)} int64 target of class indices, or a float target of shape "
        f"{shape_str(x.shape)} holding probabilities",
        call_evidence(call),
    )


@rule(
    "CE106",
    "binary-logits",
    "error",
    "values",
    "1-D logits with 0/1 targets: one sample, not N binary ones",
)
def binary_logits(ctx: Context) -> Finding | None:
    """1-D logits with a same-length 0/1 target: a binary problem sent to cross_entropy.

    ## What it does
    Fires when the input is (N,) and the target is (N,) holding only 0s and 1s (not exactly one
    1).

    ## Why is this bad?
    For 1-D input, torch reads a same-shaped float target as the class probabilities of ONE
    sample with N classes: the loss is computed, silently, and is meaningless. With a Long
    target torch raises instead. Binary classification with one logit per sample needs
    `BCEWithLogitsLoss`.

    ## Example
    ```python
    F.cross_entropy(torch.randn(16), torch.randint(0, 2, (16,)).float())
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, target.float())
    ```
    """
    call, stats = ctx.call, ctx.stats
    x, t = call.input, call.target
    same = stats.same_shape_target if stats else None
    if x.dim() != 1 or t.dim() != 1 or x.shape[0] < 2 or same is None:
        return None
    if same.sample_binary_rows != 1 or same.sample_ones[0] == 1:
        return None
    return Finding(
        f"input {shape_str(x.shape)} with a {shape_str(t.shape)} target of 0s and 1s "
        f"({same.sample_ones[0]} ones) is read by torch as ONE sample with {x.shape[0]} classes.",
        "F.binary_cross_entropy_with_logits(logits, target.float())  # or nn.BCEWithLogitsLoss()",
        call_evidence(call),
    )


@rule("CE107", "single-class-output", "error", "structure", "C == 1: the loss is always 0")
def single_class_output(ctx: Context) -> Finding | None:
    """The logits have a single class.

    ## What it does
    Fires when the class dim of the logits has size 1, as from `nn.Linear(features, 1)`.

    ## Why is this bad?
    The softmax over one class is always 1, so the loss is always 0 and nothing is learned;
    any target other than 0 is also out of range.

    ## Example
    ```python
    F.cross_entropy(torch.randn(32, 1), torch.randint(0, 2, (32,)))
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits.squeeze(1), target.float())
    # or give the last layer two outputs: nn.Linear(in_features, 2)
    ```
    """
    call = ctx.call
    if call.input.dim() == 0 or call.n_classes != 1 or _input_extra_dim(call) is not None:
        return None
    squeeze = "logits.squeeze(1)" if call.input.dim() >= 2 else "logits"
    return Finding(
        f"input {shape_str(call.input.shape)} has a single class (dim {call.class_dim} has size "
        "1): softmax over one class is 1, so the loss is always 0.",
        f"F.binary_cross_entropy_with_logits({squeeze}, target.float())  "
        "# or make the last layer output 2 classes",
        call_evidence(call),
    )


@rule(
    "CE108",
    "arguments-swapped",
    "error",
    "structure",
    "integer 'input' and a float target shaped like logits",
)
def arguments_swapped(ctx: Context) -> Finding | None:
    """The logits and the target were passed in the wrong order.

    ## What it does
    Fires when the input is an integer tensor and the target is a float tensor, and the call
    would be valid with the two swapped.

    ## Why is this bad?
    `cross_entropy(input, target)` takes the logits first. Swapped, torch raises about dtypes
    or shapes that do not point at the real problem.

    ## Example
    ```python
    F.cross_entropy(torch.randint(0, 10, (32,)), torch.randn(32, 10))
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target)
    ```
    """
    call = ctx.call
    x, t = call.input, call.target
    if x.dtype in FLOAT_DTYPES or t.dtype not in FLOAT_DTYPES or x.dtype.is_floating_point:
        return None
    swapped = dataclasses.replace(call, input=t, target=x)  # every other field kept
    if torch_rejection(swapped) is not None:
        return None
    return Finding(
        f"input is {dtype_name(x.dtype)} {shape_str(x.shape)} and target is float "
        f"{shape_str(t.shape)}: the logits were passed as the target.",
        "F.cross_entropy(logits, target)  # logits first, class indices second",
        call_evidence(call),
    )


@rule("CE109", "input-not-float", "error", "structure", "the logits are not a float tensor")
def input_not_float(ctx: Context) -> Finding | None:
    """The input is not floating point: predictions, not logits.

    ## What it does
    Fires when the input's dtype is an integer, bool, complex, or a float type that
    `log_softmax` does not support (float8).

    ## Why is this bad?
    torch raises "log_softmax ... not implemented for 'Long'". Integer input usually means
    `logits.argmax(1)` (predictions) was passed instead of the raw model output.

    ## Example
    ```python
    F.cross_entropy(model(x).argmax(1), target)
    ```

    ## Use instead
    ```python
    F.cross_entropy(model(x), target)  # the raw float logits
    ```
    """
    call = ctx.call
    x = call.input
    if x.dtype in FLOAT_DTYPES or ctx.fired("arguments-swapped"):
        return None
    if x.dtype.is_floating_point:
        fix = "F.cross_entropy(logits.float(), target)"
    else:
        fix = "F.cross_entropy(model_output, target)  # pass the raw float logits, before argmax"
    return Finding(
        f"input {shape_str(x.shape)} is {dtype_name(x.dtype)}; cross_entropy needs float logits "
        "(float32, bfloat16, float16 or float64).",
        fix,
        call_evidence(call),
    )


@rule("CE110", "not-a-tensor", "error", "arguments", "input or target is not a dense torch.Tensor")
def not_a_tensor(ctx: Context) -> Finding | None:
    """An argument is not a dense `torch.Tensor`.

    ## What it does
    Fires when the input or the target is a list, a NumPy array, a scalar, or a sparse or
    nested tensor.

    ## Why is this bad?
    `cross_entropy` takes dense tensors only and raises a TypeError on anything else.

    ## Example
    ```python
    F.cross_entropy(logits, [0, 1, 2])
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, torch.as_tensor([0, 1, 2], device=logits.device))
    ```
    """
    call = ctx.call
    bad = not_dense({"input": call.input, "target": call.target})
    if not bad:
        return None
    return Finding(
        "; ".join(bad) + ": cross_entropy takes dense torch tensors.",
        "torch.as_tensor(value)  # or value.to_dense()",
    )


@rule(
    "CE111",
    "device-mismatch",
    "error",
    "structure",
    "input, target and weight are on different devices",
)
def device_mismatch(ctx: Context) -> Finding | None:
    """The tensors of one call live on different devices.

    ## What it does
    Fires when input, target or weight are not all on the same device.

    ## Why is this bad?
    torch raises "Expected all tensors to be on the same device".

    ## Example
    ```python
    F.cross_entropy(logits.cuda(), target)  # target still on the CPU
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target.to(logits.device))
    ```
    """
    call = ctx.call
    places = {
        role: t.device
        for role, t in (("input", call.input), ("target", call.target), ("weight", call.weight))
        if isinstance(t, torch.Tensor)
    }
    if len(set(places.values())) <= 1:
        return None
    where = ", ".join(f"{role} on {device}" for role, device in places.items())
    moves = [
        f"{role}.to(logits.device)"
        for role in places
        if role != "input" and places[role] != places["input"]
    ]
    return Finding(f"{where}: all must be on one device.", "; ".join(moves), call_evidence(call))


FUSED_LINEAR_CALL = "fused-linear-call"


def looks_fused(call: Call) -> bool:
    """Hidden states (N, H) or (B, T, H) and a 2-D "weight" (V, H) whose last dim is theirs:
    a fused linear cross-entropy's classifier, read as cross-entropy's class weights."""
    x, w = call.input, call.weight
    return (
        isinstance(w, torch.Tensor)
        and w.dim() == 2
        and x.dim() in (2, 3)
        and x.dtype in FLOAT_DTYPES
        and w.shape[1] == x.shape[-1] > 1
        and w.shape[0] not in (x.shape[-1], 0)
        and not weight_shape_ok(call)  # a K-dim call whose weight torch reads by numel: legal
    )


@rule(
    "CE112",
    FUSED_LINEAR_CALL,
    "error",
    "structure",
    "a fused linear cross-entropy (hidden states, classifier) checked as cross-entropy",
)
def fused_linear_call(ctx: Context) -> Finding | None:
    """Hidden states and a classifier matrix checked as logits and class weights.

    ## What it does
    Fires when the "weight" of a cross-entropy call is a (V, H) matrix whose last dim is the
    input's last dim: the input is hidden states and the weight is the classifier of a fused
    linear cross-entropy (`F.linear_cross_entropy`, Liger's or cut-cross-entropy's fused loss,
    a loss function of your own that takes the LM head's weight). The target rules and the
    class-weight rule would otherwise explain the call wrongly (labels "out of range" of H
    classes, a weight of the wrong shape); they stand down.

    ## Why is this bad?
    Checked as cross-entropy, the call means nothing: its classes are the vocabulary, V, not the
    hidden size. Checked as what it is, the labels are compared with V, and the classifier's
    shape and dtype with the hidden states'.

    ## Example
    ```python
    cediag.wrap(my_fused_loss)(hidden, lm_head.weight, labels)   # def my_fused_loss(hidden, weight, labels)
    ```

    ## Use instead
    ```python
    cediag.wrap(my_fused_loss, loss="linear_cross_entropy", option_args={"linear_weight": "weight"})
    cediag.check(hidden, labels, loss="linear_cross_entropy", linear_weight=lm_head.weight)
    ```
    """
    call = ctx.call
    if not looks_fused(call):
        return None
    x, w = call.input, call.weight
    ctx.values_meaningless = "the input is hidden states, not logits (fused-linear-call)"
    return Finding(
        f"input {shape_str(x.shape)} and weight {shape_str(w.shape)} share their last dim: "
        f"hidden states and the classifier of a fused linear cross-entropy over "
        f"{w.shape[0]} classes, not logits over {x.shape[-1]} classes and class weights.",
        'check it as one: loss="linear_cross_entropy" with the classifier as linear_weight, '
        'e.g. cediag.wrap(loss_fn, loss="linear_cross_entropy", '
        'option_args={"linear_weight": "weight"}) or cediag.check(hidden, target, '
        'loss="linear_cross_entropy", linear_weight=weight)',
        [tensor_evidence("input", x), tensor_evidence("weight", w)],
    )
