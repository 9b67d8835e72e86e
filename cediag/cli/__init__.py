"""The `cediag` command line (Typer): `check`, `rules`, `explain`, `schema`, `demo`, `run`."""

from ._app import app as app
from ._app import main as main

__all__ = ["app", "main"]
