"""The sentinel: the check every guarded call gets, between the scheduled full checks.

It catches the faults that appear mid-training, on the call where they appear: class indices
out of range or all ignored, NaN/Inf logits, probability targets that stop summing to 1, and
logits whose range or graph says an activation was applied. It reads the logits once
(`aminmax`), reduces the targets (small, or needed whole for probabilities), and builds no Python
object unless something is off. What it finds is a *suspicion*: the guard answers it with the
full check on the same call (`sync="eager"`), so the message is the full check's. With
`sync="deferred"` the readings stay on the device and are read in batches; a suspicion read
late becomes a report built from the reading itself (`late_report`).

What the sentinel needs from a call's metadata is derived once per call signature
(`SentinelPlan.of`), since training loops repeat a handful of shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..._call import FLOAT_DTYPES, autocast_on, shape_str
from ..._graph import ACTIVATION_NODES
from ..._reading import probability_tolerance, whole_aminmax
from ..._report import CallSummary, Diagnostic, Report, ValueEvidence
from ...rules._common import NON_FINITE_FIX
from ...rules._registry import diagnostic
from .call import Call
from .rules.targets import NO_IGNORE

# Logits at least this large, as any rule calls extreme (CE307), are a reason to look closer.
_EXTREME = {"half": 1e3, "full": 1e4}
# Autograd nodes that end an activation the loss applies itself (softmax, log_softmax) or that
# makes no sense before it (sigmoid, relu): the full check reads the graph for the details.
_ACTIVATION_NODES = {
    "cross_entropy": frozenset(ACTIVATION_NODES),
    # log_softmax is what F.nll_loss expects; any other final activation is a mistake.
    "nll": frozenset(n for n, kind in ACTIVATION_NODES.items() if kind != "log_softmax"),
}
# Float slack on the [0, 1] range of logits that look like probabilities.
_PROB_SLACK = 1e-2

# What a reading can say. The exact ones are errors the full check will report; `range` and
# `graph` are hints (the values could be legal) that the guard follows once per episode.
EXACT = ("nonfinite", "targets")
HINTS = ("range", "graph")
REASON_TEXT = {
    "nonfinite": "NaN or Inf in the logits",
    "targets": "targets out of range, all ignored, or not probabilities",
    "range": "a logits range an activation gives",
    "graph": "an activation in the graph",
}


@dataclass(frozen=True)
class SentinelPlan:
    """What the sentinel reads for one call signature."""

    summary: CallSummary  # the call, for reports built from a late reading
    loss: str
    n_classes: int
    class_dim: int
    probability_targets: bool
    ignore: int | None  # an int ignore_index; None when no class index can equal it
    mean: bool  # reduction="mean": a batch with every target ignored makes the loss NaN
    extreme: float
    on_cpu: bool  # read step by step: there is no transfer to wait for
    tolerance: float  # how far from 1 a row of probability targets may sum

    # The SentinelPlan protocol (cediag.families._declaration), over this module's functions.
    exact = EXACT
    hints = HINTS

    def read_now(self, x: torch.Tensor, t: torch.Tensor) -> tuple[str, ...]:
        return read_now(self, x, t)

    def measure(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return measure(self, x, t)

    def reasons(self, values: list, x: torch.Tensor | None = None) -> tuple[str, ...]:
        return reasons(self, values, x)

    def late_report(self, values: list, call_number: int) -> Report | None:
        return late_report(self, values, call_number)

    def explain(self, reason: str) -> str:
        return REASON_TEXT[reason]

    @staticmethod
    def of(call: Call) -> SentinelPlan | None:
        """The plan for a call whose structure checks passed, or None when there is nothing the
        sentinel can read (no float logits, odd dtypes, meta tensors, no elements)."""
        x, t = call.input, call.target
        if not call.tensors_ok or call.on_meta or x.dtype not in FLOAT_DTYPES or x.dim() == 0:
            return None
        if x.numel() == 0 or t.numel() == 0:
            return None
        if call.probability_targets:
            if t.dtype not in FLOAT_DTYPES:
                return None
        elif t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            return None
        ignore = call.ignore_index if type(call.ignore_index) is int else None
        if ignore is not None and not -(2**63) <= ignore < 2**63:
            ignore = None
        half = x.dtype in (torch.float16, torch.bfloat16)
        return SentinelPlan(
            summary=call.summary(),
            loss=call.loss,
            n_classes=int(call.n_classes or 0),
            class_dim=call.class_dim,
            probability_targets=call.probability_targets,
            ignore=ignore,
            mean=call.reduction == "mean",
            extreme=_EXTREME["half" if half else "full"],
            on_cpu=x.device.type == "cpu",
            tolerance=probability_tolerance(t.dtype),
        )


def _masked_target_range(plan: SentinelPlan, t: torch.Tensor):
    """(least, greatest) class index other than ignore_index, and how many are ignored. The
    ignored positions read as 0, a valid class, so they never look out of range."""
    if plan.ignore is None:
        low, high = torch.aminmax(t)
        return low, high, None
    ignored = t == plan.ignore
    low, high = torch.aminmax(t.masked_fill(ignored, 0))
    return low, high, ignored.sum()


def read_now(plan: SentinelPlan, x: torch.Tensor, t: torch.Tensor) -> tuple[str, ...]:
    """Measure one call and read the result at once (one small transfer on a GPU). Returns the
    reasons to look closer, () when the call looks healthy."""
    if autocast_on(x):  # read in the dtypes the loss receives
        with torch.autocast(x.device.type, enabled=False):
            return read_now(plan, x, t)
    if not x.requires_grad:
        return _read_now(plan, x, t)
    # Not the no_grad() decorator: it costs more than the reductions on small inputs.
    grad = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    try:
        return _read_now(plan, x, t)
    finally:
        torch._C._set_grad_enabled(grad)


def _read_now(plan: SentinelPlan, x: torch.Tensor, t: torch.Tensor) -> tuple[str, ...]:
    low, high = torch.aminmax(x) if x.is_contiguous() else whole_aminmax(x)
    if plan.probability_targets:
        packed = torch.stack((low.double(), high.double(), *_probability_parts(plan, t)))
        return reasons(plan, packed.tolist(), x)
    if not plan.on_cpu:
        return reasons(plan, measure(plan, x, t).tolist(), x)
    # CPU: no transfer to wait for, so read step by step and skip what the range rules out.
    low, high = low.item(), high.item()
    t_low, t_high = torch.aminmax(t)
    t_low, t_high = t_low.item(), t_high.item()
    ignored = None
    if not _targets_plainly_valid(plan, t_low, t_high):
        m_low, m_high, m_ignored = _masked_target_range(plan, t)
        t_low, t_high = m_low.item(), m_high.item()
        ignored = None if m_ignored is None else m_ignored.item()
    return reasons(plan, [low, high, t_low, t_high, ignored, t.numel()], x)


@torch.no_grad()  # deferred mode is for GPUs, where this is noise
def measure(plan: SentinelPlan, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One packed float64 reading on the tensors' device, without synchronising:
    [logits min, logits max, then targets: min, max, ignored count, count] for class indices,
    [min, max, least row sum, greatest row sum] for probabilities."""
    if autocast_on(x):
        with torch.autocast(x.device.type, enabled=False):
            return measure(plan, x, t)
    low, high = whole_aminmax(x)
    if plan.probability_targets:
        return torch.stack((low.double(), high.double(), *_probability_parts(plan, t)))
    t_low, t_high, ignored = _masked_target_range(plan, t)
    if ignored is None:
        ignored = torch.zeros((), dtype=torch.int64, device=t.device)
    count = torch.full((), t.numel(), dtype=torch.float64, device=t.device)
    return torch.stack((low.double(), high.double(), t_low.double(), t_high.double(),
                        ignored.double(), count))  # fmt: skip


def _probability_parts(plan: SentinelPlan, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    low, high = torch.aminmax(t)
    sums = t.sum(dim=plan.class_dim)
    # Rows of all zeros mask a sample out (legal): they read as summing to 1.
    sum_low, sum_high = torch.aminmax(sums.masked_fill(sums == 0, 1))
    return low.double(), high.double(), sum_low.double(), sum_high.double()


def _targets_plainly_valid(plan: SentinelPlan, low: float, high: float) -> bool:
    """Whether the plain range of class indices already proves them valid: all in [0, C), and
    not all equal to an ignore_index that lies inside that range."""
    if low < 0 or high >= plan.n_classes:
        return False
    return not (plan.mean and plan.ignore is not None and low == high == plan.ignore)


def reasons(plan: SentinelPlan, values: list, x: torch.Tensor | None = None) -> tuple[str, ...]:
    """Why a reading calls for a closer look: "nonfinite", "targets" (exact faults), "range",
    "graph" (hints). `x` gives the graph hint; a late reading has no tensor."""
    low, high = values[0], values[1]
    found: list[str] = []
    if not (math.isfinite(low) and math.isfinite(high)):
        found.append("nonfinite")
    if plan.probability_targets:
        p_low, p_high, s_low, s_high = values[2:6]
        finite = all(math.isfinite(v) for v in (p_low, p_high, s_low, s_high))
        tol = plan.tolerance
        sums_ok = s_low >= 1 - tol and s_high <= 1 + tol
        if not finite or p_low < 0 or p_high > 1 + tol or not sums_ok:
            found.append("targets")
    else:
        t_low, t_high, ignored, count = values[2:6]
        all_ignored = plan.mean and ignored is not None and ignored >= count
        if t_low < 0 or t_high >= plan.n_classes or all_ignored:
            found.append("targets")
    if "nonfinite" not in found and _range_hint(plan, low, high):
        found.append("range")
    if x is not None:
        node = x.grad_fn
        if node is not None and type(node).__name__ in _ACTIVATION_NODES[plan.loss]:
            found.append("graph")
    return tuple(found)


def _range_hint(plan: SentinelPlan, low: float, high: float) -> bool:
    """Logits whose range an activation or a wrong input would give: probabilities in [0, 1]
    (softmax, sigmoid), a floor of exactly 0 (ReLU), extreme magnitudes; for NLL, values above
    0 (raw logits where log-probabilities belong)."""
    if plan.loss == "nll":
        return high > _PROB_SLACK or low >= 0
    if low >= 0 and high <= 1 + _PROB_SLACK:
        return True
    return low == 0 or max(abs(low), abs(high)) >= plan.extreme


# ---------------------------------------------------------------------- late readings


def late_report(plan: SentinelPlan, values: list, call_number: int) -> Report | None:
    """A report built from a reading taken on an earlier call (`sync="deferred"`), for the exact
    faults only: the tensors are gone, so the evidence is the reading itself."""
    found = reasons(plan, values)
    diagnostics: list[Diagnostic] = []
    if "nonfinite" in found:
        diagnostics.append(
            diagnostic(
                "non-finite-logits",
                f"input {shape_str(plan.summary.input.shape or [])} held NaN or Inf on call "
                f"{call_number} (min {values[0]}, max {values[1]}).",
                NON_FINITE_FIX,
            )
        )
    if "targets" in found:
        diagnostics.append(target_diagnostic(plan, values, call_number))
    if not diagnostics:
        return None
    return Report(
        call=plan.summary,
        diagnostics=diagnostics,
        values_checked=True,
        notes=[f"found by the per-call check on call {call_number}, read later (sync='deferred')"],
    )


def target_diagnostic(plan: SentinelPlan, values: list, n: int) -> Diagnostic:
    c = plan.n_classes
    if plan.probability_targets:
        return diagnostic(
            "invalid-probability-targets",
            f"probability targets on call {n} lie in [{values[2]:.4g}, {values[3]:.4g}] and their "
            f"rows sum to {values[4]:.4g}..{values[5]:.4g} over dim {plan.class_dim}; each row "
            "must lie in [0, 1] and sum to 1.",
            f"normalise the targets: target = target / target.sum(dim={plan.class_dim}, "
            "keepdim=True)",
            ValueEvidence(
                role="target",
                what="row sums",
                count=1,
                total=1,
                min=_num(values[4]),
                max=_num(values[5]),
            ),  # fmt: skip
        )
    low, high, ignored, count = values[2:6]
    if plan.mean and ignored is not None and ignored >= count:
        return diagnostic(
            "all-targets-ignored",
            f"all {int(count)} targets on call {n} equal ignore_index={plan.ignore}: the mean "
            "loss is NaN (0/0).",
            "skip batches with no supervised target: if (target != ignore_index).any(): "
            "loss.backward()",
            ValueEvidence(role="target", what="ignored", count=int(count), total=int(count)),
        )
    return diagnostic(
        "target-out-of-range",
        f"target values on call {n} run from {int(low)} to {int(high)}, outside [0, {c}) "
        f"(ignore_index is {'none' if plan.ignore == NO_IGNORE else plan.ignore}).",
        f"remap the labels into 0..{c - 1}, drop the offending rows, or mark them with "
        "ignore_index",
        ValueEvidence(
            role="target",
            what="out of range",
            count=1,
            total=int(count),
            min=float(low),
            max=float(high),
        ),  # fmt: skip
    )


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None
