"""The path of a check: call binding -> structure rules -> one statistics pass -> value rules
-> Report. Each phase is a function so the training-loop guard can split the statistics
pass from the reading of its results (deferred sync).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from ._call import (
    FLOAT_DTYPES,
    Call,
    bind_call,
    error_text,
    subclass_notes,
    unchecked_report,
)
from ._graph import final_activation
from ._report import Diagnostic, Report
from ._statistics import StatisticsPlan
from .rules import RULES, Rule, select_rules
from .rules._context import Context


def check(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    criterion: Any = None,
    loss: str = "cross_entropy",
    select: list[str] | None = None,
    ignore: list[str] | None = None,
) -> Report:
    """Check an (input, target) pair as `F.cross_entropy` would receive it, before it does.

    Options mean what they mean to `F.cross_entropy`; `criterion=` takes them from an
    `nn.CrossEntropyLoss` (or `nn.NLLLoss`) instance. `loss="nll"` checks an `F.nll_loss` call.
    `select` / `ignore` take rule codes, code prefixes (`CE3`) or slugs. Never raises on what it
    is given: every problem is a diagnostic in the returned Report, and what could not be
    checked is a note (with `values_checked` False when the values were not read).
    """
    rules = select_rules(select, ignore)  # a bad code is the caller's mistake: this one raises
    try:
        # Tensor subclasses are read as the tensors they hold: a subclass's __torch_function__
        # (which may raise, or log) is for the loss, not for the checker.
        with torch._C.DisableTorchFunctionSubclass():
            call = bind_call(
                input,
                target,
                weight=weight,
                ignore_index=ignore_index,
                reduction=reduction,
                label_smoothing=label_smoothing,
                criterion=criterion,
                loss=loss,  # type: ignore[arg-type]
            )
            ctx = check_structure(call, rules)
            ctx.notes.extend(subclass_notes(call))
            # Autocast off for the value rules' own second looks, as for the statistics pass.
            device = call.input.device.type if call.tensors_ok else "cpu"
            with torch.autocast(device, enabled=False) if call.autocast else nullcontext():
                try:
                    plan, packed = start_statistics(call)
                    values = packed.tolist() if packed is not None else None
                except Exception as error:  # odd tensors (quantized, exotic dtypes)
                    ctx.notes.append(f"values not checked: {error_text(error)}")
                    plan, values = None, None
                return finish(ctx, rules, plan, values)
    except Exception as error:  # the checker's own failure must not become the caller's
        return unchecked_report(input, target, loss, error)


def check_structure(call: Call, rules: list[Rule] | None = None) -> Context:
    """Metadata-only rules: no kernel launch, no host sync."""
    rules = list(RULES.values()) if rules is None else rules
    ctx = Context(call)
    if not call.tensors_ok:
        run_rules(ctx, [r for r in rules if r.slug in ("not-a-tensor", "invalid-option")])
        return ctx
    ctx.activation = final_activation(call.input)
    run_rules(ctx, [r for r in rules if r.phase == "structure"])
    return ctx


def start_statistics(call: Call) -> tuple[StatisticsPlan | None, torch.Tensor | None]:
    """Launch the statistics pass; returns the packed device tensor without synchronising."""
    if not values_readable(call):
        return None, None
    plan = StatisticsPlan(call)
    return plan, plan.compute()


def values_readable(call: Call) -> bool:
    """Whether the tensors hold data we can read (not meta, fake, or non-numeric)."""
    if not call.tensors_ok or call.on_meta:
        return False
    readable = (
        *FLOAT_DTYPES,
        torch.bool,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
    )
    return call.input.dtype in readable and call.target.dtype in readable


def finish(
    ctx: Context,
    rules: list[Rule] | None,
    plan: StatisticsPlan | None,
    values: list[float] | None,
) -> Report:
    """Read the statistics back, run the value rules and the safety net, build the Report."""
    return build_report(evaluate(ctx, rules, plan, values))


def evaluate(
    ctx: Context,
    rules: list[Rule] | None,
    plan: StatisticsPlan | None,
    values: list[float] | None,
) -> Context:
    """Read the statistics back and run the value rules and the safety net into `ctx`."""
    rules = list(RULES.values()) if rules is None else rules
    if plan is not None and values is not None:
        ctx.stats = plan.read(values)
        run_rules(ctx, [r for r in rules if r.phase == "values"])
    elif ctx.call.tensors_ok and not ctx.notes:
        ctx.notes.append(
            "values not checked: the tensors hold no readable data (meta device or dtype)"
        )
    if ctx.call.tensors_ok:
        run_rules(ctx, [r for r in rules if r.phase == "final"])
    return ctx


def build_report(ctx: Context) -> Report:
    # RULES is in code order, so the code breaks ties within a severity.
    diagnostics = sorted(ctx.found, key=lambda d: (-d.severity.rank, d.code))
    return Report(
        call=ctx.call.summary(),
        diagnostics=diagnostics,
        values_checked=ctx.stats is not None,
        notes=ctx.notes,
    )


def run_rules(ctx: Any, rules: list[Rule]) -> None:
    """Run `rules` on `ctx` (any context with `found` and `notes`): each finding becomes a
    Diagnostic, and a rule that fails becomes a note, never an exception."""
    for rule in rules:
        try:
            finding = rule.function(ctx)
        except Exception as error:  # a checker must never break the training step it guards
            message = f"rule {rule.code} {rule.slug} could not run: {type(error).__name__}: {error}"
            ctx.notes.append(message)
            continue
        if finding is not None:
            ctx.found.append(
                Diagnostic(
                    code=rule.code,
                    rule=rule.slug,
                    severity=rule.severity,
                    message=finding.message,
                    fix=finding.fix,
                    evidence=finding.evidence,
                )
            )
