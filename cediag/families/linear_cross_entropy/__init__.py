"""Linear (fused) cross-entropy: `F.linear_cross_entropy` / `nn.LinearCrossEntropyLoss`, and the
fused losses of Liger and cut-cross-entropy, which take the hidden states and the classifier
instead of the logits and never build the (N, V) logits.

- `call.py`: the bound call, a cross-entropy call whose input stands in for the logits (shape
  and dtype, no memory), with the hidden states and the classifier as extra fields;
- `contract.py`: what torch checks before the logits exist (then cross-entropy's contract);
- `statistics.py`: the statistics pass: the target in full, the logits of sampled rows only;
- `sentinel.py`: the per-call check: the hidden states' range and the target reductions;
- `entry_points.py`: what `watch()` patches (torch, Liger, cut-cross-entropy);
- `rules/`: LCE1xx shapes, LCE3xx logit values, LCE4xx options. Cross-entropy's target rules
  (CE2xx) and the option rules that read no logit values run on the same call (`REUSED`).
"""

from __future__ import annotations

from .._declaration import LossFamily, Option

# A declaration only: what it names is imported when first used (the CLI reads the
# declarations before it imports torch).

# Cross-entropy rules this family runs on its stand-in call, each audited: they read the
# target, the options, and the logits' shape and dtype (which the stand-in has), never the
# logits' values or graph (which it has not). Left out: CE1xx (their messages and fixes name
# the logits tensor; LCE1xx says it for hidden states and classifier; CE105's safety net is
# LCE110), CE3xx (logit values: LCE3xx reads sampled logits instead), and CE403 (torch refuses
# any ignore_index with probabilities here, not only one >= 0: LCE401).
REUSED = (
    "CE201", "CE202", "CE203", "CE204", "CE205", "CE206", "CE207", "CE208", "CE209", "CE210",
    "CE211", "CE212", "CE213", "CE214", "CE215",
    "CE401", "CE402", "CE404", "CE405",
)  # fmt: skip


FAMILY = LossFamily(
    package=__name__,
    name="linear_cross_entropy",
    title="Linear (fused) cross-entropy",
    prefix="LCE",
    categories={"1": "Hidden states and classifier", "3": "Logit values", "4": "Options"},
    losses=("linear_cross_entropy",),
    options=(
        Option("linear_weight", None, "tensor", "The classifier, (V, H) or (V, d1, ..., H)."),
        Option("linear_bias", None, "tensor", "Its bias, (V,) or (V, d1, ...)."),
        Option("weight", None, "tensor", "A manual rescaling weight per class, (V,).", "weight"),
        Option(
            "ignore_index",
            None,
            "int",
            "A target value to ignore; None: -100 for class indices (refused with probabilities).",
            "ignore_index",
        ),
        Option("reduction", "mean", "str", "none, mean or sum.", "reduction"),
        Option("label_smoothing", 0.0, "float", "In [0, 1].", "label_smoothing"),
        Option(
            "softcap",
            None,
            "float",
            "Liger / cut-cross-entropy: logits become softcap * tanh(logits / softcap).",
        ),
    ),
    bind=".call:bind",
    rules=".rules",
    criteria=(("torch.nn.LinearCrossEntropyLoss", "linear_cross_entropy"),),  # torch >= 2.13
    entry_points=".entry_points:ENTRY_POINTS",
    sentinel=".sentinel:LinearSentinelPlan.of",
    reuses=REUSED,
    docs=(
        '`F.linear_cross_entropy` / `nn.LinearCrossEntropyLoss` (`loss="linear_cross_entropy"`, '
        "the classifier as `linear_weight=`), Liger's fused linear cross-entropy and "
        "cut-cross-entropy: checked without building the (N, V) logits."
    ),
)
