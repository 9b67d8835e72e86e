"""`cediag.watch(model=..., tokenizer=...)`: the batches a Hugging Face model receives are checked
with their (B, T) context while the block is open, and the hook goes with the block."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_sequence_hf import TEXTS, encode, gpt2, tokenizer  # noqa: F401 (tokenizer: fixture)

import cediag


@pytest.fixture(autouse=True)
def _fresh_summary():
    cediag.summary(clear=True)
    yield
    cediag.summary(clear=True)


def test_watch_with_the_model_catches_padding_trained_inside_its_own_loss(tokenizer):  # noqa: F811
    model = gpt2(tokenizer)
    batch = dict(encode(tokenizer, TEXTS[:3]))
    batch["labels"] = batch["input_ids"].clone()  # the pad id left in the labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cediag.watch(model=model, tokenizer=tokenizer, on_error="warn"):
            model(**batch).loss.backward()
    assert not model._forward_pre_hooks  # the hook went with the block
    entries = cediag.summary().by_rule("CE501")
    assert entries and "masked_fill(attention_mask == 0, -100)" in entries[0].fix


def test_watch_with_the_model_raises_before_the_forward_by_default(tokenizer):  # noqa: F811
    model = gpt2(tokenizer)
    batch = dict(encode(tokenizer, TEXTS[:3]))
    batch["labels"] = batch["input_ids"].clone()
    with pytest.raises(cediag.CrossEntropyInputError, match="CE501"), cediag.watch(model=model):
        model(**batch)
    assert not model._forward_pre_hooks


def test_a_clean_batch_under_watch_with_the_model_is_silent(tokenizer):  # noqa: F811
    model = gpt2(tokenizer)
    batch = dict(encode(tokenizer, TEXTS[:3]))
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with cediag.watch(model=model, tokenizer=tokenizer):
        for _ in range(3):
            model(**batch).loss.backward()
    summary = cediag.summary()
    assert summary.entries == [] and summary.calls >= 3
    assert torch.is_grad_enabled()


def test_a_finding_inside_transformers_loss_points_at_the_users_line(tokenizer):  # noqa: F811
    model = gpt2(tokenizer)
    batch = dict(encode(tokenizer, TEXTS[:3]))
    batch["labels"] = batch["input_ids"].clone()  # pad left in: CE210 inside transformers' loss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cediag.watch(on_error="warn"):
            model(**batch)
    sites = {e.site for e in cediag.summary().entries}
    assert sites and all(site.startswith("tests/test_watch_model.py:") for site in sites), sites
