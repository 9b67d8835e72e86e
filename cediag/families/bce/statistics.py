"""One statistics pass for binary cross-entropy: everything the value rules need, computed on the
tensors' device and brought to the host in a single transfer.

The input is read once (`whole_aminmax`: range, NaN and Inf in one pass), plus a few sampled
rows along the class dim (their sums: the fingerprint of a softmax). The target, of the input's
shape, is read once for its range, and, for multi-label (N, C, ...) targets, reduced over the
class dim a slab at a time (row sums and row maxima: every row one-hot or not). No full-size
temporary is made: the slabs are converted to float32 into one buffer. The pass runs with
autocast off, and everything is packed into one float64 tensor: one host sync (`sync="eager"`)
or none on the training path (`compute()` now, `read()` later).

Counting and locating NaNs or out-of-range targets is a second look the rules take themselves,
and only once the packed statistics say something is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..._call import FLOAT_DTYPES
from ..._reading import autocast_off, sample_rows, storage_view, whole_aminmax
from .call import Call

SAMPLE_ROWS = 64
SLAB_ELEMENTS = 1 << 20  # targets are reduced over the class dim this many elements at a time


@dataclass
class InputStats:
    numel: int
    min: float
    max: float
    rows_total: int  # samples: elements over the class dim's size (every element for 1-d input)
    rows_sampled: int  # rows whose sums were read (0 without a class dim)
    row_sum: tuple[float, float]  # least and greatest sum of a sampled row over the class dim

    @property
    def finite(self) -> bool:
        return math.isfinite(self.min) and math.isfinite(self.max)

    @property
    def in_unit_range(self) -> bool:
        return self.finite and self.min >= 0 and self.max <= 1


@dataclass
class TargetStats:
    numel: int
    min: float
    max: float
    rows_total: int  # rows over the class dim (0 without one)
    # Over the sampled rows (at most SAMPLE_ROWS): least and greatest row sum over the class
    # dim, and the least of the rows' maxima. A rule that needs every row looks again.
    row_sum: tuple[float, float] | None = None
    row_max_least: float | None = None
    rows_sampled: int = 0

    @property
    def finite(self) -> bool:
        return math.isfinite(self.min) and math.isfinite(self.max)

    @property
    def in_unit_range(self) -> bool:
        return self.finite and self.min >= 0 and self.max <= 1

    @property
    def one_hot_rows(self) -> bool:
        """Every sampled row holds exactly one 1 and 0s elsewhere: values in [0, 1] whose rows
        each sum to exactly 1 with a maximum of exactly 1."""
        return (
            self.in_unit_range
            and self.row_sum is not None
            and self.row_sum == (1.0, 1.0)
            and self.row_max_least == 1.0
        )


@dataclass
class Statistics:
    input: InputStats | None = None
    target: TargetStats | None = None


class StatisticsPlan:
    """Decides from metadata what to compute, computes it on the device, and reads it back."""

    def __init__(self, call: Call):
        self.call = call
        self._layout: list[tuple[str, int]] = []

    # ------------------------------------------------------------------ compute
    def compute(self) -> torch.Tensor:
        return autocast_off(self.call.input.device.type, self._compute)

    def _compute(self) -> torch.Tensor:
        call = self.call
        x, t = call.input, call.target
        parts: list[tuple[str, torch.Tensor]] = []
        with torch.no_grad():
            if x.dtype in FLOAT_DTYPES and x.numel() > 0:
                low, high = whole_aminmax(x)
                parts += [("in.min", low), ("in.max", high)]
                if _has_rows(x):
                    sums = sample_rows(x, 1, SAMPLE_ROWS).float().sum(1)
                    parts.append(("in.row_sum", torch.stack(torch.aminmax(sums))))
            same_shape = tuple(t.shape) == tuple(x.shape)
            if t.dtype in FLOAT_DTYPES and t.numel() > 0 and same_shape:
                low, high = whole_aminmax(t)
                parts += [("tg.min", low), ("tg.max", high)]
                if _has_rows(t):  # sampled rows: the one-hot rule reads them all only then
                    rows = sample_rows(t, 1, SAMPLE_ROWS).float()
                    sums, maxima = rows.sum(1), rows.amax(1)
                    parts += [("tg.row_sum", torch.stack(torch.aminmax(sums)))]
                    parts += [("tg.row_max", maxima.amin())]
        return self._pack(parts, x.device)

    def _pack(self, parts: list[tuple[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
        """All parts in one float64 tensor (led by a float64 zero, so that every part promotes
        to float64), and `_layout` to read it back."""
        zero = torch.zeros(1, dtype=torch.float64, device=device)
        flat = [value.reshape(-1) for _, value in parts]
        self._layout = [("", 1)] + [
            (name, value.numel()) for (name, _), value in zip(parts, flat, strict=True)
        ]
        return torch.cat([zero, *(value.double() for value in flat)])

    # ------------------------------------------------------------------ read
    def read(self, values: list[float]) -> Statistics:
        got: dict[str, list[float]] = {}
        offset = 0
        for name, size in self._layout:
            got[name] = values[offset : offset + size]
            offset += size
        x, t = self.call.input, self.call.target
        stats = Statistics()
        if "in.min" in got:
            rows_total = x.numel() // max(x.shape[1], 1) if _has_rows(x) else x.numel()
            row_sum = tuple(got.get("in.row_sum", [math.nan, math.nan]))
            stats.input = InputStats(
                numel=x.numel(),
                min=got["in.min"][0],
                max=got["in.max"][0],
                rows_total=rows_total,
                rows_sampled=min(SAMPLE_ROWS, rows_total) if "in.row_sum" in got else 0,
                row_sum=row_sum,  # type: ignore[arg-type]
            )
        if "tg.min" in got:
            rows = "tg.row_sum" in got
            stats.target = TargetStats(
                numel=t.numel(),
                min=got["tg.min"][0],
                max=got["tg.max"][0],
                rows_total=t.numel() // max(t.shape[1], 1) if rows else 0,
                row_sum=tuple(got["tg.row_sum"]) if rows else None,  # type: ignore[arg-type]
                row_max_least=got["tg.row_max"][0] if rows else None,
                rows_sampled=min(SAMPLE_ROWS, t.numel() // max(t.shape[1], 1)) if rows else 0,
            )
        return stats


def _has_rows(t: torch.Tensor) -> bool:
    """A class dim with at least two classes, and rows to reduce over it."""
    return t.dim() >= 2 and t.shape[1] >= 2 and t.numel() > 0


def row_reductions(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(least, greatest) sum over dim 1 and the least maximum over dim 1, read a slab of dim 0
    at a time in float32. An expanded target is read through the storage it repeats."""
    base, _ = storage_view(t, keep=1, permute=False)
    step = max(1, SLAB_ELEMENTS // max(base[0].numel(), 1))
    buffer = None
    if base.dtype != torch.float32 and base.shape[0] > step:
        buffer = torch.empty((step, *base.shape[1:]), dtype=torch.float32, device=base.device)
    sums, maxima = [], []
    for start in range(0, base.shape[0], step):
        slab = base[start : start + step]
        if buffer is not None:
            slab = buffer[: slab.shape[0]].copy_(slab)
        elif slab.dtype != torch.float32:
            slab = slab.float()
        sums.append(slab.sum(1).reshape(-1))
        maxima.append(slab.amax(1).reshape(-1))
    sums_all = torch.cat(sums)
    return torch.stack(torch.aminmax(sums_all)), torch.cat(maxima).amin()
