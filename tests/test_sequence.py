"""CE5xx batch rules: each with a failing batch and a near-miss legal one; the batch context;
the model hook on a plain torch module. The transformers models are in test_sequence_hf.py."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import cediag
from cediag.guard._guard import CediagWarning, Guard
from cediag.guard._summary import COLLECTOR
from cediag.sequence import attach, build_context, check_batch
from cediag.sequence._rules import BATCH_RULES, select_batch_rules

PAD, EOS = 0, 2


@pytest.fixture(autouse=True)
def _fresh_summary():
    COLLECTOR.clear()
    yield
    COLLECTOR.clear()


def codes(report) -> set[str]:
    return {d.code for d in report.diagnostics}


def lm_batch(lengths=(10, 13, 16), length=16, pad=PAD, seed=0, vocab=50):
    """Right-padded causal-LM rows of random real tokens (ids 5..vocab-1), labels masked."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (len(lengths), length), generator=g)
    mask = (torch.arange(length) < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, pad)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


# ------------------------------------------------------------------ the catalogue


def test_batch_rules_are_declared_with_their_docs():
    assert [r.code for r in BATCH_RULES] == [f"CE50{i}" for i in range(1, 10)]
    for r in BATCH_RULES:
        assert r.phase == "batch"
        for title in ("What it does", "Why is this bad?", "Example", "Use instead"):
            assert r.sections.get(title), (r.code, title)
    assert [r.code for r in select_batch_rules(["CE50", "eos-never-learned"], ["CE501"])] == [
        f"CE50{i}" for i in range(2, 10)
    ]


def test_register_adds_them_to_the_catalogue_without_changing_the_rest():
    from cediag.rules import CATEGORIES, RULES, find_rule
    from cediag.sequence._rules import register

    before = dict(RULES)
    had_category = "CE5" in CATEGORIES
    try:
        register()
        register()
        assert [c for c in RULES if not c.startswith("CE5")] == [
            c for c in before if not c.startswith("CE5")
        ]
        assert find_rule("CE501").slug == "pad-trained-as-label"
        assert find_rule("num-items-mismatch").category == "Sequence context" == CATEGORIES["CE5"]
    finally:  # leave the catalogue as the docs tests of this session expect it
        for code in [c for c in RULES if c not in before]:
            del RULES[code]
        if not had_category:
            CATEGORIES.pop("CE5", None)


def test_check_batch_is_exported_lazily():
    assert cediag.check_batch is check_batch


# ------------------------------------------------------------------ CE501 / CE502 padding


def test_pad_trained_as_label_exact():
    batch = lm_batch()
    batch["labels"] = batch["input_ids"].clone()
    report = check_batch(batch, pad_token_id=PAD)
    d = report.by_rule("CE501")
    assert d is not None and d.severity.value == "error"
    assert "9 of 9 padded positions" in d.message
    assert "masked_fill(attention_mask == 0, -100)" in d.fix
    assert report.call.input.shape == [3, 16] and report.call.target.shape == [3, 16]


def test_token_classification_padded_with_o_label_is_caught_with_the_mask():
    batch = lm_batch()
    tags = torch.randint(0, 5, batch["input_ids"].shape, generator=torch.Generator().manual_seed(1))
    batch["labels"] = tags.masked_fill(batch["attention_mask"] == 0, 0)  # 'O' == 0 as padding
    assert "CE501" in codes(check_batch(batch, shift="none"))


def test_pad_id_zero_as_real_token_is_legal():
    batch = lm_batch()
    batch["input_ids"][:, 3] = PAD  # id 0 is also a real token, attended and labelled
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert not check_batch(batch, pad_token_id=PAD, shift="model").diagnostics


def test_left_padding_is_legal_and_left_pad_labels_are_caught():
    batch = lm_batch()
    batch = {k: v.flip(1) for k, v in batch.items()}  # left padding
    assert not check_batch(batch, pad_token_id=PAD, shift="model").diagnostics
    batch["labels"] = batch["input_ids"].clone()
    assert "CE501" in codes(check_batch(batch, pad_token_id=PAD, shift="model"))


def test_pad_runs_without_mask_heuristic():
    batch = lm_batch(lengths=(8, 10, 16))
    batch["input_ids"][:, 2] = PAD  # the pad id also occurs mid-row, alone
    labels = batch["input_ids"].clone()
    report = check_batch({"input_ids": batch["input_ids"], "labels": labels}, pad_token_id=PAD)
    d = report.by_rule("CE502")
    assert d is not None and d.severity.value == "warning"
    assert "2 of 3 label rows" in d.message
    # flattened labels, as a model's own loss sees them, are read back with input_ids' shape
    flat = check_batch({"input_ids": batch["input_ids"], "labels": labels.reshape(-1)})
    assert "CE502" in codes(flat)


def test_pad_runs_heuristic_near_misses():
    batch = lm_batch(lengths=(8, 10, 16))
    labels = batch["input_ids"].clone()
    # masked properly: the edge runs are ignore_index
    masked = labels.masked_fill(batch["attention_mask"] == 0, -100)
    assert not check_batch({"input_ids": batch["input_ids"], "labels": masked}).diagnostics
    # a real token that also runs long mid-row is not padding
    labels[2, 3:9] = PAD
    report = check_batch({"input_ids": labels, "labels": labels}, pad_token_id=PAD)
    assert "CE502" not in codes(report)
    # one row with a short run of a repeated token
    labels = lm_batch(lengths=(16, 16, 16))["input_ids"]
    labels[0, -3:] = 7
    assert not check_batch({"input_ids": labels, "labels": labels}).diagnostics


# ------------------------------------------------------------------ CE503 EOS


def _eos_batch(keep_first_eos: bool):
    batch = lm_batch(pad=EOS)
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == EOS, -100)
    if keep_first_eos:  # the collator keeps the first EOS of each padded row
        for row, n in enumerate(batch["attention_mask"].sum(1).tolist()):
            if n < labels.shape[1]:
                labels[row, n] = EOS
    batch["labels"] = labels
    return batch


def test_eos_never_learned():
    report = check_batch(_eos_batch(False), pad_token_id=EOS, eos_token_id=EOS, shift="model")
    d = report.by_rule("CE503")
    assert d is not None and "pad_token_id == eos_token_id == 2" in d.message
    assert "resize_token_embeddings" in d.fix


def test_eos_learned_near_misses():
    # the first EOS of each padded row kept as a label (its mask is 0): neither rule fires
    ok = _eos_batch(True)
    assert not check_batch(ok, pad_token_id=EOS, eos_token_id=EOS, shift="model").diagnostics
    # ... but a second padded EOS labelled is padding trained as a label
    ok["labels"][0, -1] = EOS
    report = check_batch(ok, pad_token_id=EOS, eos_token_id=EOS, shift="model")
    assert codes(report) == {"CE501"}
    assert "1 of 9 padded positions" in report.by_rule("CE501").message
    # a distinct pad: nothing to say about EOS
    assert "CE503" not in codes(check_batch(_eos_batch(False), pad_token_id=0, eos_token_id=EOS))
    # packed documents separated by EOS, every position supervised
    ids = torch.randint(5, 50, (2, 24), generator=torch.Generator().manual_seed(3))
    ids[:, 7] = ids[:, 15] = EOS
    packed = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    assert not check_batch(packed, pad_token_id=EOS, eos_token_id=EOS, shift="model").diagnostics


# ------------------------------------------------------------------ CE504 / CE505 the shift


def _pre_shifted(batch):
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, :-1] = batch["input_ids"][:, 1:]
    return {**batch, "labels": labels.masked_fill(batch["attention_mask"] == 0, -100)}


def test_labels_shifted_twice():
    report = check_batch(_pre_shifted(lm_batch()), shift="model")
    d = report.by_rule("CE504")
    assert d is not None and "drop the manual shift" in d.fix


def test_pre_shifted_labels_are_right_when_the_caller_shifts():
    assert not check_batch(_pre_shifted(lm_batch()), shift="caller").diagnostics
    assert not check_batch(_pre_shifted(lm_batch())).diagnostics  # unknown: not decidable


def test_labels_not_shifted():
    report = check_batch(lm_batch(), shift="caller")
    d = report.by_rule("CE505")
    assert d is not None and "logits[:, :-1]" in d.fix
    assert not check_batch(lm_batch(), shift="model").diagnostics  # the model shifts: right


def test_shift_rules_need_evidence():
    batch = lm_batch(lengths=(3, 3), length=8)  # 6 supervised labels: too few to say
    assert not check_batch(batch, shift="caller").diagnostics


# ------------------------------------------------------------------ CE506 vocabulary


def test_label_beyond_embedding_from_an_added_token():
    batch = lm_batch(vocab=50)
    batch["input_ids"][0, 0] = batch["labels"][0, 0] = 50  # a token added to the tokenizer
    tokenizer = _Tokenizer(pad=PAD, eos=EOS, size=51)
    report = check_batch(batch, tokenizer=tokenizer, embedding_rows=50, shift="model")
    d = report.by_rule("CE506")
    assert d is not None and d.fix == "model.resize_token_embeddings(len(tokenizer))"
    assert "51 tokens and the embedding 50 rows" in d.message
    batch["input_ids"][0, 0] = batch["labels"][0, 0] = 49  # the last row: legal
    assert not check_batch(batch, tokenizer=tokenizer, embedding_rows=50).diagnostics


def test_label_beyond_num_labels_of_a_classification_head():
    model = _Tiny("TinyForTokenClassification", vocab=50, num_labels=5)
    batch = lm_batch()
    batch["labels"] = torch.full_like(batch["input_ids"], 4).masked_fill(
        batch["attention_mask"] == 0, -100
    )
    assert not check_batch(batch, model=model).diagnostics
    batch["labels"][0, 0] = 5
    d = check_batch(batch, model=model).by_rule("CE506")
    assert d is not None and "num_labels" in d.fix


# ------------------------------------------------------------------ CE507 nothing to learn


def test_no_supervised_token_says_truncation():
    batch = lm_batch(lengths=(16, 16, 16))
    batch["labels"] = torch.full_like(batch["input_ids"], -100)  # the prompt filled every row
    d = check_batch(batch, shift="model").by_rule("CE507")
    assert d is not None and "truncation" in d.message


def test_no_supervised_token_after_the_shift():
    batch = lm_batch()
    batch["labels"] = torch.full_like(batch["input_ids"], -100)
    batch["labels"][:, 0] = 7
    d = check_batch(batch, shift="model").by_rule("CE507")
    assert d is not None and "position 0" in d.message
    # with nobody shifting, the same labels are supervised
    assert not check_batch(batch, shift="none").diagnostics


def test_completion_only_masking_with_a_response_token_left_is_legal():
    batch = lm_batch(lengths=(16, 16, 16))
    labels = torch.full_like(batch["input_ids"], -100)
    labels[1, -1] = batch["input_ids"][1, -1]  # one response token survived truncation
    batch["labels"] = labels
    assert not check_batch(batch, shift="model").diagnostics


# ------------------------------------------------------------------ CE508 lengths


def test_label_length_mismatch():
    batch = lm_batch()
    batch["labels"] = batch["labels"][:, 1:]
    d = check_batch(batch, shift="model").by_rule("CE508")
    assert d is not None and "input_ids[:, 1:]" in d.message


def test_sequence_labels_and_flat_labels_are_legal():
    batch = lm_batch()
    seq = {**batch, "labels": torch.tensor([0, 1, 1])}  # sequence classification
    assert not check_batch(seq).diagnostics
    flat = {**batch, "labels": batch["labels"].reshape(-1)}
    assert not check_batch(flat, shift="model").diagnostics


# ------------------------------------------------------------------ CE509 num_items_in_batch


def test_num_items_counted_before_the_shift():
    batch = lm_batch()
    before = int((batch["labels"] != -100).sum())
    d = check_batch(batch, shift="model", num_items_in_batch=before).by_rule("CE509")
    assert d is not None and "before the shift" in d.message
    after = int((batch["labels"][:, 1:] != -100).sum())
    assert not check_batch(batch, shift="model", num_items_in_batch=torch.tensor(after)).diagnostics


def test_num_items_across_the_accumulation_window():
    window = [lm_batch(seed=0), lm_batch(lengths=(4, 16, 9), seed=1)]
    total = sum(int((b["labels"][:, 1:] != -100).sum()) for b in window)
    assert not check_batch(window, shift="model", num_items_in_batch=total).diagnostics
    one = int((window[1]["labels"][:, 1:] != -100).sum())  # per micro-batch: the 2024 bug
    d = check_batch(window, shift="model", num_items_in_batch=one).by_rule("CE509")
    assert d is not None and "over the accumulation window" in d.message


# ------------------------------------------------------------------ robustness


@pytest.mark.parametrize(
    "batch",
    [
        {},
        {"input_ids": torch.zeros(2, 3, dtype=torch.long)},
        {"labels": torch.randn(2, 3)},
        {"labels": [[1, 2, -100]], "input_ids": [[1, 2, 3]]},
        {"labels": torch.zeros(0, 5, dtype=torch.long), "input_ids": torch.zeros(0, 5).long()},
        {"labels": torch.zeros(2, 3, dtype=torch.long, device="meta")},
        {"labels": "not a tensor"},
    ],
    ids=["empty", "no-labels", "float", "lists", "zero-rows", "meta", "str"],
)
def test_never_raises_on_what_the_batch_holds(batch):
    report = check_batch(batch, shift="model", pad_token_id=0, eos_token_id=0, num_items_in_batch=3)
    assert report.ok or report.diagnostics


def test_bad_shift_is_the_callers_mistake():
    with pytest.raises(ValueError, match="shift"):
        check_batch(lm_batch(), shift="left")


# ------------------------------------------------------------------ the context


class _Tokenizer:
    def __init__(self, pad, eos, size):
        self.pad_token_id, self.eos_token_id, self.size = pad, eos, size

    def __len__(self):
        return self.size


class _Tiny(torch.nn.Module):
    """A transformers-shaped module without transformers: config, embeddings, a causal loss."""

    def __init__(self, name="TinyForCausalLM", vocab=50, pad=None, eos=EOS, num_labels=2):
        super().__init__()
        self.__class__ = type(name, (_Tiny,), {})
        self.config = SimpleNamespace(
            pad_token_id=pad, eos_token_id=eos, vocab_size=vocab, num_labels=num_labels
        )
        self.embed = torch.nn.Embedding(vocab, 8)
        self.head = torch.nn.Linear(8, num_labels if "Classification" in name else vocab)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, attention_mask=None, labels=None, num_items_in_batch=None):
        logits = self.head(self.embed(input_ids))
        if labels is None:
            return logits
        logits, labels = logits[:, :-1], labels[:, 1:]
        reduction = "mean" if num_items_in_batch is None else "sum"
        loss = F.cross_entropy(logits.transpose(1, 2), labels, reduction=reduction)
        return loss if num_items_in_batch is None else loss / num_items_in_batch


def test_context_reads_model_and_tokenizer_and_arguments_win():
    model = _Tiny(vocab=50, pad=None, eos=EOS)
    ctx = build_context(lm_batch(), model=model, tokenizer=_Tokenizer(PAD, 3, 52))
    assert (ctx.shift, ctx.label_space, ctx.embedding_rows) == ("model", "tokens", 50)
    assert (ctx.pad_token_id, ctx.eos_token_id, ctx.tokenizer_size) == (PAD, 3, 52)
    assert ctx.origin["pad_token_id"] == "the tokenizer"
    ctx = build_context(lm_batch(), model=model, pad_token_id=1, shift="caller")
    assert (ctx.pad_token_id, ctx.shift, ctx.eos_token_id) == (1, "caller", EOS)
    assert ctx.origin["pad_token_id"] == "an argument"
    masked_lm = build_context(lm_batch(), model=_Tiny("TinyForMaskedLM"))
    assert masked_lm.shift == "none"


# ------------------------------------------------------------------ the hook


def _warned(model, batches, guard, **kwargs):
    COLLECTOR.clear()  # findings are de-duplicated per call site, and this is one site
    detach = attach(model, guard, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for batch in batches:
                model(**batch)
        finally:
            detach()
    return [w.message for w in caught if isinstance(w.message, CediagWarning)]


def test_hook_reports_through_the_guard_and_detaches():
    model = _Tiny(pad=PAD)
    batch = lm_batch()
    batch["labels"] = batch["input_ids"].clone()
    found = _warned(model, [batch], Guard({"on_error": "warn"}))
    assert [w.diagnostic.code for w in found] == ["CE501"]
    assert not model._forward_pre_hooks


def test_hook_is_silent_on_legal_batches_and_without_labels():
    model = _Tiny(pad=PAD)
    batch = lm_batch()
    no_labels = {k: v for k, v in batch.items() if k != "labels"}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        found = _warned(model, [batch, no_labels], Guard({"on_error": "warn"}))
    assert not found


def test_hook_raises_when_the_guard_raises():
    model = _Tiny(pad=PAD)
    batch = _pre_shifted(lm_batch())
    detach = attach(model, Guard({"on_error": "raise"}))
    try:
        with pytest.raises(cediag.CrossEntropyInputError, match="CE504"):
            model(batch["input_ids"], batch["attention_mask"], batch["labels"])  # positional
    finally:
        detach()


def test_hook_checks_num_items_over_the_window():
    model = _Tiny(pad=PAD)
    window = [lm_batch(seed=0), lm_batch(lengths=(5, 16, 9), seed=1)]
    right = torch.tensor(sum(int((b["labels"][:, 1:] != -100).sum()) for b in window))
    wrong = torch.tensor(sum(int((b["labels"] != -100).sum()) for b in window))
    ok = _warned(
        model, [{**b, "num_items_in_batch": right} for b in window], Guard({"on_error": "warn"})
    )
    assert not ok
    bad = _warned(
        model, [{**b, "num_items_in_batch": wrong} for b in window], Guard({"on_error": "warn"})
    )
    assert [w.diagnostic.code for w in bad] == ["CE509"]
    steps = _warned(
        model,
        [{**b, "num_items_in_batch": wrong} for b in window],
        Guard({"on_error": "warn"}),
        accumulation_steps=2,
    )
    assert [w.diagnostic.code for w in steps] == ["CE509"]


def _right_window():
    window = [lm_batch(seed=0), lm_batch(lengths=(5, 16, 9), seed=1)]
    n = torch.tensor(float(sum(int((b["labels"][:, 1:] != -100).sum()) for b in window)))
    return [{**b, "num_items_in_batch": n} for b in window]  # one object, as the Trainer does


def test_a_window_cut_short_is_not_judged_at_detach():
    """A CE501 that stops the first micro-batch must not turn into a CE509 of the half-seen
    window when the block ends (it used to replace the CE501 in the traceback)."""
    model = _Tiny(pad=PAD)
    window = _right_window()
    window[0]["labels"] = window[0]["input_ids"].clone()  # padding left in the labels
    window[0]["num_items_in_batch"] = window[1]["num_items_in_batch"]
    with (
        pytest.raises(cediag.CrossEntropyInputError, match="CE501") as caught,
        cediag.watch(model=model, on_error="raise"),
    ):
        for batch in window:
            model(**batch)
    assert caught.value.__context__ is None
    assert [e.code for e in cediag.summary().entries] == ["CE501"]
    # the error caught inside the block, which then ends normally: the window is still cut
    COLLECTOR.clear()
    with (
        cediag.watch(model=model, on_error="raise"),
        pytest.raises(cediag.CrossEntropyInputError, match="CE501"),
    ):
        model(**window[0])
    assert [e.code for e in cediag.summary().entries] == ["CE501"]
    # a loop left by any other exception mid-window: detach() (in `finally`) does not judge it
    COLLECTOR.clear()
    detach = attach(model, Guard({"on_error": "raise"}))
    with pytest.raises(KeyboardInterrupt):
        try:
            model(**_right_window()[0])
            raise KeyboardInterrupt
        finally:
            detach()
    assert cediag.summary().entries == []
    # and a whole window is still judged at detach, even when attached inside an `except`
    n = torch.tensor(1000.0)
    wrong = [{**b, "num_items_in_batch": n} for b in _right_window()]
    try:
        raise ValueError("handled before the hook is attached")
    except ValueError:
        assert [w.diagnostic.code for w in _warned(model, wrong, Guard({"on_error": "warn"}))] == [
            "CE509"
        ]


def test_num_items_before_the_shift_with_loss_type_none_says_how_to_fix_the_trainer():
    """transformers' Trainer counts after the shift only when `model.loss_type` names the
    causal-LM loss; GPT2LMHeadModel leaves it None (its loss still shifts)."""
    model = _Tiny("TinyLMHeadModel", pad=PAD)
    model.loss_type = None
    window = _right_window()
    before = torch.tensor(float(sum(int((b["labels"] != -100).sum()) for b in window)))
    found = _warned(
        model, [{**b, "num_items_in_batch": before} for b in window], Guard({"on_error": "warn"})
    )
    (d,) = [w.diagnostic for w in found]
    assert d.code == "CE509" and "`model.loss_type` is None" in d.message
    assert d.fix.startswith('model.loss_type = "ForCausalLM"')
    model.loss_type = "ForCausalLM"  # named: the Trainer counts right, and the hint is not given
    found = _warned(
        model, [{**b, "num_items_in_batch": before} for b in window], Guard({"on_error": "warn"})
    )
    assert [w.diagnostic.fix for w in found] == [
        "num_items_in_batch = sum((labels[:, 1:] != -100).sum() for each batch of the "
        "accumulation window)"
    ]


def test_docs_describe_every_batch_rule():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "sequence.md").read_text()
    missing = [r.slug for r in BATCH_RULES if f"`{r.slug}`" not in text or r.code not in text]
    assert not missing, f"docs/sequence.md lacks {missing}"


def test_a_saved_batch_is_read_back_safely(tmp_path):
    from cediag.sequence._io import load_batch

    batch = lm_batch()
    batch["labels"] = batch["input_ids"].clone()
    torch.save(batch, tmp_path / "batch.pt")
    saved = load_batch(tmp_path / "batch.pt")
    assert sorted(saved.batch) == ["attention_mask", "input_ids", "labels"]
    assert codes(check_batch(saved.batch, **saved.options)) == {"CE501"}
    # ids saved next to the batch
    eos = _eos_batch(False)
    torch.save(
        {**eos, "pad_token_id": torch.tensor(EOS), "eos_token_id": torch.tensor(EOS)},
        tmp_path / "eos.pt",
    )
    saved = load_batch(tmp_path / "eos.pt")
    assert saved.options == {"pad_token_id": EOS, "eos_token_id": EOS}
    assert "CE503" in codes(check_batch(saved.batch, **saved.options))
    torch.save({"input": torch.randn(2, 3), "target": torch.tensor([0, 1])}, tmp_path / "call.pt")
    assert load_batch(tmp_path / "call.pt") is None  # a loss call, not a batch


def test_padding_in_a_causal_lms_flattened_shifted_labels():
    """What transformers' causal-LM loss hands F.cross_entropy: labels padded by one
    ignore_index, shifted, flattened. The sentinel gives the rows back."""
    from cediag.sequence._stats import flat_pad_runs, shifted_rows

    ids = lm_batch(lengths=(8, 10, 16, 16))["input_ids"]
    ids[:, 3] = PAD  # the pad id is also a real token, once per row
    flat = F.pad(ids, (0, 1), value=-100)[:, 1:].reshape(-1)
    assert shifted_rows(flat, -100) == 16
    runs = flat_pad_runs(flat, -100)
    assert runs is not None and (runs.token, runs.rows_padded) == (PAD, 2)
    # masked properly: the ignored positions are no longer one per row end
    masked = F.pad(lm_batch(lengths=(8, 10, 16, 16))["labels"], (0, 1), value=-100)[:, 1:]
    assert flat_pad_runs(masked.reshape(-1), -100) is None
    # class labels without the sentinel: no rows, nothing said
    labels = torch.randint(0, 3, (4096,), generator=torch.Generator().manual_seed(0))
    assert shifted_rows(labels, -100) is None


def test_num_items_with_the_shift_unknown_accepts_either_count():
    batch = lm_batch()
    after = int((batch["labels"][:, 1:] != -100).sum())
    before = int((batch["labels"] != -100).sum())
    assert not check_batch(batch, num_items_in_batch=after).diagnostics
    assert not check_batch(batch, num_items_in_batch=before).diagnostics
    d = check_batch(batch, num_items_in_batch=before + 5).by_rule("CE509")
    assert d is not None and "pass model= or shift=" in d.message


def test_label_length_is_not_judged_without_knowing_the_head():
    batch = lm_batch()
    seq2seq = {**batch, "labels": batch["labels"][:, :5]}  # decoder labels: their own length
    assert not check_batch(seq2seq).diagnostics
    assert "CE508" in codes(check_batch(seq2seq, shift="none"))
