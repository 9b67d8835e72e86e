"""What cediag costs, as ratios to the loss it protects: `F.cross_entropy` forward + backward on
the same tensors, timed in the same process.

    python benchmarks/run.py                 # everything, CPU (about 5-10 minutes)
    python benchmarks/run.py --quick         # smaller shapes and fewer rounds (under a minute)
    python benchmarks/run.py --only check,memory
    python benchmarks/run.py --device cuda   # adds (8192, 128256) bf16 and sync="deferred"

Sections (`--only`):
  check   cediag.check on clean logits, probabilities, log-probabilities (the path that confirms
          on sampled rows) and probability targets; a naive checker and torchmetrics' input
          validation side by side; the fixed per-call cost at (256, 10)
  memory  peak extra memory during a check, relative to the logits' size (separate process)
  guard   cediag.wrap and cediag.watch on a small model's training step, default schedule
  cli     `cediag check FILE` on a large saved file vs loading it (separate processes)

Timings are medians of rounds in which every variant runs once, in turn, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from _timing import fmt_time, interleaved, synchronizer, table, warm_threads
from naive import naive_check, torchmetrics_validation

import cediag
from cediag._call import bind_call
from cediag._engine import check_structure, finish, start_statistics

HERE = Path(__file__).resolve().parent
SECTIONS = ("check", "memory", "guard", "cli")


def machine(device: str) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}"
    )
    if device.startswith("cuda"):
        text += f", {torch.cuda.get_device_name()}"
    return text


# ---------------------------------------------------------------------------------- check


def shapes(device: str, quick: bool) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    big = (1024, 32000) if quick else (4096, 32000)
    cases = [
        ("LM head", big, torch.float32),
        ("LM head", big, torch.bfloat16),
        ("MNIST-like", (256, 10), torch.float32),
        ("segmentation", (2, 21, 128, 128) if quick else (8, 21, 256, 256), torch.float32),
    ]
    if device.startswith("cuda") and not quick:
        cases.append(("LM head, Llama-3 vocab", (8192, 128256), torch.bfloat16))
    return cases


def ce_step(x: torch.Tensor, t: torch.Tensor) -> None:
    leaf = x.detach().requires_grad_()
    F.cross_entropy(leaf, t).backward()


def bench_check(args: argparse.Namespace) -> str:
    tm_validate = torchmetrics_validation()
    headers = ["case", "shape", "dtype", "CE fwd+bwd", "variant", "time", "ratio to CE"]
    rows: list[list[str]] = []
    for label, shape, dtype in shapes(args.device, args.quick):
        rows += _check_rows(label, shape, dtype, args, tm_validate)
        cediag.summary(clear=True)
    out = table(headers, rows)
    if tm_validate is None:
        out += "\n(torchmetrics validation skipped: `pip install torchmetrics` to compare)"
    return out + "\n\n" + fixed_cost(args)


def _check_rows(label, shape, dtype, args, tm_validate) -> list[list[str]]:
    device, sync = args.device, synchronizer(args.device)
    torch.manual_seed(0)
    n_classes = shape[1]
    base = torch.randn(shape, device=device)
    x = base.to(dtype)
    t = torch.randint(0, n_classes, (shape[0], *shape[2:]), device=device)
    probs = base.softmax(1).to(dtype)
    logp = base.log_softmax(1).to(dtype)
    soft_t = torch.randn(shape, device=device).softmax(1).to(dtype)
    del base
    variants = {
        "CE (index targets)": lambda: ce_step(x, t),
        "CE (probability targets)": lambda: ce_step(x, soft_t),
        "check, clean logits": lambda: cediag.check(x, t),
        "check, probabilities": lambda: cediag.check(probs, t),
        "check, log-probabilities": lambda: cediag.check(logp, t),
        "check, probability targets": lambda: cediag.check(x, soft_t),
        "naive checker": lambda: naive_check(x, t),
    }
    if tm_validate is not None:
        variants["torchmetrics validation"] = lambda: tm_validate(x, t)
    # The whole guarded loss (check on every call + CE forward+backward): with sync="deferred"
    # the statistics come back without blocking, which matters on a GPU only.
    eager = cediag.wrap(F.cross_entropy, every=1, sync="eager", on_error="warn")
    deferred = cediag.wrap(F.cross_entropy, every=1, sync="deferred", on_error="warn")
    variants["guarded CE (every=1, sync=eager)"] = lambda: _guarded_ce(eager, x, t)
    variants["guarded CE (every=1, sync=deferred)"] = lambda: _guarded_ce(deferred, x, t)
    rounds = args.rounds if x.numel() > 1e6 else args.rounds * 2
    times = interleaved(variants, rounds, sync)
    ce_index, ce_soft = times.pop("CE (index targets)"), times.pop("CE (probability targets)")
    rows = []
    for name, seconds in times.items():
        yardstick = ce_soft if "probability targets" in name else ce_index
        rows.append(
            [
                label,
                "x".join(map(str, shape)),
                str(dtype).removeprefix("torch."),
                fmt_time(yardstick),
                name,
                fmt_time(seconds),
                f"{seconds / yardstick:.3f}x",
            ]
        )
    return rows


def _guarded_ce(loss, x: torch.Tensor, t: torch.Tensor) -> None:
    leaf = x.detach().requires_grad_()
    loss(leaf, t).backward()


def fixed_cost(args: argparse.Namespace) -> str:
    """Where the time of a check on a tiny input goes: it is all fixed per-call cost."""
    device, sync = args.device, synchronizer(args.device)
    x = torch.randn(256, 10, device=device)
    t = torch.randint(0, 10, (256,), device=device)
    call = bind_call(x, t)
    ctx = check_structure(call)
    plan, packed = start_statistics(call)
    values = packed.tolist()

    def statistics_pass():
        plan_, packed_ = start_statistics(call)
        packed_.tolist()

    times = interleaved(
        {
            "whole check()": lambda: cediag.check(x, t),
            "bind + structure rules": lambda: check_structure(bind_call(x, t)),
            "statistics pass + 1 transfer": statistics_pass,
            "value rules + Report": lambda: finish(check_structure(call), None, plan, values),
            "  (of which structure rules)": lambda: check_structure(call),
            "F.cross_entropy forward+backward": lambda: ce_step(x, t),
        },
        args.rounds * 2,
        sync,
    )
    del ctx
    rows = [[name, f"{seconds * 1e6:.0f} us"] for name, seconds in times.items()]
    return table(["per call at (256, 10) fp32", "median"], rows)


# ---------------------------------------------------------------------------------- memory


def bench_memory(args: argparse.Namespace) -> str:
    if args.device != "cpu":
        return "(memory: measured on CPU only)"
    rows_n = 1024 if args.quick else 4096
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    command = [sys.executable, str(HERE / "memory.py"), "--rows", str(rows_n)]
    command += ["--threads", str(torch.get_num_threads())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    rows = []
    for key, value in data.items():
        dtype, case = key.split("|")
        rows.append(
            [case, dtype, f"{value['bytes'] / 2**20:.1f} MiB", f"{100 * value['fraction']:.1f}%"]
        )
    headers = [f"peak extra memory, ({rows_n}, 32000)", "dtype", "bytes", "of the logits"]
    return table(headers, rows)


# ---------------------------------------------------------------------------------- guard


class TinyLM(nn.Module):
    """A 2-layer transformer language model: vocabulary 1000, width 128, 64-token contexts."""

    def __init__(self, vocab: int = 1000, width: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(tokens))).flatten(0, 1)


MODELS = {
    "MLP 784-256-10, batch 64": (
        lambda: nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)),
        lambda: (torch.randn(64, 784), torch.randint(0, 10, (64,))),
        (64, 10),
    ),
    "transformer LM, 2 layers, 8x64 tokens, vocab 1000": (
        TinyLM,
        lambda: (torch.randint(0, 1000, (8, 64)), torch.randint(0, 1000, (8 * 64,))),
        (512, 1000),
    ),
}


DEVICE = "cpu"  # set by main()


def make_step(model_name: str, criterion: nn.Module):
    build, data, _ = MODELS[model_name]
    torch.manual_seed(0)
    model = build().to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, t = (tensor.to(DEVICE) for tensor in data())

    def step():
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(x), t)
        loss.backward()
        opt.step()

    return step


def bench_guard(args: argparse.Namespace) -> str:
    """200 steps per round with a fresh guard each round (so each round includes the first
    calls of the schedule, and the first full check on caches the step has filled); the
    settings alternate round by round. The default schedule keeps the guard within its
    overhead budget; `budget=None` follows first=10, every=100 exactly, for comparison."""
    steps = 200
    out = []
    for model_name, (_, _, logits_shape) in list(MODELS.items())[: 1 if args.quick else None]:
        # A millisecond-long step varies by a few percent between identical rounds on a shared
        # machine: many short rounds for it, fewer for the slow model.
        rounds = 3 if args.quick else (31 if "MLP" in model_name else 7)

        def run_plain(model_name=model_name) -> float:
            return _time_steps(make_step(model_name, nn.CrossEntropyLoss()), steps)

        def run_wrap(model_name=model_name, **options) -> float:
            criterion = cediag.wrap(nn.CrossEntropyLoss(), **options)
            return _time_steps(make_step(model_name, criterion), steps)

        def run_watch(model_name=model_name) -> float:
            step = make_step(model_name, nn.CrossEntropyLoss())
            with cediag.watch():
                return _time_steps(step, steps)

        settings = {
            "unguarded": run_plain,
            "cediag.wrap": run_wrap,
            "cediag.watch": run_watch,
            "cediag.wrap(budget=None)": lambda m=model_name: run_wrap(m, budget=None),
        }
        for fn in settings.values():  # warm-up
            fn()
        samples: dict[str, list[float]] = {name: [] for name in settings}
        counts: dict[str, str] = {}
        for _ in range(rounds):
            for name, fn in settings.items():
                cediag.summary(clear=True)
                samples[name].append(fn())
                seen = cediag.summary()
                counts[name] = (
                    f"{seen.checked} / {seen.calls - seen.let_through - seen.checked} / "
                    f"{seen.let_through}"
                    if name != "unguarded"
                    else ""
                )
        base = _median(samples["unguarded"])
        rows = []
        for name, values in samples.items():
            us = _median(values)
            rows.append([name, f"{us:.0f} us", f"{100 * (us / base - 1):+.2f}%", counts[name]])
        headers = [
            f"{model_name}, {steps} steps ({rounds} rounds)",
            "per step",
            "vs unguarded",
            "full checks / metadata only / let through",
        ]
        out.append(table(headers, rows))
        costs = guard_per_call(args, logits_shape)
        call_rows = [[name, f"{s * 1e6:.1f} us"] for name, s in costs.items()]
        out.append(table([f"per loss call, logits {logits_shape}", "median"], call_rows))
    return "\n\n".join(out)


def guard_per_call(args: argparse.Namespace, shape: tuple[int, int]) -> dict[str, float]:
    """Per-call costs of the loss forward in a tight loop (warm caches: a real step pays more,
    since the step's own data pushes the check's code and data out of the CPU caches)."""
    sync = synchronizer(DEVICE)
    x = torch.randn(shape, device=DEVICE)
    t = torch.randint(0, shape[1], shape[:1], device=DEVICE)
    plain = nn.CrossEntropyLoss()
    # A tiny budget: after its first call the guard is always over it.
    over = cediag.wrap(nn.CrossEntropyLoss(), budget=1e-9)
    metadata = cediag.wrap(nn.CrossEntropyLoss(), first=0, every=0)
    full = cediag.wrap(nn.CrossEntropyLoss(), every=1)
    times = interleaved(
        {
            "plain loss": lambda: plain(x, t),
            "wrap, let through (over budget)": lambda: over(x, t),
            "wrap, metadata checks only": lambda: metadata(x, t),
            "wrap, full check": lambda: full(x, t),
        },
        args.rounds * 2,
        sync,
    )
    for name, options in {
        "watch, let through (over budget)": {"budget": 1e-9},
        "watch, metadata checks only": {"first": 0, "every": 0},
        "watch, full check": {"every": 1},
    }.items():
        with cediag.watch(**options):
            times[name] = interleaved({"w": lambda: plain(x, t)}, args.rounds * 2, sync)["w"]
    cediag.summary(clear=True)
    return times


def _time_steps(step, steps: int) -> float:
    sync = synchronizer(DEVICE)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps * 1e6


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# ---------------------------------------------------------------------------------- cli


def bench_cli(args: argparse.Namespace) -> str:
    if args.device != "cpu":
        return "(cli: measured on CPU only)"
    command = [sys.executable, str(HERE / "cli_file.py")]
    command += ["--gib", str(args.file_gib if not args.quick else 0.1)]
    command += ["--runs", "1", "--no-warm"] if args.quick else ["--runs", "3"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return f"(cli benchmark failed: {result.stderr.strip()[-500:]})"
    return result.stdout.strip()


# ---------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per timing (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--file-gib", type=float, default=2.0, help="size of the CLI's file")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    global DEVICE
    DEVICE = args.device
    torch.set_num_threads(args.threads)
    warm_threads()
    print(f"machine: {machine(args.device)}; device {args.device}")
    print(f"medians of {args.rounds} interleaved rounds{' (quick)' if args.quick else ''}\n")
    runners = {"check": bench_check, "memory": bench_memory, "guard": bench_guard}
    runners["cli"] = bench_cli
    for section in SECTIONS:
        if section in only:
            start = time.perf_counter()
            print(f"## {section}\n")
            print(runners[section](args))
            print(f"\n({section}: {time.perf_counter() - start:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
