"""The sentinel for binary cross-entropy: the check every guarded call gets between the full
checks.

It reads the input once and the target once (`whole_aminmax` each: range, NaN and Inf in one
pass) and builds no Python object unless something is off. What it can say:

- "nonfinite" (exact): NaN or Inf in the input;
- "targets" (exact): a target outside [0, 1], NaN or Inf;
- "range": for `binary_cross_entropy_with_logits` a hint (every input value in [0, 1]: maybe a
  sigmoid was applied); for `binary_cross_entropy` exact (a value outside [0, 1]: torch raises);
- "graph" (hint): the input's autograd node is an activation that does not belong before this
  loss (sigmoid or softmax before the logits loss; softmax, or a layer that makes raw scores,
  before `binary_cross_entropy`).

The guard answers a reason with the full check on the same call (`sync="eager"`); with
`sync="deferred"` the readings stay on the device and are read in batches, and an exact fault
read late becomes a report built from the reading itself (`late_report`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..._call import FLOAT_DTYPES, autocast_on, shape_str
from ..._graph import ACTIVATION_NODES
from ..._reading import whole_aminmax
from ..._report import CallSummary, Diagnostic, Report, ValueEvidence
from ...rules._common import NON_FINITE_FIX
from ...rules._context import SCORE_PRODUCERS
from ...rules._registry import diagnostic
from .call import Call

# The node names the graph hint looks for, per loss.
_GRAPH_HINTS = {
    "bce_with_logits": frozenset(
        name for name, kind in ACTIVATION_NODES.items() if kind in ("sigmoid", "softmax")
    ),
    "bce": frozenset(name for name, kind in ACTIVATION_NODES.items() if kind == "softmax")
    | SCORE_PRODUCERS,
}
_EXPLAIN = {
    "nonfinite": "NaN or Inf in the input",
    "targets": "targets outside [0, 1] (or NaN)",
    "graph": "an autograd node behind the input that does not belong before this loss",
}


@dataclass(frozen=True)
class SentinelPlan:
    """What the sentinel reads for one call signature."""

    summary: CallSummary  # the call, for reports built from a late reading
    loss: str
    on_cpu: bool  # read step by step: there is no transfer to wait for
    exact: tuple[str, ...]
    hints: tuple[str, ...]

    @staticmethod
    def of(call: Call) -> SentinelPlan | None:
        """The plan for a call whose structure checks passed, or None when there is nothing the
        sentinel can read (not float, meta, no elements)."""
        if not call.tensors_ok or call.on_meta:
            return None
        x, t = call.input, call.target
        if x.dtype not in FLOAT_DTYPES or t.dtype not in FLOAT_DTYPES:
            return None
        if x.numel() == 0 or t.numel() == 0:
            return None
        logits = call.loss == "bce_with_logits"
        return SentinelPlan(
            summary=call.summary(),
            loss=call.loss,
            on_cpu=x.device.type == "cpu",
            exact=("nonfinite", "targets") if logits else ("nonfinite", "targets", "range"),
            hints=("range", "graph") if logits else ("graph",),
        )

    # ------------------------------------------------------------------ reading
    def read_now(self, input: torch.Tensor, target: torch.Tensor) -> tuple[str, ...]:
        """Measure one call and read the result at once (one small transfer on a GPU)."""
        if autocast_on(input):  # read in the dtypes the loss receives
            with torch.autocast(input.device.type, enabled=False):
                return self.read_now(input, target)
        if not (input.requires_grad or target.requires_grad):
            return self._read_now(input, target)
        grad = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            return self._read_now(input, target)
        finally:
            torch._C._set_grad_enabled(grad)

    def _read_now(self, x: torch.Tensor, t: torch.Tensor) -> tuple[str, ...]:
        if not self.on_cpu:
            return self.reasons(self.measure(x, t).tolist(), x)
        # CPU: no transfer to wait for, so read step by step.
        low, high = whole_aminmax(x)
        t_low, t_high = whole_aminmax(t)
        return self.reasons([low.item(), high.item(), t_low.item(), t_high.item()], x)

    @torch.no_grad()
    def measure(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One packed float64 reading on the tensors' device, without synchronising:
        [input min, input max, target min, target max]."""
        if autocast_on(input):
            with torch.autocast(input.device.type, enabled=False):
                return self.measure(input, target)
        low, high = whole_aminmax(input)
        t_low, t_high = whole_aminmax(target)
        return torch.stack((low.double(), high.double(), t_low.double(), t_high.double()))

    def reasons(self, values: list[float], input: torch.Tensor | None = None) -> tuple[str, ...]:
        """Why a reading calls for a closer look; `input` gives the graph hint (a late reading
        has no tensor)."""
        low, high, t_low, t_high = values[:4]
        found: list[str] = []
        finite = math.isfinite(low) and math.isfinite(high)
        if not finite:
            found.append("nonfinite")
        if not (t_low >= 0 and t_high <= 1):  # NaN fails both comparisons
            found.append("targets")
        if finite:
            unit = low >= 0 and high <= 1
            if unit if self.loss == "bce_with_logits" else not unit:
                found.append("range")
        if input is not None:
            node = input.grad_fn
            if node is not None and type(node).__name__ in _GRAPH_HINTS[self.loss]:
                found.append("graph")
        return tuple(found)

    def explain(self, reason: str) -> str:
        if reason == "range":
            if self.loss == "bce_with_logits":
                return "every input value in [0, 1] (probabilities where logits belong?)"
            return "input values outside [0, 1] (raw logits where probabilities belong)"
        return _EXPLAIN.get(reason, reason)

    # ------------------------------------------------------------------ late readings
    def late_report(self, values: list[float], call_number: int) -> Report | None:
        """A report of the exact faults in a reading taken on an earlier call (`sync=
        "deferred"`): the tensors are gone, so the evidence is the reading itself."""
        found = [reason for reason in self.reasons(values) if reason in self.exact]
        low, high, t_low, t_high = values[:4]
        shape = shape_str(self.summary.input.shape or [])
        diagnostics: list[Diagnostic] = []
        if "nonfinite" in found:
            diagnostics.append(
                diagnostic(
                    "bce-non-finite-input",
                    f"input {shape} held NaN or Inf on call {call_number} (min {low}, max {high}).",
                    NON_FINITE_FIX,
                )
            )
        if "targets" in found:
            diagnostics.append(
                diagnostic(
                    "bce-target-out-of-range",
                    f"targets on call {call_number} run from {t_low} to {t_high}, outside [0, 1].",
                    "scale the targets into [0, 1] (a 0/255 mask: target / 255; labels in "
                    "{-1, 1}: (target + 1) / 2)",
                    ValueEvidence(
                        role="target",
                        what="range",
                        count=1,
                        total=1,
                        min=_num(t_low),
                        max=_num(t_high),
                    ),
                )
            )
        if "range" in found:
            diagnostics.append(
                diagnostic(
                    "bce-logits-to-bce",
                    f"F.binary_cross_entropy input {shape} on call {call_number} runs from "
                    f"{low:.4g} to {high:.4g}, outside [0, 1]: raw logits, and torch raises.",
                    "F.binary_cross_entropy_with_logits(logits, target)  # or "
                    "nn.BCEWithLogitsLoss()",
                    ValueEvidence(role="input", what="range", count=1, total=1, min=low, max=high),
                )
            )
        if not diagnostics:
            return None
        return Report(
            call=self.summary,
            diagnostics=diagnostics,
            values_checked=True,
            notes=[
                f"found by the per-call check on call {call_number}, read later (sync='deferred')"
            ],
        )


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None
