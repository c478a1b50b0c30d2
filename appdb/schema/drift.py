"""Drift: a live database compared with the committed snapshot, object by object.

``compare(expected, actual)`` lists what is *missing* (in the snapshot, not live),
*extra* (live, not in the snapshot) and *different* (both, with other definitions),
each naming the object's identity and both values. ``run`` adds the rest of what
``appdb diff`` needs:

* the ledger first: when the database has not applied every migration the snapshot was
  built from (or has applied others), the schema is **not** compared and the report says
  which migrations are pending or unknown, instead of calling them drift;
* the ignore list (``sql/drift-ignore.toml``): what is legitimately made outside the
  migrations, matched by identity pattern, each entry with its reason.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from appdb.connection import where
from appdb.errors import ConfigError
from appdb.migrate import ledger
from appdb.schema.describe import Description, describe, require_schema
from appdb.schema.snapshot import Snapshot

IGNORE_FILENAME = "drift-ignore.toml"
MATCH, DRIFT, BEHIND, AHEAD = "match", "drift", "behind", "ahead"
MISSING, EXTRA, DIFFERENT = "missing", "extra", "different"


@dataclass(frozen=True)
class Difference:
    """One object that differs: ``expected`` is what the snapshot (or a migration) says, ``actual`` the database."""

    change: str
    identity: str
    expected: str | None
    actual: str | None

    def line(self) -> str:
        """One line naming the object and the values."""
        if self.change == MISSING:
            return f"missing: {self.identity}: {short(self.expected)}"
        if self.change == EXTRA:
            return f"extra: {self.identity}: {short(self.actual)}"
        if self._multiline:
            return f"different: {self.identity}: the definitions differ (below, snapshot then live)"
        return f"different: {self.identity}: snapshot has {self.expected}; live has {self.actual}"

    @property
    def _multiline(self) -> bool:
        return "\n" in (self.expected or "") or "\n" in (self.actual or "")

    def detail(self) -> list[str]:
        """For a multi-line definition that differs, the unified diff of the two, indented."""
        if self.change != DIFFERENT or not self._multiline:
            return []
        lines = difflib.unified_diff((self.expected or "").split("\n"), (self.actual or "").split("\n"),
                                     fromfile="snapshot", tofile="live", n=1, lineterm="")
        return ["    " + line for line in lines]

    def lines(self) -> list[str]:
        return [self.line(), *self.detail()]

    def as_dict(self) -> dict[str, str | None]:
        # The JSON keys name the two sides as `appdb diff --json` always has (docs/drift.md).
        return {"change": self.change, "identity": self.identity, "snapshot": self.expected, "live": self.actual}


def short(value: str | None) -> str:
    """A definition's first line, and how many more it has."""
    lines = (value or "").split("\n")
    return lines[0] if len(lines) == 1 else f"{lines[0]} [+{len(lines) - 1} lines]"


def compare(expected: Description, actual: Description) -> list[Difference]:
    """Missing, extra and different objects, in the order the two descriptions interleave."""
    differences = []
    for identity in _merged_order(list(expected.entries), list(actual.entries)):
        want, have = expected.entries.get(identity), actual.entries.get(identity)
        if have is None:
            differences.append(Difference(MISSING, identity, want, None))
        elif want is None:
            differences.append(Difference(EXTRA, identity, None, have))
        elif want != have:
            differences.append(Difference(DIFFERENT, identity, want, have))
    return differences


def _merged_order(a: list[str], b: list[str]) -> list[str]:
    """Every identity of ``a`` and ``b`` once, each where it sits in its own (canonical) order."""
    seen: set[str] = set()
    order: list[str] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for _tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for identity in [*a[i1:i2], *b[j1:j2]]:
            if identity not in seen:
                seen.add(identity)
                order.append(identity)
    return order


# --- the ignore list --------------------------------------------------------------------


@dataclass(frozen=True)
class IgnoreRule:
    """Identities matching ``pattern`` (shell-style: * and ?) are left out of the comparison."""

    pattern: str
    reason: str

    def matches(self, identity: str) -> bool:
        return fnmatch.fnmatchcase(identity, self.pattern)


def default_ignore_path(sql_dir: Path) -> Path:
    return sql_dir / IGNORE_FILENAME


def read_ignore(path: Path, required: bool = False) -> list[IgnoreRule]:
    """The rules in ``path`` (TOML: ``[[ignore]]`` tables with ``pattern`` and ``reason``).

    A missing file is an empty list unless ``required`` (it was named on the command line);
    an entry without a reason, or with unknown keys, is a configuration error.
    """
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise ConfigError(f"no ignore list at {path}") from None
        return []
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"ignore"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r}; entries are [[ignore]] tables")
    entries = data.get("ignore", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'ignore' must be a list of tables: write each entry as [[ignore]]")
    rules = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: [[ignore]] entry {number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} is not a table")
        extra = set(entry) - {"pattern", "reason"}
        if extra:
            raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r} (only pattern and reason)")
        pattern, reason = entry.get("pattern"), entry.get("reason")
        if not isinstance(pattern, str) or not pattern.strip():
            raise ConfigError(f"{where} has no pattern")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(f"{where} ({pattern!r}) has no reason: say why it is made outside the migrations")
        rules.append(IgnoreRule(pattern.strip(), reason.strip()))
    return rules


# --- the report -------------------------------------------------------------------------


@dataclass
class Report:
    """What ``appdb diff`` found; ``database``, ``source`` and ``ignore_path`` only name things in its lines."""

    status: str
    schema: str
    snapshot_migrations: list[str]
    applied: list[str]
    pending: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)
    postgresql: dict[str, str] = field(default_factory=dict)
    objects: int = 0
    database: str = "the database"
    source: str = "the snapshot"
    ignore_path: str = ""

    @property
    def ok(self) -> bool:
        return self.status == MATCH

    def counts(self) -> dict[str, int]:
        counts = {MISSING: 0, EXTRA: 0, DIFFERENT: 0}
        for difference in self.differences:
            counts[difference.change] += 1
        return counts

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "status": self.status,
            "schema": self.schema,
            "snapshot_migrations": self.snapshot_migrations,
            "applied": self.applied,
            "pending": self.pending,
            "unknown": self.unknown,
            "objects": self.objects,
            "counts": self.counts(),
            "differences": [d.as_dict() for d in self.differences],
            "ignored": self.ignored,
            "postgresql": self.postgresql,
        }

    def lines(self) -> list[str]:
        """What a person reads on stdout: each difference, then what was ignored, or the one line of a match."""
        lines = [line for difference in self.differences for line in difference.lines()]
        versions = self.postgresql
        if self.differences and versions.get("snapshot") and versions["snapshot"] != versions["live"]:
            lines.append(f"note: {self.source} was built on PostgreSQL {versions['snapshot']}, this database runs "
                         f"{versions['live']}: some definitions may print differently")
        if self.ignored:
            lines.append(f"ignored ({self.ignore_path}): " + ", ".join(item["identity"] for item in self.ignored))
        if self.ok:
            built_from = ", ".join(self.snapshot_migrations) or "no migrations"
            lines.append(f"no drift: {self.schema} on {self.database} matches {self.source} "
                         f"({self.objects} objects, migrations {built_from})")
        return lines

    def failure(self) -> str:
        """The one error line when the database does not match; empty when it does."""
        if self.status == BEHIND:
            return (f"the ledger of {self.database} is behind {self.source}: {', '.join(self.pending)} not applied, "
                    "so the schema was not compared (pending migrations are not drift); apply them, or "
                    "compare with the snapshot of what is applied (--snapshot FILE)")
        if self.status == AHEAD:
            return (f"{self.database} has applied {', '.join(self.unknown)}, which {self.source} was not built "
                    "from, so the schema was not compared; compare with a snapshot that includes them "
                    "(--snapshot FILE)")
        if self.status == DRIFT:
            counts = ", ".join(f"{n} {change}" for change, n in self.counts().items() if n)
            return f"drift: {self.schema} on {self.database} differs from {self.source} ({counts})"
        return ""


def run(conn: psycopg.Connection, snapshot: Snapshot, rules: list[IgnoreRule] | None = None,
        source: str = "the snapshot", ignore_path: str = "") -> Report:
    """Compare the database behind ``conn`` with ``snapshot`` (after the ledger agrees)."""
    schema = snapshot.schema
    require_schema(conn, schema)
    applied = ledger.read(conn)
    live_version = str(conn.info.server_version // 10000)
    report = Report(MATCH, schema, list(snapshot.migrations), ledger.applied_ids(applied),
                    pending=ledger.not_applied(snapshot.migrations, applied),
                    unknown=ledger.applied_except(snapshot.migrations, applied),
                    postgresql={"snapshot": snapshot.postgresql, "live": live_version},
                    database=where(conn), source=source, ignore_path=ignore_path)
    if report.pending:
        report.status = BEHIND
        return report
    if report.unknown:
        report.status = AHEAD
        return report

    live = describe(conn, schema)
    for difference in compare(snapshot.description, live):
        rule = next((r for r in rules or [] if r.matches(difference.identity)), None)
        if rule is None:
            report.differences.append(difference)
        else:
            report.ignored.append({"identity": difference.identity, "change": difference.change,
                                   "pattern": rule.pattern, "reason": rule.reason})
    report.objects = len(live)
    report.status = DRIFT if report.differences else MATCH
    return report
