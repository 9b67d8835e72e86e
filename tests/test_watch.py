"""watch(): every F.cross_entropy / nn.CrossEntropyLoss / F.nll_loss call in the block is
checked; nesting, threads, and restoring torch afterwards."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cediag

ORIGINAL_CE, ORIGINAL_NLL = F.cross_entropy, F.nll_loss


@pytest.fixture(autouse=True)
def _fresh_summary():
    cediag.summary(clear=True)
    yield
    cediag.summary(clear=True)


def probs():
    return torch.randn(8, 5, requires_grad=True).softmax(1)


def labels():
    return torch.randint(0, 5, (8,))


def test_watch_checks_functional_and_module_calls():
    with cediag.watch():
        with pytest.raises(cediag.CrossEntropyInputError, match="softmax-applied"):
            F.cross_entropy(probs(), labels())
        with pytest.raises(cediag.CrossEntropyInputError) as info:
            nn.CrossEntropyLoss()(probs(), labels())
    assert "test_watch.py" in info.value.report.source


def test_watch_gives_nll_loss_the_nll_view():
    with cediag.watch(on_error="warn"), pytest.warns(cediag.CediagWarning, match="logits-to-nll"):
        F.nll_loss(torch.randn(8, 5) * 4, labels())
    with cediag.watch():  # log-probabilities are what nll_loss wants
        F.nll_loss(torch.randn(8, 5).log_softmax(1), labels())
    assert cediag.summary().by_rule("logits-to-nll")[0].count == 1


def test_watch_reads_options_passed_to_the_function():
    t = labels()
    t[0] = 255
    with cediag.watch():
        F.cross_entropy(torch.randn(8, 5), t, ignore_index=255)
        nn.CrossEntropyLoss(ignore_index=255)(torch.randn(8, 5), t)
    assert cediag.summary().entries == []


def test_watch_restores_torch_and_does_nothing_outside():
    with cediag.watch():
        assert F.cross_entropy is not ORIGINAL_CE
    assert F.cross_entropy is ORIGINAL_CE and F.nll_loss is ORIGINAL_NLL
    F.cross_entropy(probs(), labels())  # outside: not checked
    assert cediag.summary().calls == 0


def test_nested_watch_blocks_use_the_innermost_options():
    with cediag.watch(on_error="warn"):
        with cediag.watch(on_error="raise"), pytest.raises(cediag.CrossEntropyInputError):
            F.cross_entropy(probs(), labels())
        assert F.cross_entropy is not ORIGINAL_CE  # the outer block is still watching
        with pytest.warns(cediag.CediagWarning):
            F.cross_entropy(probs().detach() * 0.5 + 0.1, labels())
    assert F.cross_entropy is ORIGINAL_CE


def test_wrapped_criterion_inside_watch_is_checked_once():
    ce = cediag.wrap(nn.CrossEntropyLoss(), on_error="warn")
    with cediag.watch(on_error="warn"), pytest.warns(cediag.CediagWarning) as record:
        ce(probs(), labels())
    assert len(record) == 1
    assert cediag.summary().calls == 1


def test_threads_outside_a_watch_are_not_checked():
    results = {}

    def unwatched():
        try:
            F.cross_entropy(probs(), labels())
            results["unwatched"] = "ran"
        except cediag.CrossEntropyInputError:
            results["unwatched"] = "checked"

    def watched():
        with cediag.watch():
            try:
                F.cross_entropy(probs(), labels())
                results["watched"] = "ran"
            except cediag.CrossEntropyInputError:
                results["watched"] = "checked"

    with cediag.watch():
        threads = [threading.Thread(target=f) for f in (unwatched, watched)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert results == {"unwatched": "ran", "watched": "checked"}
    assert F.cross_entropy is ORIGINAL_CE


def test_watch_summary_counts_repeats_per_site():
    x = probs().detach()
    with cediag.watch(on_error="log", budget=None):
        for _ in range(4):
            F.cross_entropy(x, labels())
        F.cross_entropy(x, labels())  # another line: another entry
    entries = cediag.summary().by_rule("CE301")
    assert sorted(e.count for e in entries) == [1, 4]
    assert all("test_watch.py:" in e.site for e in entries)
