"""LCE3xx: the values behind the logits. They read the statistics pass: the range of the hidden
states, of linear_weight and linear_bias (each read whole, in place), and the logits of a sample
of rows (never all N x V of them)."""

from __future__ import annotations

import math

import torch

from ...._call import dtype_name, shape_str
from ...._report import ValueEvidence
from ....rules._common import NON_FINITE_FIX
from ....rules._context import Context, fmt
from ....rules._locate import count_and_locate
from ....rules._registry import Finding, rule
from ...cross_entropy.rules.logits import EXTREME_FULL, EXTREME_HALF, MIN_ROWS_FOR_VALUES
from ..statistics import LinearStats


def _stats(ctx: Context) -> LinearStats | None:
    return getattr(ctx.stats, "linear", None) if ctx.stats is not None else None


def _finite(pair: tuple[float, float] | None) -> bool:
    return pair is None or (math.isfinite(pair[0]) and math.isfinite(pair[1]))


def _non_finite_rows(t: torch.Tensor) -> tuple[int, list[list[int]]]:
    """Rows (fibres along the last dim) holding NaN or Inf, and where the first ones are."""
    if t.dim() == 1:
        return count_and_locate(t.unsqueeze(0), lambda c: ~torch.isfinite(c).all(-1))
    return count_and_locate(t, lambda c: ~torch.isfinite(c).all(-1))


def _where(positions: list[list[int]]) -> str:
    if not positions:
        return ""
    first = positions[0]
    return f", first at row {first[0]}" if len(first) == 1 else f", first at {first}"


# ---------------------------------------------------------------------------------------------


@rule("LCE301", "non-finite-hidden", "error", "values", "NaN or Inf in the hidden states")
def non_finite_hidden(ctx: Context) -> Finding | None:
    """NaN or infinite hidden states.

    ## What it does
    Fires when the hidden states passed to the loss hold NaN or +/-Inf, with the number of
    rows affected and the first ones. The hidden states are read whole, in place.

    ## Why is this bad?
    Every logit of such a row is NaN (a NaN times any weight), so its loss is NaN, and so is a
    mean or sum over the batch; the gradients poison every parameter. The cause is upstream:
    an fp16 overflow in the network, a division by zero in a norm, a learning rate that blew up.

    ## Example
    ```python
    hidden = model(x)          # an overflow made a row Inf
    F.linear_cross_entropy(hidden, lm_head.weight, target)
    ```

    ## Use instead
    ```python
    torch.autograd.set_detect_anomaly(True)     # find the op that produced the NaN
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    ```

    ## False alarms
    Rate on random legal calls: 0. The range is exact (NaN and Inf propagate through it).
    """
    s = _stats(ctx)
    if s is None or _finite(s.hidden):
        return None
    h = ctx.call.hidden
    rows, at = _non_finite_rows(h)
    total = s.rows_total
    return Finding(
        f"hidden states {shape_str(h.shape)} hold NaN or Inf in {rows} of {total} rows"
        f"{_where(at)} (range {fmt(s.hidden[0])}..{fmt(s.hidden[1])}): every logit of those rows "
        "is NaN, and so is the loss.",
        NON_FINITE_FIX,
        [
            ValueEvidence(
                role="input", what="rows with NaN/Inf", count=rows, total=total, first_positions=at
            )
        ],  # fmt: skip
    )


@rule(
    "LCE302",
    "non-finite-classifier",
    "error",
    "values",
    "NaN or Inf in linear_weight or linear_bias",
)
def non_finite_classifier(ctx: Context) -> Finding | None:
    """NaN or infinite classifier weights or bias.

    ## What it does
    Fires when `linear_weight` or `linear_bias` holds NaN or +/-Inf, with the classes (rows of
    the weight) affected.

    ## Why is this bad?
    One NaN class logit makes the softmax's normaliser NaN for every row: every loss term is
    NaN, even when no target ever names that class (a padded vocabulary row included). The
    weights were usually corrupted by an earlier update (a NaN gradient, an fp16 overflow in
    the optimizer).

    ## Example
    ```python
    lm_head.weight.data[7] = float("nan")          # one corrupted row
    F.linear_cross_entropy(hidden, lm_head.weight, target)
    ```

    ## Use instead
    ```python
    # restore the last good checkpoint, and stop the update that corrupted it:
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    ```

    ## False alarms
    Rate on random legal calls: 0. The ranges are exact.
    """
    s = _stats(ctx)
    if s is None or (_finite(s.weight) and _finite(s.bias)):
        return None
    call = ctx.call
    parts, evidence = [], []
    for role, t, pair in (("linear_weight", call.linear_weight, s.weight),
                          ("linear_bias", call.linear_bias, s.bias)):  # fmt: skip
        if _finite(pair):
            continue
        if role == "linear_weight":
            count, at = _non_finite_rows(t)
            what, total = "class rows", int(t.numel() // max(t.shape[-1], 1))
        else:
            count, at = count_and_locate(t, lambda c: ~torch.isfinite(c))
            what, total = "entries", t.numel()
        first = f" (first: class {at[0][0]})" if at else ""
        parts.append(
            f"{role} {shape_str(t.shape)} has NaN or Inf in {count} of {total} {what}{first}"
        )
        evidence.append(ValueEvidence(role=role, what=f"{what} with NaN/Inf", count=count,
                                      total=total, first_positions=at))  # fmt: skip
    return Finding(
        "; ".join(parts) + ": the softmax over the vocabulary is NaN for every row, so every "
        "loss term is NaN.",
        "the weights were corrupted by an update: restore a checkpoint, and find the step with "
        "torch.autograd.set_detect_anomaly(True); clip gradients",
        evidence,
    )


@rule(
    "LCE303",
    "non-finite-linear-logits",
    "error",
    "values",
    "the projection overflows: Inf/NaN logits from finite hidden states and weights",
)
def non_finite_linear_logits(ctx: Context) -> Finding | None:
    """Logits that overflow although the hidden states and the classifier are finite.

    ## What it does
    Computes the logits of up to 64 evenly spaced rows (never all N x V) and fires when they
    hold NaN or Inf while the hidden states, `linear_weight` and `linear_bias` are finite.

    ## Why is this bad?
    The matmul overflows its dtype: float16 tops out at 65504, so large hidden states times a
    large head give Inf, and the loss is Inf or NaN. A fused loss computes these logits
    internally, where nobody sees them.

    ## Example
    ```python
    F.linear_cross_entropy(hidden.half() * 100, lm_head.weight.half(), target)
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(hidden.bfloat16(), lm_head.weight.bfloat16(), target)  # or float32
    ```

    ## False alarms
    Rate on random legal calls: 0. Exact on the sampled rows.
    """
    s = _stats(ctx)
    if s is None or s.logits is None or _finite(s.logits):
        return None
    if not (_finite(s.hidden) and _finite(s.weight) and _finite(s.bias)):
        return None
    call = ctx.call
    nan = any(v != v for v in s.logits)
    if getattr(call, "softcap", None) is not None and not nan:
        return None  # softcap * tanh(x / softcap) takes Inf to +/-softcap
    dtype = call.input.dtype
    limit = f" (largest finite {dtype_name(dtype)}: {fmt(torch.finfo(dtype).max)})"
    return Finding(
        f"the logits of {s.rows_sampled} sampled rows of {s.rows_total} reach "
        f"{fmt(s.logits[0])}..{fmt(s.logits[1])} though hidden states and linear_weight are "
        f"finite: the projection overflows {dtype_name(dtype)}{limit}.",
        "compute the projection in bfloat16 or float32 (F.linear_cross_entropy(hidden.float(), "
        "linear_weight.float(), target)), or normalise the hidden states before the head",
        [
            ValueEvidence(
                role="logits",
                what="sampled range",
                count=s.logits_sampled,
                total=s.logits_sampled,
                min=None,
                max=None,
            )
        ],  # fmt: skip
    )


@rule(
    "LCE304",
    "extreme-linear-logits",
    "warning",
    "values",
    "sampled logits of a magnitude that saturates softmax",
)
def extreme_linear_logits(ctx: Context) -> Finding | None:
    """Logits of extreme magnitude, from the hidden states and the head.

    ## What it does
    Computes the logits of up to 64 evenly spaced rows and fires when the largest |logit| is at
    least 1e4 (float32/float64 logits) or 1e3 (float16/bfloat16). Stands down when the loss
    soft-caps its logits (`softcap`, Liger and cut-cross-entropy).

    ## Why is this bad?
    The softmax saturates to one-hot: wrong predictions give huge losses and right ones no
    gradient; in half precision the loss is mostly rounding. Hidden states that skipped the
    final norm, or a head scaled up, give such logits.

    ## Example
    ```python
    F.linear_cross_entropy(hidden * 1000, lm_head.weight, target)
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(model.norm(hidden), lm_head.weight, target)   # the final norm
    ```

    ## False alarms
    Rate on random legal calls: 0. A threshold: logits of a few hundred stay silent in every
    dtype.
    """
    s = _stats(ctx)
    call = ctx.call
    if s is None or s.logits is None or not _finite(s.logits):
        return None
    if getattr(call, "softcap", None) is not None:
        return None
    half = call.input.dtype in (torch.float16, torch.bfloat16)
    limit = EXTREME_HALF if half else EXTREME_FULL
    largest = max(abs(s.logits[0]), abs(s.logits[1]))
    if largest < limit:
        return None
    return Finding(
        f"the logits of {s.rows_sampled} sampled rows of {s.rows_total} reach {fmt(largest)} in "
        f"magnitude (range {fmt(s.logits[0])}..{fmt(s.logits[1])}): softmax saturates.",
        "normalise the hidden states before the head (the model's final norm), or soft-cap the "
        "logits; compute the loss in float32",
        [
            ValueEvidence(
                role="logits",
                what="sampled range",
                count=s.logits_sampled,
                total=s.logits_sampled,
                min=s.logits[0],
                max=s.logits[1],
            )
        ],  # fmt: skip
    )


@rule(
    "LCE305",
    "constant-linear-logits",
    "warning",
    "values",
    "every row gets the same logits: identical hidden states or a zero head",
)
def constant_linear_logits(ctx: Context) -> Finding | None:
    """Every sample gets the same nonzero logits.

    ## What it does
    Fires when the sampled logit rows (at least 4) are all identical and not all zero, and a
    second look proves it for every row: all hidden states are identical, or `linear_weight` is
    all zero (the logits are then the bias).

    ## Why is this bad?
    The prediction does not depend on the input: a collapsed network (every hidden state the
    same), a broadcast of one row to the batch, or a head whose weights were zeroed (only the
    bias learns).

    ## Example
    ```python
    hidden = encoder(x).mean(0, keepdim=True).expand(32, -1)      # one row for the batch
    F.linear_cross_entropy(hidden, head.weight, target, linear_bias=head.bias)
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(encoder(x), head.weight, target, linear_bias=head.bias)
    ```

    ## False alarms
    Rate on random legal calls: 0. Needs 4 identical sampled rows and an exact second look.
    """
    s = _stats(ctx)
    call = ctx.call
    if s is None or s.logits is None or s.rows_sampled < MIN_ROWS_FOR_VALUES:
        return None
    if s.row_spread != 0 or s.logits == (0.0, 0.0) or call.vocabulary < 2:
        return None
    if not (_finite(s.hidden) and _finite(s.weight) and _finite(s.bias)):
        return None
    h = call.hidden
    rows = h.reshape(-1, h.shape[-1]) if h.dim() != 2 else h
    if s.weight == (0.0, 0.0):
        why = f"linear_weight {shape_str(call.linear_weight.shape)} is all zero: every logit is the bias"
        fix = "check the head's initialisation and that the optimizer updates linear_weight"
    else:
        first = rows[0]
        differing, _ = count_and_locate(rows, lambda c: (c != first).any(-1), limit=0)
        if differing:
            return None
        why = f"all {s.rows_total} hidden states are identical"
        fix = "check for a collapsed network or one row expanded to the whole batch"
    return Finding(
        f"every row gets the same logits ({why}): the prediction does not depend on the input.",
        fix,
        [
            ValueEvidence(
                role="logits",
                what="distinct sampled rows",
                count=1,
                total=s.rows_sampled,
                min=s.logits[0],
                max=s.logits[1],
            )
        ],  # fmt: skip
    )


@rule(
    "LCE306",
    "zero-linear-logits",
    "info",
    "values",
    "every sampled logit is exactly 0: uniform predictions",
)
def zero_linear_logits(ctx: Context) -> Finding | None:
    """All logits are exactly zero.

    ## What it does
    Fires when every logit of the sampled rows is exactly 0, and says which argument makes it
    so (a zero `linear_weight`, zero hidden states).

    ## Why is this bad?
    The prediction is uniform and the loss is exactly log(V). On the first step of a
    zero-initialised head this is by design (an info, not a warning); later it means a dead
    head: weights that are not updated (frozen, left out of the optimizer, untied from the
    embedding they should share) or hidden states that are all zero.

    ## Example
    ```python
    head = nn.Linear(768, 32000, bias=False); nn.init.zeros_(head.weight)
    F.linear_cross_entropy(hidden, head.weight, target)   # loss = log(32000), step after step
    ```

    ## Use instead
    ```python
    optimizer = torch.optim.AdamW(model.parameters())     # the head included, and trainable
    ```

    ## False alarms
    By design every all-zero sample gets it; random logits are never exactly 0.
    """
    s = _stats(ctx)
    call = ctx.call
    if s is None or s.logits != (0.0, 0.0) or s.logits_nonzero or call.vocabulary < 2:
        return None
    causes = []
    if s.weight == (0.0, 0.0):
        causes.append(f"linear_weight {shape_str(call.linear_weight.shape)} is all zero")
    if s.hidden == (0.0, 0.0):
        causes.append(f"the hidden states {shape_str(call.hidden.shape)} are all zero")
    why = " and ".join(causes) if causes else "hidden states and weights cancel"
    return Finding(
        f"every logit of the {s.rows_sampled} sampled rows is 0 ({why}): the prediction is "
        f"uniform and the loss is log({call.vocabulary}) = {fmt(math.log(call.vocabulary))}.",
        "expected on a zero-initialised head's first step; later, check that linear_weight is "
        "trainable and in the optimizer (and tied to the embedding if it should be)",
        [
            ValueEvidence(
                role="logits", what="exact zeros", count=s.logits_sampled, total=s.logits_sampled
            )
        ],  # fmt: skip
    )
