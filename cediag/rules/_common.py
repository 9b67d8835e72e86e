"""What rules of several families find the same way: arguments that are not dense tensors,
and NaN / Inf in a tensor. Each family's rule keeps its code, docs and fix; the evidence is
gathered here once."""

from __future__ import annotations

from typing import Any

import torch

from .._call import shape_str
from .._report import ValueEvidence
from ._locate import count_and_locate

# What every family's NaN / Inf finding tells the user to do, in a full check or a late report.
NON_FINITE_FIX = (
    "find the op that produced them: torch.autograd.set_detect_anomaly(True); lower the "
    "learning rate or clip gradients (torch.nn.utils.clip_grad_norm_)"
)


def not_dense(arguments: dict[str, Any]) -> list[str]:
    """Why each argument (by role) is not a dense strided tensor: "target is a list", ..."""
    problems = []
    for role, value in arguments.items():
        if not isinstance(value, torch.Tensor):
            problems.append(f"{role} is a {type(value).__name__}")
        elif value.is_nested:
            problems.append(f"{role} is a nested tensor")
        elif value.layout is not torch.strided:
            problems.append(f"{role} is a {value.layout} tensor")
    return problems


def non_finite(role: str, x: torch.Tensor) -> tuple[str, list[ValueEvidence]]:
    """The sentence and the evidence for NaN / Inf in `x`: how many of each, and where the
    first ones are (counted exactly; read only once the statistics have seen one)."""
    nans, nan_at = count_and_locate(x, torch.isnan)
    infs, inf_at = count_and_locate(x, torch.isinf)
    parts = [f"{nans} NaN" if nans else "", f"{infs} Inf" if infs else ""]
    first = (nan_at or inf_at)[:1]
    sentence = (
        f"{role} {shape_str(x.shape)} holds "
        + " and ".join(p for p in parts if p)
        + f" of {x.numel()} values"
        + (f", first at {first[0]}" if first else "")
        + "."
    )
    evidence = [
        ValueEvidence(role=role, what="NaN", count=nans, total=x.numel(), first_positions=nan_at),
        ValueEvidence(role=role, what="Inf", count=infs, total=x.numel(), first_positions=inf_at),
    ]
    return sentence, evidence
