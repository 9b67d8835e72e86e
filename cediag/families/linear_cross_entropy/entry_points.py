"""What `watch()` patches for linear cross-entropy: torch's function and module, Liger's fused
loss (module and function) and Apple's cut-cross-entropy, each with a mapping from the call's
arguments (by the names its own signature uses) to `(input, target, options)` as
`check(..., loss="linear_cross_entropy")` takes them. A mapping takes views, except where
noted; it never computes logits.

Nothing here imports a third-party library: an entry is patched only once its module is in
`sys.modules`. Where a library differs from torch's reference path:

- Liger and cut-cross-entropy take `softcap`: the logits become softcap * tanh(logits /
  softcap). The target and shape checks do not change; the logit-magnitude warning stands down.
- Liger's `lse_square_scale` (z-loss) adds a term to the loss; it changes nothing checked here.
- cut-cross-entropy takes (..., D) embeddings with (...) targets and flattens them itself;
  `shift=True` predicts targets[..., 1:] from e[..., :-1, :]: checked as the flattened
  embeddings with the targets shifted left and one ignore_index closing each row (the
  targets are copied, the embeddings are not). It has no bias, class weights or label
  smoothing.
- torch's `options=` (the chunked path) accepts a few calls the reference path rejects (class
  weights of the wrong size or dtype), and a fast path may give a NaN row for an out-of-range
  target instead of raising: the check holds every call to the reference path (`options` is
  not mapped), so both are reported.
"""

from __future__ import annotations

from typing import Any

import torch

from .._declaration import EntryPoint, Mapped

LOSS = "linear_cross_entropy"
_OPTIONS = ("linear_bias", "weight", "reduction", "ignore_index", "label_smoothing")


def torch_function(a: dict[str, Any]) -> Mapped | None:
    """`F.linear_cross_entropy(input, linear_weight, target, *, linear_bias, weight, reduction,
    ignore_index, label_smoothing, options)`."""
    options = {name: a[name] for name in _OPTIONS}
    options["linear_weight"] = a["linear_weight"]
    return a["input"], a["target"], options


def torch_module(a: dict[str, Any]) -> Mapped | None:
    """`nn.LinearCrossEntropyLoss(...).forward(input, target)`: its linear layer's weight and
    bias, reshaped to (C, *out_features, in_features) as its forward does, and its options."""
    from .call import _from_criterion

    return a["input"], a["target"], _from_criterion(a["self"], {})


def liger_module(a: dict[str, Any]) -> Mapped | None:
    """`LigerFusedLinearCrossEntropyLoss(ce_weight, ignore_index, lse_square_scale,
    label_smoothing, reduction, softcap, ...).forward(lin_weight, _input, target, bias=None)`:
    (BT, H) hidden states, a (V, H) weight and (BT,) labels."""
    loss = a["self"]
    options = {
        "linear_weight": a["lin_weight"],
        "linear_bias": a["bias"],
        "weight": loss.ce_weight,
        "ignore_index": loss.ignore_index,
        "label_smoothing": loss.label_smoothing,
        "reduction": loss.reduction,
        "softcap": loss.softcap,
    }
    return a["_input"], a["target"], options


def liger_function(a: dict[str, Any]) -> Mapped | None:
    """`liger_fused_linear_cross_entropy(input, weight, target, bias=None, ce_weight=None,
    ignore_index=-100, lse_square_scale=0.0, label_smoothing=0.0, reduction="mean",
    softcap=None, ...)`: `weight` is the classifier, `ce_weight` the class weights."""
    options = {
        "linear_weight": a["weight"],
        "linear_bias": a["bias"],
        "weight": a["ce_weight"],
        "ignore_index": a["ignore_index"],
        "label_smoothing": a["label_smoothing"],
        "reduction": a["reduction"],
        "softcap": a["softcap"],
    }
    return a["input"], a["target"], options


def cut_cross_entropy(a: dict[str, Any]) -> Mapped | None:
    """`linear_cross_entropy(e, c, targets, ignore_index=-100, softcap=None, reduction="mean",
    shift=False, filter_eps="high", impl=...)` (cut-cross-entropy 25.1.1): (..., D) embeddings,
    a (V, D) classifier, (...) targets."""
    e, targets, ignore = a["e"], a["targets"], a["ignore_index"]
    options = {
        "linear_weight": a["c"],
        "ignore_index": ignore,
        "reduction": a["reduction"],
        "softcap": a["softcap"],
    }
    if not (isinstance(e, torch.Tensor) and isinstance(targets, torch.Tensor)) or e.dim() == 0:
        return e, targets, options
    if tuple(e.shape[:-1]) != tuple(targets.shape):
        return e, targets, options  # cut-cross-entropy asserts; the check says why
    if a["shift"]:
        if targets.dim() == 0 or type(ignore) is not int:
            return None
        closing = targets.new_full((*targets.shape[:-1], 1), ignore)
        targets = torch.cat((targets[..., 1:], closing), dim=-1)
    if e.dim() > 2:
        e, targets = e.flatten(0, -2), targets.flatten()
    return e, targets, options


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("torch.nn.functional", "linear_cross_entropy", torch_function, loss=LOSS),
    EntryPoint("torch.nn", "LinearCrossEntropyLoss.forward", torch_module, loss=LOSS),
    EntryPoint(
        "liger_kernel.transformers.fused_linear_cross_entropy",
        "LigerFusedLinearCrossEntropyLoss.forward",
        liger_module,
        loss=LOSS,
        library="liger-kernel",
    ),
    EntryPoint(
        "liger_kernel.transformers.functional",
        "liger_fused_linear_cross_entropy",
        liger_function,
        loss=LOSS,
        library="liger-kernel",
    ),
    # The package re-exports the function; its LinearCrossEntropy module calls the module's.
    EntryPoint(
        "cut_cross_entropy",
        "linear_cross_entropy",
        cut_cross_entropy,
        loss=LOSS,
        library="cut-cross-entropy",
    ),
    EntryPoint(
        "cut_cross_entropy.linear_cross_entropy",
        "linear_cross_entropy",
        cut_cross_entropy,
        loss=LOSS,
        library="cut-cross-entropy",
    ),
)
