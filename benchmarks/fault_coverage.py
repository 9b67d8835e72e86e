"""Which step a fault is reported at, and by whom, under the guard's default options.

    python benchmarks/fault_coverage.py [--loops MLP,CNN,LM] [--steps 1,11,500,5000] [--max-slow 500]

For each loop (`_loops.py`), entry point (`cediag.wrap(nn.CrossEntropyLoss())`, and
`nn.CrossEntropyLoss()` inside `with cediag.watch():`) and sync mode ("eager", the default,
and "deferred"), a clean training loop runs with every other option at its default. Before
step k the process forks once per fault kind: the child injects the fault at step k and runs
on until cediag raises (at most k + 2K steps, K = sync_every); the parent carries on clean to
the next k. Each child therefore has the guard state of a real run that reached step k.

Faults: one bad batch at step k (out-of-range label, every target ignored, NaN in the logits,
probability targets whose rows sum to 2, an empty batch), or a model that applies softmax from
step k on. An error torch raises first (its "Target 10 is out of bounds") is recorded, the
step is skipped, and the loop goes on until cediag reports.

Exit status 1 when an eager row is not reported by cediag at step k: that is the guard's
promise. Deferred rows are expected by step k + K; on a CPU torch rejects an out-of-range
label at step k before the deferred reading is read (on a GPU that is the device-side assert
the eager mode exists to prevent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from _loops import Loop, build_loop
from _timing import table

import cediag
from cediag import CrossEntropyInputError

K = 16  # sync_every's default: deferred readings are read every K calls


@dataclass(frozen=True)
class Fault:
    name: str
    soft: bool  # needs a loop with probability targets
    persistent: bool  # stays from step k on (a code change), else one bad batch
    inject: Callable[[Loop], tuple[torch.Tensor | None, torch.Tensor | None, Callable | None]]


def _out_of_range(loop: Loop):
    t = loop.t.clone()
    t[0] = loop.n_classes
    return None, t, None


def _all_ignored(loop: Loop):
    return None, torch.full_like(loop.t, -100), None


def _nan_logits(loop: Loop):
    def poison(logits: torch.Tensor) -> torch.Tensor:
        bad = torch.zeros_like(logits)
        bad.view(-1)[0] = float("nan")
        return logits + bad

    return None, None, poison


def _softmax(loop: Loop):
    return None, None, lambda logits: logits.softmax(-1)


def _sums_to_two(loop: Loop):
    return None, loop.t * 2, None


def _empty(loop: Loop):
    return loop.x[:0], loop.t[:0], None


FAULTS = (
    Fault("label out of range", False, False, _out_of_range),
    Fault("all targets ignored", False, False, _all_ignored),
    Fault("NaN logits", False, False, _nan_logits),
    Fault("softmax applied", False, True, _softmax),
    Fault("prob. targets sum to 2", True, False, _sums_to_two),
    Fault("empty batch", False, False, _empty),
)


def _run_fault(loop: Loop, criterion, fault: Fault, k: int) -> dict:
    """From step k: inject, step until cediag raises. Returns who reported at which step."""
    result: dict = {"torch": None, "cediag": None, "torch_error": ""}
    for step in range(k, k + 2 * K + 1):
        x = t = activation = None
        if step == k or fault.persistent:
            x, t, activation = fault.inject(loop)
        try:
            loop.step(criterion, x, t, activation)
        except CrossEntropyInputError:
            result["cediag"] = step
            break
        except Exception as error:  # torch rejected the batch: skip the step, as a loop might
            if result["torch"] is None:
                result["torch"] = step
                result["torch_error"] = f"{type(error).__name__}: {str(error)[:60]}"
    return result


def _forked(fn: Callable[[], dict]) -> dict:
    """Run `fn` in a child process (a copy of this one, guard state included)."""
    if not hasattr(os, "fork"):
        raise SystemExit("the coverage benchmark forks (os.fork): run it on Linux or macOS")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            payload = json.dumps(fn())
        except BaseException as error:  # noqa: BLE001 - report anything to the parent
            payload = json.dumps({"failed": f"{type(error).__name__}: {error}"})
        with os.fdopen(write, "w") as f:
            f.write(payload)
        os._exit(0)  # no atexit hooks, no flush of the parent's pending work
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else {"failed": "child died"}


def run_entry(loop_name: str, soft: bool, entry: str, sync: str, steps: list[int], faults):
    """One clean run of a loop under one entry point and sync mode, forking at each k."""
    cediag.summary(clear=True)
    loop = build_loop(loop_name, soft=soft)
    options = {} if sync == "eager" else {"sync": sync}
    results = []
    if entry == "wrap":
        criterion = cediag.wrap(nn.CrossEntropyLoss(), **options)
        block = None
    else:
        criterion = nn.CrossEntropyLoss()
        block = cediag.watch(**options)
        block.__enter__()
    try:
        done = 0
        for k in steps:
            for _ in range(done, k - 1):  # clean steps up to k - 1
                loop.step(criterion)
            done = k - 1
            for fault in faults:
                outcome = _forked(lambda f=fault, k=k: _run_fault(loop, criterion, f, k))
                results.append((fault, k, outcome))
    finally:
        if block is not None:
            block.__exit__(None, None, None)
    cediag.summary(clear=True)
    return results


def coverage(loops: dict[str, list[int]]) -> tuple[str, bool]:
    """The table, and whether every eager row was reported by cediag at step k.

    One row per (loop, fault, entry point, sync), one column per step k the fault was injected
    at; a cell is the step it was reported at ("+n" steps after k) and who reported it first."""
    ok, late = True, 0
    cells: dict[tuple[str, str, str, str], dict[int, str]] = {}
    all_steps: list[int] = sorted({k for steps in loops.values() for k in steps})
    for loop_name, steps in loops.items():
        for soft in (False, True):
            faults = [f for f in FAULTS if f.soft == soft]
            for entry in ("wrap", "watch"):
                for sync in ("eager", "deferred"):
                    for fault, k, out in run_entry(loop_name, soft, entry, sync, steps, faults):
                        cell, good, in_time = _cell(sync, k, out)
                        key = (loop_name, fault.name, _ENTRY[entry], sync)
                        cells.setdefault(key, {})[k] = cell
                        ok &= good
                        late += not in_time
    order = {f.name: i for i, f in enumerate(FAULTS)}
    entries, syncs = list(_ENTRY.values()), ["eager", "deferred"]
    keys = sorted(
        cells,
        key=lambda key: (
            list(loops).index(key[0]),
            order[key[1]],
            entries.index(key[2]),
            syncs.index(key[3]),
        ),
    )
    rows = [[*key, *(cells[key].get(k, "(not run)") for k in all_steps)] for key in keys]
    headers = ["loop", "fault", "entry point", "sync", *(f"injected at {k}" for k in all_steps)]
    out = table(headers, rows)
    out += (
        f"\n\nA cell: the step the fault was reported at (+ steps after the injection) and who "
        f"reported it first. K = sync_every = {K}. Eager: every fault reported by cediag at "
        f"the step it was injected at: {'yes' if ok else 'NO'}. Deferred cells later than "
        f"k + K: {late}."
    )
    return out, ok


_ENTRY = {"wrap": "wrap(CrossEntropyLoss())", "watch": "watch()"}


def _cell(sync: str, k: int, out: dict) -> tuple[str, bool, bool]:
    """The cell text, whether an eager row kept its promise, whether it came by k + K."""
    if "failed" in out:
        return f"failed: {out['failed']}", False, False
    by_torch, by_cediag = out["torch"], out["cediag"]
    text = "" if by_cediag is None else f"{by_cediag} (+{by_cediag - k}) cediag"
    if by_torch is not None and (by_cediag is None or by_torch < by_cediag):
        what = out["torch_error"].split(":")[0]
        text = f"{by_torch} torch ({what})" + (f", then {text}" if text else "")
    if not text:
        text = f"not by {k + 2 * K}"
    if sync == "eager":
        good = by_cediag == k and (by_torch is None or by_torch > k)
        return text, good, good
    return text, True, by_cediag is not None and by_cediag <= k + K


def parse_loops(names: str, steps: str, max_slow: int) -> dict[str, list[int]]:
    ks = sorted({int(s) for s in steps.split(",")})
    out = {}
    for name in names.split(","):
        name = name.strip()
        out[name] = ks if name == "MLP" else [k for k in ks if k <= max_slow]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default="MLP,CNN,LM")
    parser.add_argument("--steps", default="1,11,500,5000", help="steps k to inject at")
    parser.add_argument("--max-slow", type=int, default=500, help="largest k for CNN and LM")
    args = parser.parse_args()
    torch.set_num_threads(1)  # forked children and OpenMP worker pools do not mix
    start = time.perf_counter()
    text, ok = coverage(parse_loops(args.loops, args.steps, args.max_slow))
    print(text)
    print(f"\n(coverage: {time.perf_counter() - start:.0f} s)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
