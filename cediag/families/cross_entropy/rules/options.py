"""CE4xx: the loss options (weight, label_smoothing, ignore_index, reduction)."""

from __future__ import annotations

import torch

from ...._call import (
    INT64_MAX,
    INT64_MIN,
    REDUCTIONS,
    dtype_name,
    option_text,
    shape_str,
    torch_float,
    torch_int,
    torch_reduction,
)
from ...._report import OptionEvidence
from ....rules._context import Context, tensor_evidence
from ....rules._registry import Finding, rule
from ..contract import weight_shape_ok


@rule("CE401", "weight-shape-mismatch", "error", "structure", "class weights are not a (C,) tensor")
def weight_shape_mismatch(ctx: Context) -> Finding | None:
    """Class weights that do not have one entry per class.

    ## What it does
    Fires when `weight` is not a 1-D tensor with exactly C entries.

    ## Why is this bad?
    torch raises "weight tensor should be defined either for all C classes or no classes".
    Weights computed from a label histogram miss classes absent from the data, or include the
    padding id.

    ## Example
    ```python
    nn.CrossEntropyLoss(weight=torch.ones(9))(torch.randn(4, 10), target)
    ```

    ## Use instead
    ```python
    counts = torch.bincount(labels, minlength=10)          # one entry per class
    nn.CrossEntropyLoss(weight=counts.sum() / (10 * counts.clamp(min=1)))
    ```
    """
    call = ctx.call
    w = call.weight
    if w is None or call.input.dim() == 0 or ctx.fired("fused-linear-call"):
        return None
    n = call.n_classes
    if not isinstance(w, torch.Tensor):
        return Finding(
            f"weight is a {type(w).__name__}; it must be a ({n},) float tensor.",
            f"weight=torch.as_tensor(weight, dtype=logits.dtype)  # shape ({n},)",
        )
    if weight_shape_ok(call):
        return None
    fix = (
        f"weight.reshape({n})"
        if w.numel() == n
        else f"a weight tensor of shape ({n},): one entry per class"
    )
    return Finding(
        f"weight has shape {shape_str(w.shape)} but input {shape_str(call.input.shape)} has {n} classes.",
        fix,
        [tensor_evidence("weight", w), tensor_evidence("input", call.input)],
    )


@rule(
    "CE402", "label-smoothing-out-of-range", "error", "structure", "label_smoothing outside [0, 1]"
)
def label_smoothing_out_of_range(ctx: Context) -> Finding | None:
    """label_smoothing outside [0, 1].

    ## What it does
    Fires when `label_smoothing` is negative, above 1, or NaN.

    ## Why is this bad?
    Above 1 torch raises. Negative values and NaN are silently treated as 0, so the smoothing the
    caller asked for never happens.

    ## Example
    ```python
    nn.CrossEntropyLoss(label_smoothing=10)     # meant 0.1
    ```

    ## Use instead
    ```python
    nn.CrossEntropyLoss(label_smoothing=0.1)
    ```
    """
    call = ctx.call
    value = torch_float(call.label_smoothing)
    if value is None:
        return None  # invalid-option says it
    if 0.0 <= value <= 1.0:
        return None
    if call.loss == "nll":
        return None
    consequence = "torch raises" if value > 1 else "torch silently ignores it"
    return Finding(
        f"label_smoothing={value} is outside [0, 1]: {consequence}.",
        "label_smoothing=0.1  # a fraction of the target mass, typically 0.05 to 0.2",
        [OptionEvidence(name="label_smoothing", value=str(value))],
    )


@rule(
    "CE403",
    "ignore-index-with-probabilities",
    "error",
    "structure",
    "ignore_index set with probability targets",
)
def ignore_index_with_probabilities(ctx: Context) -> Finding | None:
    """A non-negative ignore_index together with probability targets.

    ## What it does
    Fires when the target has the input's shape (class probabilities) and `ignore_index` is
    0 or more.

    ## Why is this bad?
    torch raises "ignore_index is not supported for floating point target": with probabilities
    there is no class index to compare against.

    ## Example
    ```python
    nn.CrossEntropyLoss(ignore_index=0)(logits, soft_targets)
    ```

    ## Use instead
    ```python
    loss = F.cross_entropy(logits, soft_targets, reduction="none")
    loss = loss[keep].mean()                     # mask samples yourself
    ```
    """
    call = ctx.call
    ignore_index = torch_int(call.ignore_index)
    if not call.probability_targets or ignore_index is None or ignore_index < 0:
        return None
    return Finding(
        f"ignore_index={ignore_index} with a probability target {shape_str(call.target.shape)}: "
        "torch supports ignore_index only for class-index targets.",
        call.call_text("target", ", reduction='none'") + "[keep].mean()  # drop ignore_index, "
        "mask samples yourself",
        [OptionEvidence(name="ignore_index", value=str(ignore_index))],
    )


@rule(
    "CE404",
    "invalid-option",
    "error",
    "arguments",
    "reduction, ignore_index or label_smoothing of the wrong kind",
)
def invalid_option(ctx: Context) -> Finding | None:
    """An option torch does not accept at all.

    ## What it does
    Fires when `reduction` is not "mean", "sum" or "none", `ignore_index` is not an int, or
    `label_smoothing` is not a number.

    ## Why is this bad?
    torch raises ValueError or TypeError before computing anything.

    ## Example
    ```python
    F.cross_entropy(logits, target, reduction="avg")
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target, reduction="mean")
    ```
    """
    call = ctx.call
    problems, fixes = [], []
    if torch_reduction(call.reduction) is None:
        problems.append(
            f"reduction={option_text(call.reduction)} is not one of "
            + ", ".join(map(repr, REDUCTIONS))
        )
        fixes.append("reduction='mean'")
    ignore_index = call.ignore_index
    if torch_int(ignore_index) is None:
        if isinstance(ignore_index, int) and not isinstance(ignore_index, bool):
            side = "above" if ignore_index > INT64_MAX else "below"
            bound = INT64_MAX if ignore_index > INT64_MAX else INT64_MIN
            problems.append(
                f"ignore_index={option_text(ignore_index)} is {side} the int64 limit {bound}"
            )
        else:
            problems.append(f"ignore_index={option_text(ignore_index)} is not an int")
        fixes.append("ignore_index=-100")
    smoothing = torch_float(call.label_smoothing)
    if smoothing is None:
        text = option_text(call.label_smoothing)
        if isinstance(call.label_smoothing, int):
            problems.append(f"label_smoothing={text} is too large for a float")
        else:
            kind = type(call.label_smoothing).__name__
            problems.append(f"label_smoothing={text} ({kind}) is not a number torch accepts")
        fixes.append("label_smoothing=0.1  # a Python float")
    if call.loss == "nll" and smoothing is not None and smoothing != 0.0:
        problems.append("nll_loss has no label_smoothing")
        fixes.append("F.cross_entropy(logits, target, label_smoothing=...)")
    if not problems:
        return None
    return Finding("; ".join(problems) + ".", ", ".join(fixes))


@rule(
    "CE405",
    "weight-dtype-mismatch",
    "error",
    "structure",
    "class weights of another dtype than the logits",
)
def weight_dtype_mismatch(ctx: Context) -> Finding | None:
    """Class weights whose dtype differs from the logits'.

    ## What it does
    Fires for class-index targets when `weight`'s dtype is not the input's (outside autocast,
    which casts both to float32).

    ## Why is this bad?
    torch raises "expected scalar type Float but found Double" (or BFloat16, Half). It happens
    when the weights come from NumPy (float64) or the model was moved to bf16 and the criterion
    was not.

    ## Example
    ```python
    w = torch.from_numpy(class_weights)                      # float64
    F.cross_entropy(logits, target, weight=w)                # logits are float32
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target, weight=w.to(logits.dtype))
    ```
    """
    call = ctx.call
    w = call.weight
    if not isinstance(w, torch.Tensor) or call.probability_targets or w.dtype == call.input.dtype:
        return None
    if not call.is_float_input:
        return None
    if call.loss_dtype(w.dtype) == call.loss_dtype(call.input.dtype):
        return None  # autocast casts both to float32
    if not weight_shape_ok(call):
        return None  # weight-shape-mismatch speaks first
    under = (
        " (autocast runs the loss in float32, but leaves float64 alone)" if call.autocast else ""
    )
    return Finding(
        f"weight is {dtype_name(w.dtype)} but input is {dtype_name(call.input.dtype)}: torch "
        f"needs them to match{under}.",
        "weight.to(logits.dtype)",
        [tensor_evidence("weight", w), tensor_evidence("input", call.input)],
    )
