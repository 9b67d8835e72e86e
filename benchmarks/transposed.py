"""Transposed LM logits: what a check costs on the layout `F.cross_entropy` asks sequence models
for, `(B, T, V).transpose(1, 2)`, next to the same logits flattened to `(B*T, V)`.

    python benchmarks/transposed.py [--shape 8,512,32000] [--rounds 3]

Time (median of interleaved rounds) and peak extra memory (a separate process with
`MALLOC_MMAP_THRESHOLD_=65536`, as `memory.py`) of `cediag.check`, of the guard's sentinel
(one reading, read at once) and of the guard's full check (a guard with `every=1` around a loss
that does nothing), as ratios to `F.cross_entropy` forward+backward on the same layout.
`torch.aminmax` on the transposed view, on `movedim(1, -1)` of it (the contiguous tensor it is
a view of) and on the flattened logits shows the floor: a whole-tensor reduction over a
non-contiguous view copies it first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import fmt_time, interleaved, table, use_clock, warm_threads

import cediag
from cediag.families.cross_entropy.call import bind_call
from cediag.families.cross_entropy.sentinel import SentinelPlan, read_now

HERE = Path(__file__).resolve().parent


def _nothing(input: torch.Tensor, target: torch.Tensor) -> None:
    """A 'loss' that does nothing: a guard around it costs only the guard."""


def cases(shape: tuple[int, int, int]) -> tuple[dict[str, Callable[[], object]], int]:
    """name -> function, and the logits' size in bytes. Names end in the layout."""
    b, s, v = shape
    torch.manual_seed(0)
    logits = torch.randn(b, s, v)  # what the model's head gives
    tokens = torch.randint(0, v, (b, s))
    layouts = {
        "transposed": (logits.transpose(1, 2), tokens),  # (B, V, T): what CE wants
        "flattened": (logits.view(b * s, v), tokens.view(b * s)),
    }
    fns: dict[str, Callable[[], object]] = {}
    for layout, (x, t) in layouts.items():
        plan = SentinelPlan.of(bind_call(x, t))
        assert plan is not None
        full = cediag.wrap(_nothing, every=1)

        def ce(x=x, t=t) -> None:
            leaf = x.detach().requires_grad_()
            F.cross_entropy(leaf, t).backward()

        fns[f"F.cross_entropy fwd+bwd | {layout}"] = ce
        fns[f"cediag.check | {layout}"] = lambda x=x, t=t: cediag.check(x, t)
        fns[f"guard: sentinel | {layout}"] = lambda p=plan, x=x, t=t: read_now(p, x, t)
        fns[f"guard: full check | {layout}"] = lambda f=full, x=x, t=t: f(x, t)
        fns[f"torch.aminmax | {layout}"] = lambda x=x: torch.aminmax(x)
    view = layouts["transposed"][0]
    fns["torch.aminmax of movedim(1, -1) | transposed"] = lambda: torch.aminmax(view.movedim(1, -1))
    return fns, logits.numel() * logits.element_size()


def timings(shape: tuple[int, int, int], rounds: int) -> str:
    fns, _ = cases(shape)
    times = interleaved(fns, rounds, lambda: None)
    cediag.summary(clear=True)
    memory = _memory(shape)
    rows = []
    for name, seconds in times.items():
        if name.startswith("F.cross_entropy"):
            continue
        what, layout = name.split(" | ")
        ce = times[f"F.cross_entropy fwd+bwd | {layout}"]
        flat = times.get(f"{what} | flattened")
        if what.endswith("movedim(1, -1)"):
            flat = times["torch.aminmax | flattened"]
        extra = memory.get(name)
        rows.append(
            [
                what,
                layout,
                fmt_time(seconds),
                f"{seconds / ce:.3f}x",
                "-" if flat is None else f"{seconds / flat:.2f}x",
                "-" if extra is None else f"{extra['bytes'] / 2**20:.1f} MiB",
                "-" if extra is None else f"{100 * extra['fraction']:.1f}%",
            ]
        )
    for layout in ("transposed", "flattened"):
        name = f"F.cross_entropy fwd+bwd | {layout}"
        extra = memory.get(name)
        rows.append(
            [
                "F.cross_entropy fwd+bwd",
                layout,
                fmt_time(times[name]),
                "1.000x",
                f"{times[name] / times['F.cross_entropy fwd+bwd | flattened']:.2f}x",
                "-" if extra is None else f"{extra['bytes'] / 2**20:.1f} MiB",
                "-" if extra is None else f"{100 * extra['fraction']:.1f}%",
            ]
        )
    shape_text = "x".join(map(str, shape))
    headers = [f"logits {shape_text} fp32", "layout", "time", "vs CE (same layout)"]
    headers.append("vs flattened")
    return table([*headers, "peak extra memory", "of the logits"], rows)


def _memory(shape: tuple[int, int, int]) -> dict[str, dict[str, float]]:
    """Peak extra memory of each case, measured in a fresh process."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    command = [sys.executable, str(HERE / "transposed.py"), "--memory"]
    command += ["--shape", ",".join(map(str, shape)), "--threads", str(torch.get_num_threads())]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return {}
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_main(shape: tuple[int, int, int]) -> None:
    from memory import peak_extra

    fns, size = cases(shape)
    results = {}
    for name, fn in fns.items():
        extra = peak_extra(fn)
        results[name] = {"bytes": extra, "fraction": extra / size}
    print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="8,512,32000", help="B,T,V")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_clock(args.clock)
    torch.set_num_threads(args.threads)
    b, s, v = (int(n) for n in args.shape.split(","))
    if args.memory:
        memory_main((b, s, v))
        return
    warm_threads()
    print(timings((b, s, v), args.rounds))


if __name__ == "__main__":
    main()
