"""One pass of reductions over a batch's (B, T) integer tensors, read back in one transfer.

Every count the batch rules need is computed on the batch's device, stacked into one int64
tensor, and brought to the host with a single `.tolist()`. The padding-run heuristic (only
without an attention mask) takes a second, separate look.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._context import BatchContext

PAD_RUN_MIN = 4  # an edge run shorter than this is never called padding
PAD_RUN_FACTOR = 3  # ... nor one less than this many times the longest run of the id elsewhere


@dataclass(frozen=True)
class BatchStats:
    rows: int = 0
    length: int = 0
    labels_total: int = 0  # label elements, any layout
    supervised: int = 0  # labels != ignore_index, before any shift
    supervised_after_shift: int = 0  # what the loss counts: after the model's shift
    targets_after_shift: int = 0  # label elements the loss sees after the shift
    supervised_if_shifted: int | None = None  # with `shift` unknown: the count after a shift
    masked_supervised: int = 0  # labels != ignore where attention_mask == 0 (but a row's EOS)
    masked_positions: int = 0  # attention_mask == 0
    label_max: int | None = None  # the largest supervised label
    input_max: int | None = None
    eos_inputs: int = 0  # positions whose input id is an EOS id
    eos_inputs_attended: int = 0
    eos_labels: int = 0  # supervised labels that are an EOS id
    same_as_input: int = 0  # supervised labels equal to input_ids at their position
    same_as_next: int = 0  # supervised labels[:, :-1] equal to input_ids[:, 1:]
    supervised_head: int = 0  # supervised labels[:, :-1]


def _count(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum(dtype=torch.int64).reshape(1)


def _isin(t: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    if len(ids) == 1:
        return t == ids[0]
    return torch.isin(t, torch.tensor(ids, device=t.device, dtype=t.dtype))


def targets_after_shift(ctx: BatchContext) -> torch.Tensor | None:
    """The labels the loss compares with the logits, after the model's shift."""
    if ctx.shift_labels is not None:
        return ctx.shift_labels
    labels = ctx.labels
    if labels is None:
        return None
    if ctx.shift == "model" and not ctx.encoder_decoder:
        aligned = ctx.labels_2d
        if aligned is not None:
            return aligned[:, 1:]
        if labels.dim() >= 2:
            return labels[..., 1:]
    return labels


def compute(ctx: BatchContext) -> BatchStats:
    """The counts every rule reads, in one transfer. Counts only some rules need when a first
    count is off (where, how many over a bound) are their own second looks."""
    labels = ctx.labels
    if labels is None or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        return BatchStats()
    ignore = ctx.ignore_index
    device = labels.device
    known: dict[str, int] = {"labels_total": labels.numel()}
    names: list[str] = []
    parts: list[torch.Tensor] = []

    def add(name: str, value: torch.Tensor) -> None:
        names.append(name)
        parts.append(value.reshape(1).to(dtype=torch.int64))

    sup_any = labels != ignore
    add("supervised", _count(sup_any))
    after = targets_after_shift(ctx)
    if after is not None:
        known["targets_after_shift"] = after.numel()
        if after is labels:
            known["supervised_after_shift"] = -1  # the same count, filled in below
        else:
            add("supervised_after_shift", _count(after != ignore))
        if ctx.shift is None and ctx.shift_labels is None and labels.dim() >= 2:
            add("supervised_if_shifted", _count(labels[..., 1:] != ignore))
    if labels.numel():
        add("label_max", torch.where(sup_any, labels, torch.iinfo(labels.dtype).min).max())
    ids = ctx.input_ids
    if ids is not None and not ids.dtype.is_floating_point and ids.numel():
        ids = ids.to(device)
        add("input_max", ids.max())
    aligned = ctx.labels_2d
    if aligned is not None and ids is not None:
        known["rows"], known["length"] = int(ids.shape[0]), int(ids.shape[1])
        sup = sup_any.reshape(ids.shape)
        mask = ctx.attention_mask
        if mask is not None and tuple(mask.shape) == tuple(ids.shape):
            off = mask.to(device) == 0
            add("masked_positions", _count(off))
            trained = off & sup
            if ctx.eos_token_ids and known["length"] > 1 and ctx.shift != "none":
                # An EOS label on the first padded position after a row's last token is the
                # "keep the first EOS" recipe: logits[t - 1] learn to stop. Not padding.
                ends = off[:, 1:] & ~off[:, :-1] & _isin(aligned[:, 1:], ctx.eos_token_ids)
                trained[:, 1:] &= ~ends
            add("masked_supervised", _count(trained))
        else:
            off = None
        if ctx.pad_is_eos and ctx.shift != "none":
            eos_in = _isin(ids, ctx.eos_token_ids)
            add("eos_inputs", _count(eos_in))
            if off is not None:
                add("eos_inputs_attended", _count(eos_in & ~off))
            add("eos_labels", _count(_isin(aligned, ctx.eos_token_ids) & sup))
        if ctx.shift in ("model", "caller") and known["length"] > 1:
            add("same_as_input", _count((aligned == ids) & sup))
            head = sup[:, :-1]
            add("supervised_head", _count(head))
            add("same_as_next", _count((aligned[:, :-1] == ids[:, 1:]) & head))
    values = torch.cat(parts).tolist()  # the one transfer
    read = {**known, **dict(zip(names, values, strict=True))}
    if read.get("supervised_after_shift") == -1:
        read["supervised_after_shift"] = read["supervised"]
    if read.get("label_max") == torch.iinfo(labels.dtype).min:
        read["label_max"] = None
    return BatchStats(**read)


def count_over(t: torch.Tensor, bound: int, ignore: int | None = None) -> int:
    """How many values of `t` are >= bound (not counting `ignore`): a second look."""
    over = t >= bound
    if ignore is not None:
        over &= t != ignore
    return int(over.sum())


@dataclass(frozen=True)
class PadRuns:
    """Runs of one id at the edges of label rows, against its runs elsewhere."""

    token: int
    rows_padded: int  # rows with an edge run long enough to be padding
    longest_edge: int
    longest_elsewhere: int
    padded_positions: int  # positions inside those edge runs
    rows: int
    length: int


def pad_runs(labels: torch.Tensor, token: int) -> PadRuns:
    """Leading and trailing runs of `token` in each (B, T) row, and its longest run anywhere
    else: left padding and right padding both end at an edge."""
    rows, length = labels.shape
    eq = labels == token
    idx = torch.arange(length, device=labels.device).expand(rows, length)
    other = torch.where(~eq, idx, -1)
    last_other = other.max(dim=1).values  # -1 when the whole row is the token
    first_other = torch.where(~eq, idx, length).min(dim=1).values
    trailing = length - 1 - last_other
    leading = torch.where(last_other < 0, 0, first_other)  # a full row counts once, as trailing
    run_end = idx - torch.cummax(other, dim=1).values  # run length ending here (0 off the token)
    inside = (idx >= first_other[:, None]) & (idx <= last_other[:, None])
    elsewhere = torch.where(inside & eq, run_end, 0).amax() if rows else torch.tensor(0)
    edge = torch.maximum(leading, trailing)
    need = torch.clamp(PAD_RUN_FACTOR * elsewhere, min=PAD_RUN_MIN)
    padded = (edge >= need) & (edge < length)  # a row of nothing but the token says nothing
    packed = torch.stack(
        [
            _count(padded)[0],
            edge.amax() if rows else torch.tensor(0),
            elsewhere.reshape(()),
            torch.where(padded, leading + trailing, 0).sum(),
        ]
    ).tolist()
    return PadRuns(token, packed[0], packed[1], packed[2], packed[3], rows, length)


def shifted_rows(target: torch.Tensor, ignore_index: int, min_length: int = 8) -> int | None:
    """The row length T of a causal LM's shifted labels flattened to (B*T,), or None.

    transformers' causal-LM loss pads each label row with one `ignore_index` and drops its
    first label, then flattens: with nothing else ignored, the ignored positions are exactly
    T-1, 2T-1, ..., N-1. That signature gives back the rows; random class labels never have
    it."""
    n = target.numel()
    if target.dim() != 1 or n < 2 * min_length or target.dtype.is_floating_point:
        return None
    ignored = (target == ignore_index).nonzero().flatten()
    rows = ignored.numel()
    if rows < 2 or n % rows or n // rows < min_length:
        return None
    length = n // rows
    expected = torch.arange(length - 1, n, length, device=target.device)
    return length if bool((ignored == expected).all()) else None


def flat_pad_runs(
    target: torch.Tensor, ignore_index: int, token: int | None = None
) -> PadRuns | None:
    """Padding runs in a causal LM's flattened shifted labels (see `shifted_rows`), measured
    on the rows given back, without their sentinel column."""
    length = shifted_rows(target, ignore_index)
    if length is None:
        return None
    rows = target.reshape(-1, length)[:, :-1]
    if token is None:
        last = rows[:, -1].tolist()
        token = max(set(last), key=last.count)
    return pad_runs(rows, token)
