"""What `watch()` patches for binary cross-entropy: torch's two functions. `nn.BCEWithLogitsLoss`
and `nn.BCELoss` call them, so their calls are checked too. Both take `(input, target, weight,
size_average, reduce, reduction[, pos_weight])`: the family's option names, so no mapping; the
binder turns the legacy `size_average` / `reduce` into a reduction."""

from __future__ import annotations

from .._declaration import EntryPoint

ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint(
        "torch.nn.functional",
        "binary_cross_entropy_with_logits",
        None,
        loss="bce_with_logits",
    ),
    EntryPoint("torch.nn.functional", "binary_cross_entropy", None, loss="bce"),
)
