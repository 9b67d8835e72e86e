"""What cediag costs, as ratios to the loss it protects: `F.cross_entropy` forward + backward on
the same tensors, timed in the same process.

    python benchmarks/run.py                 # everything, CPU (see performance.md for times)
    python benchmarks/run.py --quick         # smaller shapes and fewer rounds (under a minute)
    python benchmarks/run.py --only check,memory
    python benchmarks/run.py --coverage      # the coverage table alone; exit 1 if it fails
    python benchmarks/run.py --device cuda   # adds (8192, 128256) bf16 and sync="deferred"

Sections (`--only`):
  check   cediag.check on clean logits, probabilities, log-probabilities (the path that confirms
          on sampled rows) and probability targets; a naive checker and torchmetrics' input
          validation side by side; the fixed per-call cost at (256, 10)
  memory  peak extra memory during a check, relative to the logits' size (separate process)
  guard   the default guard (cediag.wrap, cediag.watch) per training step of an MLP, a CNN and
          a transformer LM, per call at (64, 10) with a breakdown, and the sentinel next to
          one torch.aminmax at (4096, 32000) (guard_cost.py)
  coverage  faults injected at step k of those loops, the step cediag (or torch) reports
          them at, eager and deferred; exit status 1 if an eager fault is not reported by
          cediag at its step (fault_coverage.py)
  transposed  (8, 512, 32000).transpose(1, 2) logits vs flattened: time and peak extra
          memory of check, sentinel and full check (transposed.py)
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

import fault_coverage
import guard_cost
import torch
import torch.nn.functional as F
import transposed
from _timing import fmt_time, interleaved, synchronizer, table, use_clock, warm_threads
from naive import naive_check, torchmetrics_validation

import cediag
from cediag._engine import check_structure, finish, start_statistics
from cediag.families.cross_entropy.call import bind_call

HERE = Path(__file__).resolve().parent
SECTIONS = ("check", "memory", "guard", "coverage", "transposed", "cli")


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


def bench_guard(args: argparse.Namespace) -> str:
    """The default guard's cost per step and per call (`guard_cost.py`)."""
    if args.device != "cpu":
        return "(guard: measured on CPU only)"
    return guard_cost.report(args.quick)


def bench_coverage(args: argparse.Namespace) -> str:
    """Faults injected at step k, the step they are reported at (`coverage.py`)."""
    if args.device != "cpu":
        return "(coverage: run on CPU only)"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # it forks; the result does not depend on speed
    try:
        if args.quick:
            loops = fault_coverage.parse_loops("MLP", "1,11", 11)
        else:
            loops = fault_coverage.parse_loops("MLP,CNN,LM", "1,11,500,5000", args.max_slow_k)
        text, ok = fault_coverage.coverage(loops)
    finally:
        torch.set_num_threads(threads)
    if not ok:
        FAILED.append("coverage: an eager fault was not reported by cediag at its step")
    return text


def bench_transposed(args: argparse.Namespace) -> str:
    """Transposed LM logits vs flattened (`transposed.py`)."""
    if args.device != "cpu":
        return "(transposed: measured on CPU only)"
    shape = (1, 256, 32000) if args.quick else (8, 512, 32000)
    return transposed.timings(shape, 1 if args.quick else 3)


FAILED: list[str] = []


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
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: time the process's CPU time, not elapsed time (a shared machine)",
    )
    parser.add_argument(
        "--coverage", action="store_true", help="the coverage table alone (--only coverage)"
    )
    parser.add_argument(
        "--max-slow-k", type=int, default=500, help="coverage: largest k for the CNN and LM loops"
    )
    args = parser.parse_args()
    if args.coverage:
        args.only = "coverage"
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    use_clock(args.clock)
    warm_threads()
    print(f"machine: {machine(args.device)}; device {args.device}")
    print(
        f"medians of {args.rounds} interleaved rounds{' (quick)' if args.quick else ''}, "
        f"{'CPU time of the process' if args.clock == 'cpu' else 'elapsed time'}\n"
    )
    runners = {"check": bench_check, "memory": bench_memory, "guard": bench_guard}
    runners.update(coverage=bench_coverage, transposed=bench_transposed, cli=bench_cli)
    for section in SECTIONS:
        if section in only:
            start = time.perf_counter()
            print(f"## {section}\n")
            print(runners[section](args))
            print(f"\n({section}: {time.perf_counter() - start:.0f} s)\n", flush=True)
    if FAILED:
        print("\n".join(FAILED), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
