"""Binary cross-entropy: `F.binary_cross_entropy_with_logits` / `nn.BCEWithLogitsLoss` and
`F.binary_cross_entropy` / `nn.BCELoss`, for binary and multi-label classification.

- `call.py`: the bound call and what its metadata implies (the class dim of multi-label logits);
- `contract.py`: what torch itself rejects, mirrored from metadata (the safety net);
- `statistics.py`: the one statistics pass of a full check;
- `sentinel.py`: the per-call check a guarded loss gets between full checks;
- `entry_points.py`: what `watch()` patches;
- `rules/`: the rules, one function each, by category (BCE1xx shape, BCE2xx targets, BCE3xx
  input values, BCE4xx options).
"""

from __future__ import annotations

from .._declaration import LossFamily, Option

# A declaration only: what it names is imported when first used (the CLI reads the
# declarations before it imports torch).
FAMILY = LossFamily(
    package=__name__,
    name="bce",
    title="Binary cross-entropy",
    prefix="BCE",
    categories={
        "1": "Shape and layout",
        "2": "Target dtype and values",
        "3": "Input values",
        "4": "Options",
    },
    losses=("bce_with_logits", "bce"),
    options=(
        Option(
            "weight",
            None,
            "tensor",
            "A rescaling weight that broadcasts to the input's shape.",
            "weight",
        ),
        Option(
            "pos_weight",
            None,
            "tensor",
            "bce_with_logits only: the weight of positives per class, (C,).",
            "pos_weight",
        ),
        Option("reduction", "mean", "str", "none, mean or sum.", "reduction"),
    ),
    bind=".call:bind",
    rules=".rules",
    criteria=(("torch.nn.BCEWithLogitsLoss", "bce_with_logits"), ("torch.nn.BCELoss", "bce")),
    entry_points=".entry_points:ENTRY_POINTS",
    sentinel=".sentinel:SentinelPlan.of",
    docs=(
        "`F.binary_cross_entropy_with_logits` / `nn.BCEWithLogitsLoss` "
        '(`loss="bce_with_logits"`) and `F.binary_cross_entropy` / `nn.BCELoss` '
        '(`loss="bce"`): binary and multi-label classification, one float target in [0, 1] '
        "per input element, with `weight` and `pos_weight` that broadcast to the input's shape."
    ),
)
