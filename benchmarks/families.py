"""The other loss families against their own loss: `cediag.check` and the guard's per-call check
(sentinel) of binary cross-entropy and linear (fused) cross-entropy, as ratios to the loss's
forward + backward on the same tensors, in one process.

    python benchmarks/families.py                     # CPU, wall clock
    python benchmarks/families.py --clock cpu         # a machine shared with other jobs
    python benchmarks/families.py --device cuda       # on a GPU

Linear cross-entropy is timed against `F.linear_cross_entropy` (the reference path builds the
(N, V) logits; the check never does: it reads 64 sampled rows).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from _timing import fmt_time, interleaved, synchronizer, table, use_clock, warm_threads  # noqa: E402

import cediag  # noqa: E402
from cediag.families import family_of  # noqa: E402


def _sentinel(loss: str, x: torch.Tensor, t: torch.Tensor, **options):
    """The per-call check of a guarded call whose signature passed: what every step pays."""
    call = family_of(loss).bind(loss, x, t, options, None)
    plan = family_of(loss).sentinel(call)
    return lambda: plan.read_now(x, t)


def bce_cases(n: int, c: int, device: str):
    logits = torch.randn(n, c, device=device, requires_grad=True)
    target = (torch.rand(n, c, device=device) < 0.1).float()
    pos_weight = torch.full((c,), 3.0, device=device)

    def loss():
        F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight).backward()

    return f"BCE {n}x{c}", {
        "loss fwd+bwd": loss,
        "check": lambda: cediag.check(
            logits, target, loss="bce_with_logits", pos_weight=pos_weight
        ),
        "per-call check": _sentinel("bce_with_logits", logits, target, pos_weight=pos_weight),
    }


def linear_cases(n: int, h: int, v: int, device: str):
    hidden = torch.randn(n, h, device=device, requires_grad=True)
    weight = (torch.randn(v, h, device=device) * 0.02).requires_grad_()
    target = torch.randint(0, v, (n,), device=device)
    target[::7] = -100

    def loss():
        F.linear_cross_entropy(hidden, weight, target).backward()

    return f"linear CE {n}x{h} -> {v}", {
        "loss fwd+bwd": loss,
        "check": lambda: cediag.check(
            hidden, target, loss="linear_cross_entropy", linear_weight=weight
        ),
        "per-call check": _sentinel("linear_cross_entropy", hidden, target, linear_weight=weight),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    use_clock(args.clock)
    warm_threads()
    sync = synchronizer(args.device)
    rows = []
    for name, fns in (
        bce_cases(4096, 1000, args.device),
        linear_cases(4096, 256, 32000, args.device),
    ):
        medians = interleaved(fns, args.rounds, sync)
        base = medians["loss fwd+bwd"]
        for variant, seconds in medians.items():
            rows.append([name, variant, fmt_time(seconds), f"{seconds / base:.3f}x"])
    print(table(["case", "variant", "time", "ratio to the loss"], rows))


if __name__ == "__main__":
    main()
