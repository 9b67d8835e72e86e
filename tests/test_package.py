"""The public surface: lazy exports that stay cheap to import."""

from __future__ import annotations

import subprocess
import sys

import cediag


def test_every_public_name_resolves():
    assert sorted(cediag.__all__) == sorted(cediag._EXPORTS)
    for name in cediag.__all__:
        assert getattr(cediag, name) is not None


def test_importing_cediag_or_its_pytest_plugin_does_not_import_torch():
    code = "import sys, cediag, cediag.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
