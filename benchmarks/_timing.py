"""Timing helpers: interleaved rounds, medians, device synchronisation, thread warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

_CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def use_clock(name: str) -> None:
    """ "wall" (default): elapsed time. "cpu": this process's CPU time (`time.process_time`),
    which leaves out the time other processes hold the cores on a shared machine; with one
    thread and no GPU it is the work's own time (cache misses others cause still count)."""
    global _clock
    _clock = _CLOCK[name]


def now() -> float:
    return _clock()


def synchronizer(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def warm_threads() -> None:
    """Run small vectorised math until its per-call cost settles.

    On a busy machine the first few hundred MKL calls after `torch.set_num_threads` can each wait
    milliseconds for OpenMP worker threads that spin on a contended core; steady-state figures
    are taken after that.
    """
    r = torch.randn(64, 16)
    deadline = time.perf_counter() + 5.0
    fast = 0
    while fast < 50 and time.perf_counter() < deadline:
        start = time.perf_counter()
        r.exp().logsumexp(1)
        fast = fast + 1 if time.perf_counter() - start < 1e-4 else 0


def calibrate(fn: Callable[[], object], sync: Callable[[], None], target_s: float = 0.02) -> int:
    """How many calls make one sample of about `target_s` seconds (at least 1)."""
    sync()
    start = now()
    fn()
    sync()
    once = max(now() - start, 1e-7)
    return max(1, min(10_000, int(target_s / once)))


def interleaved(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    sync: Callable[[], None],
    warmup: int = 1,
) -> dict[str, float]:
    """Median seconds per call of each function, taking one sample of each per round, in turn,
    so that load from other processes affects them alike."""
    samples = interleaved_samples(fns, rounds, sync, warmup)
    return {name: statistics.median(values) for name, values in samples.items()}


def interleaved_samples(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    sync: Callable[[], None],
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Each round's seconds per call of each function (see `interleaved`)."""
    numbers = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        numbers[name] = calibrate(fn, sync)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            number = numbers[name]
            sync()
            start = now()
            for _ in range(number):
                fn()
            sync()
            samples[name].append((now() - start) / number)
    return samples


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, readable as plain text too."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)
