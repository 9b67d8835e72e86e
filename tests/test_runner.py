"""run_script: an unmodified script under watch(), its exit code, and the summary on stderr."""

from __future__ import annotations

import sys

import pytest

import cediag
from cediag._runner import run_script

BAD = """
import sys
import torch
import torch.nn as nn

print("argv", sys.argv[1:])
criterion = nn.CrossEntropyLoss()
for step in range(3):
    logits = torch.randn(8, 5).softmax(dim=1)
    criterion(logits, torch.randint(0, 5, (8,)))
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(BAD)
    return path


def test_run_script_checks_the_loss_calls_and_prints_a_summary(script, capsys):
    with pytest.warns(cediag.CediagWarning, match="softmax-applied"):
        code = run_script(str(script), ["0"], budget=None)
    out, err = capsys.readouterr()
    assert code == 0
    assert "argv ['0']" in out
    assert "CE301 softmax-applied at" in err and "train.py:10 (3 calls)" in err


def test_run_script_returns_the_scripts_exit_code(script, capsys):
    with pytest.warns(cediag.CediagWarning):
        assert run_script(str(script), ["3"]) == 3
    assert sys.argv[0] != str(script)  # argv restored


def test_run_script_reports_a_crash_as_exit_code_1(tmp_path, capsys):
    crash = tmp_path / "crash.py"
    crash.write_text("raise RuntimeError('boom')\n")
    assert run_script(str(crash), []) == 1
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_run_script_missing_file(tmp_path, capsys):
    assert run_script(str(tmp_path / "nope.py"), []) == 2
