"""The claim of docs/architecture.md: adding a loss family is one new folder under
cediag/families/ plus one registration line, and every entry point then knows it.

The test copies the package, adds a toy family for `F.multi_margin_loss` (written below as
files, the way a contributor would), adds its name to `FOLDERS`, checks that nothing else in the
copy differs from the original, and drives the family through `check`, `wrap`, `watch`, a
guard dump, `cediag check` on that dump, `cediag rules` and `cediag explain`, in a fresh
interpreter that imports the copy.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cediag

TOY = {
    "__init__.py": '''
        """A toy family: F.multi_margin_loss (class-index targets, a margin per class)."""

        from typing import Any

        from .._declaration import EntryPoint, LossFamily, Option


        def _bind(loss, input, target, options, criterion):
            from .call import MarginCall

            return MarginCall(loss, input, target, options.get("reduction", "mean"))


        def _entry_points():
            return (EntryPoint("torch.nn.functional", "multi_margin_loss", None, loss="multi_margin"),)


        FAMILY = LossFamily(
            name="multi_margin",
            title="Multi-class margin",
            prefix="MM",
            categories={"1": "Shapes", "2": "Targets"},
            losses=("multi_margin",),
            options=(Option("reduction", "mean", "str", "none, mean or sum.", "reduction"),),
            bind=_bind,
            rules="cediag.families.multi_margin.rules",
            criteria=(("torch.nn.MultiMarginLoss", "multi_margin"),),
            entry_points=_entry_points,
            docs="`F.multi_margin_loss` / `nn.MultiMarginLoss`.",
        )
    ''',
    "call.py": """
        from dataclasses import dataclass
        from typing import Any

        import torch

        from ..._call import argument_summary
        from ..._report import CallSummary


        @dataclass
        class MarginCall:
            loss: str
            input: Any
            target: Any
            reduction: Any
            autocast: bool = False

            @property
            def tensors_ok(self):
                return all(isinstance(t, torch.Tensor) for t in (self.input, self.target))

            @property
            def on_meta(self):
                return self.tensors_ok and (self.input.is_meta or self.target.is_meta)

            def summary(self):
                return CallSummary(
                    loss=self.loss,
                    input=argument_summary(self.input),
                    target=argument_summary(self.target),
                    ignore_index=None,
                    label_smoothing=None,
                    reduction=str(self.reduction),
                )

            def rejection(self):
                x, t = self.input, self.target
                if x.dim() != 2 or t.shape != (x.shape[0],):
                    return f"inconsistent target size: {list(t.shape)} for input of size: {list(x.shape)}"
                return None

            def statistics(self):
                return Plan(self) if self.tensors_ok and not self.on_meta else None

            def tensors(self):
                return {"input": self.input, "target": self.target}

            def written_options(self):
                return {"reduction": self.reduction}


        class Plan:
            def __init__(self, call):
                self.call = call

            def compute(self):
                low, high = torch.aminmax(self.call.target)
                return torch.stack((low.double(), high.double()))

            def read(self, values):
                return {"min": values[0], "max": values[1]}
    """,
    "rules.py": '''
        from ...rules._registry import Finding, rule


        @rule("MM101", "margin-shape-mismatch", "error", "final", "torch rejects the shapes")
        def shape_mismatch(ctx):
            """torch rejects the call.

            ## What it does
            Reports torch's reason.

            ## Why is this bad?
            The loss raises.

            ## Example
            ```python
            F.multi_margin_loss(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
            ```

            ## Use instead
            ```python
            F.multi_margin_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
            ```
            """
            if ctx.rejection and not ctx.has_error():
                return Finding(ctx.rejection, "give one class index per row")
            return None


        @rule("MM201", "margin-target-out-of-range", "error", "values", "a class index >= C")
        def out_of_range(ctx):
            """A target outside [0, C).

            ## What it does
            Compares the targets with the number of classes.

            ## Why is this bad?
            The loss indexes out of bounds.

            ## Example
            ```python
            F.multi_margin_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
            ```

            ## Use instead
            ```python
            F.multi_margin_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 2]))
            ```
            """
            n_classes = ctx.call.input.shape[1]
            if ctx.stats["min"] < 0 or ctx.stats["max"] >= n_classes:
                return Finding(
                    f"targets run up to {int(ctx.stats['max'])}, outside [0, {n_classes})",
                    f"remap the labels into 0..{n_classes - 1}",
                )
            return None
    ''',
}

SCRIPT = """
import json, subprocess, sys, warnings
import torch, torch.nn.functional as F
import cediag

assert cediag.__file__.startswith(sys.argv[1]), cediag.__file__
x, good, bad = torch.randn(8, 3), torch.randint(0, 3, (8,)), torch.tensor([0, 1, 2, 3] * 2)

# check(): the loss name, the rules, the safety net, the criterion's class
assert cediag.check(x, good, loss="multi_margin").ok
report = cediag.check(x, bad, loss="multi_margin")
assert [d.code for d in report.diagnostics] == ["MM201"], report
assert cediag.check(x, good[:5], loss="multi_margin").diagnostics[0].code == "MM101"
assert cediag.check(x, bad, criterion=torch.nn.MultiMarginLoss()).diagnostics[0].code == "MM201"

# wrap(): the loss inferred from the family's entry point; a dump of the failing call
guarded = cediag.wrap(F.multi_margin_loss, on_error="warn", dump_dir=sys.argv[2])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    guarded(x, good)
    try:
        guarded(x, bad)  # warned before the kernel, which then raises its own error
    except RuntimeError:
        pass
assert [w.message.diagnostic.code for w in caught] == ["MM201"], caught

# watch(): the entry point patched for the block
with cediag.watch(on_error="raise"):
    F.multi_margin_loss(x, good)
    try:
        F.multi_margin_loss(x, bad)
    except cediag.CrossEntropyInputError as error:
        assert error.report.diagnostics[0].code == "MM201"
    else:
        raise AssertionError("watch() did not check F.multi_margin_loss")
print("ok")
"""


def _copy_with_toy_family(root: Path) -> Path:
    source = Path(cediag.__file__).parent
    copy = root / "cediag"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    folder = copy / "families" / "multi_margin"
    folder.mkdir()
    for name, text in TOY.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    registry = copy / "families" / "__init__.py"
    text = registry.read_text()
    assert text.count('    "linear_cross_entropy",\n') == 1
    registry.write_text(
        text.replace(
            '    "linear_cross_entropy",\n', '    "linear_cross_entropy",\n    "multi_margin",\n'
        )
    )
    return copy


def _differences(left: Path, right: Path) -> list[str]:
    """Files that differ or exist on one side only, below two folders (caches skipped)."""
    found: list[str] = []
    compare = filecmp.dircmp(left, right, ignore=["__pycache__"])

    def walk(cmp: filecmp.dircmp, prefix: str) -> None:
        found.extend(prefix + name for name in cmp.left_only + cmp.right_only + cmp.diff_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(compare, "")
    return sorted(found)


def test_a_family_is_one_folder_plus_one_registration_line(tmp_path):
    copy = _copy_with_toy_family(tmp_path / "pkg")
    assert _differences(Path(cediag.__file__).parent, copy) == [
        "families/__init__.py",
        "families/multi_margin",
    ]
    original = (Path(cediag.__file__).parent / "families" / "__init__.py").read_text()
    changed = (copy / "families" / "__init__.py").read_text()
    assert len(changed.splitlines()) == len(original.splitlines()) + 1

    # Run from tmp_path: the current folder comes first on sys.path, before PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "pkg")}
    dumps = tmp_path / "dumps"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(copy), str(dumps)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cediag", *args],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False,
        )  # fmt: skip

    dump = next(dumps.glob("*.safetensors"))
    checked = cli("check", str(dump), "--format", "json")
    assert checked.returncode == 1, checked.stderr
    assert '"MM201"' in checked.stdout and '"multi_margin"' in checked.stdout
    listed = cli("rules")
    assert listed.returncode == 0 and "MM101" in listed.stdout and "MM201" in listed.stdout
    explained = cli("explain", "MM201")
    assert explained.returncode == 0 and "Compares the targets" in explained.stdout
    loss_option = cli("check", str(dump), "--loss", "multi_margin")
    assert loss_option.returncode == 1, loss_option.stderr
