"""BCE2xx: target dtype and values."""

from __future__ import annotations

import math

import torch

from ...._call import FLOAT_DTYPES, dtype_name, shape_str
from ...._report import RowSumEvidence, ValueEvidence
from ....rules._context import Context, call_evidence, fmt
from ....rules._locate import count_and_locate
from ....rules._registry import Finding, rule
from ..statistics import TargetStats, row_reductions

MIN_ROWS_FOR_ONE_HOT = 8  # C = 2 multi-hot rows are one-hot by chance 1 in 2: 8 rows, 1 in 256


@rule(
    "BCE201",
    "bce-target-not-float",
    "error",
    "structure",
    "the target is an integer, bool or complex tensor",
)
def target_not_float(ctx: Context) -> Finding | None:
    """The target is an integer, bool or complex tensor.

    ## What it does
    Fires when the target's dtype is an integer type, bool, or complex.

    ## Why is this bad?
    Both losses want float targets. `binary_cross_entropy_with_logits` raises "result type
    Float can't be cast to the desired output type Long" (or refuses `1 - target` for bool);
    `binary_cross_entropy` raises "Found dtype Long but expected Float". Labels straight from
    a dataset or `torch.randint` are int64. A complex target runs, but makes the loss complex,
    and `backward()` refuses it.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(logits, torch.randint(0, 2, (32, 5)))
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, target.float())
    ```
    """
    call = ctx.call
    t = call.target
    if t.dtype.is_floating_point or ctx.fired("bce-class-index-target"):
        return None
    name = call.input_name
    cast = "target.float()" if call.loss == "bce_with_logits" else f"target.to({name}.dtype)"
    return Finding(
        f"target {shape_str(t.shape)} is {dtype_name(t.dtype)}; {call.function} needs a float "
        "target (the probability that each label is 1).",
        f"{call.function}({name}, {cast})",
        call_evidence(call),
    )


@rule(
    "BCE202",
    "bce-target-dtype-mismatch",
    "error",
    "structure",
    "binary_cross_entropy given input and target of different float dtypes",
)
def target_dtype_mismatch(ctx: Context) -> Finding | None:
    """`binary_cross_entropy` got input and target of different float dtypes.

    ## What it does
    Fires for `F.binary_cross_entropy` / `nn.BCELoss` when input and target are both float
    tensors of different dtypes (as the loss receives them: under CPU autocast float16 and
    bfloat16 count as float32).

    ## Why is this bad?
    Its kernel reads both in one dtype and raises "Found dtype Double but expected Float".
    (`binary_cross_entropy_with_logits` mixes float dtypes freely.)

    ## Example
    ```python
    F.binary_cross_entropy(torch.rand(8, 3).half(), torch.rand(8, 3))
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy(probs, target.to(probs.dtype))
    ```
    """
    call = ctx.call
    x, t = call.input, call.target
    if call.loss != "bce" or x.dtype not in FLOAT_DTYPES or t.dtype not in FLOAT_DTYPES:
        return None
    if call.loss_dtype(x.dtype) == call.loss_dtype(t.dtype):
        return None
    return Finding(
        f"input is {dtype_name(x.dtype)} and target is {dtype_name(t.dtype)}: "
        "F.binary_cross_entropy needs one dtype for both.",
        "F.binary_cross_entropy(probs, target.to(probs.dtype))  # or, better in low precision: "
        "F.binary_cross_entropy_with_logits(logits, target)",
        call_evidence(call),
    )


def _target_stats(ctx: Context) -> TargetStats | None:
    return ctx.stats.target if ctx.stats else None


@rule(
    "BCE203",
    "bce-target-out-of-range",
    "error",
    "values",
    "target values outside [0, 1], or NaN / Inf",
)
def target_out_of_range(ctx: Context) -> Finding | None:
    """Target values outside [0, 1], or not finite.

    ## What it does
    Fires when any target value is below 0, above 1, NaN or infinite, with the count, the range
    and the first positions.

    ## Why is this bad?
    A binary target is the probability that a label applies. `binary_cross_entropy` raises "all
    elements of target should be between 0 and 1" (CUDA: a device-side assert);
    `binary_cross_entropy_with_logits` computes a loss that is unbounded below: the model is
    rewarded for pushing logits to infinity. Labels in {-1, 1}, masks in {0, 255} and
    class indices are the usual causes; NaN marks a missing label.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(logits, mask.float())   # mask holds 0 and 255
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, mask.float() / 255)
    ```

    ## False alarms
    Rate on random legal calls: 0. The range is read exactly from every value.
    """
    call, s = ctx.call, _target_stats(ctx)
    if s is None or s.in_unit_range:
        return None
    t = call.target
    bad = lambda chunk: ~((chunk >= 0) & (chunk <= 1))  # noqa: E731  (NaN counts too)
    count, positions = count_and_locate(t, bad)
    nans, _ = count_and_locate(t, torch.isnan, limit=0)
    name = call.input_name
    if nans:
        fix = (
            f"valid = ~target.isnan(); {call.function}({name}, target.nan_to_num(0.0), "
            "weight=valid.float())  # NaN marks missing labels: mask them out"
        )
    elif s.min >= 0 and s.max == 255 and count_and_locate(t, lambda c: c == 1, limit=0)[0]:
        fix = (
            f"valid = target != 255; {call.function}({name}, target.masked_fill(~valid, 0), "
            "weight=valid.float())  # 255 marks pixels to ignore"
        )
    elif s.min >= 0 and s.max == 255:
        fix = f"{call.function}({name}, target / 255)  # a 0/255 mask"
    elif s.min == -1 and s.max == 1:
        fix = f"{call.function}({name}, (target + 1) / 2)  # labels in {{-1, 1}} -> {{0, 1}}"
    elif s.min >= 0 and s.finite and float(s.max).is_integer():
        fix = (
            f"{call.function}({name}, (target > 0).float())  # a presence label; class "
            "indices, one per sample? F.cross_entropy(logits, target.long())"
        )
    else:
        fix = f"{call.function}({name}, target)  # scale the targets into [0, 1]"
    consequence = (
        "torch raises at run time" if call.loss == "bce" else "the loss is unbounded below"
    )
    nan_text = f" ({nans} NaN)" if nans else ""
    return Finding(
        f"{count} of {t.numel()} target values{nan_text} lie outside [0, 1] (range "
        f"{fmt(s.min)}..{fmt(s.max)}): {consequence}.",
        fix,
        [
            ValueEvidence(
                role="target",
                what="outside [0, 1]",
                count=count,
                total=t.numel(),
                min=s.min if math.isfinite(s.min) else None,
                max=s.max if math.isfinite(s.max) else None,
                first_positions=positions,
            )
        ],
    )


@rule(
    "BCE204",
    "bce-one-hot-targets",
    "info",
    "values",
    "every target row has exactly one 1: a single-label problem",
)
def one_hot_targets(ctx: Context) -> Finding | None:
    """Every row of the target is one-hot.

    ## What it does
    Fires when the target is (N, C) or (N, C, d1, ...) with C >= 2 and every row along the
    class dim holds exactly one 1 and 0s elsewhere, over at least 8 rows.

    ## Why is this bad?
    It is legal. But one class per sample is a single-label problem: cross-entropy's softmax
    lets the classes compete, which usually trains faster and calibrates better than C
    independent sigmoids.

    ## Example
    ```python
    F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, 10).float())
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target.argmax(1))
    ```

    ## False alarms
    An info. Multi-label targets whose rows each happen to hold one label trigger it: with
    random multi-hot rows of C classes, a batch of 8 or more rows does so at most 1 time in 256
    (C = 2, each label present with probability 1/2), far less for more classes.
    """
    call, s = ctx.call, _target_stats(ctx)
    if s is None or not s.one_hot_rows or s.rows_total < MIN_ROWS_FOR_ONE_HOT:
        return None
    if s.rows_sampled < s.rows_total:  # the sampled rows are one-hot: now read every row
        sum_range, max_least = row_reductions(call.target)
        low, high = sum_range.tolist()
        if (low, high, float(max_least)) != (1.0, 1.0, 1.0):
            return None
    c = call.target.shape[1]
    return Finding(
        f"all {s.rows_total} rows of target {shape_str(call.target.shape)} hold exactly one 1 "
        f"among {c} classes: a single-label problem, which cross-entropy fits.",
        "F.cross_entropy(logits, target.argmax(1))  # keep BCE if a sample may have several labels",
        [
            RowSumEvidence(
                role="target",
                dim=1,
                rows_checked=s.rows_total,
                rows_total=s.rows_total,
                min_sum=s.row_sum[0] if s.row_sum else 1.0,
                max_sum=s.row_sum[1] if s.row_sum else 1.0,
            )
        ],
    )
