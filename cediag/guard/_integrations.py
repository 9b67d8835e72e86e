"""What `watch()` patches: every family's entry points (`LossFamily.entry_points`), in one
table. An entry says where an implementation lives and how its arguments map onto the family's
`(input, target, options)`; the families declare them (for cross-entropy:
`cediag/families/cross_entropy/entry_points.py`).
"""

from __future__ import annotations

from ..families import all_entry_points
from ..families._declaration import EntryPoint

Target = EntryPoint  # the name the watch code and older tests use
TARGETS: tuple[EntryPoint, ...] = all_entry_points()
