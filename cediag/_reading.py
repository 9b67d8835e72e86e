"""Reading tensors in place: the primitives every family's statistics pass and rules share.

Nothing here copies a tensor whole: a transposed or channels-last tensor is read in its memory
order, an expanded (zero-stride) one through the storage it repeats, and rows are sampled by
index without gathering the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch

from ._call import autocast_enabled

T = TypeVar("T")


def is_integer(t: torch.Tensor) -> bool:
    return not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool


def probability_tolerance(dtype: torch.dtype) -> float:
    """How far from 1 a row of probabilities may sum and still count as normalised."""
    return max(1e-2, 4 * torch.finfo(dtype).eps) if dtype.is_floating_point else 1e-2


def sample_rows(x: torch.Tensor, dim: int, count: int) -> torch.Tensor:
    """Up to `count` evenly spaced 1-D fibres of `x` along `dim`, as a (S, x.shape[dim]) tensor.

    Deterministic (first and last fibre included), reads only the S fibres, and never copies
    `x`: `index_select` on a view when the other dims merge into one, else S integer-indexed
    views stacked (advanced indexing is ~30x slower than either on large CPU tensors).
    """
    moved = x.movedim(dim, -1)
    outer = moved.shape[:-1]
    n_rows = math.prod(outer)
    if n_rows == 0:
        return moved.new_empty((0, moved.shape[-1]))
    if not outer:
        return moved.unsqueeze(0)
    size = min(count, n_rows)
    try:
        rows = moved.view(n_rows, moved.shape[-1])
    except RuntimeError:  # the other dims do not merge into one without a copy
        rows = None
    if rows is not None:
        if size == n_rows:  # every row: the view itself
            return rows
        # Integer arithmetic: a float32 row index rounds past the last row beyond 2**24 rows.
        picks = torch.tensor(_spaced(n_rows, size), dtype=torch.int64, device=x.device)
        return rows.index_select(0, picks)
    return torch.stack([moved[_unravel(step, outer)] for step in _spaced(n_rows, size)])


def _spaced(n: int, count: int) -> list[int]:
    """`count` evenly spaced integers in [0, n), the first and the last included, exactly."""
    if count <= 1:
        return [0] * count
    return [(2 * i * (n - 1) + count - 1) // (2 * (count - 1)) for i in range(count)]


def storage_view(
    t: torch.Tensor, keep: int | None = None, permute: bool = True
) -> tuple[torch.Tensor, int]:
    """A view of `t` that holds each element `t` repeats once, and how many times each repeats.

    An expanded tensor's zero-stride dims (other than `keep`) are narrowed to size 1: its values
    are those of the tensor it was expanded from, without the 40 GB a copy of an expanded
    (10**7, 1000) softmax would take. With `permute`, the dims are then ordered by stride, so a
    transposed or channels-last tensor becomes the contiguous tensor it is a view of (whole-tensor
    reductions do not care about dim order, and reduce a non-contiguous view by copying it).
    """
    if t.is_contiguous():
        return t, 1
    repeat = 1
    for dim, (size, stride) in enumerate(zip(t.shape, t.stride(), strict=True)):
        if stride == 0 and size > 1 and dim != keep:
            t = t.narrow(dim, 0, 1)
            repeat *= size
    if permute:
        t = t.permute(sorted(range(t.dim()), key=lambda d: -t.stride(d)))
    return t, repeat


def whole_aminmax(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least and greatest element (NaN if any), reading `t` in place: `torch.aminmax` on the
    contiguous storage order, or, for a view with gaps (`logits[:, :-1]`), two dim-wise
    reductions, which read strided memory without the full copy `aminmax` makes of it."""
    base, _ = storage_view(t)
    if base.is_contiguous():
        return torch.aminmax(base)
    dims = tuple(range(base.dim()))
    return base.amin(dims), base.amax(dims)


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    coords = []
    for size in reversed(shape):
        flat, coord = divmod(flat, size)
        coords.append(coord)
    return tuple(reversed(coords))


def autocast_off(device_type: str, compute: Callable[[], T]) -> T:
    """`compute()` with autocast off for `device_type`: a statistics pass reads the tensors in
    the dtypes the loss receives, and a caller's autocast region must not change its ops."""
    if autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return compute()
    return compute()
