"""CE3xx: logit values. They read the packed statistics, and the autograd graph when present."""

from __future__ import annotations

import math

import torch

from ...._call import shape_str
from ...._report import GraphEvidence, RowSumEvidence, ValueEvidence
from ....rules._common import NON_FINITE_FIX, non_finite
from ....rules._context import Context, fmt, fmt_range, tensor_evidence
from ....rules._locate import count_and_locate, dim_sum_range
from ....rules._registry import Finding, rule
from ..call import Call
from ..statistics import InputStats

RELU_ZERO_FRACTION = 0.10
MIN_ELEMENTS_FOR_SHAPE_OF_VALUES = 16  # below this, a range like [0, 1] happens by chance
# The value heuristics of CE301-CE303 need this many rows (fibres) that sum to 1 (or have a
# logsumexp of 0): a row of random logits does so by chance with probability p (up to a few
# percent for two bf16 logits near 0.5), four rows with p**4. Fewer rows make no finding; the
# autograd graph still proves a softmax on a single row.
MIN_ROWS_FOR_VALUES = 4
EXTREME_HALF = 1e3  # float16 / bfloat16: spacing of several units, near overflow for fp16
EXTREME_FULL = 1e4  # float32 / float64


def _stats(ctx: Context) -> InputStats | None:
    s = ctx.stats.input if ctx.stats else None
    return s if s is not None and s.finite else None


def _tolerance(call: Call) -> float:
    """How far from 1 (from 0 for logsumexp) a row of rounded probabilities may land.

    Rounding each probability moves the row's sum by at most eps / 2 (the weights sum to 1);
    measured on softmax rows of 2 to 32,000 classes: 0.0024 in bfloat16, 0.0003 in float16.
    2 * eps keeps a margin of four: 0.0156 for bfloat16, 0.002 for float16, 1e-3 (the floor)
    for float32. A looser tolerance only makes random logits sum to 1 more often.
    """
    return max(1e-3, 2 * torch.finfo(call.input.dtype).eps)


def _values_may_speak(ctx: Context) -> bool:
    """Whether the activation heuristics may read the values: not when the graph shows the
    input straight out of a layer that makes raw scores (nn.Linear, a conv, ...)."""
    return not ctx.graph_proves_raw_scores


def _near(pair: tuple[float, float], value: float, tol: float) -> bool:
    return abs(pair[0] - value) <= tol and abs(pair[1] - value) <= tol


def _in_unit_range(call: Call, s: InputStats) -> bool:
    return s.min >= 0 and s.max <= 1 + _tolerance(call)


def _looks_softmax(call: Call, s: InputStats) -> bool:
    return (
        (call.presumed_n_classes or 0) >= 2
        and _in_unit_range(call, s)
        and _near(s.row_sum, 1.0, _tolerance(call))
    )


def _wrong_softmax_dim(ctx: Context) -> tuple[int, tuple[float, float]] | None:
    """The other dim along which probability-like logits sum to 1, with the sums' range.

    A second look, taken only when every value lies in [0, 1] and the class dim does not sum
    to 1: it reads the logits once per other dim. Cached on the context for the other rules.
    """
    call, s = ctx.call, _stats(ctx)
    if s is None or not _in_unit_range(call, s) or _looks_softmax(call, s):
        return None
    if not _values_may_speak(ctx) or s.rows_total < MIN_ROWS_FOR_VALUES:
        return None  # two rows near 0.5 make every column sum to 1 by chance
    if "wrong_softmax_dim" not in ctx.cache:
        found = None
        for dim in range(call.input.dim()):
            fibres = s.numel // max(call.input.shape[dim], 1)
            if (
                dim != call.presumed_class_dim
                and call.input.shape[dim] > 1
                and fibres >= MIN_ROWS_FOR_VALUES
            ):
                sums = dim_sum_range(call.input, dim)
                if _near(sums, 1.0, _tolerance(call)):
                    found = (dim, sums)
                    break
        ctx.cache["wrong_softmax_dim"] = found
    return ctx.cache["wrong_softmax_dim"]


def _looks_log_softmax(call: Call, s: InputStats) -> bool:
    tol = _tolerance(call)
    return (call.presumed_n_classes or 0) >= 2 and s.max <= tol and _near(s.row_logsumexp, 0.0, tol)


def _zero_fraction(s: InputStats) -> float:
    return s.sample_zeros / s.sample_size if s.sample_size else 0.0


def _cross_entropy(ctx: Context) -> bool:
    return ctx.call.loss == "cross_entropy"


def _graph_evidence(ctx: Context, kind: str) -> list[GraphEvidence]:
    a = ctx.activation
    return [GraphEvidence(node=a.node, dim=a.dim)] if a is not None and a.kind == kind else []


def _row_sum_evidence(call: Call, s: InputStats, statistic: str = "sum") -> RowSumEvidence:
    pair = s.row_sum if statistic == "sum" else s.row_logsumexp
    return RowSumEvidence(
        role="input",
        dim=call.presumed_class_dim,
        rows_checked=s.rows_sampled,
        rows_total=s.rows_total,
        min_sum=pair[0],
        max_sum=pair[1],
        statistic=statistic,
    )


# ---------------------------------------------------------------------------------------------


@rule(
    "CE301",
    "softmax-applied",
    "error",
    "values",
    "the input is already probabilities (softmax applied twice)",
)
def softmax_applied(ctx: Context) -> Finding | None:
    """Softmax was already applied to the input.

    ## What it does
    Fires when the autograd graph shows a softmax over the class dim, or, when the graph does
    not show where the input came from, when every value lies in [0, 1] and at least 4 sampled
    rows all sum to 1 over the class dim.

    ## Why is this bad?
    `cross_entropy` applies log_softmax itself. Fed probabilities, it computes
    log_softmax(softmax(x)): gradients shrink towards zero and the loss cannot go below
    log(e + C - 1) - 1, so training stalls without an error.

    ## Example
    ```python
    probs = model(x).softmax(dim=1)        # or nn.Softmax as the last layer
    F.cross_entropy(probs, target)
    ```

    ## Use instead
    ```python
    F.cross_entropy(model(x), target)      # raw logits; softmax only for inference
    ```

    ## False alarms
    Rate on random legal calls: 0. Two rows of random logits near 0.5 sum to 1 by chance (3% of
    (1, 2) bfloat16 calls), so the values speak only when at least 4 sampled rows all sum to 1,
    within 2 * eps of the dtype; and never when the autograd graph shows the input straight out
    of a layer that makes raw scores (`AddmmBackward0` of nn.Linear, a matmul, a convolution,
    an embedding). The graph still proves a softmax on a single row. Known blind spot: logits
    whose rows sum to 1 by construction, or that all sit within a small spread of 1/C, checked
    without a graph, read as probabilities (as the softmax of an untrained model would).
    """
    call = ctx.call
    if not _cross_entropy(ctx):
        return None
    a, s = ctx.activation, _stats(ctx)
    n = call.presumed_n_classes or 0
    if (
        a is not None
        and a.kind == "softmax"
        and (a.dim is None or a.dim == call.presumed_class_dim)
    ):
        if a.dim is None and _wrong_softmax_dim(ctx) is not None:
            return None
        evidence = [GraphEvidence(node=a.node, dim=a.dim)]
        how = f"the autograd graph ends in {a.node}" + (
            f" over dim {a.dim}" if a.dim is not None else ""
        )
    elif (
        s is not None
        and s.rows_sampled >= MIN_ROWS_FOR_VALUES
        and _values_may_speak(ctx)
        and _looks_softmax(call, s)
    ):
        evidence = [_row_sum_evidence(call, s)]
        how = (
            f"all values lie in [{fmt(s.min)}, {fmt(s.max)}] and {s.rows_sampled} sampled rows sum "
            f"to {fmt_range(*s.row_sum)} over dim {call.presumed_class_dim}"
        )
    else:
        return None
    floor = math.log(math.e + n - 1) - 1 if n >= 1 else 0.0
    return Finding(
        f"input {shape_str(call.input.shape)} is already probabilities: {how}. cross_entropy "
        f"applies log_softmax itself, so the loss cannot fall below {floor:.3f} and gradients vanish.",
        "remove the softmax before the loss: F.cross_entropy(logits, target)  "
        "# drop .softmax(dim=1) / nn.Softmax from the model's forward",
        evidence + [tensor_evidence("input", call.input)],
    )


@rule(
    "CE302",
    "softmax-wrong-dim",
    "error",
    "values",
    "probabilities normalised over a dim other than the class dim",
)
def softmax_wrong_dim(ctx: Context) -> Finding | None:
    """Softmax was applied over the wrong dim.

    ## What it does
    Fires when the input is probabilities normalised over a dim other than the class dim:
    from the graph (the softmax node records its dim), or from values in [0, 1] whose sums are 1
    along another dim but not along the class dim.

    ## Why is this bad?
    `nn.Softmax()` without `dim` picks dim 0 for 3-D input, i.e. it normalises across the batch.
    The result is neither logits nor per-sample probabilities, and the loss is meaningless.

    ## Example
    ```python
    probs = nn.Softmax()(torch.randn(8, 5, 16))    # implicit dim=0: across the batch
    F.cross_entropy(probs, target)
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target)                # no softmax at all before the loss
    ```

    ## False alarms
    Rate on random legal calls: 0. The values speak only when every value lies in [0, 1], the
    class dim does not sum to 1, the input has at least 4 rows, and at least 4 fibres along
    another dim all sum to 1 (two rows of logits near 0.5 make every column sum to 1 by chance);
    never when the graph shows a layer that makes raw scores.
    """
    call = ctx.call
    if not _cross_entropy(ctx):
        return None
    a, s = ctx.activation, _stats(ctx)
    class_dim = call.presumed_class_dim
    if a is not None and a.kind == "softmax" and a.dim is not None and a.dim != class_dim:
        dim, evidence = a.dim, [GraphEvidence(node=a.node, dim=a.dim)]
    elif (wrong := _wrong_softmax_dim(ctx)) is not None:
        if a is not None and a.kind == "softmax" and a.dim == class_dim:
            return None
        dim, sums = wrong
        fibres = s.numel // max(call.input.shape[dim], 1)
        evidence = [
            RowSumEvidence(
                role="input",
                dim=dim,
                rows_checked=fibres,
                rows_total=fibres,
                min_sum=sums[0],
                max_sum=sums[1],
            )
        ]
    else:
        return None
    return Finding(
        f"input {shape_str(call.input.shape)} was normalised by a softmax over dim {dim}, not over "
        f"the class dim {class_dim}.",
        f"remove the softmax (nn.Softmax() without dim= picks dim {dim} here): "
        "F.cross_entropy(logits, target)",
        evidence + [tensor_evidence("input", call.input)],
    )


@rule("CE303", "log-softmax-applied", "info", "values", "the input is already log-probabilities")
def log_softmax_applied(ctx: Context) -> Finding | None:
    """The input is already log-probabilities.

    ## What it does
    Fires when the graph ends in a log_softmax over the class dim, or the values are all <= 0
    and at least 4 sampled rows have a logsumexp of 0.

    ## Why is this bad?
    It is harmless: log_softmax is idempotent, so the loss and gradients are unchanged. But the
    extra log_softmax costs a pass over the logits; `nll_loss` takes log-probabilities directly.

    ## Example
    ```python
    F.cross_entropy(model(x).log_softmax(dim=1), target)
    ```

    ## Use instead
    ```python
    F.nll_loss(log_probs, target)         # or F.cross_entropy(logits, target)
    ```

    ## False alarms
    Rate on random legal calls: 0. An info, and as cautious as `softmax-applied`: at least 4
    sampled rows with logsumexp 0 and no value above 0, and no graph proving raw scores.
    """
    call = ctx.call
    if not _cross_entropy(ctx):
        return None
    a, s = ctx.activation, _stats(ctx)
    if a is not None and a.kind == "log_softmax" and a.dim in (None, call.presumed_class_dim):
        evidence, how = [GraphEvidence(node=a.node, dim=a.dim)], f"the graph ends in {a.node}"
    elif (
        s is not None
        and s.rows_sampled >= MIN_ROWS_FOR_VALUES
        and _values_may_speak(ctx)
        and _looks_log_softmax(call, s)
    ):
        evidence = [_row_sum_evidence(call, s, "logsumexp")]
        how = f"values are <= 0 and {s.rows_sampled} sampled rows have logsumexp ~ 0"
    else:
        return None
    return Finding(
        f"input {shape_str(call.input.shape)} is already log-probabilities ({how}): harmless, "
        "but the log_softmax inside cross_entropy repeats work.",
        "F.nll_loss(log_probs, target)  # or pass the raw logits to F.cross_entropy",
        evidence,
    )


@rule(
    "CE304",
    "sigmoid-applied",
    "warning",
    "values",
    "values in (0, 1) that do not sum to 1: a sigmoid head",
)
def sigmoid_applied(ctx: Context) -> Finding | None:
    """A sigmoid was applied to the logits.

    ## What it does
    Fires when the graph ends in a sigmoid, or all values (at least 16) lie in [0, 1] without
    rows summing to 1 and with almost no exact zeros.

    ## Why is this bad?
    Squashed into (0, 1), the logits can differ by at most 1, so the softmax inside the loss is
    nearly uniform: the loss stays near log(C) and gradients are tiny.

    ## Example
    ```python
    F.cross_entropy(torch.sigmoid(model(x)), target)
    ```

    ## Use instead
    ```python
    F.cross_entropy(model(x), target)
    ```

    ## False alarms
    Rate on random legal calls: at most 1 in 50. Logits that all lie in [0, 1] are reported
    whatever made them, so random logits centred in (0, 1) with a small spread get this warning:
    0.8-1% of the calls in tests/test_false_alarms.py, mostly an nn.Linear with a bias near
    1/C and tiny weights run under no_grad. With a graph, the layer that made raw scores vetoes
    the values; below 16 values they never speak.
    """
    call = ctx.call
    if not _cross_entropy(ctx):
        return None
    a, s = ctx.activation, _stats(ctx)
    if a is not None and a.kind == "sigmoid":
        evidence, how = _graph_evidence(ctx, "sigmoid"), f"the graph ends in {a.node}"
    elif (
        s is not None
        and s.numel >= MIN_ELEMENTS_FOR_SHAPE_OF_VALUES
        and _values_may_speak(ctx)
        and (call.presumed_n_classes or 0) >= 2
        and _in_unit_range(call, s)
        and not _looks_softmax(call, s)
        and _wrong_softmax_dim(ctx) is None
        and _zero_fraction(s) < RELU_ZERO_FRACTION
    ):
        evidence = [_row_sum_evidence(call, s)]
        how = f"all {s.numel} values lie in [{fmt(s.min)}, {fmt(s.max)}] and rows do not sum to 1"
    else:
        return None
    return Finding(
        f"input {shape_str(call.input.shape)} looks like sigmoid outputs ({how}): logits "
        "squashed into (0, 1) make the softmax nearly uniform.",
        "F.cross_entropy(logits, target)  # remove the sigmoid; use it only with BCEWithLogitsLoss",
        evidence,
    )


@rule(
    "CE305",
    "relu-applied",
    "warning",
    "values",
    "non-negative logits with many exact zeros: a final ReLU",
)
def relu_applied(ctx: Context) -> Finding | None:
    """A ReLU is the last layer.

    ## What it does
    Fires when the graph ends in a ReLU, or the minimum is exactly 0 and at least 10% of the
    sampled values are exact zeros (and the rows are not probabilities).

    ## Why is this bad?
    Logits must be free to go negative. A final ReLU clips every negative logit to 0 and kills
    its gradient, so classes that should be unlikely cannot be pushed down.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(64, 10), nn.ReLU())
    F.cross_entropy(model(x), target)
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(64, 10))
    ```

    ## False alarms
    Rate on random legal calls: 0. Random float logits hold no exact zeros; all-zero logits (a
    zero-initialised head) are left alone, and a graph showing a layer that makes raw scores
    vetoes the values.
    """
    call = ctx.call
    if not _cross_entropy(ctx):
        return None
    a, s = ctx.activation, _stats(ctx)
    if a is not None and a.kind == "relu":
        evidence, how = _graph_evidence(ctx, "relu"), f"the graph ends in {a.node}"
    elif (
        s is not None
        and _values_may_speak(ctx)
        and s.min == 0
        and s.max > 0
        and s.sample_size >= MIN_ELEMENTS_FOR_SHAPE_OF_VALUES
        and _zero_fraction(s) >= RELU_ZERO_FRACTION
        and not _looks_softmax(call, s)
        and _wrong_softmax_dim(ctx) is None
    ):
        evidence = [
            ValueEvidence(
                role="input",
                what="exact zeros (sampled rows)",
                count=s.sample_zeros,
                total=s.sample_size,
                min=s.min,
                max=s.max,
            )
        ]
        how = f"min is exactly 0 and {_zero_fraction(s):.0%} of sampled values are exact zeros"
    else:
        return None
    return Finding(
        f"input {shape_str(call.input.shape)} looks like ReLU outputs ({how}): negative logits "
        "are clipped and get no gradient.",
        "remove the final nn.ReLU so the last layer outputs raw logits",
        evidence,
    )


@rule("CE306", "non-finite-logits", "error", "values", "NaN or Inf in the logits")
def non_finite_logits(ctx: Context) -> Finding | None:
    """NaN or infinite logits.

    ## What it does
    Fires when the logits contain NaN or +/-Inf, with the count of each and the first positions.

    ## Why is this bad?
    The loss becomes NaN or Inf and so do the gradients; one such step ruins the weights. The
    cause is upstream: a division by zero, log of 0, an fp16 overflow, or a learning rate that
    blew up.

    ## Example
    ```python
    F.cross_entropy(torch.tensor([[1.0, float("nan")]]), torch.tensor([0]))
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


@rule(
    "CE307",
    "extreme-logits",
    "warning",
    "values",
    "logit magnitudes that saturate softmax or overflow fp16/bf16",
)
def extreme_logits(ctx: Context) -> Finding | None:
    """Logits of extreme magnitude.

    ## What it does
    Fires when the largest |logit| is at least 1e4 (float32/float64) or 1e3 (float16/bfloat16).
    Large-but-sane logits, up to a few hundred, stay silent.

    ## Why is this bad?
    The softmax saturates to exactly one-hot: wrong predictions give huge losses and right ones
    zero gradient. In float16 the values are close to overflow (65504); in bfloat16 the spacing
    between representable numbers is already several units, so the loss is mostly rounding.

    ## Example
    ```python
    F.cross_entropy(features @ weights.T * 1000, target)    # a missing normalisation
    ```

    ## Use instead
    ```python
    F.cross_entropy(F.normalize(features) @ F.normalize(weights).T / 0.07, target)
    ```

    ## False alarms
    Rate on random legal calls: 0. A threshold, not a guess: logits of a few hundred (randn
    scaled by up to 30 in the tests) stay silent in every dtype.
    """
    call = ctx.call
    s = _stats(ctx)
    if s is None or not _cross_entropy(ctx):
        return None
    half = call.input.dtype in (torch.float16, torch.bfloat16)
    limit = EXTREME_HALF if half else EXTREME_FULL
    largest = max(abs(s.min), abs(s.max))
    if largest < limit:
        return None
    return Finding(
        f"input {shape_str(call.input.shape)} has logits up to {fmt(largest)} in magnitude "
        f"(range {fmt(s.min)}..{fmt(s.max)}): softmax saturates"
        + (" and the values are near the dtype's limits" if half else "")
        + ".",
        "scale the logits down (a temperature, or normalise features and weights before the "
        "last matmul); compute the loss in float32: F.cross_entropy(logits.float(), target)",
        [
            ValueEvidence(
                role="input", what="range", count=s.numel, total=s.numel, min=s.min, max=s.max
            )
        ],
    )


@rule("CE308", "constant-logits", "warning", "values", "every row of logits is identical")
def constant_logits(ctx: Context) -> Finding | None:
    """Every sample gets the same logits.

    ## What it does
    Fires when all rows of the logits (over the class dim) are identical, across at least four
    rows. All-zero logits are left alone: a zero-initialised classifier head produces them on
    its first step.

    ## Why is this bad?
    The model ignores its input: a dead network (all ReLUs off), a broadcast bug (one row
    expanded to the batch), or an input that is the same for every sample.

    ## Example
    ```python
    logits = model.head(features.mean(0, keepdim=True)).expand(32, -1)
    ```

    ## Use instead
    ```python
    logits = model.head(features)            # one row per sample
    ```

    ## False alarms
    Rate on random legal calls: 0. Needs at least 4 identical sampled rows: two rows of few
    bfloat16 classes near one value coincide by chance, four practically never.
    """
    call = ctx.call
    s = _stats(ctx)
    if s is None or s.rows_sampled < MIN_ROWS_FOR_VALUES or s.row_spread != 0:
        return None
    if (s.min == 0 and s.max == 0) or (call.presumed_n_classes or 0) < 2:
        return None
    moved = call.input.movedim(call.presumed_class_dim, -1)
    first_row = moved[(0,) * (moved.dim() - 1)]
    differing, _ = count_and_locate(moved, lambda chunk: chunk != first_row, limit=0)
    if differing:
        return None
    return Finding(
        f"all {s.rows_total} rows of input {shape_str(call.input.shape)} are identical: the "
        "logits do not depend on the sample.",
        "check for a dead network or a broadcast/expand of one row to the whole batch",
        [
            ValueEvidence(
                role="input",
                what="distinct rows",
                count=1,
                total=s.rows_total,
                min=s.min,
                max=s.max,
            )
        ],
    )


@rule(
    "CE309",
    "logits-to-nll",
    "error",
    "values",
    "nll_loss given raw logits or probabilities instead of log-probabilities",
)
def logits_to_nll(ctx: Context) -> Finding | None:
    """`nll_loss` was given something other than log-probabilities.

    ## What it does
    Under the NLL view (a checked `F.nll_loss` / `nn.NLLLoss` call), fires when the input is not
    log-probabilities: raw logits (rows whose logsumexp is not 0) or probabilities.

    ## Why is this bad?
    `nll_loss` just picks -input[target]; it does not normalise. With raw logits the loss is
    unbounded below and the model learns to inflate the target logit. With probabilities the
    loss is -p, not -log p.

    ## Example
    ```python
    F.nll_loss(model(x), target)
    ```

    ## Use instead
    ```python
    F.cross_entropy(model(x), target)   # or F.nll_loss(F.log_softmax(model(x), dim=1), target)
    ```

    ## False alarms
    Rate on random legal calls: 0. Log-probabilities of every dtype have a logsumexp within
    2 * eps of 0 (measured: 0.003 in bfloat16 for 2 to 32,000 classes), and a graph ending in
    LogSoftmaxBackward0 is trusted whatever the values.
    """
    call = ctx.call
    if call.loss != "nll":
        return None
    a, s = ctx.activation, _stats(ctx)
    if a is not None and a.kind == "log_softmax":
        return None
    if s is None or (call.presumed_n_classes or 0) < 2 or _looks_log_softmax(call, s):
        return None
    if _looks_softmax(call, s) or (a is not None and a.kind == "softmax"):
        what, fix = (
            "probabilities",
            "F.nll_loss(torch.log(probs), target)  # better: F.cross_entropy(logits, target)",
        )
    else:
        what, fix = (
            "raw logits",
            "F.cross_entropy(logits, target)  # or F.nll_loss(F.log_softmax(logits, dim=1), target)",
        )
    return Finding(
        f"nll_loss input {shape_str(call.input.shape)} is {what}, not log-probabilities: "
        f"sampled rows have logsumexp {fmt_range(*s.row_logsumexp)} (0 for "
        "log-probabilities).",
        fix,
        [_row_sum_evidence(call, s, "logsumexp")],
    )
