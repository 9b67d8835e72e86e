"""One statistics pass: everything the value rules need, computed on the tensors' device and
brought to the host in a single transfer.

The logits are read once (`torch.aminmax`: range, NaN and Inf in one pass). Everything else is
computed on a few sampled rows (at most `SAMPLE_ROWS`), or on the targets, which are small
(class indices) or needed in full anyway (probabilities). No full-size temporary of the logits is
made: a transposed or channels-last tensor is read in its memory order, an expanded
(zero-stride) one through the storage it repeats (`storage_view`). The pass runs with autocast
off, so that a caller's `torch.autocast` region cannot change or refuse its ops. The results
are packed into one float64 tensor, so a check costs one host sync (`sync="eager"`) or none on
the training path (`compute()` now, `read()` later).

Rules that need more (counting NaNs, locating bad targets) ask for it themselves, and only once
the packed statistics say something is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..._call import FLOAT_DTYPES, torch_int
from ..._reading import (
    autocast_off,
    is_integer,
    probability_tolerance,
    sample_rows,
    storage_view,
    whole_aminmax,
)
from .call import Call

SAMPLE_ROWS = 64
SAMPLE_CHUNK_ELEMENTS = 1 << 19  # sampled rows are reduced this many elements at a time
SUM_CHUNK_ELEMENTS = 1 << 20  # probability targets are summed this many elements at a time
MAX_SEQUENCE_ROWS = 1024
HIST_LOW, HIST_HIGH = -1, 256  # histogram of index targets: bins for <=-1, 0..255, >=256


@dataclass
class InputStats:
    numel: int
    min: float
    max: float
    rows_total: int
    rows_sampled: int
    row_sum: tuple[float, float]  # min, max of sampled rows' sums over the class dim
    row_logsumexp: tuple[float, float]
    sample_zeros: int
    sample_size: int
    row_spread: float  # max |row - first row| over sampled rows: 0 when all are identical

    @property
    def finite(self) -> bool:
        return math.isfinite(self.min) and math.isfinite(self.max)


@dataclass
class IndexTargetStats:
    numel: int
    ignored: int
    out_of_range: int
    valid_min: float | None
    valid_max: float | None
    minus_one: int
    equal_to_n_classes: int
    histogram: list[float]  # counts of values <= -1, 0, 1, ..., 255, >= 256 (whole numbers)
    fractional: int = 0  # float targets only: values that are not whole numbers
    non_finite: int = 0
    sequence_last: list[int] = field(default_factory=list)  # (B, T) targets: last id per row
    sequence_run: list[int] = field(default_factory=list)  # its trailing run length
    sequence_count: list[int] = field(default_factory=list)  # occurrences of that id in the row

    def count(self, value: int) -> int:
        return int(self.histogram[value - HIST_LOW]) if 0 <= value <= 255 else 0

    def values_present(self, low: int = 0, high: int = 255) -> list[int]:
        return [v for v in range(low, high + 1) if self.count(v)]


@dataclass
class SameShapeTargetStats:
    """Targets of the input's shape (probabilities, or one-hot mistakes)."""

    min: float
    max: float
    rows_total: int
    row_sum: tuple[float, float]
    rows_off: int  # rows whose sum is not 1 (rows summing to exactly 0 excluded)
    rows_zero: int
    worst_row_sum: float
    rows_sampled: int
    sample_binary_rows: int  # sampled rows made only of 0s and 1s
    sample_ones: tuple[int, int]  # min, max count of 1s in a sampled row


@dataclass
class Statistics:
    input: InputStats | None = None
    index_target: IndexTargetStats | None = None
    same_shape_target: SameShapeTargetStats | None = None


class StatisticsPlan:
    """Decides from metadata what to compute, computes it on the device, and reads it back.

    `compute()` launches kernels and returns one packed float64 tensor on the input's device,
    without synchronising. `read(values)` turns the host copy into `Statistics`.
    """

    def __init__(self, call: Call):
        self.call = call
        self._layout: list[tuple[str, int]] = []
        self._parts: list[tuple[str, torch.Tensor]] = []

    # ------------------------------------------------------------------ compute
    def compute(self) -> torch.Tensor:
        return autocast_off(self.call.input.device.type, self._compute)

    def _compute(self) -> torch.Tensor:
        call = self.call
        x, t = call.input, call.target
        with torch.no_grad():
            if x.dtype in FLOAT_DTYPES and x.dim() >= 1 and x.numel() > 0:
                self._input_parts(x, call.presumed_class_dim)
            numeric = t.dtype in (*FLOAT_DTYPES, torch.bool) or is_integer(t)
            if t.numel() > 0 and numeric:
                if call.probability_targets and x.dim() >= 1:
                    self._same_shape_parts(t, call.class_dim)
                elif not call.probability_targets:
                    self._index_target_parts(t)
            return self._pack(x.device)

    def _put(self, name: str, value: torch.Tensor) -> None:
        self._parts.append((name, value))

    def _pack(self, device: torch.device) -> torch.Tensor:
        """All parts in one float64 tensor, and `_layout` to read it back. This pass is many
        tiny ops on small inputs, so the scalars (most parts) go in one stack, led by a float64
        zero so that it promotes to float64 (counts stay exact), and the vectors join it in one
        cat, which promotes them too."""
        zero = torch.zeros((), dtype=torch.float64, device=device)
        scalars = [(name, value) for name, value in self._parts if value.dim() == 0]
        vectors = [(name, value.reshape(-1)) for name, value in self._parts if value.dim() != 0]
        self._layout = [("", 1)] + [(name, 1) for name, _ in scalars]
        self._layout += [(name, value.numel()) for name, value in vectors]
        stacked = torch.stack([zero, *(value for _, value in scalars)])
        return torch.cat([stacked, *(value for _, value in vectors)]) if vectors else stacked

    def _input_parts(self, x: torch.Tensor, class_dim: int) -> None:
        low, high = whole_aminmax(x)
        self._put("in.min", low)
        self._put("in.max", high)
        sample = sample_rows(x, class_dim, SAMPLE_ROWS)
        # Row statistics in chunks of rows, so that the float copy and the temporaries stay a
        # small fraction of the logits (bf16 rows upcast to fp32 double in size).
        step = max(1, SAMPLE_CHUNK_ELEMENTS // max(sample.shape[1], 1))
        if step >= sample.shape[0]:  # one chunk: no lists to join (small inputs: fewer ops)
            rows = sample.float()
            sums, lse = rows.sum(1), rows.logsumexp(1)
            nonzero = torch.count_nonzero(rows)
            spread = torch.sub(rows, rows[:1]).abs_().amax()
        else:
            first = sample[:1].float()
            sums, lses, nonzeros, spreads = [], [], [], []
            # Half-precision rows are converted into one float32 buffer for every chunk (see
            # _class_sums: fresh ones can page-fault).
            buffer = None
            if sample.dtype != torch.float32:
                buffer = sample.new_empty((step, sample.shape[1]), dtype=torch.float32)
            for start in range(0, sample.shape[0], step):
                chunk = sample[start : start + step]
                rows = buffer[: chunk.shape[0]].copy_(chunk) if buffer is not None else chunk
                sums.append(rows.sum(1))
                lses.append(rows.logsumexp(1))
                nonzeros.append(torch.count_nonzero(rows).reshape(1))
                spreads.append(torch.sub(rows, first).abs_().amax().reshape(1))
            sums, lse = torch.cat(sums), torch.cat(lses)
            nonzero, spread = torch.cat(nonzeros).sum(), torch.cat(spreads).amax()
        low, high = torch.aminmax(torch.stack((sums, lse)), dim=1)
        self._put("in.rows_low", low)  # least row sum, least row logsumexp
        self._put("in.rows_high", high)
        self._put("in.sample_nonzero", nonzero)
        self._put("in.row_spread", spread)

    def _index_target_parts(self, t: torch.Tensor) -> None:
        call = self.call
        n_classes = call.presumed_n_classes or 0
        ignore = torch_int(call.ignore_index)
        ignore = -100 if ignore is None else ignore  # torch refuses the call: any value will do
        # An expanded target is counted through the values it repeats: each count times `repeat`.
        base, repeat = storage_view(t)
        flat = base.reshape(-1)
        if flat.numel() <= TARGET_CHUNK_ELEMENTS:  # the usual case: one chunk, no totals
            counts, low, high, hist = _index_chunk(flat, n_classes, ignore)
        else:
            # In chunks, into accumulators allocated up front: the int64 temporaries stay
            # bounded however large a segmentation target is, and no small result is left
            # between them (long-lived small tensors keep the allocator from returning the
            # freed chunks).
            totals = _IndexTotals(flat.device, flat.dtype.is_floating_point)
            for i in range(0, flat.numel(), TARGET_CHUNK_ELEMENTS):
                totals.add(*_index_chunk(flat[i : i + TARGET_CHUNK_ELEMENTS], n_classes, ignore))
            counts, low, high, hist = totals.counts, totals.low, totals.high, totals.hist
        if repeat != 1:
            counts, hist = counts * repeat, hist * repeat
        self._put("tg.counts", counts)
        self._put("tg.valid_min", low)
        self._put("tg.valid_max", high)
        self._put("tg.hist", hist)
        if t.dim() == 2 and call.input.dim() == 3 and t.shape[1] >= 8:
            seq = t[:MAX_SEQUENCE_ROWS].long()
            last = seq[:, -1]
            trailing = (seq == last[:, None]).flip(1).int().cumprod(1).sum(1)
            self._put("tg.seq_last", last)
            self._put("tg.seq_run", trailing)
            self._put("tg.seq_count", (seq == last[:, None]).sum(1))

    def _same_shape_parts(self, t: torch.Tensor, class_dim: int) -> None:
        # Rows of an expanded target repeat: sum the rows it is made of, weight the counts.
        base, repeat = storage_view(t, keep=class_dim, permute=False)
        p = base if base.dtype.is_floating_point else base.to(torch.float32)
        low, high = whole_aminmax(p)
        self._put("pt.min", low)
        self._put("pt.max", high)
        sums = _class_sums(p, class_dim)
        tol = probability_tolerance(p.dtype)
        self._put("pt.row_sum", torch.stack(torch.aminmax(sums)))
        off = ((sums - 1).abs() > tol) & (sums != 0)
        self._put("pt.rows_off", off.sum() * repeat)
        self._put("pt.rows_zero", (sums == 0).sum() * repeat)
        self._put("pt.worst_row_sum", sums.gather(0, (sums - 1).abs().argmax().reshape(1)))
        sample = sample_rows(t, class_dim, SAMPLE_ROWS)
        if not sample.dtype.is_floating_point:
            sample = sample.to(torch.float32)
        step = max(1, SAMPLE_CHUNK_ELEMENTS // max(sample.shape[1], 1))
        binary, ones = [], []
        for start in range(0, sample.shape[0], step):
            rows = sample[start : start + step]
            is_one = rows == 1
            ones.append(is_one.sum(1))
            binary.append((is_one.logical_or_(rows == 0)).all(1))
        binary, ones = torch.cat(binary), torch.cat(ones)
        self._put("pt.sample_binary", binary.sum())
        self._put("pt.sample_ones", torch.stack(torch.aminmax(ones)))

    # ------------------------------------------------------------------ read
    def unpack(self, values: list[float]) -> dict[str, list[float]]:
        """The packed values by part name (a subclass adding parts reads its own from here)."""
        got: dict[str, list[float]] = {}
        offset = 0
        for name, size in self._layout:
            got[name] = values[offset : offset + size]
            offset += size
        return got

    def read(self, values: list[float]) -> Statistics:
        return self.statistics(self.unpack(values))

    def statistics(self, got: dict[str, list[float]]) -> Statistics:
        stats = Statistics()
        if "in.min" in got:
            stats.input = self._read_input(got)
        if "tg.counts" in got:
            stats.index_target = self._read_index_target(got)
        if "pt.min" in got:
            rows_total = self.call.target.numel() // max(self.call.n_classes or 1, 1)
            stats.same_shape_target = SameShapeTargetStats(
                min=got["pt.min"][0],
                max=got["pt.max"][0],
                rows_total=rows_total,
                row_sum=tuple(got["pt.row_sum"]),
                rows_off=int(got["pt.rows_off"][0]),
                rows_zero=int(got["pt.rows_zero"][0]),
                worst_row_sum=got["pt.worst_row_sum"][0],
                rows_sampled=min(SAMPLE_ROWS, rows_total),
                sample_binary_rows=int(got["pt.sample_binary"][0]),
                sample_ones=tuple(int(v) for v in got["pt.sample_ones"]),
            )
        return stats

    def _read_input(self, got: dict[str, list[float]]) -> InputStats:
        x = self.call.input
        n_classes = x.shape[self.call.presumed_class_dim]
        rows_total = x.numel() // max(n_classes, 1)
        rows = min(SAMPLE_ROWS, rows_total)
        return InputStats(
            numel=x.numel(),
            min=got["in.min"][0],
            max=got["in.max"][0],
            rows_total=rows_total,
            rows_sampled=rows,
            row_sum=(got["in.rows_low"][0], got["in.rows_high"][0]),
            row_logsumexp=(got["in.rows_low"][1], got["in.rows_high"][1]),
            sample_zeros=rows * n_classes - int(got["in.sample_nonzero"][0]),
            sample_size=rows * n_classes,
            row_spread=got["in.row_spread"][0],
        )

    def _read_index_target(self, got: dict[str, list[float]]) -> IndexTargetStats:
        numel = self.call.target.numel()
        values = [int(v) for v in got["tg.counts"]]
        counts = dict(zip(_COUNTS, [0, 0, *values] if len(values) == 4 else values, strict=True))
        has_valid = counts["ignored"] < numel
        return IndexTargetStats(
            numel=numel,
            ignored=counts["ignored"],
            out_of_range=counts["out_of_range"],
            valid_min=got["tg.valid_min"][0] if has_valid else None,
            valid_max=got["tg.valid_max"][0] if has_valid else None,
            minus_one=counts["minus_one"],
            equal_to_n_classes=counts["equal_to_n_classes"],
            histogram=got["tg.hist"],  # 258 floats: ints only for the bins a rule reads
            fractional=counts["fractional"],
            non_finite=counts["non_finite"],
            sequence_last=[int(v) for v in got.get("tg.seq_last", [])],
            sequence_run=[int(v) for v in got.get("tg.seq_run", [])],
            sequence_count=[int(v) for v in got.get("tg.seq_count", [])],
        )


# ---------------------------------------------------------------------- helpers


TARGET_CHUNK_ELEMENTS = 1 << 18
_BIG = torch.iinfo(torch.int64).max
# What `_index_chunk` counts, in order (the first two for float targets only).
_COUNTS = (
    "non_finite",
    "fractional",
    "ignored",
    "out_of_range",
    "minus_one",
    "equal_to_n_classes",
)


def _index_chunk(
    flat: torch.Tensor, n_classes: int, ignore: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Statistics of one chunk of class-index targets: the `_COUNTS` (int64; the last four
    only for integer targets), the least and greatest value other than `ignore` (sentinels
    when there is none), and the histogram."""
    if flat.dtype.is_floating_point:
        flat = flat.double()
        finite = torch.isfinite(flat)
        safe = torch.where(finite, flat, torch.zeros((), dtype=flat.dtype, device=flat.device))
        rounded = safe.round()
        float_masks = [finite.logical_not(), safe != rounded]
        flat = rounded.clamp(-(2**62), 2**62).long()
    else:
        float_masks = []
        flat = flat.long()
    valid = flat != ignore
    out_of_range = valid & ((flat < 0) | (flat >= n_classes))
    masks = [*float_masks, valid.logical_not(), out_of_range, flat == -1, flat == n_classes]
    counts = torch.stack(masks).sum(1)  # one reduction for every count
    low = torch.where(valid, flat, _BIG).min()
    high = torch.where(valid, flat, -_BIG).max()
    clipped = flat.clamp(HIST_LOW, HIST_HIGH).sub_(HIST_LOW)
    if clipped.device.type == "cpu":  # no host to wait for: bincount is one kernel
        hist = torch.bincount(clipped, minlength=HIST_HIGH - HIST_LOW + 1)
    else:  # not bincount: it reads the maximum back to the host on CUDA
        hist = torch.zeros(HIST_HIGH - HIST_LOW + 1, dtype=torch.int64, device=flat.device)
        ones = torch.ones((), dtype=torch.int64, device=flat.device).expand(clipped.shape)
        hist.index_add_(0, clipped, ones)
    return counts, low, high, hist


class _IndexTotals:
    """Running statistics of class-index targets, updated in place chunk by chunk."""

    def __init__(self, device: torch.device, floating: bool):
        size = len(_COUNTS) if floating else len(_COUNTS) - 2
        self.counts = torch.zeros(size, dtype=torch.int64, device=device)
        self.low = torch.full((), _BIG, dtype=torch.int64, device=device)
        self.high = torch.full((), -_BIG, dtype=torch.int64, device=device)
        self.hist = torch.zeros(HIST_HIGH - HIST_LOW + 1, dtype=torch.int64, device=device)

    def add(
        self, counts: torch.Tensor, low: torch.Tensor, high: torch.Tensor, hist: torch.Tensor
    ) -> None:
        self.counts.add_(counts)
        torch.minimum(self.low, low, out=self.low)
        torch.maximum(self.high, high, out=self.high)
        self.hist.add_(hist)


def _class_sums(p: torch.Tensor, class_dim: int) -> torch.Tensor:
    """Sums over the class dim in float32, flattened, a slab of dim 0 at a time: summing a
    half-precision tensor with `dtype=float32` would first copy all of it to float32.

    Each slab is converted into the same float32 buffer. A fresh one per slab (what
    `sum(dtype=float32)` allocates) can cost a page fault per page on every slab, depending on
    what the heap looks like (measured: 56 ms or 250 ms for (4096, 32000) bf16, run to run)."""
    if p.dtype == torch.float32 or class_dim == 0 or p.numel() <= SUM_CHUNK_ELEMENTS:
        return p.sum(dim=class_dim, dtype=torch.float32).reshape(-1)
    step = max(1, SUM_CHUNK_ELEMENTS // max(p[0].numel(), 1))
    buffer = torch.empty((step, *p.shape[1:]), dtype=torch.float32, device=p.device)
    sums = []
    for start in range(0, p.shape[0], step):
        slab = p[start : start + step]
        converted = buffer[: slab.shape[0]].copy_(slab)
        sums.append(converted.sum(dim=class_dim).reshape(-1))
    return torch.cat(sums)
