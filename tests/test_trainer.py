"""A real `transformers.Trainer` under `cediag.watch(model=..., tokenizer=...)`: gradient
accumulation with `num_items_in_batch` stays silent, and the batch mistakes made around a
Trainer are reported with a fix in the caller's terms. Tiny models from configs, a tokenizer
trained in memory (test_sequence_hf's), 3 optimizer steps of 2 micro-batches; nothing is
downloaded."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="the Trainer tests need transformers (test extra)"
)
pytest.importorskip(
    "accelerate", reason="transformers' Trainer needs accelerate (pip install accelerate)"
)

from test_sequence_hf import TEXTS, _copy, gpt2, llama, tokenizer  # noqa: E402, F401

import cediag  # noqa: E402
from cediag.sequence import _hooks  # noqa: E402

STEPS, ACCUMULATION, BATCH = 3, 2, 4
WORDS = " ".join(TEXTS).split()
# a few dozen texts of 2 to 12 words from the tokenizer's own vocabulary
CORPUS = [" ".join(WORDS[i : i + 2 + (i * 7) % 11]) for i in range(32)]


@pytest.fixture(autouse=True)
def _one_thread_and_a_fresh_summary():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only contend on a shared machine
    cediag.summary(clear=True)
    yield
    cediag.summary(clear=True)
    torch.set_num_threads(threads)


@pytest.fixture
def windows(monkeypatch):
    """The accumulation windows the hook judged: (num_items_in_batch, labels after the shift,
    forwards)."""
    seen = []
    judge = _hooks._Hook.window_findings

    def spy(self, w, rules):
        seen.append((w.items, w.supervised, w.forwards))
        return judge(self, w, rules)

    monkeypatch.setattr(_hooks._Hook, "window_findings", spy)
    return seen


def trainer_for(model, tok, tmp_path, collator=None, trainer_class=None, texts=CORPUS):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=ACCUMULATION,
        max_steps=STEPS,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        logging_steps=STEPS,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    return (trainer_class or transformers.Trainer)(
        model=model,
        args=args,
        train_dataset=[tok(t) for t in texts],
        data_collator=collator or transformers.DataCollatorForLanguageModeling(tok, mlm=False),
    )


def counts_after_the_shift(trainer):
    """transformers' Trainer counts `labels[..., 1:]` for causal LMs since
    huggingface/transformers#46204; before it, every causal LM got the count before the shift
    (which CE509 reports, rightly)."""
    if not hasattr(trainer, "_loss_shifts_labels"):
        pytest.skip("this transformers' Trainer counts num_items_in_batch before the shift")


def forwards_seen(model):
    """What the model receives: num_items_in_batch and the labels after the shift, per forward."""
    seen = []

    def record(module, args, kwargs):
        labels = kwargs["labels"][:, 1:]
        seen.append((kwargs.get("num_items_in_batch"), int((labels != -100).sum())))

    model.register_forward_pre_hook(record, with_kwargs=True)
    return seen


def raised(trainer, model, tok, **options):
    with (
        pytest.raises(cediag.CrossEntropyInputError) as caught,
        cediag.watch(model=model, tokenizer=tok, on_error="raise", **options),
    ):
        trainer.train()
    assert not any(_ours(h) for h in model._forward_pre_hooks.values())  # went with the block
    return caught.value.report


def _ours(hook):
    return isinstance(hook, _hooks._Hook)


# ------------------------------------------------------------------ legal runs stay silent


@pytest.mark.parametrize("build", ["llama", "gpt2 with loss_type"])
def test_trainer_with_accumulation_and_num_items_is_silent(build, tokenizer, tmp_path, windows):  # noqa: F811
    model = llama(tokenizer) if build == "llama" else gpt2(tokenizer)
    if build == "gpt2 with loss_type":
        model.loss_type = "ForCausalLM"  # the Trainer then counts labels[..., 1:] (see below)
    received = forwards_seen(model)
    trainer = trainer_for(model, tokenizer, tmp_path)
    counts_after_the_shift(trainer)
    with cediag.watch(model=model, tokenizer=tokenizer, on_error="raise", fail_on="warning"):
        trainer.train()
    summary = cediag.summary()
    assert summary.at_least("info") == [], str(summary)
    assert summary.calls >= STEPS * ACCUMULATION  # the model's own loss calls were checked
    # the Trainer passed one num_items_in_batch per window, to every micro-batch of it ...
    assert len(received) == STEPS * ACCUMULATION
    assert all(isinstance(n, torch.Tensor) for n, _ in received)
    assert len({id(n) for n, _ in received}) == STEPS
    # ... and the hook judged each window whole, against the labels after the shift
    assert [forwards for _, _, forwards in windows] == [ACCUMULATION] * STEPS
    assert all(items == supervised for items, supervised, _ in windows)
    assert [items for items, _, _ in windows] == [
        float(received[i][0]) for i in range(0, len(received), ACCUMULATION)
    ]


# ------------------------------------------------------------------ mistakes, under a Trainer


def test_pad_set_to_eos_and_the_collator_masks_every_eos(tokenizer, tmp_path):  # noqa: F811
    tok = _copy(tokenizer)
    tok.pad_token = tok.eos_token  # the common recipe; the collator then masks every EOS
    model = llama(tok)
    trainer = trainer_for(model, tok, tmp_path, texts=[t + " <eos>" for t in CORPUS])
    report = raised(trainer, model, tok, fail_on="warning")
    assert [d.code for d in report.diagnostics] == ["CE503"]
    assert "resize_token_embeddings" in report.diagnostics[0].fix
    entries = cediag.summary().entries
    assert [e.code for e in entries] == ["CE503"]  # and no CE509 of the window it cut short
    assert entries[0].site.startswith("tests/test_trainer.py:")


def test_labels_copied_from_input_ids_keep_the_padding(tokenizer, tmp_path):  # noqa: F811
    def copy_ids(features):  # a hand-written collator: pads, then labels = input_ids
        batch = tokenizer.pad(features, return_tensors="pt")
        batch["labels"] = batch["input_ids"].clone()
        return batch

    model = llama(tokenizer)
    trainer = trainer_for(model, tokenizer, tmp_path, collator=copy_ids)
    report = raised(trainer, model, tokenizer)
    assert [d.code for d in report.diagnostics] == ["CE501"]
    assert "masked_fill(attention_mask == 0, -100)" in report.diagnostics[0].fix
    # the first micro-batch was stopped: its half-seen window is not judged at the block's end
    assert [e.code for e in cediag.summary().entries] == ["CE501"]


class CountsBeforeTheShift(transformers.Trainer):
    """Counts the window's labels as a hand-written loop often does: before the shift."""

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        return batches, sum((b["labels"] != -100).sum() for b in batches)


def test_num_items_counted_before_the_shift_by_a_trainer_subclass(tokenizer, tmp_path):  # noqa: F811
    model = llama(tokenizer)
    trainer = trainer_for(model, tokenizer, tmp_path, trainer_class=CountsBeforeTheShift)
    counts_after_the_shift(trainer)
    report = raised(trainer, model, tokenizer)
    (finding,) = report.diagnostics
    assert finding.code == "CE509"
    assert "over the accumulation window" in finding.message
    assert "before the shift: one label per row too many" in finding.message
    assert finding.fix.startswith("num_items_in_batch = sum((labels[:, 1:] != -100)")


def test_gpt2_under_trainer_is_divided_by_the_count_before_the_shift(tokenizer, tmp_path):  # noqa: F811
    """transformers 5.x: `GPT2LMHeadModel.loss_type` is None, so `Trainer` counts
    `labels != -100` without the shift its loss makes (the legal run above sets loss_type)."""
    model = gpt2(tokenizer)
    if getattr(model, "loss_type", "absent") is not None:
        pytest.skip("this transformers names GPT-2's loss type: its Trainer counts right")
    received = forwards_seen(model)
    trainer = trainer_for(model, tokenizer, tmp_path)
    counts_after_the_shift(trainer)
    report = raised(trainer, model, tokenizer)
    (finding,) = report.diagnostics
    assert finding.code == "CE509"
    after_shift = received[0][1] + received[1][1]
    rows = ACCUMULATION * BATCH
    assert float(received[0][0]) == after_shift + rows  # one label per row too many
    assert f"num_items_in_batch={after_shift + rows}" in finding.message
    assert "model.loss_type" in finding.message
    assert finding.fix.startswith('model.loss_type = "ForCausalLM"')
