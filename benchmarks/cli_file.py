"""`cediag check FILE` on a large saved call vs loading the same file, each in a fresh process.

    python benchmarks/cli_file.py [--gib 2.0] [--runs 3] [--dir /tmp]

Writes {"input": (N, 32000) fp32 logits, "target": (N,) int64} as .pt and .safetensors in a
temporary directory (deleted afterwards), then times, alternating, in fresh processes:
  load      torch.load(weights_only=True) / safetensors.torch.load_file: loading it alone
  cediag    the `cediag check FILE` command
Wall time is the median over runs with the file in the page cache (after one unmeasured run of
each). Peak anonymous memory (RssAnon, sampled every 2 ms from /proc/PID/status) is reported
as extra over the same command on a tiny file, i.e. what the file's size costs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import table
from safetensors.torch import save_file

CLASSES = 32000

STARTUP = "import torch"
# safetensors maps the file lazily: load_file alone never reads the data. This one does, once.
LOAD_AND_READ = (
    "import sys, torch; from safetensors.torch import load_file; "
    "[torch.aminmax(v) for v in load_file(sys.argv[1]).values() if v.is_floating_point()]"
)

LOADERS = {
    ".pt": "import torch, sys; torch.load(sys.argv[1], weights_only=True, map_location='cpu')",
    ".safetensors": "import sys; from safetensors.torch import load_file; load_file(sys.argv[1])",
}


LABELS = {
    ".pt": "torch.load (the reference)",
    ".safetensors": "safetensors load_file (the reference)",
    "cediag": "cediag check FILE",
    "startup": "python -c 'import torch' (startup alone)",
    "load+read": "load_file + one read (torch.aminmax)",
}


def cediag_command(path: Path) -> list[str]:
    cli = shutil.which("cediag")
    return (
        [cli, "check", str(path)] if cli else [sys.executable, "-m", "cediag", "check", str(path)]
    )


def measure(command: list[str]) -> tuple[float, int, int]:
    """Wall seconds, peak RssAnon bytes, exit code."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.002)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode() if process.stderr else ""
    if process.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {stderr[-400:]}")
    return wall, peak, process.returncode


def write(directory: Path, rows: int, stem: str) -> dict[str, Path]:
    torch.manual_seed(0)
    tensors = {"input": torch.randn(rows, CLASSES), "target": torch.randint(0, CLASSES, (rows,))}
    pt, st = directory / f"{stem}.pt", directory / f"{stem}.safetensors"
    torch.save(tensors, pt)
    save_file(tensors, st)
    return {".pt": pt, ".safetensors": st}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-warm", dest="warm", action="store_false", help="skip warm-up runs")
    parser.add_argument("--dir", default=None, help="where to write the files (default: $TMPDIR)")
    args = parser.parse_args()
    rows = max(1, int(args.gib * 2**30 / (CLASSES * 4)))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="cediag-bench-") as tmp:
        free = shutil.disk_usage(tmp).free
        need = 2 * rows * CLASSES * 4 + 2**28
        if free < need:
            rows = max(1, int((free - 2**28) / 2 / (CLASSES * 4)))
            print(f"(only {free / 2**30:.1f} GiB free: using a smaller file)")
        big = write(Path(tmp), rows, "big")
        tiny = write(Path(tmp), 4, "tiny")
        result_rows = []
        for suffix, path in big.items():
            size = path.stat().st_size
            commands = {
                "load": [sys.executable, "-c", LOADERS[suffix], str(path)],
                "cediag": cediag_command(path),
            }
            if suffix == ".pt":
                commands["startup"] = [sys.executable, "-c", STARTUP]
            if suffix == ".safetensors":
                commands["load+read"] = [sys.executable, "-c", LOAD_AND_READ, str(path)]
            tiny_commands = {
                "load": [sys.executable, "-c", LOADERS[suffix], str(tiny[suffix])],
                "cediag": cediag_command(tiny[suffix]),
                "startup": [sys.executable, "-c", STARTUP],
                "load+read": [sys.executable, "-c", LOAD_AND_READ, str(tiny[suffix])],
            }
            baseline = {name: measure(tiny_commands[name])[1] for name in commands}
            for command in commands.values() if args.warm else ():  # caches warm
                measure(command)
            walls: dict[str, list[float]] = {name: [] for name in commands}
            peaks: dict[str, int] = {name: 0 for name in commands}
            for _ in range(args.runs):
                for name, command in commands.items():
                    wall, peak, _ = measure(command)
                    walls[name].append(wall)
                    peaks[name] = max(peaks[name], peak)
            load_wall = statistics.median(walls["load"])
            for name in commands:
                wall = statistics.median(walls[name])
                extra = max(0, peaks[name] - baseline[name])
                result_rows.append(
                    [
                        f"{suffix} {size / 2**30:.2f} GiB, ({rows}, {CLASSES}) fp32",
                        LABELS[suffix] if name == "load" else LABELS[name],
                        f"{wall:.2f} s",
                        f"{wall / load_wall:.2f}x",
                        f"{extra / 2**20:.0f} MiB",
                        f"{100 * extra / size:.1f}%",
                    ]
                )
        headers = ["file", "command", "wall", "vs load", "peak extra anon", "of file"]
        print(table(headers, result_rows))


if __name__ == "__main__":
    main()
