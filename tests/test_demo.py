"""`cediag demo`: every mistake in the gallery is found, and torch's verdict is shown.

No test here measures time: how long the demo takes lives in benchmarks/, not in assertions
that fail on a loaded machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cediag._demo import CASES, run_cases
from cediag.cli import app

# What each case must produce: the first finding's code (None: silent), and whether torch raises.
EXPECTED = {
    "Softmax applied twice": ("CE301", False),
    "Classes in the last dim": ("CE102", True),
    "Targets of shape (N, 1)": ("CE103", True),
    "Labels counted from 1": ("CE207", True),
    "Segmentation void label 255": ("CE208", True),
    "Every target ignored": ("CE211", False),
    "Mixup targets that do not sum to 1": ("CE214", False),
    "Teacher logits as soft targets": ("CE214", False),
    "int32 targets": ("CE205", True),
    "NaN in the logits": ("CE306", False),
    "Pad token trained as a class": ("CE210", False),
    "Sigmoid before BCEWithLogitsLoss": ("BCE301", False),
    "Class indices given to BCEWithLogitsLoss": ("BCE104", True),
    "Token id beyond the vocabulary (fused loss)": ("CE206", True),
    "Hidden states not flattened (fused loss)": ("LCE102", True),
    "A correct call (stays silent)": (None, False),
}


@pytest.fixture(scope="module")
def outcomes():
    return {o.case.title: o for o in run_cases()}


def test_gallery_is_the_expected_one():
    assert [case.title for case in CASES] == list(EXPECTED)


@pytest.mark.parametrize("title", list(EXPECTED))
def test_each_case(outcomes, title):
    code, torch_raises = EXPECTED[title]
    outcome = outcomes[title]
    first = outcome.report.diagnostics[0].code if outcome.report.diagnostics else None
    assert first == code
    assert outcome.torch_raised is torch_raises
    if not torch_raises:
        assert outcome.torch_says.startswith("no error - loss = ")
        assert outcome.torch_says.endswith("(correct)" if code is None else "(silently wrong)")


def test_demo_command_shows_torch_and_cediag():
    result = CliRunner().invoke(app, ["demo"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    out = result.stdout
    assert "1. Softmax applied twice" in out and "CE301 softmax-applied" in out
    assert "no error - loss = nan (silently wrong)" in out
    assert "RuntimeError: 0D or 1D target tensor expected" in out
    assert "torch said nothing about 7 of these 16 calls" in out


def test_demo_json():
    result = CliRunner().invoke(app, ["demo", "--format", "json"])
    data = json.loads(result.stdout)
    assert [item["title"] for item in data] == list(EXPECTED)
    assert data[0]["report"]["diagnostics"][0]["rule"] == "softmax-applied"
    assert data[0]["torch"]["raised"] is False
    assert data[0]["torch"]["says"].endswith("(silently wrong)")
    assert data[-1]["report"]["diagnostics"] == [] and data[-1]["report"]["ok"] is True


def test_demo_runs_from_a_fresh_process():
    result = subprocess.run(
        [sys.executable, "-m", "cediag", "demo"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    # off a terminal: the gallery on stdout, nothing on stderr (no progress line in a pipe)
    assert "cediag demo" in result.stdout and result.stderr == ""


def test_demo_wraps_at_80_columns_keeping_the_indent():
    out = CliRunner().invoke(app, ["demo"], env={"COLUMNS": "80"}).stdout
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    fix = next(i for i, line in enumerate(lines) if "fix: remove the softmax" in line)
    assert lines[fix].startswith("│   fix: ")
    # the wrapped rest of the fix and of the message sit under their text, not under the label
    assert lines[fix + 1].startswith("│        #") and "nn.Softmax" in lines[fix + 1]
    finding = next(i for i, line in enumerate(lines) if "CE301 softmax-applied (error)" in line)
    assert lines[finding].startswith("│ cediag CE301")
    assert all(line.startswith("│        ") for line in lines[finding + 1 : fix])
