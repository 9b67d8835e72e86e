"""`cediag run`: an unmodified script under watch(), its exit code, the options a CI job
needs, and the summary."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

import cediag
from cediag._runner import run_script
from cediag.cli._app import report_schema

BAD = """
import sys
import torch
import torch.nn as nn

print("argv", sys.argv[1:])
criterion = nn.CrossEntropyLoss()
for step in range(3):
    logits = torch.randn(8, 5).softmax(dim=1)
    criterion(logits, torch.randint(0, 5, (8,)))
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
"""

CLEAN = """
import torch
import torch.nn.functional as F

for step in range(30):
    F.cross_entropy(torch.randn(8, 5), torch.randint(0, 5, (8,)))
print("done")
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(BAD)
    return path


def test_run_script_checks_the_loss_calls_and_prints_a_summary(script, capsys):
    with pytest.warns(cediag.CediagWarning, match="softmax-applied"):
        code = run_script(str(script), ["0"])
    out, err = capsys.readouterr()
    assert code == 1  # an error finding fails the run, though the script exited 0
    assert "argv ['0']" in out
    assert "CE301 softmax-applied at" in err and "train.py:10 (3 calls)" in err


def test_run_script_returns_the_scripts_exit_code(script, capsys):
    with pytest.warns(cediag.CediagWarning):
        assert run_script(str(script), ["3"]) == 3
    assert sys.argv[0] != str(script)  # argv restored


def test_run_script_exit_zero_and_fail_on(script, capsys, tmp_path):
    with pytest.warns(cediag.CediagWarning):
        assert run_script(str(script), [], fail_on_findings=False) == 0
    clean = tmp_path / "clean.py"
    clean.write_text(CLEAN)
    assert run_script(str(clean), []) == 0
    assert run_script(str(clean), [], fail_on="info") == 0


def test_run_script_reports_a_crash_as_exit_code_1(tmp_path, capsys):
    crash = tmp_path / "crash.py"
    crash.write_text("raise RuntimeError('boom')\n")
    assert run_script(str(crash), []) == 1
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_run_script_missing_file(tmp_path, capsys):
    assert run_script(str(tmp_path / "nope.py"), []) == 2


def _cediag_run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "cediag", "run", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def test_cli_run_options_and_arguments_after_the_script(script, tmp_path):
    """cediag's options before the script; everything after it, --help included, is the
    script's. A CI job gets exit 1 on an error finding, JSON, reproducers and rule selection."""
    dumps = tmp_path / "dumps"
    done = _cediag_run(
        "--format", "json", "--dump-dir", str(dumps), "--every", "1", "--", str(script),
        "--help", "-x", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "argv ['--help', '-x']" in done.stdout
    summary = json.loads(done.stderr[done.stderr.index("{") :])
    jsonschema.validate(summary, json.loads(report_schema("summary")))
    [entry] = [e for e in summary["entries"] if e["rule"] == "softmax-applied"]
    assert entry["count"] == 3 and entry["dump"] and entry["dump"].startswith(str(dumps))
    assert summary["checked"] == 3  # --every 1: a full check on every call

    ignored = _cediag_run("--ignore", "CE301", str(script), cwd=tmp_path)
    assert ignored.returncode == 0, ignored.stderr
    assert "softmax-applied" not in ignored.stderr

    github = _cediag_run("--format", "github", "--exit-zero", str(script), "7", cwd=tmp_path)
    assert github.returncode == 7  # the script's own failure comes first
    assert "::error file=train.py,line=10,title=CE301 softmax-applied::" in github.stdout


def test_cli_run_rejects_a_typo_in_select(script, tmp_path):
    done = _cediag_run("--select", "CE999", str(script), cwd=tmp_path)
    assert done.returncode == 2
    assert "CE999" in done.stderr


def test_cli_run_reads_tool_cediag_and_the_command_line_wins(script, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.cediag]\nignore = ["CE301"]\n\n[tool.cediag.guard]\nevery = 1\n'
    )
    quiet = _cediag_run("--format", "json", str(script), cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    summary = json.loads(quiet.stderr[quiet.stderr.index("{") :])
    assert summary["entries"] == [] and summary["checked"] == 3  # every = 1 from the file
    loud = _cediag_run("--ignore", "CE1", str(script), cwd=tmp_path)
    assert loud.returncode == 1 and "softmax-applied" in loud.stderr
