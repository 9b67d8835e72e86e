"""The model hook on tiny transformers models (GPT-2, Llama, BERT built from configs, a
word-level tokenizer trained in memory; nothing is downloaded), trained for a few steps:
each mistake is reported through the guard, and the legal batches stay silent."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip(
    "transformers", reason="the transformers integration tests need transformers (test extra)"
)
tokenizers = pytest.importorskip("tokenizers", reason="the tokenizer is trained with tokenizers")

from cediag.guard._guard import CediagWarning, Guard  # noqa: E402
from cediag.guard._summary import COLLECTOR  # noqa: E402
from cediag.sequence import attach, check_batch  # noqa: E402

TEXTS = [
    "the cat sat on the mat",
    "a dog ran in the park today and then it slept",
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "question : what is two plus two ? answer : four",
    "question : name a colour ? answer : blue",
]
SPECIALS = ["<pad>", "<unk>", "<eos>", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def tokenizer():
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXTS, tokenizers.trainers.WordLevelTrainer(special_tokens=SPECIALS))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        eos_token="<eos>",
        pad_token="<pad>",
        mask_token="[MASK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


def _small(**extra):
    return dict(vocab_size=64, **extra)


def gpt2(tok):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=16,
        n_positions=64,
        **_small(),
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return transformers.GPT2LMHeadModel(config)


def llama(tok):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        hidden_size=16,
        intermediate_size=32,
        max_position_embeddings=64,
        **_small(),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    return transformers.LlamaForCausalLM(config)


def bert(tok, head="ForMaskedLM", **extra):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        num_hidden_layers=1,
        num_attention_heads=2,
        hidden_size=16,
        intermediate_size=32,
        max_position_embeddings=64,
        **_small(),
        pad_token_id=tok.pad_token_id,
        **extra,
    )
    return getattr(transformers, f"Bert{head}")(config)


def train(model, batches, tokenizer=None, steps=2, **attach_options):
    """A few optimizer steps under the hook; returns the codes the guard warned about."""
    COLLECTOR.clear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    detach = attach(model, Guard({"on_error": "warn"}), tokenizer=tokenizer, **attach_options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for _ in range(steps):
                for batch in batches:
                    loss = model(**batch).loss
                    loss.backward()
                optimizer.step()
                optimizer.zero_grad()
        finally:
            detach()
    assert not model._forward_pre_hooks
    found = [w.message.diagnostic for w in caught if isinstance(w.message, CediagWarning)]
    return sorted({d.code for d in found}), found


def encode(tok, texts, **kwargs):
    return tok(texts, padding=True, return_tensors="pt", **kwargs)


# ------------------------------------------------------------------ mistakes


def test_gpt2_pad_trained_as_label(tokenizer):
    batch = dict(encode(tokenizer, TEXTS[:3]))
    batch["labels"] = batch["input_ids"].clone()  # pad id left in
    codes, found = train(gpt2(tokenizer), [batch], tokenizer)
    assert codes == ["CE501"]
    assert "masked_fill(attention_mask == 0, -100)" in found[0].fix


def test_llama_eos_as_pad_never_learned(tokenizer):
    tok = _copy(tokenizer)
    tok.pad_token = tok.eos_token
    collator = transformers.DataCollatorForLanguageModeling(tok, mlm=False)
    batch = collator([tok(t + " <eos>") for t in TEXTS[:3]])
    codes, found = train(llama(tok), [batch], tok)
    assert codes == ["CE503"]
    assert "resize_token_embeddings" in found[0].fix


def test_llama_labels_shifted_twice(tokenizer):
    batch = dict(encode(tokenizer, TEXTS[:4]))
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, :-1] = batch["input_ids"][:, 1:]
    batch["labels"] = labels.masked_fill(batch["attention_mask"] == 0, -100)
    assert train(llama(tokenizer), [batch], tokenizer)[0] == ["CE504"]


def test_gpt2_added_token_without_resize(tokenizer):
    tok = _copy(tokenizer)
    tok.add_tokens(["<new>"])  # id len(tokenizer) - 1, past the embedding when vocab is full
    model = gpt2(tok)
    model.resize_token_embeddings(len(tokenizer))  # sized for the tokenizer before add_tokens
    batch = dict(encode(tok, ["the cat <new>", "hello world"]))
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    detach = attach(model, Guard({"on_error": "warn"}), tokenizer=tok)
    COLLECTOR.clear()
    try:
        with pytest.warns(CediagWarning, match="CE506") as caught, pytest.raises(IndexError):
            model(**batch)  # torch's own error follows the warning
    finally:
        detach()
    assert caught[0].message.diagnostic.fix == "model.resize_token_embeddings(len(tokenizer))"


def test_llama_completion_only_truncated_away(tokenizer):
    prompts = ["question : what is two plus two ? answer :", "question : name a colour ? answer :"]
    batch = dict(encode(tokenizer, [p + " four" for p in prompts], truncation=True, max_length=6))
    batch["labels"] = torch.full_like(batch["input_ids"], -100)  # the prompt masked: nothing left
    codes, found = train(llama(tokenizer), [batch], tokenizer, steps=1)
    assert codes == ["CE507"]
    assert "truncation" in found[0].message


def test_llama_num_items_counted_before_the_shift(tokenizer):
    window = [dict(encode(tokenizer, TEXTS[i : i + 2])) for i in (0, 2)]
    for b in window:
        b["labels"] = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
    n = sum((b["labels"] != -100).sum() for b in window)  # before the shift: one per row too many
    batches = [{**b, "num_items_in_batch": n} for b in window]
    assert train(llama(tokenizer), batches, tokenizer, steps=1)[0] == ["CE509"]


def test_bert_token_classification_padded_with_o(tokenizer):
    batch = dict(encode(tokenizer, TEXTS[:3]))
    tags = torch.randint(1, 4, batch["input_ids"].shape, generator=torch.Generator().manual_seed(0))
    batch["labels"] = tags.masked_fill(batch["attention_mask"] == 0, 0)  # 'O' as padding
    model = bert(tokenizer, "ForTokenClassification", num_labels=4)
    assert train(model, [batch], tokenizer)[0] == ["CE501"]


# ------------------------------------------------------------------ legal batches


def test_legal_batches_are_silent(tokenizer):
    tok = tokenizer
    causal = transformers.DataCollatorForLanguageModeling(tok, mlm=False)
    masked = transformers.DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.5)
    tagging = transformers.DataCollatorForTokenClassification(tok)
    encoded = [tok(t) for t in TEXTS]
    torch.manual_seed(0)
    cases = {}
    cases["gpt2 causal collator"] = (gpt2(tok), [causal(encoded[:3]), causal(encoded[3:])])
    cases["bert mlm collator"] = (bert(tok), [masked(encoded)])
    tagged = [{**e, "labels": [i % 4 for i in range(len(e["input_ids"]))]} for e in encoded]
    cases["bert token classification collator"] = (
        bert(tok, "ForTokenClassification", num_labels=4),
        [tagging(tagged)],
    )
    # packed documents separated by EOS, no padding, every position supervised
    ids = torch.tensor([sum((e["input_ids"] + [tok.eos_token_id] for e in encoded), [])[:40]])
    packed = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    cases["llama packed with eos"] = (llama(tok), [packed])
    # left padding, with the pad id 0 also inside a row as a real (attended) token
    left = _copy(tok)
    left.padding_side = "left"
    lb = dict(encode(left, TEXTS[:3]))
    lb["input_ids"][:, -2] = tok.pad_token_id
    lb["labels"] = lb["input_ids"].masked_fill(lb["attention_mask"] == 0, -100)
    cases["llama left padding, pad id as a real token"] = (llama(tok), [lb])
    # completion-only masking that leaves the response tokens
    cb = dict(encode(tok, ["question : name a colour ? answer : blue", "hello world"]))
    labels = torch.full_like(cb["input_ids"], -100)
    labels[0, 8:9] = cb["input_ids"][0, 8:9]
    labels[1, 1:2] = cb["input_ids"][1, 1:2]
    cb["labels"] = labels
    cases["llama completion-only"] = (llama(tok), [cb])
    # pad == EOS, with the first EOS of each padded row kept as a label
    eos_pad = _copy(tok)
    eos_pad.pad_token = eos_pad.eos_token
    eb = dict(encode(eos_pad, TEXTS[:3]))
    eb["labels"] = eb["input_ids"].masked_fill(eb["attention_mask"] == 0, -100)
    for row, n in enumerate(eb["attention_mask"].sum(1).tolist()):
        if n < eb["labels"].shape[1]:
            eb["labels"][row, n] = eos_pad.eos_token_id
    cases["llama pad == eos, first eos kept"] = (llama(eos_pad), [eb])
    # num_items_in_batch as transformers' Trainer counts it: labels[..., 1:], whole window
    window = [dict(encode(tok, TEXTS[i : i + 2])) for i in (0, 2)]
    for b in window:
        b["labels"] = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
    n = sum((b["labels"][..., 1:] != -100).sum() for b in window)
    cases["llama accumulation window"] = (
        llama(tok),
        [{**b, "num_items_in_batch": n} for b in window],
    )
    for name, (model, batches) in cases.items():
        tokenizer_of_case = eos_pad if "pad == eos" in name else tok
        assert train(model, batches, tokenizer_of_case, steps=1)[0] == [], name


def test_bf16_autocast_and_a_label_smoothing_loss_are_silent(tokenizer):
    model = llama(tokenizer)
    batch = dict(encode(tokenizer, TEXTS[:3]))
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    COLLECTOR.clear()
    detach = attach(model, Guard({"on_error": "warn"}), tokenizer=tokenizer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CediagWarning)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(**batch)
            logits = out.logits[:, :-1].float()
            smoothed = F.cross_entropy(
                logits.transpose(1, 2), batch["labels"][:, 1:], label_smoothing=0.1
            )
            (out.loss + smoothed).backward()
    finally:
        detach()


def test_check_batch_reads_the_model_and_tokenizer(tokenizer):
    model = llama(tokenizer)
    batch = dict(encode(tokenizer, TEXTS[:3]))
    batch["labels"] = batch["input_ids"].clone()
    report = check_batch(batch, model=model, tokenizer=tokenizer)
    assert [d.code for d in report.diagnostics] == ["CE501"]
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert check_batch(batch, model=model, tokenizer=tokenizer).ok


def _copy(tok):
    import copy

    return copy.deepcopy(tok)


def test_watch_without_model_catches_padding_inside_the_models_own_loss(tokenizer):
    """transformers' causal-LM loss flattens the shifted labels before F.cross_entropy; the
    shift's one ignore_index per row gives the rows back to pad-token-target (CE210)."""
    import cediag

    texts = ["a dog ran in the park today and then it slept", "hello world", "the cat sat"]
    batch = dict(encode(tokenizer, texts))
    batch["labels"] = batch["input_ids"].clone()
    model = gpt2(tokenizer)
    COLLECTOR.clear()
    with pytest.warns(CediagWarning, match="CE210 pad-token-target"), cediag.watch(on_error="warn"):
        model(**batch).loss.backward()
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    COLLECTOR.clear()
    with warnings.catch_warnings(record=True) as caught, cediag.watch(on_error="warn"):
        warnings.simplefilter("always")
        model(**batch).loss.backward()
    assert not [w for w in caught if isinstance(w.message, CediagWarning)]


def test_windows_counted_in_plain_numbers_do_not_merge(tokenizer):
    """A training loop of its own passes num_items_in_batch as a Python int. Fixed-length
    batches give every window the same count: windows are closed when their labels add up to
    it, not merged into one (which would be a false CE509); a wrong count is still found."""
    batches = []
    for _ in range(4):  # the same rows each time: every window has the same count
        b = dict(encode(tokenizer, TEXTS[:2]))
        b["labels"] = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
        batches.append(b)
    per_window = [batches[0:2], batches[2:4]]
    legal, wrong = [], []
    for window in per_window:
        n = int(sum((b["labels"][..., 1:] != -100).sum() for b in window))
        legal += [{**b, "num_items_in_batch": n} for b in window]
        wrong += [{**b, "num_items_in_batch": n + 7} for b in window]
    assert train(llama(tokenizer), legal, tokenizer, steps=1)[0] == []
    assert "CE509" in train(llama(tokenizer), wrong, tokenizer, steps=1)[0]
