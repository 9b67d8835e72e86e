"""Second looks, taken only after the packed statistics found a problem: counts and positions.

They scan in chunks along dim 0, so even on huge logits no full-size mask is materialised.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._reading import storage_view

CHUNK_ELEMENTS = 1 << 22
MAX_POSITIONS = 5


def count_and_locate(
    t: torch.Tensor, predicate: Callable[[torch.Tensor], torch.Tensor], limit: int = MAX_POSITIONS
) -> tuple[int, list[list[int]]]:
    """How many elements satisfy `predicate`, and the positions of the first `limit`.

    An expanded tensor is scanned through the storage it repeats (its zero-stride dims
    narrowed to one element), and the count scaled: scanning every repeat of a (10**7, 1000)
    view of one row would take minutes and find nothing new."""
    if t.numel() == 0:
        return 0, []
    if t.dim() == 0:
        hit = bool(predicate(t))
        return int(hit), [[]] if hit else []
    t, repeat = storage_view(t, permute=False)
    count, positions = _scan(t, predicate, limit)
    return count * repeat, positions


def _scan(
    t: torch.Tensor, predicate: Callable[[torch.Tensor], torch.Tensor], limit: int
) -> tuple[int, list[list[int]]]:
    per_row = max(t[0].numel(), 1)
    step = max(1, CHUNK_ELEMENTS // per_row)
    count, positions = 0, []
    with torch.no_grad():
        for start in range(0, t.shape[0], step):
            mask = predicate(t[start : start + step])
            count += int(mask.sum())
            if len(positions) < limit:
                for index in mask.nonzero()[: limit - len(positions)].tolist():
                    index[0] += start
                    positions.append(index)
    return count, positions


def first_positions(
    t: torch.Tensor, predicate: Callable[[torch.Tensor], torch.Tensor], limit: int = MAX_POSITIONS
) -> list[list[int]]:
    return count_and_locate(t, predicate, limit)[1]


def dim_sum_range(x: torch.Tensor, dim: int) -> tuple[float, float]:
    """Min and max of `x.sum(dim)` in float32, reading `x` once in slabs of dim 0.

    A second look for probability-like logits only: no float copy of the whole tensor (a
    half-precision `sum(dtype=float32)` would make one), and the output is numel / size(dim).
    """
    # Zero-stride dims other than `dim` repeat the same sums: read each once.
    x, _ = storage_view(x, keep=dim, permute=False)
    per_slab = max(1, CHUNK_ELEMENTS // max(x[0].numel(), 1))
    with torch.no_grad():
        if dim == 0:
            total = None
            for start in range(0, x.shape[0], per_slab):
                part = x[start : start + per_slab].sum(0, dtype=torch.float32)
                total = part if total is None else total.add_(part)
        else:
            total = torch.cat(
                [
                    x[start : start + per_slab].sum(dim, dtype=torch.float32).reshape(-1)
                    for start in range(0, x.shape[0], per_slab)
                ]
            )
        low, high = torch.aminmax(total)
    return float(low), float(high)
