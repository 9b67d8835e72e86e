"""The two checkers cediag is compared with.

`naive_check` is what one writes by hand: one reduction and one `.item()` per question, and a
softmax-sum / exp-sum over the whole tensor to ask "is this already probabilities?". Each call
reads the logits again, and on a GPU each `.item()` waits for the device.

`torchmetrics_validation` runs torchmetrics' own input validation for multiclass inputs (the
argument check and the tensor check that `multiclass_accuracy(..., validate_args=True)` runs),
or returns None when torchmetrics is not installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch


def naive_check(x: torch.Tensor, target: torch.Tensor, class_dim: int = 1) -> list[str]:
    problems = []
    if torch.isnan(x).any().item():
        problems.append("NaN in logits")
    if torch.isinf(x).any().item():
        problems.append("Inf in logits")
    low, high = x.min().item(), x.max().item()
    n_classes = x.shape[class_dim]
    one = torch.ones((), device=x.device)
    if low >= 0 and high <= 1 and torch.allclose(x.sum(class_dim).float(), one):
        problems.append("softmax applied")
    if high <= 0 and torch.allclose(x.float().exp().sum(class_dim), one):
        problems.append("log_softmax applied")
    probs_sum = x.float().softmax(class_dim).sum(class_dim)
    if not torch.allclose(probs_sum, torch.ones_like(probs_sum), atol=1e-3):
        problems.append("softmax of the logits does not sum to 1")
    if target.dtype.is_floating_point and target.shape == x.shape:
        if target.min().item() < 0 or target.max().item() > 1:
            problems.append("probability targets outside [0, 1]")
    else:
        if target.min().item() < 0 or target.max().item() >= n_classes:
            problems.append("target out of range")
    return problems


def torchmetrics_validation() -> Callable[[torch.Tensor, torch.Tensor], None] | None:
    try:
        # The validators live in the module (the package re-exports a function of that name).
        module = importlib.import_module("torchmetrics.functional.classification.stat_scores")
    except ImportError:
        return None

    def validate(x: torch.Tensor, target: torch.Tensor) -> None:
        n_classes = x.shape[1]
        module._multiclass_stat_scores_arg_validation(n_classes, 1, "macro", "global", None)
        module._multiclass_stat_scores_tensor_validation(x, target, n_classes, "global", None)

    return validate
