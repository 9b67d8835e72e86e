"""Cross-entropy and NLL: `F.cross_entropy` / `nn.CrossEntropyLoss` and `F.nll_loss` /
`nn.NLLLoss`, the family cediag was built for.

- `call.py`: the bound call and what its metadata implies (class dim, probability targets);
- `contract.py`: what torch itself rejects, mirrored from metadata (the safety net);
- `statistics.py`: the one statistics pass of a full check;
- `sentinel.py`: the per-call check a guarded loss gets between full checks;
- `entry_points.py`: what `watch()` patches (torch's functions, timm, transformers, smp, Liger);
- `rules/`: the rules, one function each, by category (CE1xx shape, CE2xx targets, CE3xx
  logits, CE4xx options).
"""

from __future__ import annotations

from .._declaration import LossFamily, Option

# A declaration only: what it names is imported when first used (the CLI reads the
# declarations before it imports torch).
FAMILY = LossFamily(
    package=__name__,
    name="cross_entropy",
    title="Cross-entropy and NLL",
    prefix="CE",
    categories={
        "1": "Shape and layout",
        "2": "Target dtype and values",
        "3": "Logit values",
        "4": "Options",
    },
    losses=("cross_entropy", "nll"),
    options=(
        Option("weight", None, "tensor", "A manual rescaling weight per class, (C,).", "weight"),
        Option("ignore_index", -100, "int", "A target value to ignore.", "ignore_index"),
        Option("reduction", "mean", "str", "none, mean or sum.", "reduction"),
        Option("label_smoothing", 0.0, "float", "In [0, 1].", "label_smoothing"),
    ),
    bind=".call:bind",
    rules=".rules",
    criteria=(("torch.nn.NLLLoss", "nll"), ("torch.nn.CrossEntropyLoss", "cross_entropy")),
    entry_points=".entry_points:ENTRY_POINTS",
    sentinel=".sentinel:SentinelPlan.of",
    docs=(
        '`F.cross_entropy` / `nn.CrossEntropyLoss` (`loss="cross_entropy"`) and `F.nll_loss` / '
        '`nn.NLLLoss` (`loss="nll"`): class-index or probability targets.'
    ),
)
