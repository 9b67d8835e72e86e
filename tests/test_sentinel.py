"""The guard checks every call: a fault that appears at call k is reported at call k (eager),
or by call k + sync_every (deferred), under default options, through every entry point; legal
training stays silent on every call; nothing deferred is dropped."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_legal_calls import LEGAL

import cediag
from cediag.families.cross_entropy.call import bind_call
from cediag.families.cross_entropy.sentinel import (
    SentinelPlan,
    late_report,
    measure,
    read_now,
    reasons,
)
from cediag.guard._config import DEFAULT_FIRST


@pytest.fixture(autouse=True)
def _fresh_summary():
    cediag.summary(clear=True)
    yield
    cediag.summary(clear=True)


def healthy(step: int, n: int = 16, c: int = 10):
    g = torch.Generator().manual_seed(step)
    return torch.randn(n, c, generator=g, requires_grad=True), torch.randint(
        0, c, (n,), generator=g
    )


def with_fault(kind: str, step: int):
    """(logits, target) of a healthy batch with one fault of `kind`, as it appears mid-run."""
    x, t = healthy(step)
    if kind == "out-of-range":
        t = t.clone()
        t[3] = 10
    elif kind == "negative-label":
        t = t.clone()
        t[5] = -3
    elif kind == "all-ignored":
        t = torch.full_like(t, -100)
    elif kind == "nan-logits":
        x = x * float("nan")
    elif kind == "inf-logits":
        x = x.detach().clone()
        x[2, 1] = float("inf")
    elif kind == "softmax-applied":
        x = x.softmax(1)
    elif kind == "soft-targets-off":
        t = F.one_hot(t, 10).float() * 0.5  # rows sum to 0.5
    else:
        raise AssertionError(kind)
    return x, t


# What the full check calls each fault (the code the user sees on the call it appears).
FAULTS = {
    "out-of-range": "target-out-of-range",
    "negative-label": "target-out-of-range",
    "all-ignored": "all-targets-ignored",
    "nan-logits": "non-finite-logits",
    "inf-logits": "non-finite-logits",
    "softmax-applied": "softmax-applied",
    "soft-targets-off": "invalid-probability-targets",
}
# Past the first full checks, and not on the every-100th schedule either.
FAULT_AT = DEFAULT_FIRST + 27


def _loop(loss_fn, fault: str, steps: int = FAULT_AT + 5):
    """Run a loop, fault from FAULT_AT on; return (step, rule) of the first CrossEntropyInputError."""
    for step in range(1, steps + 1):
        x, t = with_fault(fault, step) if step >= FAULT_AT else healthy(step)
        try:
            loss_fn(x, t)
        except cediag.CrossEntropyInputError as error:
            return step, error.report.diagnostics[0].rule
    return None


def _entry_points():
    yield "wrap(module)", cediag.wrap(nn.CrossEntropyLoss())
    yield "wrap(function)", cediag.wrap(F.cross_entropy)

    @cediag.checked
    def loss_fn(logits, labels):
        return F.cross_entropy(logits, labels)

    yield "checked", loss_fn


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_is_caught_on_the_call_it_appears_with_default_options(fault):
    for name, loss_fn in _entry_points():
        assert _loop(loss_fn, fault) == (FAULT_AT, FAULTS[fault]), name
    # watch(): the same through the patched F.cross_entropy
    criterion = nn.CrossEntropyLoss()
    with cediag.watch():
        assert _loop(criterion, fault) == (FAULT_AT, FAULTS[fault])


def test_a_fault_at_call_5000_is_caught_at_call_5000():
    ce = cediag.wrap(nn.CrossEntropyLoss())
    x, t = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    for _ in range(4999):
        ce(x, t)
    with pytest.raises(cediag.CrossEntropyInputError, match="target-out-of-range"):
        ce(x, torch.tensor([0, 2, 3, 1]))
    summary = cediag.summary()
    assert summary.calls == 5000 and summary.values_checked == 5000
    assert summary.let_through == 0


def test_every_call_is_counted_as_checked_in_the_summary():
    ce = cediag.wrap(nn.CrossEntropyLoss())
    for step in range(300):
        ce(*healthy(step % 3))
    summary = cediag.summary()
    assert (summary.calls, summary.values_checked, summary.let_through) == (300, 300, 0)
    assert summary.checked == DEFAULT_FIRST + 2  # first 10, then calls 110 and 210
    assert "NOT checked" not in str(summary)


@pytest.mark.parametrize("name", [k for k, v in LEGAL.items() if v is not None])
def test_legal_calls_stay_silent_on_every_call(name):
    x, t, options = LEGAL[name]
    for sync in ("eager", "deferred"):
        ce = cediag.wrap(F.cross_entropy, on_error="raise", fail_on="warning", sync=sync)
        for _ in range(DEFAULT_FIRST + 30):
            ce(x, t, **options)
    summary = cediag.summary()
    assert summary.at_least("warning") == [], f"{name}:\n{summary}"


def test_random_legal_batches_stay_silent_on_every_call():
    """Fresh models of many shapes and scales, one signature per run, 40 calls each."""
    gen = torch.Generator().manual_seed(7)
    for _ in range(25):
        n = int(torch.randint(1, 64, (1,), generator=gen))
        c = int(torch.randint(2, 40, (1,), generator=gen))
        scale = float(torch.rand(1, generator=gen)) * 20 + 0.01
        ce = cediag.wrap(nn.CrossEntropyLoss(), fail_on="warning")
        for _ in range(40):
            x = torch.randn(n, c, generator=gen) * scale
            ce(x, torch.randint(0, c, (n,), generator=gen))
    assert cediag.summary().at_least("warning") == []


# ---------------------------------------------------------------- deferred


@pytest.mark.parametrize(
    "fault", ["all-ignored", "nan-logits", "soft-targets-off", "softmax-applied"]
)
def test_deferred_reports_a_fault_within_sync_every_calls(fault):
    """Faults torch itself lets through (a NaN loss, garbage soft targets): with
    sync="deferred" the reading is read at most `sync_every` calls later, and raised there."""
    ce = cediag.wrap(nn.CrossEntropyLoss(), sync="deferred", sync_every=4)
    caught = _loop(ce, fault, steps=FAULT_AT + 8)
    assert caught is not None, "never reported"
    step, rule = caught
    assert FAULT_AT < step <= FAULT_AT + 4  # read by the call that finds 4 readings waiting
    assert rule == FAULTS[fault]
    if fault != "softmax-applied":  # a hint: the full check runs on the call that read it
        assert cediag.summary().by_rule(FAULTS[fault])[0].first_call == FAULT_AT


def test_deferred_readings_are_read_at_summary():
    ce = cediag.wrap(nn.CrossEntropyLoss(), sync="deferred", sync_every=1000)
    for step in range(1, FAULT_AT + 1):
        ce(*(with_fault("nan-logits", step) if step == FAULT_AT else healthy(step)))
    entries = cediag.summary().by_rule("non-finite-logits")
    assert [e.first_call for e in entries] == [FAULT_AT]
    assert "read later" not in entries[0].message  # the message says which call it was
    assert f"call {FAULT_AT}" in entries[0].message


def test_deferred_readings_are_printed_at_interpreter_exit(tmp_path):
    """A 3-step loop whose targets are all ignored, sync="deferred", on_error="raise", no
    summary() call: the loss is NaN and the finding must still reach the user at exit.
    (first=0: with the default first full checks, the next call would read and raise it.)"""
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch, torch.nn as nn, cediag
            ce = cediag.wrap(nn.CrossEntropyLoss(), sync="deferred", on_error="raise", first=0)
            for step in range(3):
                print(float(ce(torch.randn(4, 5), torch.full((4,), -100))))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "nan" in done.stdout
    assert "all-targets-ignored" in done.stderr
    assert "CE211" in done.stderr


def test_deferred_queue_belongs_to_its_guard():
    """A clean call through one guard must not raise another guard's finding."""
    raising = cediag.wrap(nn.CrossEntropyLoss(), sync="deferred", sync_every=1000)
    warning = cediag.wrap(nn.CrossEntropyLoss(), sync="deferred", sync_every=1, on_error="warn")
    raising(*with_fault("nan-logits", 0))  # pending on `raising`
    for step in range(3):
        warning(*healthy(step))  # reads only its own queue: no exception
    with pytest.raises(cediag.CrossEntropyInputError, match="non-finite-logits"):
        for step in range(1000):
            raising(*healthy(step))


# ---------------------------------------------------------------- the sentinel itself


def _reasons_of(x, t, **options):
    call = bind_call(x, t, **options)
    plan = SentinelPlan.of(call)
    eager = read_now(plan, x, t)
    deferred = reasons(plan, measure(plan, x, t).tolist(), x)
    assert eager == deferred  # the two readings agree
    return eager


def test_sentinel_reasons_on_hand_made_calls():
    x, t = healthy(0)
    assert _reasons_of(x, t) == ()
    assert _reasons_of(x.transpose(0, 1).contiguous().transpose(0, 1), t) == ()  # strided
    assert _reasons_of(*with_fault("out-of-range", 0)) == ("targets",)
    assert _reasons_of(*with_fault("all-ignored", 0)) == ("targets",)
    assert _reasons_of(*with_fault("nan-logits", 0)) == ("nonfinite",)
    assert _reasons_of(*with_fault("softmax-applied", 0)) == ("range", "graph")
    # ignore_index inside [0, C): every target equal to it is "all ignored"
    assert _reasons_of(x, torch.zeros(16, dtype=torch.long), ignore_index=0) == ("targets",)
    assert _reasons_of(x, torch.zeros(16, dtype=torch.long)) == ()
    # segmentation: 255 is ignored, not out of range; 254 is out of range
    seg_x, seg_t = torch.randn(2, 21, 8, 8), torch.randint(0, 21, (2, 8, 8))
    seg_t[:, ::3] = 255
    assert _reasons_of(seg_x, seg_t, ignore_index=255) == ()
    seg_t[0, 1, 1] = 254
    assert _reasons_of(seg_x, seg_t, ignore_index=255) == ("targets",)
    # probability targets: zero rows mask a sample out; rows of 0.5 are wrong
    soft = torch.randn(16, 10).softmax(1)
    soft[3] = 0
    assert _reasons_of(x, soft) == ()
    assert _reasons_of(x, soft * 0.5) == ("targets",)


def test_sentinel_reads_transposed_logits_in_memory_order():
    x = torch.randn(2, 7, 5).transpose(1, 2)  # (B, C, T) view of (B, T, C) logits
    t = torch.randint(0, 5, (2, 7))
    assert _reasons_of(x, t) == ()
    x = x.clone()
    x[1, 2, 3] = float("nan")
    assert _reasons_of(x.transpose(1, 2).contiguous().transpose(1, 2), t) == ("nonfinite",)


def test_late_report_names_the_call_and_the_fix():
    x, t = with_fault("out-of-range", 0)
    plan = SentinelPlan.of(bind_call(x, t))
    report = late_report(plan, measure(plan, x, t).tolist(), 42)
    [d] = report.diagnostics
    assert d.code == "CE206" and d.severity is cediag.Severity.error
    assert "call 42" in d.message and "outside [0, 10)" in d.message
    assert "ignore_index" in d.fix


def test_sentinel_reads_shifted_and_expanded_views():
    """The causal-LM shift (`logits[:, :-1]`) and an expanded tensor are read in place."""
    logits = torch.randn(2, 9, 6)
    labels = torch.randint(0, 6, (2, 9))
    x, t = logits[:, :-1].transpose(1, 2), labels[:, 1:]
    assert _reasons_of(x, t) == ()
    logits[1, 3, 2] = float("inf")
    assert _reasons_of(logits[:, :-1].transpose(1, 2), t) == ("nonfinite",)
    probs = torch.randn(1, 1000).softmax(1).expand(100_000, 1000)  # 400 MB if copied
    assert "range" in _reasons_of(probs, torch.zeros(100_000, dtype=torch.long))


def test_deferred_readings_are_read_when_a_watch_block_ends():
    """Fewer calls than sync_every in the block: the block's end reads them and raises."""
    with pytest.raises(cediag.CrossEntropyInputError, match="all-targets-ignored"):  # noqa: SIM117
        with cediag.watch(sync="deferred", first=0):
            for _ in range(3):
                F.cross_entropy(torch.randn(4, 5), torch.full((4,), -100))  # NaN, unflagged yet
    entry = cediag.summary().by_rule("all-targets-ignored")[0]
    assert entry.first_call == 1 and entry.count == 3


def test_a_block_leaving_with_an_exception_still_records_deferred_findings():
    with pytest.raises(KeyError), cediag.watch(sync="deferred", first=0):
        F.cross_entropy(torch.randn(4, 5) * float("nan"), torch.zeros(4, dtype=torch.long))
        raise KeyError("the user's own error wins")
    assert cediag.summary().by_rule("non-finite-logits")


class _NoReductions(torch.Tensor):
    """A subclass whose __torch_function__ refuses the reductions a checker would run."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("aminmax", "amin", "amax", "sum", "masked_fill"):
            raise RuntimeError("this tensor refuses to be reduced")
        return super().__torch_function__(func, types, args, kwargs or {})


def test_tensor_subclasses_are_read_as_the_tensors_they_hold():
    ce = cediag.wrap(nn.CrossEntropyLoss(), first=1, every=0)  # the full check, then the sentinel
    for step in range(5):
        x, t = healthy(step)
        ce(x.detach().as_subclass(_NoReductions), t)
    bad = torch.tensor([0, 1, 2, 10] * 4)
    with pytest.raises(cediag.CrossEntropyInputError, match="target-out-of-range"):
        ce(healthy(9)[0].detach().as_subclass(_NoReductions), bad)
    assert not any("failed" in note for note in cediag.summary().notes)
