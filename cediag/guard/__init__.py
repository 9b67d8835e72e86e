"""Guard a training loop: check loss calls as they happen (`wrap`, `checked`, `watch`)."""

from ._config import GuardOptions as GuardOptions
from ._config import configure as configure
from ._guard import CediagWarning as CediagWarning
from ._guard import summary as summary
from ._summary import GuardSummary as GuardSummary
from ._summary import SummaryEntry as SummaryEntry
from ._watch import watch as watch
from ._watch import watching as watching
from ._wrap import checked as checked
from ._wrap import unwrap as unwrap
from ._wrap import wrap as wrap

__all__ = [
    "CediagWarning",
    "GuardOptions",
    "GuardSummary",
    "SummaryEntry",
    "checked",
    "configure",
    "summary",
    "unwrap",
    "watch",
    "watching",
    "wrap",
]
