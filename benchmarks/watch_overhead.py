"""How `cediag.watch()` intercepts the loss, and what that costs, next to a TorchFunctionMode.

    python benchmarks/watch_overhead.py [--steps 2000] [--threads 1]

Times one small training step (`_loops.py`'s MLP 784-256-10, batch 64, SGD) in five settings:
  baseline          no cediag at all
  patch, off        watch() installed, guard disabled: the interception alone
  mode, off         a TorchFunctionMode that only looks for cross_entropy: the alternative
  watch, default    watch() with its default options: the sentinel on every call, the full
                    check on the first 10 calls and every 100th
  watch, every=1    watch(every=1): the full check on every call
Reports each setting's best round, in microseconds per step, and the difference to baseline;
then per-call costs at (64, 10). `benchmarks/run.py --only guard` (guard_cost.py) has the
interleaved medians and the breakdown of a guarded call.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit

import torch
import torch.nn as nn
import torch.nn.functional as F
from _loops import build_loop
from torch.overrides import TorchFunctionMode

import cediag


class LossOnlyMode(TorchFunctionMode):
    """The TorchFunctionMode alternative: sees every torch call, acts on cross_entropy only."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.cross_entropy:
            pass  # a check would go here
        return func(*args, **kwargs)


def time_steps(step, steps: int, rounds: int) -> float:
    for _ in range(50):
        step()
    per_round = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        per_round.append((time.perf_counter() - start) / steps * 1e6)
    return statistics.median(per_round)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    step = build_loop("MLP").stepper(nn.CrossEntropyLoss())

    def run(name, context_factory):
        cediag.summary(clear=True)
        if context_factory is None:
            us = time_steps(step, args.steps, args.rounds)
        else:
            with context_factory():
                us = time_steps(step, args.steps, args.rounds)
        return name, us

    settings = {
        "baseline": None,
        "patch, off": lambda: cediag.watch(enabled=False),
        "mode, off": LossOnlyMode,
        "watch, default": cediag.watch,
        "watch, every=1": lambda: cediag.watch(every=1),
    }
    best: dict[str, float] = {}
    # Alternate the settings round by round and keep each one's best round, so that load from
    # other processes on a shared machine affects them alike.
    for _ in range(args.rounds):
        for name, factory in settings.items():
            _, us = run(name, factory)
            best[name] = min(us, best.get(name, float("inf")))
    base = best["baseline"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.steps} steps")
    for name, us in best.items():
        print(
            f"  {name:<16} {us:8.1f} us/step  {us - base:+7.1f} us  {100 * (us / base - 1):+6.2f}%"
        )
    micro()


def micro() -> None:
    """Per-call costs, which whole-step timings on a busy machine blur."""
    x, t, y = torch.randn(64, 10), torch.randint(0, 10, (64,)), torch.randn(64, 64)

    def per_call(f, n=20000):
        return min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6

    ce = per_call(lambda: F.cross_entropy(x, t))
    mm = per_call(lambda: y @ y)
    with cediag.watch(enabled=False):
        ce_patch = per_call(lambda: F.cross_entropy(x, t))
        mm_patch = per_call(lambda: y @ y)
    with LossOnlyMode():
        ce_mode = per_call(lambda: F.cross_entropy(x, t))
        mm_mode = per_call(lambda: y @ y)
    with cediag.watch(first=1, every=0):
        ce_sentinel = per_call(lambda: F.cross_entropy(x, t), 5000)
    with cediag.watch(every=1):
        ce_full = per_call(lambda: F.cross_entropy(x, t), 1000)
    print("per call (us): plain / patched / TorchFunctionMode")
    print(f"  F.cross_entropy (64, 10)  {ce:6.2f} / {ce_patch:6.2f} / {ce_mode:6.2f}")
    print(f"  other op (64x64 matmul)   {mm:6.2f} / {mm_patch:6.2f} / {mm_mode:6.2f}")
    print(f"  cross_entropy under watch: sentinel {ce_sentinel:.1f}, full check {ce_full:.1f}")


if __name__ == "__main__":
    main()
