"""The pytest plugin, run in a subprocess pytest (it patches torch while a test runs)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = """
import pytest
import torch
import torch.nn.functional as F


def test_softmax_before_loss():
    x = torch.randn(8, 5).softmax(1)
    F.cross_entropy(x, torch.randint(0, 5, (8,)))


def test_clean():
    F.cross_entropy(torch.randn(8, 5), torch.randint(0, 5, (8,)))


def test_sigmoid_is_only_a_warning():
    F.cross_entropy(torch.randn(8, 5).sigmoid(), torch.randint(0, 5, (8,)))


@pytest.mark.no_cediag
def test_opted_out():
    F.cross_entropy(torch.randn(8, 5).softmax(1), torch.randint(0, 5, (8,)))
"""


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_suite=TESTS)
    return pytester


def test_without_the_option_nothing_is_checked(suite):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    result.stdout.no_fnmatch_line("*cediag summary*")


def test_with_the_option_errors_fail_the_test_and_a_summary_prints(suite):
    result = suite.runpytest_subprocess("--cediag", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_softmax_before_loss*",
            "*cediag found problems in loss calls*",
            "*CE301 softmax-applied*",
            "*fix: remove the softmax*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*= cediag summary =*", "*CE304 sigmoid-applied at test_suite.py:*"]
    )
    assert result.ret == 1


def test_fail_on_warning(suite):
    result = suite.runpytest_subprocess(
        "--cediag", "--cediag-fail-on=warning", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2, failed=2)


EXPECTING_TORCH = """
import pytest
import torch
import torch.nn.functional as F


def test_torch_rejects_a_column_target():
    with pytest.raises(RuntimeError):
        F.cross_entropy(torch.randn(8, 5), torch.randint(0, 5, (8, 1)))


def test_torch_rejects_an_out_of_range_label():
    with pytest.raises(IndexError):
        F.cross_entropy(torch.randn(4, 5), torch.tensor([0, 1, 9, 2]))
"""


def test_a_test_expecting_torchs_exception_still_passes(pytester):
    """The plugin fails a test for a finding only when the loss accepted the call: a call the
    loss itself rejects raises torch's own exception, which the test may be expecting."""
    pytester.makepyfile(test_expecting=EXPECTING_TORCH)
    result = pytester.runpytest_subprocess("--cediag", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*= cediag summary =*", "*target-extra-dim*"])
