"""What the training-loop guard costs with its default options: per step, per call, and where
a call's time goes.

    python benchmarks/guard_cost.py [--quick] [--profile]

- per step: a training loop (`_loops.py`) unguarded, under `cediag.wrap(nn.CrossEntropyLoss())`
  and under `cediag.watch()`, in interleaved rounds (A B C A B C ...). Each guard is made once
  and warmed past its first 10 calls (the first calls' full checks are a one-time cost, shown
  on its own), and every round holds the same number of steps, a multiple of 100, so each
  round holds the same number of scheduled full checks (every 100th call). The figure is the
  median, over rounds, of each round's time relative to the unguarded round next to it.
- per call: the guard around a loss that does nothing, so the time is the guard's own; the
  sentinel alone; and the pieces of the guard's Python, each timed on its own.
- the sentinel (one reading of the logits and targets, read at once) next to one
  `torch.aminmax` of the same logits, at (4096, 32000) fp32.
"""

from __future__ import annotations

import argparse
import contextvars
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from _loops import build_loop
from _timing import fmt_time, interleaved, interleaved_samples, now, table, use_clock, warm_threads

import cediag
from cediag.families.cross_entropy.call import bind_call
from cediag.families.cross_entropy.sentinel import SentinelPlan, read_now
from cediag.guard import _guard
from cediag.guard._bind import ArgumentBinder
from cediag.guard._summary import COLLECTOR

WARM_CALLS = 10  # the default `first`: the full checks every guard starts with


# ---------------------------------------------------------------------------------- per step


def per_step(loop_name: str, rounds: int, steps: int) -> str:
    """Steady-state cost per step of the default guard, interleaved with the unguarded loop."""
    assert steps % 100 == 0, "a round must hold whole periods of the schedule"
    plain_loop = build_loop(loop_name)
    wrap_loop = build_loop(loop_name)
    watch_loop = build_loop(loop_name)
    plain = plain_loop.stepper(nn.CrossEntropyLoss())
    wrapped = wrap_loop.stepper(cediag.wrap(nn.CrossEntropyLoss()))
    watched_step = watch_loop.stepper(nn.CrossEntropyLoss())
    # One watch() block for the whole run (a block's guard, and so its schedule, lives as long
    # as the block), open in a context of its own so the other variants run unwatched.
    watch_context, block = _open_watch()

    def watched() -> None:
        watch_context.run(lambda: [watched_step() for _ in range(steps)])

    start = time.perf_counter()
    first_wrap = _time(lambda: [wrapped() for _ in range(WARM_CALLS)])
    first_plain = _time(lambda: [plain() for _ in range(WARM_CALLS)])
    watch_context.run(lambda: [watched_step() for _ in range(WARM_CALLS)])
    variants: dict[str, Callable[[], object]] = {
        "unguarded": lambda: [plain() for _ in range(steps)],
        "cediag.wrap(nn.CrossEntropyLoss())": lambda: [wrapped() for _ in range(steps)],
        "with cediag.watch()": watched,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(_time(fn) / steps)
    base = samples["unguarded"]
    rows = []
    for name, values in samples.items():
        ratios = [v / b - 1 for v, b in zip(values, base, strict=True)]
        rows.append(
            [
                name,
                fmt_time(statistics.median(values)),
                "" if name == "unguarded" else f"{100 * statistics.median(ratios):+.2f}%",
                "" if name == "unguarded" else _spread(ratios),
            ]
        )
    watch_context.run(block.__exit__, None, None, None)
    seen = cediag.summary(clear=True)
    headers = [
        f"{plain_loop.description}: {rounds} rounds of {steps} steps",
        "per step",
        "vs unguarded (median)",
        "middle half of rounds",
    ]
    out = table(headers, rows)
    out += (
        f"\n(first {WARM_CALLS} calls, all fully checked: {fmt_time(first_wrap / WARM_CALLS)} "
        f"per step with wrap vs {fmt_time(first_plain / WARM_CALLS)} unguarded; "
        f"{seen.calls} guarded calls, {seen.checked} fully checked; "
        f"{time.perf_counter() - start:.0f} s)"
    )
    return out


def _open_watch(**options) -> tuple[contextvars.Context, cediag.watch]:
    context = contextvars.copy_context()
    block = cediag.watch(**options)
    context.run(block.__enter__)
    return context, block


def _spread(ratios: list[float]) -> str:
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
    return f"{100 * q[0]:+.2f}% .. {100 * q[-1]:+.2f}%"


def _time(fn: Callable[[], object]) -> float:
    start = now()
    fn()
    return now() - start


def in_step(loop_name: str, steps: int) -> str:
    """The loss call inside a real step (caches the step has filled), with and without each
    part of the guard: the loss-call phase alone is timed, every variant in turn each step."""
    loop = build_loop(loop_name)
    plain = nn.CrossEntropyLoss()
    noop_guard = cediag.wrap(_nothing, first=1, every=0)
    sentinel_only = cediag.wrap(nn.CrossEntropyLoss(), first=1, every=0)
    default = cediag.wrap(nn.CrossEntropyLoss())
    plan: list[SentinelPlan] = []

    def sentinel(logits, t):
        if not plan:
            plan.append(SentinelPlan.of(bind_call(logits, t)))  # type: ignore[arg-type]
        read_now(plan[0], logits, t)
        return plain(logits, t)

    variants: dict[str, Callable] = {
        "loss alone": plain,
        "+ torch.aminmax(logits)": lambda z, t: (torch.aminmax(z.detach()), plain(z, t))[1],
        "+ sentinel (read_now)": sentinel,
        "+ guard's sentinel path around a no-op": lambda z, t: (noop_guard(z, t), plain(z, t))[1],
        "wrap, sentinel path only (every=0)": sentinel_only,
        "wrap, default schedule": default,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}

    def step(name: str, loss: Callable) -> None:
        loop.opt.zero_grad(set_to_none=True)
        logits = loop.model(loop.x)
        start = now()
        value = loss(logits, loop.t)
        samples[name].append(now() - start)
        value.backward()
        loop.opt.step()

    for _ in range(WARM_CALLS + 1):
        for name, loss in variants.items():
            step(name, loss)
    for values in samples.values():
        values.clear()
    for _ in range(steps):
        for name, loss in variants.items():
            step(name, loss)
    cediag.summary(clear=True)
    base = statistics.median(samples["loss alone"])
    rows = [
        [name, _us(statistics.median(v)), "" if v is samples["loss alone"] else
         f"+{_us(statistics.median(v) - base)}"]
        for name, v in samples.items()
    ]  # fmt: skip
    headers = [f"{loop.description}: the loss call inside a step, {steps} steps", "median", "extra"]
    return table(headers, rows)


# ---------------------------------------------------------------------------------- per call


def _nothing(input: torch.Tensor, target: torch.Tensor) -> None:
    """A 'loss' that does nothing: a guard around it costs only the guard."""


def per_call(shape: tuple[int, int], rounds: int) -> str:
    """The guard's own time per call at `shape`, and what it is made of."""
    torch.manual_seed(0)
    x = torch.randn(shape)
    t = torch.randint(0, shape[1], shape[:1])
    criterion = nn.CrossEntropyLoss()
    sentinel_only = cediag.wrap(_nothing, first=1, every=0)  # after call 1: the sentinel path
    default = cediag.wrap(_nothing)  # the default schedule, full check every 100th call
    full = cediag.wrap(_nothing, every=1)
    for fn in (sentinel_only, default, full):
        for _ in range(WARM_CALLS + 1):
            fn(x, t)
    plan = SentinelPlan.of(bind_call(x, t))
    assert plan is not None
    guard: _guard.Guard = sentinel_only.__cediag_guard__  # type: ignore[attr-defined]
    binder = ArgumentBinder(_nothing)
    opts = guard.options()
    frame = sys._getframe()

    watch_context, block = _open_watch(first=1, every=0)

    def under_watch() -> None:
        watch_context.run(lambda: [F.cross_entropy(x, t) for _ in range(100)])

    under_watch()

    samples = interleaved_samples(
        {
            "F.cross_entropy forward (for scale)": lambda: F.cross_entropy(x, t),
            "nn.CrossEntropyLoss forward": lambda: criterion(x, t),
            "wrap: guard, default schedule (amortised)": lambda: default(x, t),
            "wrap: guard, sentinel path": lambda: sentinel_only(x, t),
            "wrap: guard, full check": lambda: full(x, t),
            "  sentinel: read_now (reductions + reads)": lambda: read_now(plan, x, t),
            "  sentinel: torch.aminmax(logits) alone": lambda: torch.aminmax(x),
            "  sentinel: torch.aminmax(targets) alone": lambda: torch.aminmax(t),
            "  Python: options() + env + is_compiling": lambda: (
                guard.options(),
                _guard.disabled_by_env(),
                _guard.is_compiling(),
            ),
            "  Python: frame walk + call-site state": lambda: guard._site_state(
                _guard.user_frame(frame)
            ),
            "  Python: structure key + lookup": lambda: _guard._lookup(
                guard._signatures,
                _guard.structure_key((x, t), {}, None, "cross_entropy", opts),
            ),
            "  Python: bind (input, target)": lambda: binder.bind((x, t), {}),
            "  Python: count the call (lock)": lambda: COLLECTOR.count_call(values=True),
            "  Python: _IN_LOSS set + reset": lambda: _guard._IN_LOSS.reset(
                _guard._IN_LOSS.set(True)
            ),
        },
        rounds,
        lambda: None,
    )
    times = {name: (statistics.median(v), min(v)) for name, v in samples.items()}
    watch_per_100 = interleaved_samples(
        {"watch": under_watch, "plain": lambda: [F.cross_entropy(x, t) for _ in range(100)]},
        rounds,
        lambda: None,
    )
    watch_context.run(block.__exit__, None, None, None)
    differences = [
        (w - p) / 100 for w, p in zip(watch_per_100["watch"], watch_per_100["plain"], strict=True)
    ]
    times["watch: guard, sentinel path (F.cross_entropy watched - plain)"] = (
        statistics.median(differences),
        min(differences),
    )
    cediag.summary(clear=True)
    rows = [[name, _us(median), _us(least)] for name, (median, least) in times.items()]
    return table([f"per call, logits {shape} fp32", "median", "fastest round"], rows)


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else fmt_time(seconds)


def sentinel_vs_aminmax(shape: tuple[int, int], rounds: int) -> str:
    torch.manual_seed(0)
    x = torch.randn(shape)
    t = torch.randint(0, shape[1], shape[:1])
    plan = SentinelPlan.of(bind_call(x, t))
    assert plan is not None
    guard = cediag.wrap(_nothing, first=1, every=0)
    guard(x, t)

    def ce() -> None:
        leaf = x.detach().requires_grad_()
        F.cross_entropy(leaf, t).backward()

    times = interleaved(
        {
            "torch.aminmax(logits)": lambda: torch.aminmax(x),
            "sentinel (read_now)": lambda: read_now(plan, x, t),
            "guard, sentinel path (wrap around a no-op loss)": lambda: guard(x, t),
            "F.cross_entropy forward+backward": ce,
        },
        rounds,
        lambda: None,
    )
    cediag.summary(clear=True)
    floor, loss = times["torch.aminmax(logits)"], times["F.cross_entropy forward+backward"]
    rows = [
        [name, fmt_time(s), f"{s / floor:.2f}x", f"{s / loss:.3f}x"] for name, s in times.items()
    ]
    headers = [f"logits {shape[0]}x{shape[1]} fp32", "median", "vs aminmax", "vs CE fwd+bwd"]
    return table(headers, rows)


def profile_look(shape: tuple[int, int], calls: int = 20000) -> str:
    """cProfile of the guard's sentinel path (wrap around a no-op loss): where a call goes."""
    x = torch.randn(shape)
    t = torch.randint(0, shape[1], shape[:1])
    guard = cediag.wrap(_nothing, first=1, every=0)
    guard(x, t)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        guard(x, t)
    profiler.disable()
    cediag.summary(clear=True)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--loops", default=None, help="comma-separated: MLP,CNN,LM")
    parser.add_argument("--profile", action="store_true", help="cProfile of the sentinel path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    use_clock(args.clock)
    torch.set_num_threads(args.threads)
    warm_threads()
    print(report(args.quick, args.loops))
    if args.profile:
        print(profile_look((64, 10)))


def report(quick: bool, loops: str | None = None) -> str:
    names = (loops or ("MLP" if quick else "MLP,CNN,LM")).split(",")
    out = []
    for name in names:
        name = name.strip()
        if name == "MLP":
            rounds, steps = (5, 100) if quick else (31, 200)
        else:
            rounds, steps = (3, 100) if quick else (7, 100)
        out.append(per_step(name, rounds, steps))
        out.append(in_step(name, (30 if quick else 400) if name == "MLP" else 60))
    out.append(per_call((64, 10), 5 if quick else 15))
    big = (1024, 32000) if quick else (4096, 32000)
    out.append(sentinel_vs_aminmax(big, 3 if quick else 9))
    return "\n\n".join(out)


if __name__ == "__main__":
    main()
