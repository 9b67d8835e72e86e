"""The per-call check of a guarded linear cross-entropy: one read of the hidden states
(`whole_aminmax`: NaN or Inf there makes every logit of the row NaN) and cross-entropy's
target reductions against the vocabulary (out of range, all ignored under "mean", probabilities
that do not sum to 1). No logit is computed.

Cross-entropy's sentinel does the reading: its plan, built on the reference path's
cross_entropy view of the call, is handed the hidden states where it expects the logits. Its
two hints ("range", "graph") read the logits' values and graph, which hidden states do not
share (a ReLU before the head makes a floor of 0 legal), so they are dropped: a reading here
says "nonfinite" or "targets", both exact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..._call import shape_str
from ..._report import Diagnostic, Report
from ...rules._common import NON_FINITE_FIX
from ...rules._registry import diagnostic
from ..cross_entropy import sentinel as ce
from .call import LinearCall

EXACT = ("nonfinite", "targets")
REASON_TEXT = {
    "nonfinite": "NaN or Inf in the hidden states",
    "targets": ce.REASON_TEXT["targets"],
}


@dataclass(frozen=True)
class LinearSentinelPlan:
    """The sentinel for one linear cross-entropy call signature."""

    target_plan: ce.SentinelPlan  # cross-entropy's, with V classes and this call's summary
    on_cpu: bool
    exact = EXACT
    hints = ()  # cross-entropy's hints read the logits: none apply to hidden states

    @staticmethod
    def of(call: LinearCall) -> LinearSentinelPlan | None:
        """None when nothing can be read: no float hidden states, odd dtypes, meta tensors, no
        elements, or a call whose linear part torch rejects (the full check said so)."""
        if not call.tensors_ok or call.on_meta or call.linear_rejection() is not None:
            return None
        h = call.hidden
        if not h.dtype.is_floating_point or h.numel() == 0:
            return None
        plan = ce.SentinelPlan.of(call.cross_entropy_view)
        if plan is None:
            return None
        plan = dataclasses.replace(plan, summary=call.summary())
        return LinearSentinelPlan(target_plan=plan, on_cpu=plan.on_cpu)

    def read_now(self, x: torch.Tensor, t: torch.Tensor) -> tuple[str, ...]:
        """`x` is the hidden states."""
        return _exact(ce.read_now(self.target_plan, x, t))

    def measure(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[hidden min, hidden max, then the targets' readings], as cross-entropy packs them."""
        return ce.measure(self.target_plan, x, t)

    def reasons(self, values: list, x: torch.Tensor | None = None) -> tuple[str, ...]:
        return _exact(ce.reasons(self.target_plan, values))

    def late_report(self, values: list, call_number: int) -> Report | None:
        found = self.reasons(values)
        plan = self.target_plan
        diagnostics: list[Diagnostic] = []
        if "nonfinite" in found:
            diagnostics.append(
                diagnostic(
                    "non-finite-hidden",
                    f"hidden states {shape_str(plan.summary.input.shape or [])} held NaN or Inf "
                    f"on call {call_number} (min {values[0]}, max {values[1]}): every logit of "
                    "those rows, and the loss, is NaN.",
                    NON_FINITE_FIX,
                )
            )
        if "targets" in found:
            diagnostics.append(ce.target_diagnostic(plan, values, call_number))
        if not diagnostics:
            return None
        return Report(
            call=plan.summary,
            diagnostics=diagnostics,
            values_checked=True,
            notes=[
                f"found by the per-call check on call {call_number}, read later (sync='deferred')"
            ],
        )

    def explain(self, reason: str) -> str:
        return REASON_TEXT[reason]


def _exact(found: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(reason for reason in found if reason in EXACT)
