"""The statistics pass of a linear cross-entropy check, without the N x V logits.

Cross-entropy's plan computes the target statistics on the full target, as it does for
`F.cross_entropy` (the reused CE2xx rules read them, with C the vocabulary). The input part is
replaced: the hidden states, linear_weight and linear_bias are each read once in place
(`whole_aminmax`), and the logits are computed for at most `SAMPLE_ROWS` evenly spaced rows of
the hidden states, a few rows at a time (`SAMPLE_CHUNK_ELEMENTS` logits per chunk), so the
extra memory is a few MB however large N x V is. Everything lands in the one packed float64
tensor of cross-entropy's plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..._reading import sample_rows, whole_aminmax
from ..cross_entropy.statistics import (
    SAMPLE_CHUNK_ELEMENTS,
    SAMPLE_ROWS,
    Statistics,
    StatisticsPlan,
)
from .call import LinearCall


@dataclass
class LinearStats:
    """What the LCE3xx rules read. A range is None when that tensor was not read (empty, or
    the linear part is one torch rejects: no logits are sampled then)."""

    hidden: tuple[float, float] | None
    weight: tuple[float, float] | None
    bias: tuple[float, float] | None
    logits: tuple[float, float] | None  # over the sampled rows
    rows_total: int  # rows of hidden states (N, or 1 for unbatched input)
    rows_sampled: int
    logits_sampled: int  # how many logits the sample holds
    logits_nonzero: int
    row_spread: float  # max |row - first row| over the sampled logit rows: 0 when all equal


@dataclass
class LinearStatistics(Statistics):
    linear: LinearStats | None = None


def _rows(hidden: torch.Tensor) -> torch.Tensor:
    return hidden if hidden.dim() == 2 else hidden.reshape(1, -1)


class LinearStatisticsPlan(StatisticsPlan):
    """Cross-entropy's plan with the logits part read from hidden states and classifier."""

    call: LinearCall

    def _input_parts(self, x: torch.Tensor, class_dim: int) -> None:
        """`x` is the stand-in (no values): read the real arguments instead."""
        call = self.call
        h, w, b = call.hidden, call.linear_weight, call.linear_bias
        for name, t in (("lin.hidden", h), ("lin.weight", w), ("lin.bias", b)):
            if t is not None and t.numel() > 0:
                self._put(name, torch.stack(whole_aminmax(t)))
        if call.linear_rejection() is None and h.numel() > 0 and w.shape[0] > 0:
            self._logit_parts(h, w, b)

    def _logit_parts(self, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
        classes = int(w.shape[0])
        weight = w if w.dim() == 2 else w.flatten(0, -2)  # (C * prod(out_features), H)
        bias = None if b is None else b.reshape(-1)
        sample = sample_rows(_rows(h), 1, SAMPLE_ROWS)  # (S, H): S rows, copied
        step = max(1, SAMPLE_CHUNK_ELEMENTS // max(weight.shape[0], 1))
        first = None
        lows, highs, nonzeros, spreads = [], [], [], []
        for start in range(0, sample.shape[0], step):
            logits = F.linear(sample[start : start + step], weight, bias).float()
            if w.dim() > 2:  # (rows, C, d1, ...) -> one row of C logits per position
                logits = logits.reshape(logits.shape[0], classes, -1).transpose(1, 2)
                logits = logits.reshape(-1, classes)
            if first is None:
                first = logits[:1].clone()
            low, high = torch.aminmax(logits)
            lows.append(low)
            highs.append(high)
            nonzeros.append(torch.count_nonzero(logits))
            spreads.append(logits.sub_(first).abs_().amax())
            del logits
        self._put("lin.logits", torch.stack((torch.stack(lows).amin(), torch.stack(highs).amax())))
        self._put("lin.nonzero", torch.stack(nonzeros).sum())
        self._put("lin.spread", torch.stack(spreads).amax())
        self._sampled = int(sample.shape[0])
        self._logits_sampled = int(sample.shape[0]) * int(weight.shape[0])

    def read(self, values: list[float]) -> LinearStatistics:
        got = self.unpack(values)
        base = self.statistics(got)

        def pair(name: str) -> tuple[float, float] | None:
            return (got[name][0], got[name][1]) if name in got else None

        h = self.call.hidden
        sampled = "lin.logits" in got
        linear = LinearStats(
            hidden=pair("lin.hidden"),
            weight=pair("lin.weight"),
            bias=pair("lin.bias"),
            logits=pair("lin.logits"),
            rows_total=_rows(h).shape[0] if h.dim() <= 2 else h.numel() // max(h.shape[-1], 1),
            rows_sampled=getattr(self, "_sampled", 0) if sampled else 0,
            logits_sampled=getattr(self, "_logits_sampled", 0) if sampled else 0,
            logits_nonzero=int(got["lin.nonzero"][0]) if sampled else 0,
            row_spread=got["lin.spread"][0] if sampled else float("nan"),
        )
        return LinearStatistics(
            input=None,
            index_target=base.index_target,
            same_shape_target=base.same_shape_target,
            linear=linear,
        )
