"""The `cediag` command line as a real process: entry points, streams, exit codes, big files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest
import torch
from safetensors.torch import save_file
from test_io import Evil, labels, logits

from cediag import ExitCode, Report


def run(*args, env: dict[str, str] | None = None, timeout: float = 120):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CEDIAG_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cediag", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


@pytest.fixture
def softmaxed(tmp_path):
    path = tmp_path / "softmaxed.pt"
    torch.save({"input": logits().softmax(1), "target": labels()}, path)
    return path


def test_json_on_stdout_summary_on_stderr(softmaxed):
    result = run("check", softmaxed, "--format", "json")
    assert result.returncode == ExitCode.FINDINGS
    assert Report.model_validate_json(result.stdout).by_rule("CE301") is not None
    assert result.stderr == "cediag: checked 1 file: 1 error (exit 1: errors fail the check)\n"


def test_sarif_and_junit_parse(softmaxed):
    sarif = json.loads(run("check", softmaxed, "--format", "sarif").stdout)
    assert sarif["runs"][0]["results"][0]["ruleId"] == "CE301"
    suite = ET.fromstring(run("check", softmaxed, "--format", "junit").stdout)
    assert suite.get("failures") == "1"


def test_an_unreadable_file_does_not_empty_the_sarif_report(softmaxed, tmp_path):
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(softmaxed.read_bytes()[:300])
    result = run("check", softmaxed, trunc, "--format", "sarif", "--exit-zero")
    assert result.returncode == ExitCode.COULD_NOT_RUN
    run_ = json.loads(result.stdout)["runs"][0]
    assert [r["ruleId"] for r in run_["results"]] == ["CE301"]
    (note,) = run_["invocations"][0]["toolExecutionNotifications"]
    assert "trunc.pt" in note["message"]["text"]
    assert f"cediag: error: {trunc}: " in result.stderr


def test_format_env_var(softmaxed):
    result = run("check", softmaxed, env={"CEDIAG_FORMAT": "github"})
    assert result.stdout.startswith("::error file=")


def test_text_is_uncoloured_off_a_terminal(softmaxed):
    result = run("check", softmaxed)
    assert result.returncode == 1 and "CE301 softmax-applied" in result.stdout
    assert "\x1b[" not in result.stdout + result.stderr


def test_malicious_pickle_refused_in_a_real_process(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"input": logits(), "target": labels(), "payload": Evil(marker)}, path)
    result = run("check", path)
    assert result.returncode == ExitCode.COULD_NOT_RUN
    assert result.stderr.count("\n") == 1 and "refused to unpickle" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_could_not_run_and_bad_option_exit_2(tmp_path, softmaxed):
    missing = run("check", tmp_path / "missing.safetensors")
    assert missing.returncode == 2
    assert (
        missing.stderr
        == f"cediag: error: {tmp_path / 'missing.safetensors'}: no such file; check the path (and the working directory)\n"
    )
    assert run("check", softmaxed, "--fail-on", "fatal").returncode == 2


# Writes a marker to stderr when the child first imports torch, so the test sees what the user
# saw before the (slow, on a cold start) import began.
TORCH_MARKER = textwrap.dedent(
    """
    import importlib.abc, runpy, sys

    class Marker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                sys.stderr.write("<importing torch>")
                sys.stderr.flush()
                sys.meta_path.remove(self)
            return None

    sys.meta_path.insert(0, Marker())
    sys.argv = ["cediag", *sys.argv[1:]]
    runpy.run_module("cediag", run_name="__main__")
    """
)


def run_on_a_terminal(*args) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe); return code, out, err."""
    import pty

    primary, secondary = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CEDIAG_")}
    process = subprocess.Popen(
        [sys.executable, "-c", TORCH_MARKER, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=environment,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    out = process.stdout.read().decode()
    code = process.wait(timeout=300)
    os.close(primary)
    return code, out, b"".join(chunks).decode(errors="replace")


needs_pty = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")


@needs_pty
def test_a_cold_start_on_a_terminal_says_work_has_begun_before_importing_torch(softmaxed):
    code, out, err = run_on_a_terminal("check", softmaxed)
    assert code == ExitCode.FINDINGS and "CE301" in out
    assert "cediag: starting (loading torch)..." in err
    assert err.index("cediag: starting") < err.index("<importing torch>")
    assert "cediag: checked 1 file: 1 error" in err


@needs_pty
def test_the_demo_on_a_terminal_says_work_has_begun_before_importing_torch():
    code, out, err = run_on_a_terminal("demo")
    assert code == 0 and "cediag demo" in out
    assert err.index("cediag: starting") < err.index("<importing torch>")


@needs_pty
def test_the_start_line_is_erased_before_an_error(softmaxed):
    code, out, err = run_on_a_terminal("check", softmaxed, "--select", "CE999")
    assert code == ExitCode.COULD_NOT_RUN and out == ""
    # the error starts on a clean line, not after "starting (loading torch)..."
    assert "\r\x1b[Kcediag: error: --select CE999: matches no rule" in err


def test_no_start_line_off_a_terminal(softmaxed):
    result = run("check", softmaxed, "--exit-zero")
    assert "starting" not in result.stderr  # CI logs and pipes get the summary alone


@pytest.mark.skipif(shutil.which("cediag") is None, reason="the cediag script is not on PATH")
def test_console_script(softmaxed):
    result = subprocess.run(
        ["cediag", "check", str(softmaxed), "--exit-zero"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "CE301" in result.stdout


# ---------------------------------------------------------------- big files, bounded memory

# Runs the CLI in a child that samples its anonymous memory (RssAnon: heap, not the mapped file)
# every millisecond; the baseline is taken after importing everything and one tiny check.
PROBE = textwrap.dedent(
    """
    import json, sys, threading, time

    def anon_kb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])

    import torch
    import cediag
    from cediag.cli import main
    from cediag.cli.formats import json as _json, text as _text  # noqa: F401
    cediag.check(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    baseline = peak = anon_kb()
    done = False

    def sample():
        global peak
        while not done:
            peak = max(peak, anon_kb())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    sys.argv = ["cediag", *sys.argv[2:]]
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
    done = True
    thread.join()
    with open(OUT, "w") as f:
        json.dump({"baseline_kb": baseline, "peak_kb": peak}, f)
    sys.exit(code)
    """
)


def check_memory(tmp_path, suffix: str, n: int, c: int) -> None:
    """Write (n, c) float32 logits and int64 targets, check them with the CLI in a child, and
    assert its peak extra anonymous memory stays under 10% of the file."""
    path = tmp_path / f"big{suffix}"
    x = torch.randn(n, c, generator=torch.Generator().manual_seed(0))
    t = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(1))
    if suffix == ".pt":
        torch.save({"input": x, "target": t}, path)
    else:
        save_file({"input": x, "target": t}, str(path))
    del x, t
    size_mb = path.stat().st_size / 2**20
    out = tmp_path / "memory.json"
    script = PROBE.replace("OUT", repr(str(out)))
    result = subprocess.run(
        [sys.executable, "-c", script, "-", "check", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert Report.model_validate_json(result.stdout).ok
    memory = json.loads(out.read_text())
    extra_mb = (memory["peak_kb"] - memory["baseline_kb"]) / 1024
    assert extra_mb < 0.1 * size_mb, (
        f"{extra_mb:.0f} MB extra anonymous memory for {size_mb:.0f} MB"
    )


needs_proc = pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="reads RssAnon from /proc"
)


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_large_file_is_checked_in_bounded_memory(tmp_path, suffix):
    # 8192 positions x 8000-token vocabulary: 250 MB of language-model logits
    check_memory(tmp_path, suffix, 8192, 8000)


@pytest.mark.slow
@needs_proc
def test_large_file_with_few_classes_is_checked_in_bounded_memory(tmp_path):
    check_memory(tmp_path, ".safetensors", 2_500_000, 25)  # 240 MB, 25 classes
