"""wrap / checked: findings before the loss runs, each on_error mode, the schedule,
de-duplication, configure / CEDIAG_DISABLE, reproducer dumps, and transparency."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

import cediag
from cediag.guard import _guard as guard_module
from cediag.guard._config import GuardOptions


@pytest.fixture(autouse=True)
def _fresh_summary():
    cediag.summary(clear=True)
    yield
    cediag.summary(clear=True)


def logits(n=8, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, requires_grad=True)


def labels(n=8, c=5, seed=1):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- entry points


def test_wrap_raises_before_torch_on_out_of_range_target():
    ce = cediag.wrap(nn.CrossEntropyLoss())
    t = labels()
    t[3] = 9
    with pytest.raises(cediag.CrossEntropyInputError) as info:
        ce(logits(), t)
    finding = info.value.report.by_rule("target-out-of-range")
    assert finding is not None and finding.severity is cediag.Severity.error
    assert "test_guard.py" in info.value.report.source  # the user's line, not torch's


def test_wrap_takes_options_from_the_module():
    t = labels()
    t[:2] = 255
    ce = cediag.wrap(nn.CrossEntropyLoss(ignore_index=255))
    ce(logits(), t)  # 255 is ignored by this criterion: no finding
    assert cediag.summary().entries == []


def test_wrap_keeps_module_identity_attributes_and_state_dict():
    weight = torch.rand(5)
    plain = nn.CrossEntropyLoss(weight=weight, ignore_index=255)
    keys = list(plain.state_dict())
    ce = cediag.wrap(plain)
    assert ce is plain and isinstance(ce, nn.CrossEntropyLoss)
    assert ce.ignore_index == 255 and ce.weight is weight
    assert list(ce.state_dict()) == keys
    cediag.unwrap(ce)
    assert "forward" not in ce.__dict__


def test_checked_binds_arguments_by_position_and_name():
    @cediag.checked(budget=None)  # three calls in a row: check each one
    def loss_fn(logits, labels, ignore_index=-100):
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)

    bad = labels()
    bad[0] = 7
    for call in (
        lambda: loss_fn(logits(), bad),
        lambda: loss_fn(labels=bad, logits=logits()),
    ):
        with pytest.raises(cediag.CrossEntropyInputError):
            call()
    ok = labels()
    ok[0] = 7
    loss_fn(logits(), ok, ignore_index=7)  # the option is read from the call


def test_checked_with_options_and_argument_names():
    @cediag.checked(on_error="warn", input_arg="scores", target_arg="y")
    def loss_fn(y, scores):
        return F.cross_entropy(scores, y)

    with pytest.warns(cediag.CediagWarning, match="softmax-applied"):
        loss_fn(labels(), logits().softmax(1))


def test_wrap_nll_loss_flags_raw_logits():
    nll = cediag.wrap(nn.NLLLoss(), on_error="warn")
    with pytest.warns(cediag.CediagWarning, match="CE309 logits-to-nll"):
        nll(logits() * 3, labels())


def test_wrap_rejects_unknown_options():
    with pytest.raises(TypeError, match="on_eror"):
        cediag.wrap(nn.CrossEntropyLoss(), on_eror="warn")
    with pytest.raises(ValueError, match="on_error"):
        cediag.wrap(nn.CrossEntropyLoss(), on_error="explode")


# ---------------------------------------------------------------- on_error / fail_on


def test_on_error_warn_points_at_the_call_site_and_lets_the_loss_run():
    ce = cediag.wrap(nn.CrossEntropyLoss(), on_error="warn")
    with pytest.warns(cediag.CediagWarning) as record:
        loss = ce(logits().softmax(1), labels())
    assert torch.isfinite(loss)
    warning = record[0]
    assert warning.filename == __file__
    assert warning.message.diagnostic.code == "CE301"
    assert "fix: remove the softmax" in str(warning.message)


def test_on_error_log(caplog):
    ce = cediag.wrap(nn.CrossEntropyLoss(), on_error="log")
    with caplog.at_level(logging.WARNING, logger="cediag"):
        ce(logits().softmax(1), labels())
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "CE301 softmax-applied" in caplog.records[0].getMessage()


def test_warnings_do_not_raise_unless_fail_on_warning():
    x = logits().sigmoid()  # CE304 sigmoid-applied: a warning
    with pytest.warns(cediag.CediagWarning, match="sigmoid-applied"):
        cediag.wrap(nn.CrossEntropyLoss())(x, labels())
    cediag.summary(clear=True)
    with pytest.raises(cediag.CrossEntropyInputError, match="sigmoid-applied"):
        cediag.wrap(nn.CrossEntropyLoss(), fail_on="warning")(x, labels())


# ---------------------------------------------------------------- schedule / de-dup


def test_schedule_full_checks():
    opts = GuardOptions(first=3, every=5)
    assert [n for n in range(1, 20) if opts.full_check(n)] == [1, 2, 3, 8, 13, 18]
    assert [n for n in range(1, 6) if GuardOptions(every=1).full_check(n)] == [1, 2, 3, 4, 5]


def test_data_fault_after_the_first_calls_is_caught_on_the_call_it_appears():
    ce = cediag.wrap(nn.CrossEntropyLoss(), first=2, every=3)
    bad = labels()
    bad[0] = 9
    outcome = []
    for step in range(1, 9):
        try:
            ce(logits(), bad if step >= 4 else labels())
            outcome.append("ok")
        except cediag.CrossEntropyInputError:
            outcome.append("cediag")
        except IndexError:  # torch's own error: cediag let that call through
            outcome.append("torch")
    # Full checks on calls 1, 2 (first=2), 5, 8 (every 3rd); the per-call check on the others
    # sees the bad label on call 4 and answers with a full check on that same call.
    assert outcome == ["ok", "ok", "ok"] + ["cediag"] * 5
    summary = cediag.summary()
    assert summary.calls == 8 and summary.values_checked == 8
    assert summary.by_rule("CE206")[0].count == 5


class _Clock:
    """perf_counter for the guard: every reading advances `step` seconds, so each check the
    guard times takes a known while; `now += ...` lets wall time pass between calls."""

    def __init__(self, step: float):
        self.now, self.step = 100.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _outcomes(ce, batches) -> list[str]:
    outcome = []
    for x, t in batches:
        try:
            ce(x, t)
            outcome.append("ok")
        except cediag.CrossEntropyInputError:
            outcome.append("cediag")
        except IndexError:  # torch's own error: cediag let that call through
            outcome.append("torch")
    return outcome


def test_a_user_set_budget_lets_repeats_through_until_time_has_passed(monkeypatch):
    clock = _Clock(step=1e-3)  # a check takes 1 ms; the budget is 0.2% of the time since
    monkeypatch.setattr(guard_module, "perf_counter", clock)
    ce = cediag.wrap(nn.CrossEntropyLoss(), budget=0.002)
    bad = labels()
    bad[0] = 9
    # Over budget after the first check: the next call reads the clock and lets it through,
    # and so do the _LET_THROUGH after it, without reading the clock.
    repeats = 1 + guard_module._LET_THROUGH
    assert _outcomes(ce, [(logits(), bad)] * (1 + repeats)) == ["cediag"] + ["torch"] * repeats
    clock.now += 1.0  # 1 s later, 2 ms of budget: the next call is checked again
    assert _outcomes(ce, [(logits(), bad)]) == ["cediag"]
    summary = cediag.summary()
    assert (summary.calls, summary.checked, summary.let_through) == (repeats + 2, 2, repeats)
    first_line = str(summary).splitlines()[0]
    assert f"{repeats} NOT checked (let through to stay within the overhead budget)" in first_line


def test_budget_still_checks_the_first_call_from_a_new_line(monkeypatch):
    monkeypatch.setattr(guard_module, "perf_counter", _Clock(step=1e-3))
    ce = cediag.wrap(nn.CrossEntropyLoss(), budget=0.002)
    ce(logits(), labels())  # the training line: checked, and the budget is spent
    bad = labels()
    bad[0] = 9
    with pytest.raises(cediag.CrossEntropyInputError, match="target-out-of-range"):
        ce(logits(), bad)  # another line (an eval loop, say): its first call is checked


def test_default_options_check_every_call_however_slow_the_check(monkeypatch):
    monkeypatch.setattr(guard_module, "perf_counter", _Clock(step=1.0))  # a second per check
    bad = labels()
    bad[0] = 9
    for ce in (
        cediag.wrap(nn.CrossEntropyLoss()),
        cediag.wrap(nn.CrossEntropyLoss(), every=1),
        cediag.wrap(nn.CrossEntropyLoss(), budget=None),
    ):
        assert _outcomes(ce, [(logits(), bad)] * 30) == ["cediag"] * 30
    assert cediag.summary().let_through == 0


def test_budget_option_values():
    assert GuardOptions().budget_fraction is None
    assert GuardOptions(budget="auto").budget_fraction is None  # the 0.1 spelling of the default
    assert GuardOptions(every=1, budget=0.01).budget_fraction == 0.01
    assert GuardOptions(budget=None).budget_fraction is None
    for bad in (0, -0.1, 1.5, "1%", True):
        with pytest.raises(ValueError, match="budget"):
            GuardOptions(budget=bad)


def test_structure_checks_run_on_every_call():
    ce = cediag.wrap(nn.CrossEntropyLoss(), first=1, every=0)
    ce(logits(), labels())
    with pytest.raises(cediag.CrossEntropyInputError, match="batch-size-mismatch"):
        ce(logits(8), labels(6))


def test_same_finding_at_same_site_is_reported_once_with_a_count():
    ce = cediag.wrap(nn.CrossEntropyLoss(), on_error="warn", budget=None)
    x = logits().softmax(1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(5):
            ce(x, labels())
    assert len([w for w in record if issubclass(w.category, cediag.CediagWarning)]) == 1
    (entry,) = cediag.summary().entries
    assert (entry.code, entry.count, entry.first_call) == ("CE301", 5, 1)
    assert "5 calls" in str(cediag.summary())


# ---------------------------------------------------------------- configure / disable


def test_configure_sets_a_context_local_default():
    ce = cediag.wrap(nn.CrossEntropyLoss())
    with cediag.configure(on_error="warn"), pytest.warns(cediag.CediagWarning):
        ce(logits().softmax(1), labels())
    cediag.summary(clear=True)
    with pytest.raises(cediag.CrossEntropyInputError):
        ce(logits().softmax(1), labels())


def test_entry_point_options_win_over_configure():
    ce = cediag.wrap(nn.CrossEntropyLoss(), on_error="raise")
    with cediag.configure(on_error="warn"), pytest.raises(cediag.CrossEntropyInputError):
        ce(logits().softmax(1), labels())


def test_cediag_disable_turns_everything_off(monkeypatch):
    ce = cediag.wrap(nn.CrossEntropyLoss())
    monkeypatch.setenv("CEDIAG_DISABLE", "1")
    ce(logits().softmax(1), labels())
    assert cediag.summary().calls == 0
    monkeypatch.setenv("CEDIAG_DISABLE", "yes")
    with pytest.raises(ValueError, match="CEDIAG_DISABLE"):
        ce(logits(), labels())


# ---------------------------------------------------------------- dumps


def test_failing_check_writes_a_reproducer(tmp_path):
    ce = cediag.wrap(
        nn.CrossEntropyLoss(weight=torch.ones(5), label_smoothing=0.1),
        dump_dir=tmp_path,
        budget=None,
    )
    t = labels()
    t[2] = 6
    errors = []
    for _ in range(3):  # the same site: one reproducer, not one per step
        with pytest.raises(cediag.CrossEntropyInputError) as info:
            ce(logits(), t)
        errors.append(info.value)
    (path,) = tmp_path.glob("*.safetensors")
    assert "reproducer saved" not in str(errors[1])
    info = pytest.ExceptionInfo.from_exc_info((type(errors[0]), errors[0], None))
    assert f"reproducer saved to {path}" in str(info.value)
    tensors = load_file(path)
    assert set(tensors) == {"input", "target", "weight"}
    assert torch.equal(tensors["target"], t)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["cediag_dump"] == "1" and meta["loss"] == "cross_entropy"
    assert meta["ignore_index"] == "-100" and float(meta["label_smoothing"]) == pytest.approx(0.1)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["schema_version"] == 1
    assert sidecar["options"]["reduction"] == "mean"
    assert "test_guard.py:" in sidecar["call_site"]
    assert sidecar["report"]["diagnostics"][0]["code"] == "CE206"
    assert cediag.check(tensors["input"], tensors["target"]).by_rule("CE206") is not None
    assert cediag.summary().entries[0].dump == str(path)


def test_dumps_are_capped_per_process_and_the_summary_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(guard_module, "MAX_DUMPS", 3)
    bad = labels()
    bad[0] = 9
    for line in range(5):  # five call sites (five wrapped losses, each its own line)
        ce = cediag.wrap(nn.CrossEntropyLoss(), dump_dir=tmp_path, on_error="warn")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(IndexError):
                exec(f"{chr(10) * line}ce(x, t)", {"ce": ce, "x": logits(), "t": bad})
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
    summary = cediag.summary()
    assert any("3 were saved already in this process (the cap)" in n for n in summary.notes)
    assert len(summary.entries) == 5  # every finding is still counted


def test_dump_names_carry_the_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    ce = cediag.wrap(nn.CrossEntropyLoss(), dump_dir=tmp_path, on_error="warn")
    bad = labels()
    bad[0] = 9
    with warnings.catch_warnings(), contextlib.suppress(IndexError):
        warnings.simplefilter("ignore")
        ce(logits(), bad)
    (path,) = tmp_path.glob("*.safetensors")
    assert path.stem.endswith("-rank3")


def test_two_losses_on_one_line_are_two_sites(tmp_path):
    """Each warns and dumps on its own: they are different calls that share a line."""
    first = cediag.wrap(nn.CrossEntropyLoss(), on_error="warn", dump_dir=tmp_path)
    second = cediag.wrap(nn.CrossEntropyLoss(), on_error="warn", dump_dir=tmp_path)
    x = logits().softmax(1)
    with pytest.warns(cediag.CediagWarning) as record:
        first(x, labels()), second(x, labels())
    assert [str(w.message).split()[0] for w in record] == ["CE301", "CE301"]
    entries = cediag.summary().by_rule("CE301")
    assert len(entries) == 2 and entries[0].site == entries[1].site
    assert entries[0].column != entries[1].column
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # one reproducer each
    assert f"{entries[0].site}:{entries[0].column}" in str(cediag.summary())


@pytest.mark.parametrize(
    ("options", "written"),
    [({"label_smoothing": "x"}, "x"), ({"ignore_index": 3.0}, 3.0)],
)
def test_invalid_options_are_dumped_as_given_so_a_recheck_agrees(tmp_path, options, written):
    ce = cediag.wrap(F.cross_entropy, dump_dir=tmp_path, on_error="warn")
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        ce(logits(), labels(), **options)
    (path,) = tmp_path.glob("*.safetensors")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    name = next(iter(options))
    assert sidecar["options"][name] == written
    saved = cediag.load(str(path))
    report = cediag.check(**saved.check_kwargs())
    assert report.by_rule("invalid-option") is not None, str(report)


# ---------------------------------------------------------------- transparency


def test_bit_identical_loss_and_gradients():
    ce_plain = nn.CrossEntropyLoss(label_smoothing=0.05)
    ce_guarded = cediag.wrap(nn.CrossEntropyLoss(label_smoothing=0.05), every=1)
    x1, x2 = logits(64, 10), logits(64, 10)
    t = labels(64, 10)
    t_before = t.clone()
    loss1, loss2 = ce_plain(x1, t), ce_guarded(x2, t)
    loss1.backward()
    loss2.backward()
    assert torch.equal(loss1, loss2)
    assert torch.equal(x1.grad, x2.grad)
    assert torch.equal(t, t_before)


def test_the_loss_receives_the_very_same_objects():
    seen = []

    def spy(input, target, **kwargs):
        seen.append((input, target))
        return F.cross_entropy(input, target)

    x, t = logits(), labels()
    cediag.wrap(spy)(x, t)
    assert seen[0][0] is x and seen[0][1] is t


def test_autocast_and_no_grad():
    model = nn.Linear(6, 5)
    ce = cediag.wrap(nn.CrossEntropyLoss())
    x, t = torch.randn(8, 6), labels()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        guarded = ce(model(x), t)
        plain = F.cross_entropy(model(x), t)
    assert torch.equal(guarded, plain)
    with (
        torch.no_grad(),
        torch.autocast("cpu", dtype=torch.bfloat16),
        pytest.raises(cediag.CrossEntropyInputError, match="softmax-applied"),
    ):
        ce(model(x).float().softmax(1), t)


@pytest.mark.slow
def test_torch_compile_fullgraph_skips_the_check():
    torch._dynamo.reset()
    ce = cediag.wrap(nn.CrossEntropyLoss())
    model = nn.Linear(6, 5)

    @torch.compile(fullgraph=True, backend="eager")
    def step(x, t):
        return ce(model(x), t)

    x, t = torch.randn(8, 6), labels()
    assert torch.allclose(step(x, t), F.cross_entropy(model(x), t))
    with cediag.watch():

        @torch.compile(fullgraph=True, backend="eager")
        def watched_step(x, t):
            return F.cross_entropy(model(x), t)

        assert torch.allclose(watched_step(x, t), F.cross_entropy(model(x), t))


# ---------------------------------------------------------------- sync modes


def test_deferred_on_meta_never_reads_data():
    ce = cediag.wrap(F.cross_entropy, sync="deferred", every=1)
    x = torch.empty(16, 10, device="meta", requires_grad=True)
    t = torch.empty(16, dtype=torch.long, device="meta")
    for _ in range(5):
        loss = ce(x, t)  # any host read of a meta tensor raises
    assert loss.is_meta
    summary = cediag.summary()
    assert summary.calls == 5 and summary.ok


def test_deferred_finding_is_read_at_summary_and_raised_on_next_call():
    ce = cediag.wrap(nn.CrossEntropyLoss(), sync="deferred")
    x = logits() * 0 + torch.linspace(0, 1, 5)  # fine structurally
    bad = labels()
    bad[0] = -3
    with pytest.raises(IndexError):  # eager torch: the deferred check has not been read yet
        ce(x, bad)
    with pytest.raises(cediag.CrossEntropyInputError, match="target-out-of-range"):
        ce(x, labels())
    assert cediag.summary().by_rule("CE206")[0].count == 1


def test_deferred_findings_appear_in_summary():
    ce = cediag.wrap(nn.CrossEntropyLoss(), sync="deferred", on_error="warn")
    ce(logits().softmax(1).detach(), labels())
    with pytest.warns(cediag.CediagWarning, match="softmax-applied"):
        summary = cediag.summary()
    assert [e.code for e in summary.entries] == ["CE301"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_deferred_on_cuda_makes_no_host_sync():
    ce = cediag.wrap(nn.CrossEntropyLoss(), sync="deferred", every=1)
    x = torch.randn(64, 10, device="cuda", requires_grad=True)
    t = torch.randint(0, 10, (64,), device="cuda")
    ce(x, t)  # warm-up: first-call allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            ce(x, t).backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert cediag.summary().ok


def test_dump_round_trips_through_cediag_load(tmp_path):
    io = pytest.importorskip("cediag._io", reason="cediag.load lives in the CLI's reader module")
    nll = cediag.wrap(nn.NLLLoss(ignore_index=255), dump_dir=tmp_path, on_error="warn")
    t = labels()
    t[1] = 9  # out of range, and not the ignored 255
    # torch raises its own IndexError after the warning
    with (
        pytest.warns(cediag.CediagWarning, match="target-out-of-range"),
        contextlib.suppress(IndexError),
    ):
        nll(logits().log_softmax(1), t)
    (path,) = tmp_path.glob("*.safetensors")
    saved = io.load(path)
    assert torch.equal(saved.target, t)
    assert saved.options["ignore_index"] == 255 and saved.options["loss"] == "nll"
    report = cediag.check(**saved.check_kwargs())
    assert report.by_rule("CE206") is not None


def test_structure_checks_on_repeated_shapes_are_skipped_but_new_shapes_are_checked():
    criterion = cediag.wrap(torch.nn.CrossEntropyLoss(), first=1, every=0, on_error="raise")
    x, t = torch.randn(8, 5), torch.randint(0, 5, (8,))
    for _ in range(3):
        criterion(x, t)  # structure passes once, then the signature is remembered
    with pytest.raises(cediag.CrossEntropyInputError) as raised:
        criterion(torch.randn(8, 5), torch.randint(0, 5, (7,)))  # a new shape: checked again
    assert raised.value.report.by_rule("batch-size-mismatch")


@pytest.mark.parametrize(
    "make",
    [
        lambda: cediag.wrap(nn.CrossEntropyLoss(), select=["CE999"]),
        lambda: cediag.checked(select="CE999")(F.cross_entropy),
        lambda: cediag.watch(ignore=["softmax-aplied"]).__enter__(),
        lambda: cediag.configure(select=["CE999"]),
    ],
)
def test_a_typo_in_select_or_ignore_raises_instead_of_switching_checks_off(make):
    with pytest.raises(ValueError, match="matches no rule") as info:
        make()
    assert "did you mean" in str(info.value)


def test_check_raises_on_a_select_typo_too():
    with pytest.raises(ValueError, match="CE999: matches no rule"):
        cediag.check(logits(), labels(), select=["CE999"])


def test_a_raised_finding_shows_the_users_frame_not_the_guards_internals():
    import traceback

    ce = cediag.wrap(nn.CrossEntropyLoss())
    bad = labels()
    bad[0] = 9
    with pytest.raises(cediag.CrossEntropyInputError) as info:
        ce(logits(), bad)
    frames = traceback.extract_tb(info.value.__traceback__)
    ours = [f for f in frames if "/cediag/" in f.filename.replace("\\\\", "/")]
    assert frames[0].filename == __file__  # the user's line comes first
    assert len(ours) <= 2, [f"{f.filename}:{f.name}" for f in ours]  # the entry point and one more
