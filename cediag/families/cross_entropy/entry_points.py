"""What `watch()` patches for cross-entropy: torch's functions, and the libraries whose losses
compute cross-entropy themselves, each with a mapping from the call's arguments (by name, as
the library's own signature spells them) to `F.cross_entropy`'s `(input, target, options)`, or
None when the call is one the mapping cannot express faithfully (it then runs unchecked). A
mapping only takes views of the tensors: no copy, no data read. docs/integrations.md lists the
entries, the versions tested, and where a library's semantics differ from `F.cross_entropy`.

Nothing here imports a third-party library: an entry is patched only once its module is in
`sys.modules`.
"""

from __future__ import annotations

from typing import Any

import torch

from .._declaration import EntryPoint, Mapped
from .rules.targets import NO_IGNORE

# Losses that ignore nothing are checked with ignore_index=NO_IGNORE, which no target can equal:
# a -100 or 255 label is then out of range, as it is for their gather (a device-side assert).


def _tensors(*values: Any) -> bool:
    return all(isinstance(v, torch.Tensor) for v in values)


def _class_last(x: torch.Tensor) -> torch.Tensor:
    """(..., C) logits in torch's layout (N, C, ...), as a view."""
    return x.movedim(-1, 1) if x.dim() > 2 else x


# ---------------------------------------------------------------------- timm


def timm_label_smoothing(a: dict[str, Any]) -> Mapped | None:
    """`LabelSmoothingCrossEntropy(smoothing).forward(x, target)`: log_softmax over the last dim,
    `gather(-1, target.unsqueeze(1))`, so (N, C) logits with (N,) labels only; no ignore_index.
    The loss is (1 - smoothing) * nll + smoothing * mean(-log p), torch's label_smoothing."""
    x, target = a["x"], a["target"]
    if _tensors(x) and x.dim() != 2:  # the gather mixes rows for other shapes
        return None
    smoothing = a["self"].smoothing
    return x, target, {"ignore_index": NO_IGNORE, "label_smoothing": smoothing}


def timm_soft_target(a: dict[str, Any]) -> Mapped | None:
    """`SoftTargetCrossEntropy().forward(x, target)`: sum(-target * log_softmax(x, -1), -1), so
    probabilities along the last dim. Targets it broadcasts, or that are not float, have no
    F.cross_entropy equivalent and are not checked."""
    x, target = a["x"], a["target"]
    if _tensors(x, target):
        if target.shape != x.shape or not target.is_floating_point():
            return None
        if x.dim() > 2:
            x, target = x.movedim(-1, 1), target.movedim(-1, 1)
    return x, target, {}


# ---------------------------------------------------------------------- transformers


def label_smoother(a: dict[str, Any]) -> Mapped | None:
    """`LabelSmoother(epsilon, ignore_index)(model_output, labels, shift_labels=False,
    num_items_in_batch=None)`: logits `model_output["logits"]` or `[0]`, classes last; shifted
    by one position when `shift_labels`; labels equal to ignore_index are masked, other
    negative labels are clamped to class 0 (silently: the check reports them). The mean is
    over non-ignored labels, or a sum divided by `num_items_in_batch` when that is given."""
    smoother, output, labels = a["self"], a["model_output"], a["labels"]
    logits = output["logits"] if isinstance(output, dict) else output[0]
    options = {
        "ignore_index": smoother.ignore_index,
        "label_smoothing": smoother.epsilon,
        "reduction": "mean" if a.get("num_items_in_batch") is None else "sum",
    }
    if not _tensors(logits, labels):
        return logits, labels, options
    if a.get("shift_labels"):
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    if labels.dim() == logits.dim() and labels.shape[-1] == 1:
        labels = labels.squeeze(-1)
    elif labels.dim() != logits.dim() - 1:
        return None
    return _class_last(logits), labels, options


# ---------------------------------------------------------------------- segmentation_models_pytorch


def smp_soft_cross_entropy(a: dict[str, Any]) -> Mapped | None:
    """`SoftCrossEntropyLoss(reduction, smooth_factor, ignore_index, dim).forward(y_pred,
    y_true)`: classes along `dim`; labels equal to ignore_index (None: none) count as zero
    loss *in* the mean, so an all-ignored batch gives 0, not NaN (checked as a sum); the
    smoothing is torch's label_smoothing; other reductions return the unreduced loss."""
    loss, x, target = a["self"], a["y_pred"], a["y_true"]
    ignore = NO_IGNORE if loss.ignore_index is None else loss.ignore_index
    smoothing = 0.0 if loss.smooth_factor is None else loss.smooth_factor
    reduction = loss.reduction if loss.reduction in ("sum", "mean") else "none"
    if not _tensors(x, target) or x.dim() == 0:
        return x, target, {"ignore_index": ignore, "label_smoothing": smoothing}
    if reduction == "mean" and target.numel() > 0:  # an empty batch is NaN, as torch's mean
        reduction = "sum"
    dim = loss.dim % x.dim()
    if target.dim() == x.dim() and target.shape[dim] == 1:
        target = target.squeeze(dim)
    elif target.dim() != x.dim() - 1:
        return None
    if x.dim() > 1 and dim != 1:
        x = x.movedim(dim, 1)
    return x, target, {"ignore_index": ignore, "label_smoothing": smoothing, "reduction": reduction}


# ---------------------------------------------------------------------- Liger


def liger_module(a: dict[str, Any]) -> Mapped | None:
    """`LigerCrossEntropyLoss(weight, ignore_index, lse_square_scale, label_smoothing,
    reduction, softcap, ...).forward(_input, target)`: (BT, V) logits and (BT,) labels."""
    loss = a["self"]
    options = {
        "weight": loss.weight,
        "ignore_index": loss.ignore_index,
        "label_smoothing": loss.label_smoothing,
        "reduction": loss.reduction,
    }
    return a["_input"], a["target"], options


def liger_function(a: dict[str, Any]) -> Mapped | None:
    """`liger_cross_entropy(input, target, weight, size_average, ignore_index, reduce,
    reduction, label_smoothing, ...)`: F.cross_entropy's order, but `size_average` and
    `reduce` are accepted and ignored, so only `reduction` is read."""
    names = ("weight", "ignore_index", "reduction", "label_smoothing")
    return a["input"], a["target"], {name: a[name] for name in names}


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("torch.nn.functional", "cross_entropy", None),
    EntryPoint("torch.nn.functional", "nll_loss", None, loss="nll"),
    EntryPoint(
        "timm.loss.cross_entropy",
        "LabelSmoothingCrossEntropy.forward",
        timm_label_smoothing,
        library="timm",
    ),
    EntryPoint(
        "timm.loss.cross_entropy",
        "SoftTargetCrossEntropy.forward",
        timm_soft_target,
        library="timm",
    ),
    EntryPoint(
        "transformers.trainer_pt_utils",
        "LabelSmoother.__call__",
        label_smoother,
        library="transformers",
    ),
    EntryPoint(
        "segmentation_models_pytorch.losses.soft_ce",
        "SoftCrossEntropyLoss.forward",
        smp_soft_cross_entropy,
        library="segmentation-models-pytorch",
    ),
    EntryPoint(
        "liger_kernel.transformers.cross_entropy",
        "LigerCrossEntropyLoss.forward",
        liger_module,
        library="liger-kernel",
    ),
    EntryPoint(
        "liger_kernel.transformers.functional",
        "liger_cross_entropy",
        liger_function,
        library="liger-kernel",
    ),
    # Liger's apply_liger_kernel_to_*() assign this name to torch.nn.functional.cross_entropy.
    EntryPoint(
        "liger_kernel.transformers.monkey_patch",
        "liger_cross_entropy",
        liger_function,
        library="liger-kernel",
    ),
)
