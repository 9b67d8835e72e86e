"""The example training scripts: each mistake is caught under watch(), each fixed version is
silent. Run in-process through run_script (what `cediag run` does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cediag
from cediag._runner import run_script

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

CASES = [
    # script, rule found on the buggy version, exit code of the buggy version: 1, since the
    # finding is an error (cediag run fails on it), or torch stopped the script
    ("mnist_classifier.py", "CE301", 1),
    ("sequence_model.py", "CE210", 0),  # a warning: the run does not fail on it
    ("segmentation.py", "CE208", 1),  # torch stops: Target 255 is out of bounds
]


@pytest.mark.parametrize(("script", "code", "exit_code"), CASES)
def test_mistake_is_caught(script, code, exit_code, capsys):
    with pytest.warns(cediag.CediagWarning, match=code):
        assert run_script(str(EXAMPLES / script), []) == exit_code
    summary = cediag.summary(clear=True)
    assert [e.code for e in summary.entries] == [code]
    assert f"{code} " in capsys.readouterr().err


@pytest.mark.parametrize("script", [case[0] for case in CASES])
def test_fixed_version_is_silent(script, capsys):
    assert run_script(str(EXAMPLES / script), ["--fixed"]) == 0
    summary = cediag.summary(clear=True)
    assert summary.entries == [] and summary.calls > 0 and summary.notes == []
    assert "no findings" in capsys.readouterr().err


def test_python_m_cediag_run(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cediag",
            "run",
            str(EXAMPLES / "mnist_classifier.py"),
            "--epochs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr  # an error finding fails the run
    assert "epoch 0" in result.stdout
    assert "CE301 softmax-applied" in result.stderr
