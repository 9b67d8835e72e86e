"""LCE4xx: options whose meaning differs from `F.cross_entropy`'s."""

from __future__ import annotations

from ...._call import option_text, shape_str
from ...._report import OptionEvidence
from ....rules._context import Context
from ....rules._registry import Finding, rule


@rule(
    "LCE401",
    "linear-ignore-index-with-probabilities",
    "error",
    "structure",
    "any ignore_index, even -100, given with probability targets",
)
def linear_ignore_index_with_probabilities(ctx: Context) -> Finding | None:
    """An `ignore_index` given together with probability targets.

    ## What it does
    Fires when the target has the logits' shape (N, V), so it holds probabilities, and
    `ignore_index` is given at all, -100 included.

    ## Why is this bad?
    `F.linear_cross_entropy`'s `ignore_index` defaults to None (read as -100 for class
    indices), and torch raises "ignore_index cannot be specified when target contains
    probabilities" for any other value. `F.cross_entropy` accepts a negative one: code moved
    from it, or a wrapper that always passes `ignore_index=-100`, breaks.

    ## Example
    ```python
    F.linear_cross_entropy(hidden, W, soft_targets, ignore_index=-100)
    ```

    ## Use instead
    ```python
    F.linear_cross_entropy(hidden, W, soft_targets)     # ignore_index left at None
    ```
    """
    call = ctx.call
    given = call.ignore_index_given
    if given is None or not call.probability_targets:
        return None
    return Finding(
        f"ignore_index={option_text(given)} with a probability target "
        f"{shape_str(call.target.shape)}: linear_cross_entropy refuses any ignore_index with "
        "probability targets (its default is None).",
        "leave ignore_index out (None); mask samples yourself: "
        "F.linear_cross_entropy(hidden, linear_weight, target, reduction='none')[keep].mean()",
        [OptionEvidence(name="ignore_index", value=option_text(given))],
    )
