"""The path of a check: call binding -> structure rules -> one statistics pass -> value rules
-> Report, for any loss family. Each phase is a function so the training-loop guard can split
the statistics pass from the reading of its results (deferred sync).

The engine reads the family's declaration (`cediag.families`): which family a `loss=` names,
its options, how it binds a call, and which rules are its own. It names no family.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from ._call import error_text, subclass_notes, unchecked_report
from ._graph import final_activation
from ._report import Diagnostic, Report
from .families import family_of, loss_of_criterion
from .families._declaration import FamilyCall, StatisticsPlan
from .rules import RULES, Rule, select_rules
from .rules._context import Context


def check(
    input: Any,
    target: Any,
    *,
    loss: str | None = None,
    criterion: Any = None,
    select: list[str] | None = None,
    ignore: list[str] | None = None,
    **options: Any,
) -> Report:
    """Check an (input, target) pair as the loss would receive it, before it does.

    `loss` names the loss: "cross_entropy" (the default), "nll", and every other family's
    losses (`cediag rules` lists them). Options mean what they mean to the loss's torch
    function (`weight=`, `ignore_index=`, ... for `F.cross_entropy`); `criterion=` takes them
    from a loss module (`nn.CrossEntropyLoss(...)`), and the loss too when `loss` is not given.
    `select` / `ignore` take rule codes, code prefixes (`CE3`) or slugs.

    Never raises on the tensors and option values it is given: every problem is a diagnostic
    in the returned Report, and what could not be checked is a note (with `values_checked`
    False when the values were not read). A mistake in calling `check` itself (an unknown
    `loss`, option name or rule pattern) raises.
    """
    rules = select_rules(select, ignore)  # a bad code is the caller's mistake: this one raises
    if loss is None:  # the criterion's class says which loss it computes, else cross-entropy
        loss = loss_of_criterion(criterion) or "cross_entropy"
    family = family_of(loss)  # an unknown loss is the caller's mistake: ValueError
    unknown = sorted(set(options) - set(family.option_names))
    if unknown:
        raise TypeError(
            f"check() got unexpected option(s) {', '.join(map(repr, unknown))} for "
            f"loss={loss!r}; its options are {', '.join(family.option_names)}"
        )
    try:
        # Tensor subclasses are read as the tensors they hold: a subclass's __torch_function__
        # (which may raise, or log) is for the loss, not for the checker.
        with torch._C.DisableTorchFunctionSubclass():
            call = family.bind(loss, input, target, options, criterion)
            return check_call(call, rules)
    except Exception as error:  # the checker's own failure must not become the caller's
        return unchecked_report(input, target, loss, error)


def check_call(call: FamilyCall, rules: list[Rule] | None = None) -> Report:
    """Every phase on one bound call, reading the statistics at once."""
    ctx = check_structure(call, rules)
    ctx.notes.extend(subclass_notes(call))
    # Autocast off for the value rules' own second looks, as for the statistics pass.
    device = call.input.device.type if call.tensors_ok else "cpu"
    with torch.autocast(device, enabled=False) if call.autocast else nullcontext():
        try:
            plan, packed = start_statistics(call) if not ctx.values_meaningless else (None, None)
            values = packed.tolist() if packed is not None else None
        except Exception as error:  # odd tensors (quantized, exotic dtypes)
            ctx.notes.append(f"values not checked: {error_text(error)}")
            plan, values = None, None
        return finish(ctx, rules, plan, values)


def rules_for(call: FamilyCall, rules: list[Rule] | None) -> list[Rule]:
    """The rules among `rules` (default: all) that belong to the call's family, or that it
    reuses from another. Remembered per family and rule list (`select_rules` hands out the
    same list for the same selection), since a guard asks on every full check."""
    key = (call.loss, id(rules))
    found = _RULES_FOR.get(key)
    if found is not None and found[0] is rules:
        return found[1]
    family = family_of(call.loss)
    chosen = list(RULES.values()) if rules is None else rules
    mine = [
        r
        for r in chosen
        if r.phase != "batch"
        and (r.prefix == family.prefix or any(r.code.startswith(p) for p in family.reuses))
    ]
    if len(_RULES_FOR) < 256:
        _RULES_FOR[key] = (rules, mine)  # holds `rules`, so its id stays its own
    return mine


_RULES_FOR: dict[tuple[str, int], tuple[list[Rule] | None, list[Rule]]] = {}


def check_structure(call: FamilyCall, rules: list[Rule] | None = None) -> Context:
    """Metadata-only rules: no kernel launch, no host sync."""
    rules = rules_for(call, rules)
    ctx = Context(call)
    run_rules(ctx, [r for r in rules if r.phase == "arguments"])
    if not call.tensors_ok:
        return ctx
    ctx.activation = final_activation(call.input)
    run_rules(ctx, [r for r in rules if r.phase == "structure"])
    return ctx


def start_statistics(call: FamilyCall) -> tuple[StatisticsPlan | None, torch.Tensor | None]:
    """Launch the statistics pass; returns the packed device tensor without synchronising."""
    plan = call.statistics()
    if plan is None:
        return None, None
    return plan, plan.compute()


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
    rules = rules_for(ctx.call, rules)
    if ctx.values_meaningless:
        ctx.notes.append(f"values not checked: {ctx.values_meaningless}")
    elif plan is not None and values is not None:
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
    # RULES is in catalogue order, so the code breaks ties within a severity.
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
