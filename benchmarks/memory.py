"""Peak extra memory while `cediag.check` runs, relative to the size of the logits (CPU).

    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/memory.py [--rows 4096 --classes 32000]

Run as its own process by `run.py`: with a fixed malloc mmap threshold every allocation above
64 KiB is a fresh mapping, returned to the system when freed, so the resident-set high-water
mark (VmHWM, reset by writing 5 to /proc/self/clear_refs) shows the largest temporary a call
made. Prints one JSON object: case -> peak extra bytes and fraction of the logits' size.
"""

from __future__ import annotations

import argparse
import json
import re

import torch
import torch.nn.functional as F
from naive import naive_check

import cediag


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(field + r":\s+(\d+)", f.read())
    assert match is not None
    return int(match.group(1))


def peak_extra(fn) -> int:
    """Bytes the resident set grew to above its level before `fn()`."""
    fn()  # fault in code and lazily allocated state first
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    fn()
    return max(0, _status_kib("VmHWM") - before) * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(args.rows, args.classes).to(dtype)
        t = torch.randint(0, args.classes, (args.rows,))
        probs = x.float().softmax(1).to(dtype)
        logp = x.float().log_softmax(1).to(dtype)
        soft_t = torch.randn(args.rows, args.classes).softmax(1).to(dtype)
        size = x.numel() * x.element_size()
        name = str(dtype).removeprefix("torch.").replace("float32", "fp32").replace("bfloat", "bf")

        def ce(x=x, t=t):
            leaf = x.detach().requires_grad_()
            F.cross_entropy(leaf, t).backward()

        cases = {
            "check, clean logits": lambda x=x, t=t: cediag.check(x, t),
            "check, probabilities": lambda p=probs, t=t: cediag.check(p, t),
            "check, log-probabilities": lambda lp=logp, t=t: cediag.check(lp, t),
            "check, probability targets": lambda x=x, s=soft_t: cediag.check(x, s),
            "naive checker": lambda x=x, t=t: naive_check(x, t),
            "F.cross_entropy fwd+bwd": ce,
        }
        for case, fn in cases.items():
            extra = peak_extra(fn)
            results[f"{name}|{case}"] = {"bytes": extra, "fraction": extra / size}
        del x, probs, logp, soft_t
    print(json.dumps(results))


if __name__ == "__main__":
    main()
