"""CE2xx: target dtype and values."""

from __future__ import annotations

import math

import torch

from ...._call import dtype_name, shape_str, torch_int
from ...._report import OptionEvidence, ValueEvidence
from ....rules._context import Context, call_evidence, fmt, tensor_evidence
from ....rules._locate import first_positions
from ....rules._registry import Finding, rule
from ..call import Call
from ..statistics import IndexTargetStats

PAD_RUN_MIN = 4
# Out-of-range labels suggest a bigger head only when they are at least this share of the
# counted targets: a dataset with more classes than the head has many of them; a handful
# among many (one 259 in 1.5 million labels for 256 classes) is a data error.
MANY_OUT_OF_RANGE = 0.01


def _index_stats(ctx: Context) -> IndexTargetStats | None:
    return ctx.stats.index_target if ctx.stats else None


def _ignore(call: Call) -> int:
    """ignore_index as torch reads it (np.int64(3), torch.tensor(3) included); -100 when torch
    would reject it (an invalid-option finding says so)."""
    value = torch_int(call.ignore_index)
    return -100 if value is None else value


# What a loss that ignores no label is checked with (the least int64: no class index is it).
NO_IGNORE = -(2**63)


def _ignore_text(call: Call) -> str:
    """ignore_index for a message: its value, or "none" for a loss that ignores nothing."""
    value = _ignore(call)
    return "none (this loss ignores no label)" if value == NO_IGNORE else str(value)


def _out_of_range_evidence(ctx: Context, stats: IndexTargetStats) -> ValueEvidence:
    call = ctx.call
    n_classes = call.presumed_n_classes or 0
    ignore = _ignore(call)

    def offending(t: torch.Tensor) -> torch.Tensor:
        t = t.long() if not t.dtype.is_floating_point else t.nan_to_num().round().long()
        return (t != ignore) & ((t < 0) | (t >= n_classes))

    return ValueEvidence(
        role="target",
        what=f"outside [0, {n_classes})",
        count=stats.out_of_range,
        total=stats.numel,
        min=stats.valid_min,
        max=stats.valid_max,
        first_positions=first_positions(call.target, offending),
    )


def _stray_labels_fix(call: Call, count: int, positions: list[list[int]]) -> str:
    """A data error: which samples, and how to drop or ignore them, with the call's numbers."""
    n, ignore = call.presumed_n_classes or 0, _ignore(call)
    shown = ", ".join(str(p[0]) if len(p) == 1 else str(p) for p in positions)
    more = ", ..." if count > len(positions) else ""
    place = "row" if call.target.dim() == 1 else "position"
    at = f" at {place}{'s' if count > 1 else ''} {shown}{more}" if shown else ""
    what, them = ("the stray label", "it") if count == 1 else (f"the {count} stray labels", "them")
    return (
        f"a data error, not a missing class: fix or drop {what}{at}, or mark {them} ignored: "
        f"target = target.masked_fill((target < 0) | (target >= {n}), {ignore})"
    )


# ---------------------------------------------------------------- explanations of bad labels
# Each names one common cause of out-of-range labels; the generic rule fires only when none does.


def is_one_based(call: Call, s: IndexTargetStats) -> bool:
    """Labels 1..C: none is 0, and the only stray value is C. A 0 missing from
    fewer labels than classes is no evidence (a language model's batch of 16 tokens over a
    vocabulary of 50,000 has none): those calls get `target-out-of-range` instead."""
    n = call.presumed_n_classes or 0
    return (
        n >= 2
        and s.out_of_range > 0
        and s.valid_min is not None
        and s.valid_min >= 1
        and s.valid_max == n
        and s.out_of_range == s.equal_to_n_classes
        and s.numel - s.ignored >= n
    )


def padding_value(call: Call, s: IndexTargetStats) -> int | None:
    """-1, or 255 in a segmentation mask, used as the void label while ignore_index differs."""
    if s.out_of_range == 0:
        return None
    # The counts of -1 and 255 include ignored ones: a value ignore_index already covers is
    # never the padding label (and its count matching out_of_range is a coincidence).
    ignore = _ignore(call)
    if ignore != -1 and s.minus_one == s.out_of_range:
        return -1
    n = call.presumed_n_classes or 0
    if n < 255 and ignore != 255 and s.count(255) == s.out_of_range and not is_pixel_mask(call, s):
        return 255
    return None


def is_pixel_mask(call: Call, s: IndexTargetStats) -> bool:
    """Values that are pixel intensities ({0, 255}, or JPEG-like spread) rather than class ids."""
    n = call.presumed_n_classes or 0
    if (
        n >= 255
        or s.out_of_range == 0
        or s.valid_min is None
        or s.valid_min < 0
        or s.valid_max > 255
    ):
        return False
    present = set(s.values_present())
    if present <= {0, 255} and 255 in present:
        return True
    high = [v for v in present if v >= n]
    bright = sum(s.count(v) for v in high if v >= 128)
    return len(high) >= 3 and bright * 2 >= s.out_of_range


# ---------------------------------------------------------------------------------------------


@rule(
    "CE201",
    "one-hot-index-target",
    "error",
    "values",
    "integer one-hot targets where class indices are expected",
)
def one_hot_index_target(ctx: Context) -> Finding | None:
    """The target is an integer one-hot matrix.

    ## What it does
    Fires when the target has the logits' shape, an integer dtype, and exactly one 1 per row.

    ## Why is this bad?
    A target of the logits' shape is read as class probabilities, which must be float: torch
    raises "Expected floating point type for target with class probabilities, got Long".
    One-hot labels usually come from `F.one_hot` or a dataset that stores them.

    ## Example
    ```python
    F.cross_entropy(logits, F.one_hot(labels, 10))
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target.argmax(dim=1))
    ```

    ## False alarms
    Rate on random legal calls: 0. torch rejects every call this rule fires on.
    """
    call, stats = ctx.call, ctx.stats
    same = stats.same_shape_target if stats else None
    t = call.target
    if same is None or t.dtype.is_floating_point or call.input.dim() < 2:
        return None
    if same.sample_binary_rows != same.rows_sampled or same.sample_ones != (1, 1):
        return None
    return Finding(
        f"target {shape_str(t.shape)} {dtype_name(t.dtype)} is one-hot (one 1 per row): a "
        "target of the input's shape must hold float probabilities.",
        call.call_text("target.argmax(dim=1)"),
        call_evidence(call),
    )


@rule(
    "CE202",
    "one-hot-probability-target",
    "info",
    "values",
    "float one-hot targets: class indices are faster",
)
def one_hot_probability_target(ctx: Context) -> Finding | None:
    """Float one-hot targets: legal, but class indices do the same job better.

    ## What it does
    Fires when a probability target holds exactly one 1.0 per row and zeros elsewhere.

    ## Why is this bad?
    It is not wrong: the loss equals the class-index loss. But class indices take C times less
    memory, use a faster kernel, and allow `ignore_index` and `label_smoothing` on top.

    ## Example
    ```python
    F.cross_entropy(logits, F.one_hot(labels, 10).float())
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, labels)  # or target.argmax(dim=1)
    ```

    ## False alarms
    Rate on random legal calls: 0 for targets that are not one-hot. An info: every float
    one-hot target gets it, by design.
    """
    call, stats = ctx.call, ctx.stats
    same = stats.same_shape_target if stats else None
    if same is None or not call.target.dtype.is_floating_point or call.input.dim() < 2:
        return None
    if same.min != 0 or same.max != 1 or same.rows_off or same.rows_zero:
        return None
    if same.sample_binary_rows != same.rows_sampled or same.sample_ones != (1, 1):
        return None
    return Finding(
        f"target {shape_str(call.target.shape)} is float one-hot: class indices give the same "
        "loss with less memory and allow ignore_index.",
        call.call_text("target.argmax(dim=1)"),
        call_evidence(call),
    )


@rule("CE203", "float-class-indices", "error", "values", "class indices stored as floats")
def float_class_indices(ctx: Context) -> Finding | None:
    """Class indices stored in a float tensor.

    ## What it does
    Fires when a target of class-index shape is a float tensor whose values are all whole
    numbers.

    ## Why is this bad?
    torch raises "expected target dtype to be Long or Byte, but got Float". Labels become
    floats through NumPy, pandas or `torch.tensor(list_of_floats)`.

    ## Example
    ```python
    F.cross_entropy(torch.randn(4, 3), torch.tensor([0., 2., 1., 0.]))
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target.long())
    ```

    ## False alarms
    Rate on random legal calls: 0. torch rejects every call this rule fires on.
    """
    call = ctx.call
    s = _index_stats(ctx)
    if s is None or not call.target.dtype.is_floating_point or s.fractional or s.non_finite:
        return None
    return Finding(
        f"target {shape_str(call.target.shape)} is {dtype_name(call.target.dtype)} holding whole "
        "numbers: class indices must be int64.",
        call.call_text("target.long()"),
        call_evidence(call),
    )


@rule(
    "CE204",
    "non-integer-targets",
    "error",
    "values",
    "index-shaped float targets with fractional values",
)
def non_integer_targets(ctx: Context) -> Finding | None:
    """Index-shaped float targets with fractional values: not class labels at all.

    ## What it does
    Fires when a target of class-index shape is float and holds fractional (or non-finite)
    values.

    ## Why is this bad?
    Class indices are whole numbers; torch raises on float targets of this shape. Fractional
    values suggest a regression target (use `MSELoss`) or soft labels that lost their class
    dim.

    ## Example
    ```python
    F.cross_entropy(torch.randn(4, 3), torch.tensor([0.2, 1.7, 0.9, 2.4]))
    ```

    ## Use instead
    ```python
    F.mse_loss(prediction, target)              # a regression target
    F.cross_entropy(logits, soft_labels)        # soft labels of shape (N, C)
    ```

    ## False alarms
    Rate on random legal calls: 0. torch rejects every call this rule fires on.
    """
    call = ctx.call
    s = _index_stats(ctx)
    if s is None or not call.target.dtype.is_floating_point or not (s.fractional or s.non_finite):
        return None
    parts = []
    if s.fractional:
        parts.append(f"{s.fractional} of {s.numel} values are fractional")
    if s.non_finite:
        parts.append(f"{s.non_finite} are NaN/Inf")
    return Finding(
        f"target {shape_str(call.target.shape)} {dtype_name(call.target.dtype)}: "
        + " and ".join(parts)
        + "; class indices must be whole int64 numbers.",
        "F.mse_loss(prediction, target) for regression, or pass (N, C) probabilities as the target",
        [ValueEvidence(role="target", what="fractional", count=s.fractional, total=s.numel)],
    )


@rule(
    "CE205",
    "integer-dtype-unsupported",
    "error",
    "structure",
    "int32/int16/int8/bool targets (or uint8 on K-dim input)",
)
def integer_dtype_unsupported(ctx: Context) -> Finding | None:
    """Class indices in an integer dtype torch does not take.

    ## What it does
    Fires on int32, int16, int8 and bool class-index targets, and on uint8 targets when the
    input is K-dimensional (torch takes int64 everywhere, uint8 only for (N, C) input).

    ## Why is this bad?
    torch raises "expected target dtype to be Long or Byte" or "expected scalar type Long but
    found Byte". Masks loaded from PNG files are uint8; NumPy on Windows makes int32.

    ## Example
    ```python
    F.cross_entropy(torch.randn(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.uint8))
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target.long())
    ```
    """
    call = ctx.call
    t = call.target
    if call.probability_targets or t.dtype.is_floating_point or t.dtype.is_complex:
        return None
    if t.dtype == torch.int64 or (
        t.dtype == torch.uint8 and call.cross_entropy_rejection() is None
    ):
        return None
    where = ""
    if t.dtype == torch.uint8:  # torch rejects it here: K-dim input, or a weighted smoothed mean
        big = call.input.dim() > 2
        where = " with K-dimensional input" if big else " with weight, label_smoothing and a mean"
    return Finding(
        f"target {shape_str(t.shape)} is {dtype_name(t.dtype)}{where}; torch takes int64 class "
        "indices.",
        call.call_text("target.long()"),
        call_evidence(call),
    )


@rule("CE206", "target-out-of-range", "error", "values", "class indices outside [0, C)")
def target_out_of_range(ctx: Context) -> Finding | None:
    """Class indices outside [0, C) that are not ignore_index.

    ## What it does
    Fires when some target values are negative or at least C (the number of logits per
    sample) and are not `ignore_index`. It gives the count, min, max and first positions.

    ## Why is this bad?
    On CPU torch raises "Target 10 is out of bounds."; on CUDA it triggers a device-side assert
    that kills the process and poisons the CUDA context. Usually `num_classes` is too small for
    the dataset, or the labels were remapped inconsistently.

    ## Example
    ```python
    F.cross_entropy(torch.randn(4, 10), torch.tensor([3, 10, 7, 12]))
    ```

    ## Use instead
    ```python
    model.fc = nn.Linear(in_features, 13)   # enough outputs for the largest label
    # or remap the labels into 0..C-1
    ```
    The fix fits how many labels are off. When at least 1% of the counted targets are >= C,
    the dataset has more classes than the model: it suggests the bigger head first. Fewer (a
    handful of stray labels among many) are a data error: the fix names the first rows and
    suggests dropping them or marking them with `ignore_index`, never a bigger head.

    ## False alarms
    Rate on random legal calls: 0. Exact counts; torch rejects every call this rule fires on.
    """
    call = ctx.call
    s = _index_stats(ctx)
    if s is None or s.out_of_range == 0:
        return None
    if is_one_based(call, s) or padding_value(call, s) is not None or is_pixel_mask(call, s):
        return None
    n = call.presumed_n_classes or 0
    evidence = _out_of_range_evidence(ctx, s)
    where = f", first at {evidence.first_positions[0]}" if evidence.first_positions else ""
    counted = s.numel - s.ignored
    if s.out_of_range < MANY_OUT_OF_RANGE * counted:
        fix = _stray_labels_fix(call, s.out_of_range, evidence.first_positions)
    elif s.valid_max is not None and s.valid_max >= n and (s.valid_min or 0) >= 0:
        fix = f"{call.grow_text(int(s.valid_max) + 1)}, or remap the labels into 0..{n - 1}"
    else:
        fix = f"remap the labels into 0..{n - 1}, or mark padding with ignore_index (default -100)"
    return Finding(
        f"{s.out_of_range} of {s.numel} target values are outside [0, {n}) "
        f"(min {fmt(s.valid_min)}, max {fmt(s.valid_max)}{where}); ignore_index is {_ignore_text(call)}.",
        fix,
        [evidence],
    )


@rule("CE207", "one-based-labels", "error", "values", "labels run 1..C instead of 0..C-1")
def one_based_labels(ctx: Context) -> Finding | None:
    """Labels numbered from 1.

    ## What it does
    Fires when the labels span 1..C: no 0, and the only out-of-range value is C itself, with at
    least as many labels as classes (fewer prove nothing by lacking a 0).

    ## Why is this bad?
    Class indices start at 0. Labels from MATLAB, R, or a 1-based CSV hit "Target C is out of
    bounds" on the last class (on CUDA, a device-side assert), and every other class is shifted
    by one.

    ## Example
    ```python
    F.cross_entropy(torch.randn(4, 3), torch.tensor([1, 3, 2, 3]))
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target - 1)
    ```

    ## False alarms
    Rate on random legal calls: 0. It explains an out-of-range label, so torch rejects every
    call it fires on.
    """
    call = ctx.call
    s = _index_stats(ctx)
    if s is None or not is_one_based(call, s):
        return None
    n = call.presumed_n_classes
    return Finding(
        f"labels lie in {fmt(s.valid_min)}..{fmt(s.valid_max)} with no 0 for {n} classes: they are "
        f"numbered from 1, and the {s.equal_to_n_classes} labels equal to {n} are out of range.",
        call.call_text("target - 1"),
        [_out_of_range_evidence(ctx, s)],
    )


@rule(
    "CE208",
    "padding-label",
    "error",
    "values",
    "-1 or 255 used as padding while ignore_index differs",
)
def padding_label(ctx: Context) -> Finding | None:
    """A padding or void label (-1, or 255 in masks) that ignore_index does not cover.

    ## What it does
    Fires when every out-of-range target value is -1, or every one is 255 in a target whose
    other values are class ids, while `ignore_index` is something else (by default -100).

    ## Why is this bad?
    The padding value is meant to be skipped, but torch only skips `ignore_index`: it raises
    "Target -1 is out of bounds" (on CUDA, a device-side assert). Pascal VOC / Cityscapes masks
    mark void pixels 255; many pipelines pad with -1.

    ## Example
    ```python
    F.cross_entropy(torch.randn(2, 21, 8, 8), mask_with_255_borders)
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, target, ignore_index=255)
    ```

    ## False alarms
    Rate on random legal calls: 0. It explains an out-of-range label, so torch rejects every
    call it fires on.
    """
    call = ctx.call
    s = _index_stats(ctx)
    value = padding_value(call, s) if s is not None else None
    if value is None:
        return None
    return Finding(
        f"{s.out_of_range} of {s.numel} target values are {value}, a padding/void label, but "
        f"ignore_index is {_ignore_text(call)}.",
        call.call_text("target", f", ignore_index={value}")
        + f"  # or {call.criterion_text(f'ignore_index={value}')}",
        [
            _out_of_range_evidence(ctx, s),
            OptionEvidence(name="ignore_index", value=str(_ignore(call))),
        ],
    )


@rule(
    "CE209",
    "pixel-value-mask",
    "error",
    "values",
    "segmentation targets hold pixel intensities, not class ids",
)
def pixel_value_mask(ctx: Context) -> Finding | None:
    """Segmentation targets holding pixel intensities instead of class ids.

    ## What it does
    Fires when the target holds only {0, 255}, or a spread of values near 255 (JPEG artefacts,
    bilinear resizing) that are not class ids.

    ## Why is this bad?
    A mask image read as is stores intensities: a binary mask is 0/255, and JPEG compression or
    bilinear interpolation adds in-between values. torch raises "Target 255 is out of bounds".

    ## Example
    ```python
    mask = torch.from_numpy(np.array(Image.open("mask.png"))).long()   # values 0 and 255
    F.cross_entropy(logits, mask)
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits, mask // 255)            # a clean 0/255 mask
    F.cross_entropy(logits, (mask > 127).long())    # JPEG / interpolated masks
    # resize masks with nearest-neighbour interpolation, and store them as PNG
    ```

    ## False alarms
    Rate on random legal calls: 0. It explains out-of-range labels, so torch rejects every call
    it fires on.
    """
    call = ctx.call
    s = _index_stats(ctx)
    if s is None or not is_pixel_mask(call, s):
        return None
    present = s.values_present()
    clean = set(present) <= {0, 255}
    shown = ", ".join(map(str, present[:8])) + (", ..." if len(present) > 8 else "")
    return Finding(
        f"target values are {{{shown}}} ({len(present)} distinct): pixel intensities, not class "
        f"ids in [0, {call.presumed_n_classes}).",
        call.call_text("target // 255")
        if clean
        else call.call_text("(target > 127).long()")
        + "  # and resize masks with InterpolationMode.NEAREST",
        [_out_of_range_evidence(ctx, s)],
    )


@rule(
    "CE210",
    "pad-token-target",
    "warning",
    "values",
    "sequence targets end in long runs of a pad token id",
)
def pad_token_target(ctx: Context) -> Finding | None:
    """Sequence targets padded with a token id that is not ignore_index.

    ## What it does
    Fires on (B, T) targets of a sequence model when at least two rows end in a run of the same
    token id (at least 4 long), that id occurs nowhere else in those rows (a real class, like
    trailing "silence" or "O" labels, also occurs mid-sequence), and it is not `ignore_index`.
    Also on the flattened (B*T,) labels a causal LM's own loss passes (transformers pads each
    row with one `ignore_index` before its shift, which gives the rows back): there at least two
    rows must start or end in a run of one id at least 4 long and 3 times longer than any run
    of it elsewhere, so a pad id that is also a real token is still found.

    ## Why is this bad?
    The model is trained to predict padding: the loss is dominated by easy pad tokens and the
    real tokens are under-weighted. Tokenizers pad with their `pad_token_id`, which must be
    replaced by -100 in the labels.

    ## Example
    ```python
    labels = tokenizer(texts, padding=True, return_tensors="pt").input_ids
    F.cross_entropy(logits.transpose(1, 2), labels)
    ```

    ## Use instead
    ```python
    labels = labels.masked_fill(attention_mask == 0, -100)
    ```

    ## False alarms
    Rate on random legal calls: at most 1 in 10,000. Random labels end in a run of 4 equal ids
    with probability C**-3 per row, and the id must then occur nowhere else in two rows.
    """
    call = ctx.call
    s = _index_stats(ctx)
    if s is not None and call.target.dim() == 1 and call.input.dim() == 2:
        return _flat_pad_token_target(ctx, s)
    if s is None or len(s.sequence_last) < 2:
        return None
    length = call.target.shape[1]
    needed = max(PAD_RUN_MIN, length // 16)
    runs: dict[int, list[int]] = {}
    elsewhere: set[int] = set()  # ids that also occur before the trailing run: real tokens
    rows = zip(s.sequence_last, s.sequence_run, s.sequence_count, strict=True)
    for last, run, count in rows:
        if count > run:
            elsewhere.add(last)
        if run >= needed and run < length and last != _ignore(call):
            runs.setdefault(last, []).append(run)
    for token in elsewhere:
        runs.pop(token, None)
    if not runs:
        return None
    pad, lengths = max(runs.items(), key=lambda item: len(item[1]))
    if len(lengths) < 2:
        return None
    return Finding(
        f"{len(lengths)} of {len(s.sequence_last)} target rows end in a run of token id {pad} "
        f"(up to {max(lengths)} of {length} positions): padding trained as a label, since "
        f"ignore_index is {_ignore_text(call)}.",
        f"labels = labels.masked_fill(attention_mask == 0, -100)  # or ignore_index={pad} if "
        f"{pad} is only ever padding",
        [
            ValueEvidence(
                role="target", what=f"trailing runs of {pad}", count=sum(lengths), total=s.numel
            )
        ],
    )


def _flat_pad_token_target(ctx: Context, s: IndexTargetStats) -> Finding | None:
    """CE210 on flattened labels: the rows come back from the shift's one ignore_index per row."""
    call = ctx.call
    if s.ignored < 2 or s.ignored * 8 > s.numel:  # B sentinels in B*T labels, T >= 8
        return None
    from ....sequence._stats import flat_pad_runs

    runs = flat_pad_runs(call.target, _ignore(call))
    if runs is None or runs.rows_padded < 2:
        return None
    return Finding(
        f"{runs.rows_padded} of {runs.rows} rows of the flattened labels (rows of {runs.length + 1}, "
        f"read from the shift's one ignore_index per row) start or end in a run of token id "
        f"{runs.token} (up to {runs.longest_edge} positions): padding trained as a label, since "
        f"ignore_index is {_ignore(call)}.",
        "labels = labels.masked_fill(attention_mask == 0, -100)  # before the model call",
        [
            ValueEvidence(
                role="target",
                what=f"edge runs of {runs.token}",
                count=runs.padded_positions,
                total=s.numel,
            )
        ],
    )


@rule(
    "CE211",
    "all-targets-ignored",
    "error",
    "values",
    "every target equals ignore_index: the mean loss is NaN",
)
def all_targets_ignored(ctx: Context) -> Finding | None:
    """Every target is ignore_index.

    ## What it does
    Fires when all class-index targets equal `ignore_index` and the reduction is "mean".

    ## Why is this bad?
    The mean over zero counted targets is 0/0 = NaN, and one NaN loss poisons the weights
    through the optimizer. It happens when truncation cuts off every answer token, or a
    collator masks everything.

    ## Example
    ```python
    F.cross_entropy(torch.randn(4, 10), torch.full((4,), -100))
    ```

    ## Use instead
    ```python
    if (target != -100).any():      # skip batches with nothing to learn from
        loss = F.cross_entropy(logits, target)
    ```

    ## False alarms
    Rate on random legal calls: 0. Exact: it fires only when no target is counted.
    """
    call = ctx.call
    s = _index_stats(ctx)
    if s is None or call.reduction != "mean" or s.numel == 0 or s.ignored != s.numel:
        return None
    return Finding(
        f"all {s.numel} targets equal ignore_index={_ignore(call)}: the mean over zero targets is "
        "NaN.",
        f"skip the batch when (target != {_ignore(call)}).sum() == 0, or check what masks every label",
        [ValueEvidence(role="target", what="ignored", count=s.ignored, total=s.numel)],
    )


@rule("CE212", "empty-batch", "error", "structure", "zero elements: the mean loss is NaN")
def empty_batch(ctx: Context) -> Finding | None:
    """A batch with nothing in it.

    ## What it does
    Fires when there are zero loss terms (N == 0, or an empty spatial dim) and the reduction is
    "mean".

    ## Why is this bad?
    The mean of nothing is NaN, and torch returns it without complaint.

    ## Example
    ```python
    F.cross_entropy(torch.randn(0, 10), torch.zeros(0, dtype=torch.long))
    ```

    ## Use instead
    ```python
    if target.numel() > 0:
        loss = F.cross_entropy(logits, target)
    ```
    """
    call = ctx.call
    x = call.input
    if call.reduction != "mean" or x.dim() == 0:
        return None
    terms = math.prod(s for i, s in enumerate(x.shape) if i != call.class_dim)
    if terms > 0 and (call.probability_targets or call.target.numel() > 0):
        return None
    return Finding(
        f"input {shape_str(x.shape)} and target {shape_str(call.target.shape)} hold no samples: "
        "the mean loss is NaN.",
        "skip empty batches (if target.numel() == 0: continue), or use reduction='sum'",
        call_evidence(call),
    )


@rule(
    "CE213",
    "multi-hot-targets",
    "error",
    "values",
    "several 1s per row: multi-label, use BCEWithLogitsLoss",
)
def multi_hot_targets(ctx: Context) -> Finding | None:
    """Multi-hot targets: a multi-label problem.

    ## What it does
    Fires when a target of the logits' shape holds only 0s and 1s with more than one 1 in a row.

    ## Why is this bad?
    Cross-entropy assumes exactly one true class per sample (or a distribution summing to 1).
    Several 1s per row mean several labels can be true at once: that is a multi-label problem,
    where each class is an independent binary decision.

    ## Example
    ```python
    F.cross_entropy(torch.randn(4, 5), torch.tensor([[1., 0, 1, 0, 0]] * 4))
    ```

    ## Use instead
    ```python
    F.binary_cross_entropy_with_logits(logits, target.float())
    ```

    ## False alarms
    Rate on random legal calls: 0. Probabilities that sum to 1 never hold two 1s in a row.
    """
    call, stats = ctx.call, ctx.stats
    same = stats.same_shape_target if stats else None
    if same is None or call.input.dim() < 2:
        return None
    if same.sample_binary_rows != same.rows_sampled or same.sample_ones[1] < 2:
        return None
    return Finding(
        f"target {shape_str(call.target.shape)} holds 0/1 values with up to {same.sample_ones[1]} "
        "ones per row: this is multi-label classification.",
        "F.binary_cross_entropy_with_logits(logits, target.float())  # nn.BCEWithLogitsLoss(); "
        'a BCE loss of your own checked by cediag: loss="bce_with_logits"',
        call_evidence(call),
    )


@rule(
    "CE214",
    "invalid-probability-targets",
    "error",
    "values",
    "probability targets with negative entries or rows not summing to 1",
)
def invalid_probability_targets(ctx: Context) -> Finding | None:
    """Probability targets that are not probabilities.

    ## What it does
    Fires when a float target of the logits' shape has negative entries, or rows (over the
    class dim) that do not sum to 1. Rows that are exactly all zero are allowed: they are a
    common way to mask a sample out.

    ## Why is this bad?
    torch computes -sum(target * log_softmax(logits)) without checking. Negative targets (often
    teacher logits passed without softmax) push the loss in the wrong direction; rows summing
    to 2 (e.g. mixup that adds instead of blending) scale it silently.

    ## Example
    ```python
    F.cross_entropy(student_logits, teacher_logits)        # teacher logits, not probabilities
    ```

    ## Use instead
    ```python
    F.cross_entropy(student_logits, (teacher_logits / T).softmax(dim=1))
    ```

    ## False alarms
    Rate on random legal calls: 0. Rows may miss 1 by 1e-2 (more in half precision), far more
    than rounding moves a softmax or a mixup row.
    """
    call, stats = ctx.call, ctx.stats
    same = stats.same_shape_target if stats else None
    if same is None or not call.target.dtype.is_floating_point or call.input.dim() < 2:
        return None
    if ctx.fired("multi-hot-targets"):
        return None
    problems = []
    if same.min < 0 or same.min != same.min:
        problems.append(f"min value {fmt(same.min)} < 0")
    if same.rows_off:
        problems.append(
            f"{same.rows_off} of {same.rows_total} rows do not sum to 1 over dim "
            f"{call.class_dim} (worst {fmt(same.worst_row_sum)})"
        )
    if not problems:
        return None
    fix = (
        ctx.call.call_text("target.softmax(dim=1)") + "  # the target looks like logits"
        if same.min < 0
        else ctx.call.call_text("target / target.sum(dim=1, keepdim=True)")
    )
    return Finding(
        f"probability target {shape_str(call.target.shape)}: " + "; ".join(problems) + ".",
        fix,
        [tensor_evidence("target", call.target)],
    )


@rule(
    "CE215",
    "ignore-index-is-class",
    "warning",
    "values",
    "ignore_index is a real class that occurs in the target",
)
def ignore_index_is_class(ctx: Context) -> Finding | None:
    """ignore_index names a real class, and that class occurs.

    ## What it does
    Fires when `ignore_index` lies in [0, C) and some targets equal it.

    ## Why is this bad?
    Every sample of that class is dropped from the loss, so the model never learns it. This is
    right only when that id is padding or "void" and never a real class.

    ## Example
    ```python
    nn.CrossEntropyLoss(ignore_index=0)(logits, target)   # class 0 is "background"
    ```

    ## Use instead
    ```python
    nn.CrossEntropyLoss()(logits, target)                 # ignore_index=-100: nothing dropped
    ```

    ## False alarms
    Rate on random legal calls: 0 while ignore_index lies outside [0, C) (the default -100). By
    design, every call whose ignore_index is a class that occurs gets it.
    """
    call = ctx.call
    s = _index_stats(ctx)
    n = call.presumed_n_classes or 0
    ignore = _ignore(call)
    if s is None or not 0 <= ignore < n or s.ignored == 0 or s.ignored == s.numel:
        return None
    return Finding(
        f"ignore_index={ignore} is a class of the {n}-class output and {s.ignored} of {s.numel} "
        "targets equal it: they are dropped from the loss.",
        f"keep the default ignore_index=-100 unless class {ignore} is only ever padding",
        [ValueEvidence(role="target", what=f"equal to {ignore}", count=s.ignored, total=s.numel)],
    )
