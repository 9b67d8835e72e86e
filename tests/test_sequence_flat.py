"""CE210 (pad-token-target) on the flattened, shifted labels a causal LM's own loss passes to
F.cross_entropy: the shift's one ignore_index per row gives the rows back."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import cediag


def _batch(pad=0):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (4, 16), generator=g)
    mask = (torch.arange(16) < torch.tensor([8, 10, 16, 16])[:, None]).long()
    ids = ids.masked_fill(mask == 0, pad)
    ids[:, 3] = pad  # the pad id is also a real token, once per row
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _flat(labels):
    return F.pad(labels, (0, 1), value=-100)[:, 1:].reshape(-1)  # transformers' causal shift


def test_pad_token_target_on_flattened_shifted_labels():
    batch = _batch()
    logits = torch.randn(64, 50)
    bad = cediag.check(logits, _flat(batch["input_ids"]))
    d = bad.by_rule("pad-token-target")
    assert d is not None and "2 of 4 rows" in d.message
    assert cediag.check(logits, _flat(batch["labels"])).ok
    assert not cediag.check(logits, _flat(batch["labels"])).diagnostics
