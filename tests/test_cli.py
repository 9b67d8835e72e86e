"""The `cediag` command line, driven in-process with Typer's CliRunner."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_io import Evil, labels, logits, write_guard_dump
from typer.testing import CliRunner

import cediag
from cediag import ExitCode, Report
from cediag.cli import app
from cediag.cli._app import report_schema

runner = CliRunner()


def cli(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def flat(text: str) -> str:
    """Text with its line wrapping undone (the text format wraps at 80 columns)."""
    return " ".join(text.split())


@pytest.fixture(autouse=True)
def _no_format_env(monkeypatch, tmp_path):
    monkeypatch.delenv("CEDIAG_FORMAT", raising=False)
    monkeypatch.delenv("CEDIAG_FAIL_ON", raising=False)
    # no [tool.cediag] of a project around the test run may change what the CLI does
    monkeypatch.chdir(tmp_path)


def save_call(path: Path, x: torch.Tensor, t: torch.Tensor, **extra) -> Path:
    torch.save({"input": x, "target": t, **extra}, path)
    return path


@pytest.fixture
def clean(tmp_path):
    return save_call(tmp_path / "clean.pt", logits(), labels())


@pytest.fixture
def softmaxed(tmp_path):  # an error: CE301
    return save_call(tmp_path / "softmaxed.pt", logits().softmax(1), labels())


@pytest.fixture
def sigmoided(tmp_path):  # a warning only: CE304
    return save_call(tmp_path / "sigmoided.pt", logits().sigmoid(), labels())


@pytest.fixture
def log_probs(tmp_path):  # an info only: CE303
    return save_call(tmp_path / "log_probs.pt", logits().log_softmax(1), labels())


# ---------------------------------------------------------------- exit codes and text


def test_exit_code_values():
    assert [int(c) for c in ExitCode] == [0, 1, 2]
    assert ExitCode.FINDINGS == 1 and cediag.ExitCode is ExitCode


def test_clean_file_exits_0(clean):
    result = cli("check", clean)
    assert result.exit_code == ExitCode.CLEAN
    assert "no problems found" in result.stdout
    assert "cediag: checked 1 file: no problems found" in result.stderr


def test_error_exits_1_with_finding_and_fix(softmaxed):
    result = cli("check", softmaxed)
    assert result.exit_code == ExitCode.FINDINGS
    assert "CE301 softmax-applied" in result.stdout
    assert "fix: remove the softmax" in result.stdout
    assert f"source: {softmaxed}" in flat(result.stdout)
    assert result.stderr == "cediag: checked 1 file: 1 error (exit 1: errors fail the check)\n"


def test_exit_zero(softmaxed, tmp_path):
    assert cli("check", softmaxed, "--exit-zero").exit_code == ExitCode.CLEAN
    # --exit-zero never hides a check that could not run
    assert cli("check", tmp_path / "nope.pt", "--exit-zero").exit_code == ExitCode.COULD_NOT_RUN


@pytest.mark.parametrize(
    ("fixture", "fail_on", "expected"),
    [
        ("sigmoided", None, 0),  # default: only errors fail
        ("sigmoided", "warning", 1),
        ("sigmoided", "info", 1),
        ("log_probs", "warning", 0),
        ("log_probs", "info", 1),
        ("softmaxed", "error", 1),
        ("clean", "info", 0),
    ],
)
def test_fail_on(request, fixture, fail_on, expected):
    path = request.getfixturevalue(fixture)
    args = ["check", path] + (["--fail-on", fail_on] if fail_on else [])
    assert cli(*args).exit_code == expected


def test_fail_on_from_env(sigmoided):
    assert cli("check", sigmoided, env={"CEDIAG_FAIL_ON": "warning"}).exit_code == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ignore", "CE301"], 0),
        (["--ignore", "softmax-applied"], 0),
        (["--ignore", "CE3"], 0),
        (["--select", "CE1"], 0),
        (["--select", "CE1,CE3"], 1),
        (["--select", "CE1", "--select", "softmax-applied"], 1),
        (["--select", "CE3", "--ignore", "CE301"], 0),
    ],
)
def test_select_and_ignore(softmaxed, args, expected):
    result = cli("check", softmaxed, *args)
    assert result.exit_code == expected
    assert ("CE301" in result.stdout) == bool(expected)


def test_unknown_rule_pattern_is_a_usage_error(softmaxed):
    result = cli("check", softmaxed, "--ignore", "softmax-aplied")
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    assert "--ignore softmax-aplied: matches no rule (did you mean softmax-applied" in result.stderr


def test_bad_option_value_exits_2(clean):
    assert cli("check", clean, "--format", "yaml").exit_code == ExitCode.COULD_NOT_RUN
    assert cli("check", clean, "--reduction", "avg").exit_code == ExitCode.COULD_NOT_RUN


def test_statistics_text_and_json(softmaxed, sigmoided):
    result = cli("check", softmaxed, sigmoided, "--statistics")
    assert result.exit_code == 1
    assert "CE301" in result.stdout and "CE304" in result.stdout and "fix:" not in result.stdout
    data = json.loads(cli("check", softmaxed, softmaxed, "--statistics", "--format", "json").stdout)
    assert data == [{"code": "CE301", "rule": "softmax-applied", "severity": "error", "count": 2}]


def test_statistics_goes_to_stderr_for_machine_formats(softmaxed):
    result = cli("check", softmaxed, "--statistics", "--format", "sarif")
    json.loads(result.stdout)  # still pure SARIF
    assert "CE301" in result.stderr


def test_text_wraps_at_80_columns_at_word_boundaries_keeping_the_fix_indent(softmaxed):
    result = cli("check", softmaxed.name)  # relative: a long path would be one long word
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    start = next(i for i, line in enumerate(lines) if "CE301" in line)
    fix = next(i for i, line in enumerate(lines) if line.startswith("          fix: "))
    message = lines[start:fix]
    assert len(message) > 1  # the message is longer than one line: it wrapped
    assert all(line.startswith(" " * 10) and line[10] != " " for line in message[1:])
    fix_lines = lines[fix:]
    assert len(fix_lines) > 1 and all(line.startswith(" " * 15) for line in fix_lines[1:])
    report = cediag.load(softmaxed)
    d = cediag.check(**report.check_kwargs()).by_rule("CE301")
    # word boundaries: undoing the wrap gives back the message and the fix, word for word
    assert flat(" ".join(message)).endswith(flat(d.message))
    assert flat(" ".join(fix_lines)) == flat(f"fix: {d.fix}")


def test_summary_reads_as_a_sentence(softmaxed, sigmoided, log_probs):
    result = cli("check", softmaxed, softmaxed, sigmoided, log_probs)
    assert result.stderr == (
        "cediag: checked 4 files: 2 errors, 1 warning, 1 info (exit 1: errors fail the check)\n"
    )
    result = cli("check", sigmoided, "--fail-on", "warning")
    assert result.stderr == (
        "cediag: checked 1 file: 1 warning (exit 1: warnings or worse fail the check)\n"
    )
    result = cli("check", softmaxed, "--exit-zero")
    assert result.stderr == "cediag: checked 1 file: 1 error (exit 0: --exit-zero)\n"
    assert cli("check", sigmoided).stderr == "cediag: checked 1 file: 1 warning\n"


def test_output_file(softmaxed, tmp_path):
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    result = cli("check", softmaxed, "--format", "json", "-o", target)
    assert result.exit_code == ExitCode.FINDINGS and result.stdout == ""
    assert Report.model_validate_json(target.read_text()).by_rule("CE301") is not None
    assert "cediag: checked 1 file" in result.stderr
    text = tmp_path / "report.txt"
    assert cli("check", softmaxed, "--output-file", text).stdout == ""
    assert "CE301 softmax-applied" in text.read_text()


def test_output_file_that_cannot_be_written_exits_2(softmaxed, tmp_path):
    result = cli("check", softmaxed, "-o", tmp_path / "no-such-dir" / "r.json")
    assert_could_not_run(result, "no-such-dir", "cannot write the report")


def test_quiet_prints_the_report_only(softmaxed, tmp_path):
    result = cli("check", softmaxed, "-q")
    assert result.exit_code == ExitCode.FINDINGS
    assert "CE301" in result.stdout and result.stderr == ""
    # still says why it could not run
    result = cli("check", tmp_path / "nope.pt", "--quiet")
    assert result.exit_code == ExitCode.COULD_NOT_RUN and "nope.pt" in result.stderr


def test_no_color(softmaxed):
    coloured = cli("check", softmaxed, env={"FORCE_COLOR": "1"})
    assert "\x1b[" in coloured.stdout  # rich colours when told the output is a terminal
    plain = cli("check", softmaxed, "--no-color", env={"FORCE_COLOR": "1"})
    assert "\x1b[" not in plain.stdout and "CE301 softmax-applied" in plain.stdout


# ---------------------------------------------------------------- formats


def test_json_is_the_pydantic_report(softmaxed):
    result = cli("check", softmaxed, "--format", "json")
    assert result.exit_code == 1
    report = Report.model_validate_json(result.stdout)
    assert report.by_rule("CE301") is not None and not report.ok
    data = json.loads(result.stdout)
    assert data["schema_version"] == cediag.SCHEMA_VERSION and data["ok"] is False
    assert data["source"] == str(softmaxed)
    assert "cediag: checked 1 file" in result.stderr and "cediag:" not in result.stdout


def test_json_several_files_is_a_list(clean, softmaxed):
    data = json.loads(cli("check", clean, softmaxed, "--format", "json").stdout)
    reports = [Report.model_validate(item) for item in data]
    assert [r.ok for r in reports] == [True, False]


def test_format_from_env(softmaxed):
    result = cli("check", softmaxed, env={"CEDIAG_FORMAT": "json"})
    assert Report.model_validate_json(result.stdout).by_rule("softmax-applied")


def test_github_annotations(softmaxed, sigmoided, log_probs):
    result = cli("check", softmaxed, sigmoided, log_probs, "--format", "github")
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"::error file={softmaxed},title=CE301 softmax-applied::input")
    assert "(fix: remove the softmax" in lines[0]
    assert lines[1].startswith(f"::warning file={sigmoided},title=CE304 sigmoid-applied::")
    assert lines[2].startswith(f"::notice file={log_probs},title=CE303 log-softmax-applied::")


def test_github_escapes_commas_and_newlines(tmp_path):
    from cediag.cli.formats.github import escape_data, escape_property

    assert escape_property("a,b:c") == "a%2Cb%3Ac"
    assert escape_data("50%\nnext") == "50%25%0Anext"
    path = save_call(tmp_path / "a,b.pt", logits().softmax(1), labels())
    line = cli("check", path, "--format", "github").stdout.splitlines()[0]
    assert "file=" + str(path).replace(",", "%2C") + ",title=" in line


def test_sarif_required_fields_and_rules(softmaxed, clean):
    result = cli("check", softmaxed, clean, "--format", "sarif")
    assert result.exit_code == 1
    log = json.loads(result.stdout)
    assert log["version"] == "2.1.0" and "sarif" in log["$schema"]
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "cediag"
    rules = driver["rules"]
    assert [r["id"] for r in rules] == list(cediag.RULES)
    for rule in rules:
        assert rule["name"] == cediag.RULES[rule["id"]].slug
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert rule["id"] in rule["help"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    levels = {r["id"]: r["defaultConfiguration"]["level"] for r in rules}
    assert levels["CE301"] == "error" and levels["CE303"] == "note"
    (finding,) = run["results"]
    assert finding["ruleId"] == "CE301" and finding["level"] == "error"
    assert rules[finding["ruleIndex"]]["id"] == "CE301"
    assert "softmax" in finding["message"]["text"]
    uri = finding["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == softmaxed.as_uri()  # absolute paths as file:// URIs


def test_sarif_keeps_relative_paths_relative(softmaxed, monkeypatch):
    monkeypatch.chdir(softmaxed.parent)
    log = json.loads(cli("check", softmaxed.name, "--format", "sarif").stdout)
    location = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "softmaxed.pt"


def test_progress_bar_path_on_a_terminal(softmaxed, monkeypatch):
    from cediag.cli import _app

    monkeypatch.setattr(_app, "PROGRESS_BYTES", 0)  # every file counts as big
    monkeypatch.setattr(_app.sys.stderr, "isatty", lambda: True, raising=False)
    _app._progress_read([softmaxed])  # reads the file through one buffer, drawing a bar
    saved = cediag.load(softmaxed)
    report = _app._check(saved, {}, None, None, str(softmaxed))  # with the spinner
    assert report.by_rule("CE301") is not None


def test_sarif_clean_run_has_no_results(clean):
    log = json.loads(cli("check", clean, "--format", "sarif").stdout)
    assert log["runs"][0]["results"] == []


def test_junit_xml(softmaxed, clean, sigmoided):
    result = cli("check", softmaxed, clean, sigmoided, "--format", "junit")
    suite = ET.fromstring(result.stdout)
    assert suite.tag == "testsuite" and suite.get("tests") == "3" and suite.get("failures") == "1"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {str(softmaxed), str(clean), str(sigmoided)}
    failure = cases[str(softmaxed)].find("failure")
    assert failure is not None and failure.get("type") == "CE301"
    assert "fix:" in failure.text
    assert cases[str(clean)].find("failure") is None
    # below --fail-on: reported, not failed
    assert cases[str(sigmoided)].find("failure") is None
    assert "CE304" in cases[str(sigmoided)].find("system-out").text
    strict = ET.fromstring(
        cli("check", sigmoided, "--format", "junit", "--fail-on", "warning").stdout
    )
    assert strict.get("failures") == "1"


@pytest.mark.parametrize("fmt", ["json", "github", "sarif", "junit"])
def test_machine_formats_are_plain(softmaxed, fmt):
    out = cli("check", softmaxed, "--format", fmt, env={"FORCE_COLOR": "1"}).stdout
    assert "\x1b[" not in out  # never coloured, whatever the terminal says


# ---------------------------------------------------------------- inputs and options


def test_pair_of_files_and_mismatched_batch(tmp_path):
    np.save(tmp_path / "x.npy", logits(8).numpy())
    np.save(tmp_path / "t.npy", labels(8).numpy())
    np.save(tmp_path / "t6.npy", labels(6).numpy())
    assert cli("check", tmp_path / "x.npy", tmp_path / "t.npy").exit_code == 0
    result = cli("check", tmp_path / "x.npy", tmp_path / "t6.npy", "--format", "json")
    assert result.exit_code == ExitCode.FINDINGS  # a finding, not a crash
    report = Report.model_validate_json(result.stdout)
    assert report.by_rule("batch-size-mismatch") is not None
    assert report.source == f"{tmp_path / 'x.npy'} (target {tmp_path / 't6.npy'})"


def test_safetensors_keys_on_the_command_line(tmp_path):
    path = tmp_path / "data.safetensors"
    save_file({"scores": logits().softmax(1), "gold": labels()}, str(path))
    result = cli("check", f"{path}:scores", f"{path}:gold", "--format", "github")
    assert result.exit_code == 1 and "CE301" in result.stdout
    assert cli("check", path, "--input-key", "scores", "--target-key", "gold").exit_code == 1


def test_npz_dict(tmp_path):
    np.savez(tmp_path / "b.npz", logits=logits().numpy(), labels=labels().numpy())
    assert cli("check", tmp_path / "b.npz").exit_code == 0


def test_options_on_the_command_line(tmp_path):
    t = labels()
    t[:3] = 255
    path = save_call(tmp_path / "seg.pt", logits(), t)
    result = cli("check", path)
    assert result.exit_code == 1 and "CE208 padding-label" in result.stdout
    assert cli("check", path, "--ignore-index", "255").exit_code == 0
    ls = cli("check", path, "--ignore-index", "255", "--label-smoothing", "1.5", "--format", "json")
    assert Report.model_validate_json(ls.stdout).by_rule("label-smoothing-out-of-range")


def test_options_saved_in_a_dict_file(tmp_path):
    t = labels()
    t[:3] = 255
    path = save_call(tmp_path / "seg.pt", logits(), t, ignore_index=255)
    assert cli("check", path).exit_code == 0
    assert cli("check", path, "--ignore-index", "-100").exit_code == 1  # the flag wins


def test_weight_file(tmp_path, clean):
    torch.save(torch.ones(5), tmp_path / "w.pt")
    torch.save(torch.ones(4), tmp_path / "w4.pt")
    assert cli("check", clean, "--weight", tmp_path / "w.pt").exit_code == 0
    result = cli("check", clean, "--weight", tmp_path / "w4.pt")
    assert result.exit_code == 1 and "CE401 weight-shape-mismatch" in result.stdout


def test_loss_nll(tmp_path):
    path = save_call(tmp_path / "raw.pt", logits(), labels())
    result = cli("check", path, "--loss", "nll")
    assert result.exit_code == 1 and "CE309 logits-to-nll" in result.stdout


def test_guard_dump(tmp_path):
    t = labels()
    t[1] = 9  # out of range for 5 classes
    path = write_guard_dump(tmp_path, "step-17", logits().log_softmax(1), t, loss="nll")
    result = cli("check", path, "--format", "json")
    assert result.exit_code == 1
    report = Report.model_validate_json(result.stdout)
    assert report.call.loss == "nll"  # from the dump's metadata
    assert report.by_rule("target-out-of-range") is not None


def test_guard_dump_sidecar_options(tmp_path):
    t = labels()
    t[1] = 255
    path = write_guard_dump(tmp_path, "d", logits(), t, sidecar_options={"ignore_index": 255})
    assert cli("check", path).exit_code == 0  # the sidecar's ignore_index wins


# ---------------------------------------------------------------- could not run: one line, exit 2


def assert_could_not_run(result, *fragments: str) -> None:
    assert result.exit_code == ExitCode.COULD_NOT_RUN, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cediag: error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_file(tmp_path):
    assert_could_not_run(cli("check", tmp_path / "nope.pt"), "nope.pt", "no such file")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pt").touch()
    assert_could_not_run(cli("check", tmp_path / "empty.pt"), "empty.pt", "is empty", "save it")


def test_truncated_pt(tmp_path, clean):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(clean.read_bytes()[:300])
    assert_could_not_run(cli("check", cut), "cut.pt", "truncated or corrupt", "save it again")


def test_malicious_pt_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"input": logits(), "target": labels(), "payload": Evil(marker)}, path)
    result = cli("check", path)
    assert_could_not_run(result, "evil.pt", "refused to unpickle", "--unsafe-load")
    assert not marker.exists()


def test_unsafe_load_warns_loudly(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"input": logits(), "target": labels(), "payload": Evil(marker)}, path)
    result = cli("check", path, "--unsafe-load")
    assert "WARNING: --unsafe-load" in result.stderr and "arbitrary code" in result.stderr
    assert result.exit_code == 0 and marker.exists()


def test_non_tensor_pickle(tmp_path):
    torch.save({"note": "hello", "ids": [1, 2]}, tmp_path / "notes.pt")
    assert_could_not_run(cli("check", tmp_path / "notes.pt"), "notes.pt", "no tensors")


def test_wrong_key(tmp_path):
    path = tmp_path / "data.safetensors"
    save_file({"logits": logits(), "labels": labels()}, str(path))
    result = cli("check", f"{path}:logit", f"{path}:labels")
    assert_could_not_run(result, "data.safetensors", "no tensor 'logit'", "'logits'")
    result = cli("check", path, "--target-key", "gold")
    assert_could_not_run(result, "no tensor 'gold'")


def test_single_tensor_without_target(tmp_path):
    torch.save(logits(), tmp_path / "x.pt")
    assert_could_not_run(cli("check", tmp_path / "x.pt"), "x.pt", "give the target file")


def test_second_file_incomplete_after_a_whole_call(tmp_path, clean):
    torch.save(labels(), tmp_path / "t.pt")
    result = cli("check", clean, tmp_path / "t.pt")
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    assert "no problems found" in result.stdout  # the whole call is still checked
    error = result.stderr.splitlines()[0]
    assert error.startswith("cediag: error: ") and "already holds a whole call" in error


def test_unknown_file_type(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n")
    assert_could_not_run(cli("check", tmp_path / "x.csv"), "unknown file type .csv")


# ---------------------------------------------------------------- rules, explain, schema, version


def test_rules_table_and_json():
    result = cli("rules")
    assert result.exit_code == 0 and "CE301" in result.stdout and "softmax-applied" in result.stdout
    data = json.loads(cli("rules", "--format", "json").stdout)
    assert len(data) == len(cediag.RULES)
    assert data[0].keys() == {"code", "rule", "severity", "family", "loss_family", "summary"}
    assert data[0]["family"] == "Shape and layout" and data[0]["loss_family"] == "cross_entropy"
    by_code = {item["code"]: item for item in data}
    assert (
        by_code["CE210"]["severity"] == "warning" and by_code["CE210"]["rule"] == "pad-token-target"
    )


@pytest.mark.parametrize("name", ["CE301", "ce301", "softmax-applied"])
def test_explain(name):
    result = cli("explain", name)
    assert result.exit_code == 0
    for section in ("CE301", "softmax-applied", "What it does", "Why is this bad?", "Use instead"):
        assert section in result.stdout


def test_explain_unknown_suggests():
    result = cli("explain", "softmax-aplied")
    assert_could_not_run(result, "no rule 'softmax-aplied'", "did you mean softmax-applied")


def test_schema_command_matches_the_model():
    result = cli("schema")
    schema = json.loads(result.stdout)
    assert schema == {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **Report.model_json_schema(mode="serialization"),
    }
    assert "ok" in schema["properties"] and "ok" in schema["required"]  # what the JSON holds


@pytest.mark.parametrize("kind", ["report", "check", "statistics", "summary"])
def test_committed_schema_is_current(kind):
    committed = Path(cediag.__file__).parent / f"{kind}.schema.json"
    assert committed.read_text() == report_schema(kind), (
        f"cediag/{kind}.schema.json is stale: regenerate it with "
        f"`python -m cediag schema {kind} > cediag/{kind}.schema.json`"
    )


def test_version_and_help():
    assert cli("--version").stdout.strip() == f"cediag {cediag.__version__}"
    result = cli()  # no arguments: help, which lists the commands
    for command in ("check", "rules", "explain", "schema", "demo", "run"):
        assert command in result.stdout


def test_dump_written_by_the_real_guard(tmp_path):
    import contextlib
    import warnings

    from torch import nn

    loss = cediag.wrap(nn.CrossEntropyLoss(ignore_index=255), dump_dir=tmp_path, on_error="warn")
    t = labels()
    t[2] = 7  # out of range for 5 classes, and not the ignored 255
    with warnings.catch_warnings(), contextlib.suppress(IndexError):
        warnings.simplefilter("ignore")
        loss(logits(), t)
    (path,) = tmp_path.glob("*.safetensors")
    result = cli("check", path, "--format", "json")
    assert result.exit_code == ExitCode.FINDINGS
    report = Report.model_validate_json(result.stdout)
    assert report.by_rule("target-out-of-range") is not None
    assert report.call.ignore_index == 255  # the options came back with the dump


@pytest.mark.parametrize("output_format", ["text", "json", "github", "sarif", "junit"])
def test_values_not_checked_is_not_a_clean_pass(tmp_path, monkeypatch, output_format):
    """A check that could not read the values says so in every format and exits 2, never 0."""
    from cediag.families.cross_entropy import statistics as _statistics

    def unreadable(self):
        raise MemoryError("can't allocate 40000000000 bytes")

    monkeypatch.setattr(_statistics.StatisticsPlan, "compute", unreadable)
    path = tmp_path / "batch.pt"
    torch.save({"input": logits(), "target": labels()}, path)
    result = cli("check", path, "--format", output_format)
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    assert "values not checked" in result.stdout
    assert "values not checked" in result.stderr
    assert "could not be read (exit 2)" in result.stderr
    exit_zero = cli("check", path, "--exit-zero")
    assert exit_zero.exit_code == ExitCode.COULD_NOT_RUN


def test_a_saved_language_model_batch_is_checked_with_the_sequence_rules(tmp_path):
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 8, 9, 10, 0]])
    mask = (ids != 0).long()
    bad = tmp_path / "bad.pt"
    torch.save({"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}, bad)
    result = cli("check", bad, "--format", "json")
    assert result.exit_code == ExitCode.FINDINGS
    codes = [d["code"] for d in json.loads(result.stdout)["diagnostics"]]
    assert codes == ["CE501"]
    good = tmp_path / "good.pt"
    labels = ids.masked_fill(mask == 0, -100)
    torch.save({"input_ids": ids, "attention_mask": mask, "labels": labels}, good)
    assert cli("check", good).exit_code == ExitCode.CLEAN


# ---------------------------------------------------------------- other loss families


def test_check_a_saved_bce_call_with_its_pos_weight(tmp_path):
    logits, target = torch.randn(8, 5), (torch.rand(8, 5) < 0.3).float()
    path = tmp_path / "multilabel.pt"
    torch.save({"input": logits, "target": target, "pos_weight": torch.ones(8)}, path)
    result = cli("check", path, "--loss", "bce_with_logits", "--format", "json")
    assert result.exit_code == ExitCode.FINDINGS, result.stderr
    report = json.loads(result.stdout)  # one file: the report itself
    assert report["call"]["loss"] == "bce_with_logits"
    assert report["call"]["arguments"]["pos_weight"]["shape"] == [8]
    assert [d["code"] for d in report["diagnostics"]] == ["BCE402"]
    torch.save({"input": logits, "target": target, "loss": "bce_with_logits"}, path)
    assert cli("check", path).exit_code == ExitCode.CLEAN


def test_check_a_saved_linear_call_never_builds_its_logits(tmp_path):
    hidden, weight = torch.randn(16, 8), torch.randn(30, 8)
    target = torch.randint(0, 30, (16,))
    target[4] = 30
    path = tmp_path / "fused.safetensors"
    save_file({"input": hidden, "target": target, "linear_weight": weight}, str(path))
    result = cli("check", path, "--loss", "linear_cross_entropy")
    assert result.exit_code == ExitCode.FINDINGS and "CE206" in result.stdout, result.stderr


def test_an_option_the_loss_does_not_take_is_refused(tmp_path):
    path = tmp_path / "multilabel.pt"
    torch.save({"input": torch.randn(8, 5), "target": torch.rand(8, 5)}, path)
    assert_could_not_run(
        cli("check", path, "--loss", "bce", "--ignore-index", "3"),
        "--ignore-index is not an option of loss='bce'",
    )


def test_tensor_option_gives_a_fused_call_its_classifier(tmp_path):
    hidden, weight = torch.randn(16, 8), torch.randn(30, 8)
    labels = torch.randint(0, 30, (16,))
    torch.save(hidden, tmp_path / "hidden.pt")
    torch.save(labels, tmp_path / "labels.pt")
    save_file({"lm_head.weight": weight}, str(tmp_path / "head.safetensors"))
    head = f"linear_weight={tmp_path / 'head.safetensors'}:lm_head.weight"
    files = (tmp_path / "hidden.pt", tmp_path / "labels.pt")
    clean = cli("check", *files, "--loss", "linear_cross_entropy", "--tensor", head)
    assert clean.exit_code == ExitCode.CLEAN, clean.stdout + clean.stderr
    labels[3] = 30
    torch.save(labels, tmp_path / "labels.pt")
    found = cli("check", *files, "--loss", "linear_cross_entropy", "--tensor", head)
    assert found.exit_code == ExitCode.FINDINGS and "CE206" in found.stdout
    assert "resize_token_embeddings(31)" in found.stdout
    assert_could_not_run(
        cli("check", *files, "--tensor", head), "--tensor linear_weight is not an option"
    )
    assert_could_not_run(
        cli("check", *files, "--tensor", "classifier=x.pt"), "not a tensor argument of any loss"
    )
    assert_could_not_run(cli("check", *files, "--tensor", "pos_weight"), "expected NAME=FILE")
