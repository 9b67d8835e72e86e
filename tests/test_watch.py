"""watch(): every F.cross_entropy / nn.CrossEntropyLoss / F.nll_loss call in the block is
checked; nesting, threads, and restoring torch afterwards."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cediag
from cediag.guard import watching

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


# ---------------------------------------------------------------- leaving restores only ours


def _their_patch(function):
    """Another tool's patch: a wrapper that calls what it replaced."""

    def theirs(*args, **kwargs):
        theirs.calls += 1
        return function(*args, **kwargs)

    theirs.calls = 0
    return theirs


def test_leaving_keeps_a_patch_installed_inside_the_block():
    with cediag.watch():
        theirs = _their_patch(F.cross_entropy)
        F.cross_entropy = theirs
        with pytest.raises(cediag.CrossEntropyInputError):  # ours still runs under theirs
            F.cross_entropy(probs(), labels())
    try:
        assert F.cross_entropy is theirs
        F.cross_entropy(probs(), labels())  # ours, still in their chain, passes through
        assert cediag.summary().calls == 1 and theirs.calls == 2
        with cediag.watch(on_error="log"):  # a new block wraps theirs: one check per call
            assert F.cross_entropy is not theirs
            F.cross_entropy(probs(), labels())
        assert F.cross_entropy is theirs
        assert cediag.summary().by_rule("CE301")[-1].count == 1
        assert cediag.summary().calls == 2
    finally:
        F.cross_entropy = ORIGINAL_CE


def test_leaving_keeps_the_original_another_tool_put_back():
    with cediag.watch():
        F.cross_entropy = ORIGINAL_CE  # a tool that saved torch's function restores it
    assert F.cross_entropy is ORIGINAL_CE


def test_our_function_put_back_elsewhere_is_unwrapped_on_leaving():
    """A tool that saved our function inside the block and assigns it again later (Liger's
    monkey patch does this with its own function) leaves no wrapper of ours after the block."""
    with cediag.watch():
        saved = F.cross_entropy
        F.nll_loss = saved  # our cross_entropy wrapper, assigned to another name we patch
    assert F.cross_entropy is ORIGINAL_CE
    assert F.nll_loss is ORIGINAL_CE  # unwrapped to what the tool meant
    F.nll_loss = ORIGINAL_NLL
    with cediag.watch():
        F.cross_entropy = saved  # our old function put back inside a later block
    assert F.cross_entropy is ORIGINAL_CE


def test_repeated_blocks_do_not_stack_wrappers():
    for _ in range(20):
        with cediag.watch():
            inner = F.cross_entropy
            assert inner.__cediag_original__ is ORIGINAL_CE
    assert F.cross_entropy is ORIGINAL_CE


# ---------------------------------------------------------------- interrupts, tasks, decorators


def _state_is_clean():
    from cediag.guard import _watch
    from cediag.guard._guard import _IN_LOSS

    return {
        "F.cross_entropy restored": F.cross_entropy is ORIGINAL_CE,
        "F.nll_loss restored": F.nll_loss is ORIGINAL_NLL,
        "not watching": not watching(),
        "no open block": not getattr(_watch, "_OPEN", ()),
        "no patch recorded": not getattr(_watch, "_PATCHES", ()),
        "import hook removed": getattr(_watch, "_HOOK", None) not in sys.meta_path,
        "not inside a loss": not _IN_LOSS.get(),
    }


def _blocks(x, t):
    # enabled=False: the calls go through our functions, not through the (untraced) checker.
    with cediag.watch(enabled=False):
        F.cross_entropy(x, t)
        with cediag.watch(enabled=False):
            F.nll_loss(x, t)
        F.cross_entropy(x, t)


def _interrupt_at(n: int, files: tuple[str, ...], run) -> bool:
    """Run `run()` with a KeyboardInterrupt raised at the nth line event in `files`; True when it
    was raised. (The tracer is unset by Python once it raises, as after a real interrupt.)"""
    seen = 0

    def tracer(frame, event, arg):
        nonlocal seen
        if frame.f_code.co_filename not in files:
            return None
        if event == "line":
            seen += 1
            if seen == n:
                raise KeyboardInterrupt
        return tracer

    sys.settrace(tracer)
    try:
        run()
    except KeyboardInterrupt:
        return True
    finally:
        sys.settrace(None)
    return False


def test_an_interrupt_at_any_line_of_entering_or_leaving_leaves_nothing_behind():
    files = tuple(
        module.__file__
        for name in ("cediag.guard._watch", "cediag.guard._integrations")
        if (module := sys.modules.get(name)) is not None
    )
    x, t = torch.randn(8, 5), labels()
    interrupted = 0
    n = 1
    while _interrupt_at(n, files, lambda: _blocks(x, t)):
        interrupted += 1
        state = _state_is_clean()
        assert all(state.values()), (n, state)
        n += 1
    assert interrupted > 50  # every line event of both files on that path, each in turn
    with cediag.watch(), pytest.raises(cediag.CrossEntropyInputError):  # and it still works
        F.cross_entropy(probs(), labels())
    assert all(_state_is_clean().values())


def test_watch_left_in_another_asyncio_task():
    cm = cediag.watch()
    seen = {}

    async def main():
        entered, left = asyncio.Event(), asyncio.Event()

        async def enter_and_stay():
            cm.__enter__()
            seen["inside"] = watching()
            entered.set()
            await left.wait()
            seen["after"] = watching()
            F.cross_entropy(probs(), labels())  # the block is closed: not checked

        async def leave():
            await entered.wait()
            cm.__exit__(None, None, None)
            left.set()

        await asyncio.gather(enter_and_stay(), leave())

    asyncio.run(main())
    assert seen == {"inside": True, "after": False}
    assert all(_state_is_clean().values())
    assert cediag.summary().calls == 0


def test_watch_as_a_decorator_opens_a_block_per_call():
    @cediag.watch(on_error="warn")
    def step(depth):
        assert watching()
        if depth:
            step(depth - 1)
        F.cross_entropy(probs(), labels())

    with pytest.warns(cediag.CediagWarning):
        step(2)
    assert all(_state_is_clean().values())
    assert cediag.summary().calls == 3


def test_a_watch_object_cannot_be_entered_twice_at_once():
    cm = cediag.watch()
    with cm:
        with pytest.raises(RuntimeError, match="already open"), cm:
            pass
        assert watching()
    with cm:  # once left, it can be entered again
        assert watching()
    assert all(_state_is_clean().values())


# ---------------------------------------------------------------- a target imported in the block

LOSS_MODULE = """
import torch.nn.functional as F


def scaled_ce(input, target, weight=None, ignore_index=-100, reduction="mean"):
    return 2 * F.cross_entropy(input, target, weight, ignore_index=ignore_index, reduction=reduction)
"""


@pytest.fixture
def loss_module(tmp_path, monkeypatch):
    """A loss module on sys.path, not yet imported, made a target of watch() by one entry."""
    from cediag.guard import _watch
    from cediag.guard._integrations import Target

    name = "cediag_test_scaled_ce"
    (tmp_path / f"{name}.py").write_text(LOSS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    targets = (*_watch.TARGETS, Target(name, "scaled_ce", None, library="test"))
    monkeypatch.setattr(_watch, "TARGETS", targets)
    monkeypatch.setattr(_watch._ImportHook, "modules", frozenset(t.module for t in targets))
    sys.modules.pop(name, None)
    yield name
    sys.modules.pop(name, None)


def test_a_target_imported_inside_the_block_is_patched_until_it_ends(loss_module):
    import importlib

    with cediag.watch():
        module = importlib.import_module(loss_module)
        ours = module.scaled_ce
        assert ours.__cediag_watch__ is True
        with pytest.raises(cediag.CrossEntropyInputError, match="softmax-applied"):
            module.scaled_ce(probs(), labels())
        module.scaled_ce(torch.randn(8, 5), labels())
    assert module.scaled_ce is ours.__cediag_original__
    assert module.__loader__ is module.__spec__.loader
    assert type(module.__loader__).__name__ == "SourceFileLoader"  # not a loader of ours
    assert cediag.summary().calls == 2  # its own F.cross_entropy call is not checked again
    sys.modules.pop(loss_module)
    assert not hasattr(importlib.import_module(loss_module).scaled_ce, "__cediag_watch__")


def test_an_interrupt_while_a_target_is_imported_leaves_nothing_behind(loss_module):
    import importlib

    files = tuple(
        sys.modules[name].__file__ for name in ("cediag.guard._watch", "cediag.guard._integrations")
    )
    x, t = torch.randn(8, 5), labels()

    def run():
        sys.modules.pop(loss_module, None)
        with cediag.watch(enabled=False):
            importlib.import_module(loss_module).scaled_ce(x, t)

    n = 1
    while _interrupt_at(n, files, run):
        state = _state_is_clean()
        module = sys.modules.get(loss_module)
        state["target restored"] = module is None or not hasattr(
            module.scaled_ce, "__cediag_watch__"
        )
        assert all(state.values()), (n, state)
        n += 1
    assert n > 50
