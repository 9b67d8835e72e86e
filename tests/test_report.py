"""The Report and its exception as users handle them: pickled, raised in a DataLoader worker,
shown in a notebook."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

import cediag
from cediag import CrossEntropyInputError, Diagnostic, Report, Severity
from cediag._report import ArgumentSummary, CallSummary


def _softmax_report() -> Report:
    return cediag.check(torch.randn(4, 3).softmax(1), torch.tensor([0, 1, 2, 0]))


def _raised(report: Report) -> CrossEntropyInputError:
    with pytest.raises(CrossEntropyInputError) as raised:
        report.raise_for_errors()
    return raised.value


# ---------------------------------------------------------------------- pickling


def test_the_error_survives_pickling_with_its_report():
    error = _raised(_softmax_report())
    error.add_note("while training epoch 3")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is CrossEntropyInputError
    assert isinstance(again.report, Report) and again.report == error.report
    assert str(again) == str(error) and again.args == error.args
    assert again.__notes__ == ["while training epoch 3"]
    assert again.report.by_rule("softmax-applied").severity is Severity.error


def test_an_error_built_from_a_message_has_no_report_and_pickles():
    error = CrossEntropyInputError("cediag: 1 error - something upstream")
    assert error.report is None and str(error) == "cediag: 1 error - something upstream"
    again = pickle.loads(pickle.dumps(error))
    assert again.report is None and str(again) == str(error)


def test_outside_a_worker_the_message_is_the_report_text_only():
    error = _raised(_softmax_report())
    assert str(error) == str(error.report)


# ---------------------------------------------------------------------- DataLoader workers


class _SoftmaxedBatches(Dataset):
    """A dataset whose items run a check in the worker, as a collate or transform might."""

    def __init__(self, wrapped: bool):
        self.loss = cediag.wrap(nn.CrossEntropyLoss()) if wrapped else None

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        probs, target = torch.randn(4, 3).softmax(1), torch.tensor([0, 1, 2, 0])
        if self.loss is not None:
            return self.loss(probs, target)
        cediag.check(probs, target).raise_for_errors()
        return probs


@pytest.mark.parametrize("wrapped", [False, True], ids=["check", "wrap"])
def test_an_error_raised_in_a_dataloader_worker_arrives_with_its_report(wrapped):
    loader = DataLoader(_SoftmaxedBatches(wrapped), num_workers=1)
    with pytest.raises(CrossEntropyInputError) as raised:
        list(loader)
    error = raised.value
    assert isinstance(error.report, Report), type(error.report)
    assert error.report.by_rule("softmax-applied") is not None
    assert error.report.call.input.shape == [4, 3]
    message = str(error)
    assert "DataLoader worker" in message and "CE301 softmax-applied" in message
    assert "as JSON" not in message  # the line that carried the report is taken out again


# ---------------------------------------------------------------------- notebooks


def _report_with(message: str, fix: str) -> Report:
    argument = ArgumentSummary(shape=[2, 3], dtype="float32", device="cpu")
    diagnostic = Diagnostic(
        code="CE206",
        rule="target-out-of-range",
        severity=Severity.error,
        message=message,
        fix=fix,
    )
    return Report(
        call=CallSummary(input=argument, target=argument),
        diagnostics=[diagnostic],
        notes=["values <checked> & fine"],
        source="runs/<1>.pt",
    )


def test_a_notebook_shows_a_report_as_an_escaped_html_table():
    report = _report_with(
        "1 of 2 target values are outside [0, 3) <script>alert(1)</script>",
        "target = target.masked_fill((target < 0) | (target >= 3), -100)",
    )
    page = report._repr_html_()
    assert "<table>" in page
    for header in ("severity", "code", "rule", "message", "fix"):
        assert f"<th>{header}</th>" in page
    assert "CE206" in page and "target-out-of-range" in page and ">error</td>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "(target &lt; 0) | (target &gt;= 3)" in page
    assert "values &lt;checked&gt; &amp; fine" in page and "runs/&lt;1&gt;.pt" in page
    assert "cediag: 1 error - cross_entropy input (2, 3) float32" in page


def test_a_clean_report_shows_its_verdict_without_a_table():
    page = cediag.check(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))._repr_html_()
    assert "no problems found" in page and "<table>" not in page


def test_every_finding_is_a_row_most_severe_first():
    report = cediag.check(
        torch.randn(64, 10).softmax(1), torch.tensor([12] + [0] * 63), ignore_index=0
    )
    page = report._repr_html_()
    assert page.count("<tr><td") == len(report.diagnostics) >= 2
    positions = [page.index(f"<td>{d.code}</td>") for d in report.diagnostics]
    assert positions == sorted(positions)
