"""BCE3xx: input values. They read the packed statistics, and the autograd graph when present."""

from __future__ import annotations

import torch

from ...._call import shape_str
from ...._report import GraphEvidence, RowSumEvidence, ValueEvidence
from ....rules._common import NON_FINITE_FIX, non_finite
from ....rules._context import Context, fmt, fmt_range, tensor_evidence
from ....rules._registry import Finding, rule
from ..call import Call
from ..statistics import InputStats

# Values in [0, 1] speak only over at least 4 rows (samples) and 16 values: logits of scale s
# all land in [0, 1] with probability at most 2**-16 (for s -> 0), a few in a million calls.
MIN_ROWS_FOR_VALUES = 4
MIN_VALUES_FOR_RANGE = 16


def _stats(ctx: Context) -> InputStats | None:
    s = ctx.stats.input if ctx.stats else None
    return s if s is not None and s.finite else None


def _tolerance(call: Call) -> float:
    """How far from 1 a row of rounded probabilities may sum (2 * eps, at least 1e-3)."""
    return max(1e-3, 2 * torch.finfo(call.input.dtype).eps)


def _rows_sum_to_one(call: Call, s: InputStats) -> bool:
    tol = _tolerance(call)
    return (
        s.rows_sampled >= MIN_ROWS_FOR_VALUES
        and abs(s.row_sum[0] - 1) <= tol
        and abs(s.row_sum[1] - 1) <= tol
    )


def _values_may_speak(ctx: Context) -> bool:
    """Not when the graph shows where the input came from: a layer that makes raw scores
    (nn.Linear, a convolution, ...) vetoes the values, and an activation node speaks itself."""
    return ctx.activation is None and not ctx.graph_proves_raw_scores


def looks_softmax(ctx: Context) -> bool:
    s = _stats(ctx)
    return (
        s is not None
        and _values_may_speak(ctx)
        and s.in_unit_range
        and _rows_sum_to_one(ctx.call, s)
    )


def _row_sum_evidence(s: InputStats) -> RowSumEvidence:
    return RowSumEvidence(
        role="input",
        dim=1,
        rows_checked=s.rows_sampled,
        rows_total=s.rows_total,
        min_sum=s.row_sum[0],
        max_sum=s.row_sum[1],
    )


# ---------------------------------------------------------------------------------------------


@rule(
    "BCE301",
    "bce-sigmoid-applied",
    "error",
    "values",
    "BCEWithLogitsLoss given probabilities: a sigmoid was already applied",
)
def sigmoid_applied(ctx: Context) -> Finding | None:
    """A sigmoid was applied before `BCEWithLogitsLoss`.

    ## What it does
    Fires for `binary_cross_entropy_with_logits` when the autograd graph ends in a sigmoid, or,
    when the graph does not show where the input came from, when every value lies in [0, 1]
    over at least 4 rows and 16 values (and the rows do not sum to 1: that is
    `bce-softmax-applied`).

    ## Why is this bad?
    The loss applies the sigmoid itself. Fed probabilities it computes sigmoid(sigmoid(x)),
    which lies in [0.5, 0.73]: a positive label can never be predicted with more than 73%,
    a negative one never below 50%, and the gradients shrink. Training stalls without an
    error.

    ## Example
    ```python
    probs = torch.sigmoid(model(x))
    F.binary_cross_entropy_with_logits(probs, target)
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(model(x), target)  # sigmoid only for inference
    ```

    ## False alarms
    Rate on random legal calls: 0 in tests/test_family_bce.py. Logits of any scale all land in
    [0, 1] with probability at most 2**-16 over the 16 values the values need (a few in a
    million calls), and a graph that shows a layer making raw scores (nn.Linear, a matmul, a
    convolution) vetoes the values. Known blind spot: logits that are all in [0, 1] by
    construction (a positive bias and tiny weights), checked without a graph.
    """
    call = ctx.call
    if call.loss != "bce_with_logits":
        return None
    a, s = ctx.activation, _stats(ctx)
    if a is not None and a.kind == "sigmoid":
        evidence = [GraphEvidence(node=a.node, dim=a.dim)]
        how = f"the autograd graph ends in {a.node}"
    elif (
        s is not None
        and _values_may_speak(ctx)
        and s.in_unit_range
        and s.numel >= MIN_VALUES_FOR_RANGE
        and s.rows_total >= MIN_ROWS_FOR_VALUES
        and not looks_softmax(ctx)
    ):
        evidence = [
            ValueEvidence(
                role="input", what="in [0, 1]", count=s.numel, total=s.numel, min=s.min, max=s.max
            )
        ]
        how = f"all {s.numel} values lie in [{fmt(s.min)}, {fmt(s.max)}]"
    else:
        return None
    return Finding(
        f"input {shape_str(call.input.shape)} is already probabilities ({how}): "
        "binary_cross_entropy_with_logits applies the sigmoid itself, so its predictions stay "
        "in [0.5, 0.73] and training stalls.",
        "F.binary_cross_entropy_with_logits(logits, target)  # remove the torch.sigmoid / "
        "nn.Sigmoid before the loss; or keep it and use F.binary_cross_entropy(probs, target)",
        evidence + [tensor_evidence("input", call.input)],
    )


@rule(
    "BCE302",
    "bce-softmax-applied",
    "error",
    "values",
    "BCEWithLogitsLoss given softmax outputs",
)
def softmax_applied(ctx: Context) -> Finding | None:
    """A softmax was applied before `BCEWithLogitsLoss`.

    ## What it does
    Fires for `binary_cross_entropy_with_logits` when the autograd graph ends in a softmax, or,
    without a graph, when every value lies in [0, 1] and at least 4 sampled rows sum to 1 over
    the class dim (dim 1).

    ## Why is this bad?
    The loss applies a sigmoid to each value: after a softmax that squashes every prediction
    into [0.5, 0.73], and the softmax makes the classes compete, so a sample cannot have two
    labels, which is what binary cross-entropy is for.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(model(x).softmax(dim=1), multi_hot)
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(model(x), multi_hot)   # multi-label: raw logits
    F.cross_entropy(model(x), labels)                         # single-label: cross-entropy
    ```

    ## False alarms
    Rate on random legal calls: 0. Every value must lie in [0, 1] and at least 4 sampled rows
    must sum to 1 within 2 * eps of the dtype; a graph showing a layer that makes raw scores
    vetoes the values.
    """
    call = ctx.call
    if call.loss != "bce_with_logits":
        return None
    a, s = ctx.activation, _stats(ctx)
    if a is not None and a.kind == "softmax":
        evidence = [GraphEvidence(node=a.node, dim=a.dim)]
        how = f"the autograd graph ends in {a.node}" + (
            f" over dim {a.dim}" if a.dim is not None else ""
        )
    elif looks_softmax(ctx):
        evidence = [_row_sum_evidence(s)]
        how = (
            f"all values lie in [{fmt(s.min)}, {fmt(s.max)}] and {s.rows_sampled} sampled rows "
            f"sum to {fmt_range(*s.row_sum)} over dim 1"
        )
    else:
        return None
    return Finding(
        f"input {shape_str(call.input.shape)} is softmax probabilities ({how}): "
        "binary_cross_entropy_with_logits applies a sigmoid on top, and the softmax makes the "
        "labels compete.",
        "F.binary_cross_entropy_with_logits(logits, target)  # drop the softmax; one label per "
        "sample? F.cross_entropy(logits, target.argmax(1))",
        evidence + [tensor_evidence("input", call.input)],
    )


@rule(
    "BCE303",
    "bce-logits-to-bce",
    "error",
    "values",
    "BCELoss given raw logits instead of probabilities",
)
def logits_to_bce(ctx: Context) -> Finding | None:
    """`binary_cross_entropy` was given raw logits.

    ## What it does
    Fires for `F.binary_cross_entropy` / `nn.BCELoss` when some input value lies outside
    [0, 1], or when the autograd graph shows the input straight out of a layer that makes raw
    scores (nn.Linear, a matmul, a convolution), with no sigmoid after it.

    ## Why is this bad?
    `binary_cross_entropy` takes probabilities. Values outside [0, 1] make torch raise "all
    elements of input should be between 0 and 1" (CUDA: a device-side assert that kills the
    process); raw scores that happen to lie inside [0, 1] give a meaningless loss.

    ## Example
    ```python
    nn.BCELoss()(model(x), target)          # model ends in nn.Linear
    ```

    ## Use instead
    ```python
    nn.BCEWithLogitsLoss()(model(x), target)   # the sigmoid inside, numerically stable
    ```

    ## False alarms
    Rate on random legal calls: 0. The range is exact; the graph is proof.
    """
    call = ctx.call
    s = _stats(ctx)
    if call.loss != "bce" or s is None:
        return None
    if not s.in_unit_range:
        how = f"its values run from {fmt(s.min)} to {fmt(s.max)}, outside [0, 1]: torch raises"
        evidence = [
            ValueEvidence(
                role="input", what="range", count=s.numel, total=s.numel, min=s.min, max=s.max
            )
        ]
    elif ctx.graph_proves_raw_scores:
        how = f"the autograd graph shows it straight out of {ctx.graph_origin}, with no sigmoid"
        evidence = [GraphEvidence(node=str(ctx.graph_origin))]
    else:
        return None
    return Finding(
        f"F.binary_cross_entropy input {shape_str(call.input.shape)} is raw logits, not "
        f"probabilities ({how}).",
        "F.binary_cross_entropy_with_logits(logits, target)  # or nn.BCEWithLogitsLoss(): the "
        "sigmoid inside, numerically stable",
        evidence + [tensor_evidence("input", call.input)],
    )


@rule("BCE304", "bce-non-finite-input", "error", "values", "NaN or Inf in the input")
def non_finite_input(ctx: Context) -> Finding | None:
    """NaN or infinite input.

    ## What it does
    Fires when the input holds NaN or +/-Inf, with the count of each and the first positions.

    ## Why is this bad?
    The loss becomes NaN and so do the gradients (`binary_cross_entropy` raises on NaN); one
    such step ruins the weights. The cause is upstream: a division by zero, log of 0, an fp16
    overflow, or a learning rate that blew up.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(torch.tensor([0.3, float("nan")]), torch.tensor([0., 1.]))
    ```

    ## Use instead
    ```python
    torch.autograd.set_detect_anomaly(True)     # find the op that produced the NaN
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    ```

    ## False alarms
    Rate on random legal calls: 0. NaN and Inf are counted exactly.
    """
    call = ctx.call
    s = ctx.stats.input if ctx.stats else None
    if s is None or s.finite:
        return None
    sentence, evidence = non_finite("input", call.input)
    return Finding(
        sentence,
        NON_FINITE_FIX,
        evidence,
    )
