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

from typing import Any

from .._declaration import LossFamily, Option

# Nothing heavy at import: the CLI reads the declarations before it imports torch.


def _bind(loss: str, input: Any, target: Any, options: dict[str, Any], criterion: Any):
    from .call import bind_call

    return bind_call(input, target, criterion=criterion, loss=loss, **options)  # type: ignore[arg-type]


def _sentinel(call: Any):
    from .sentinel import SentinelPlan

    return SentinelPlan.of(call)


def _entry_points():
    from .entry_points import ENTRY_POINTS

    return ENTRY_POINTS


FAMILY = LossFamily(
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
    bind=_bind,
    rules="cediag.families.cross_entropy.rules",
    criteria=(("torch.nn.NLLLoss", "nll"), ("torch.nn.CrossEntropyLoss", "cross_entropy")),
    entry_points=_entry_points,
    sentinel=_sentinel,
    docs=(
        '`F.cross_entropy` / `nn.CrossEntropyLoss` (`loss="cross_entropy"`) and `F.nll_loss` / '
        '`nn.NLLLoss` (`loss="nll"`): class-index or probability targets.'
    ),
)
