"""What guarded losses found over a run, without repeating itself.

A finding is keyed by (call site, rule code): the first occurrence is reported, later ones only
raise its count. `cediag.summary()` returns the whole table as data (pydantic) that prints as text.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, computed_field

from .._report import Diagnostic, Severity


class SummaryEntry(BaseModel):
    """One finding at one call site, with how often it was seen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site: str  # "train.py:42"
    column: int = 0  # where the call starts on the line (two losses on one line)
    code: str
    rule: str
    severity: Severity
    message: str  # from the first occurrence
    fix: str
    count: int
    first_call: int  # call number at that site when it was first seen
    dump: str | None = None  # reproducer path, when one was written


class GuardSummary(BaseModel):
    """Every finding of the guarded calls since the start (or the last `clear`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    calls: int = 0  # guarded calls seen
    checked: int = 0  # calls that got the full check (every rule)
    values_checked: int = 0  # calls whose values were read: by the per-call check or in full
    let_through: int = 0  # calls a user-set overhead budget let through unchecked
    entries: list[SummaryEntry] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not any(e.severity is Severity.error for e in self.entries)

    def at_least(self, level: Severity | str) -> list[SummaryEntry]:
        rank = Severity(level).rank
        return [e for e in self.entries if e.severity.rank >= rank]

    def by_rule(self, rule: str) -> list[SummaryEntry]:
        return [e for e in self.entries if rule in (e.code, e.rule)]

    def __str__(self) -> str:
        head = f"cediag: {self.calls} loss calls guarded"
        if self.let_through:
            head += (
                f", {self.let_through} NOT checked (let through to stay within the overhead budget)"
            )
        head += f", {self.checked} fully checked"
        metadata_only = self.calls - self.let_through - self.values_checked
        if metadata_only:
            head += f", {metadata_only} with shapes and options only (values not readable)"
        if not self.entries:
            lines = [f"{head}; no findings"]
        else:
            lines = [f"{head}; {len(self.entries)} finding(s):"]
            lines_seen = Counter((e.site, e.code) for e in self.entries)
            for e in self.entries:
                times = "1 call" if e.count == 1 else f"{e.count} calls"
                # two losses on one line: the column tells them apart
                where = e.site if lines_seen[e.site, e.code] == 1 else f"{e.site}:{e.column}"
                lines.append(f"  {e.severity.value:<7} {e.code} {e.rule} at {where} ({times})")
                lines.append(f"          {e.message}")
                lines.append(f"          fix: {e.fix}")
                if e.dump:
                    lines.append(f"          reproducer: {e.dump}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


@dataclass
class _Record:
    diagnostic: Diagnostic
    count: int
    first_call: int
    dump: str | None = None


@dataclass
class Collector:
    """Process-wide table of findings (thread-safe)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    records: dict[tuple[tuple[str, int], str], _Record] = field(default_factory=dict)
    dumps: int = 0  # reproducers saved
    calls: int = 0  # calls checked, let-through ones not included
    checked: int = 0
    values_checked: int = 0
    let_through: int = 0
    notes: dict[str, None] = field(default_factory=dict)  # ordered set

    def count_call(self, values: bool) -> None:
        with self.lock:
            self.calls += 1
            self.values_checked += values

    def count_full(self) -> None:
        with self.lock:
            self.checked += 1

    def count_let_through(self) -> None:
        with self.lock:
            self.let_through += 1

    def take_dump_slot(self, cap: int) -> bool:
        """Count one reproducer about to be saved; False once `cap` were saved."""
        with self.lock:
            if self.dumps >= cap:
                return False
            self.dumps += 1
            return True

    def record(self, site: tuple[str, int], diagnostic: Diagnostic, n: int) -> bool:
        """Count one occurrence; True when it is the first at this site."""
        key = (site, diagnostic.code)
        with self.lock:
            rec = self.records.get(key)
            if rec is None:
                self.records[key] = _Record(diagnostic, 1, n)
                return True
            rec.count += 1
            return False

    def set_dump(self, site: tuple[str, int], code: str, path: str) -> None:
        with self.lock:
            rec = self.records.get((site, code))
            if rec is not None and rec.dump is None:
                rec.dump = path

    def note(self, text: str) -> None:
        with self.lock:
            self.notes[text] = None

    def snapshot(self) -> GuardSummary:
        with self.lock:
            items = list(self.records.items())
            entries = [
                SummaryEntry(
                    site=site[0],
                    column=site[1],
                    code=code,
                    rule=rec.diagnostic.rule,
                    severity=rec.diagnostic.severity,
                    message=rec.diagnostic.message,
                    fix=rec.diagnostic.fix,
                    count=rec.count,
                    first_call=rec.first_call,
                    dump=rec.dump,
                )
                for (site, code), rec in items
            ]
            entries.sort(key=lambda e: (-e.severity.rank, e.site, e.column, e.code))
            return GuardSummary(
                calls=self.calls + self.let_through,
                checked=self.checked,
                values_checked=self.values_checked,
                let_through=self.let_through,
                entries=entries,
                notes=list(self.notes),
            )

    def clear(self) -> None:
        with self.lock:
            self.records.clear()
            self.notes.clear()
            self.calls = self.checked = self.values_checked = self.let_through = 0
            self.dumps = 0


COLLECTOR = Collector()
