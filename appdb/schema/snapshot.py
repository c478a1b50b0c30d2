"""The committed schema snapshot (``sql/schema.snapshot``): read, built, written, checked.

The snapshot is the description (appdb/schema/describe.py) of a brand-new Supabase-shaped
database after every migration in ``sql/``, with the Pulumi program's grants
(appdb/schema/fresh.py builds it). A pull request that adds a migration therefore carries
its schema change in the git diff, as Rails' db/schema.rb does, and ``appdb diff``
compares a live database with it.

Its header records what it was built from, so ``appdb diff`` can tell a database whose
ledger is behind (pending migrations) from one that drifted::

    # schema: app
    # migrations: 027 028
    # postgresql: 15

**It must be rewritten (``appdb schema --write``) whenever ``sql/`` or
appdb/access.py changes**; ``appdb schema --check`` fails while it is stale, in the tests
and in pull requests.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from appdb.access import SCHEMA
from appdb.errors import ConfigError, MalformedDescription
from appdb.migrate.files import Migration, is_version
from appdb.schema.describe import Description, parse

FILENAME = "schema.snapshot"
PREAMBLE = """\
# appdb schema snapshot: the schema below as a brand-new Supabase-shaped database has it
# after every migration listed, with the Pulumi program's grants (appdb/access.py).
# Generated: rewrite it with `bin/appdb schema --write` whenever sql/ or the grants change;
# `appdb schema --check` fails while it is stale, and `appdb diff` compares a live database with it.
# Each object is one line, its definition indented under it (docs/drift.md). It ends with
# the ledger's schema appdb: owners and privileges only, and only the owner may hold any.
"""
_HEADER = re.compile(r"^# (schema|migrations|postgresql): ?(.*)$")
# A snapshot built on another major version may print some definitions differently;
# the version is recorded, and left out when --check compares the text.
_VERSION_LINE = re.compile(r"^# postgresql:.*\n", re.M)


@dataclass(frozen=True)
class Snapshot:
    """A description and what it was built from."""

    description: Description
    migrations: tuple[str, ...]
    postgresql: str = ""

    @property
    def schema(self) -> str:
        return self.description.schema

    def to_text(self) -> str:
        header = [
            PREAMBLE.rstrip("\n"),
            f"# schema: {self.schema}",
            f"# migrations: {' '.join(self.migrations)}".rstrip(),
            f"# postgresql: {self.postgresql}".rstrip(),
        ]
        return "\n".join(header) + "\n" + self.description.to_text()

    def as_dict(self) -> dict[str, object]:
        return {"migrations": list(self.migrations), "postgresql": self.postgresql, **self.description.as_dict()}

    def summary(self) -> str:
        """How many objects, from which migrations: the tail of ``schema --write`` and ``--check``'s line."""
        return f"{len(self.description)} objects from {', '.join(self.migrations) or 'no migrations'}"


def default_path(sql_dir: Path) -> Path:
    return sql_dir / FILENAME


def parse_text(text: str, source: str) -> Snapshot:
    """A snapshot from its text; a missing header or a malformed body names the file and line."""
    header: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        match = _HEADER.match(line)
        if match:
            header[match.group(1)] = match.group(2).strip()
    missing = [key for key in ("schema", "migrations") if key not in header]
    if missing:
        raise MalformedDescription(
            f"{source}: not an appdb schema snapshot (no '# {missing[0]}:' header line); "
            "rebuild it with appdb schema --write"
        )
    if not header["schema"]:
        raise MalformedDescription(f"{source}: the '# schema:' header line names no schema")
    migrations = tuple(header["migrations"].split())
    bad = [m for m in migrations if not is_version(m)]
    if bad:
        raise MalformedDescription(f"{source}: '# migrations:' lists {bad[0]!r}, which is not a migration id")
    description = parse(text, header["schema"], source)
    return Snapshot(description, migrations, header.get("postgresql", ""))


def read(path: Path) -> Snapshot:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no schema snapshot at {path}: create it with appdb schema --write") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the schema snapshot {path}: {exc}") from None
    return parse_text(text, str(path))


def build(migrations: list[Migration], schema: str = SCHEMA) -> Snapshot:
    """The snapshot as it should be: a scratch database built from ``migrations``, described."""
    from appdb.schema.fresh import throwaway

    with throwaway(schema) as built:
        built.apply(migrations)
        built.grant()
        return Snapshot(built.describe(), tuple(m.id for m in migrations), built.postgresql)


def write(path: Path, snapshot: Snapshot) -> None:
    path.write_text(snapshot.to_text(), encoding="utf-8")


@dataclass(frozen=True)
class Freshness:
    """``appdb schema --check``: the committed file at ``path`` against the snapshot the migrations build."""

    path: Path
    fresh: Snapshot
    diff: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.diff

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "snapshot": str(self.path), "migrations": list(self.fresh.migrations),
                "diff": list(self.diff)}

    def lines(self) -> list[str]:
        if self.diff:
            return list(self.diff)
        return [f"{self.path} is up to date: {self.fresh.summary()}"]

    def failure(self) -> str:
        """The one error line while the file is stale; empty when it is up to date."""
        if self.ok:
            return ""
        return (f"{self.path} is stale: it does not describe the schema the migrations build; "
                "rewrite it with appdb schema --write and commit it")


def check(path: Path, fresh: Snapshot) -> Freshness:
    return Freshness(path, fresh, tuple(stale_diff(path, fresh)))


def stale_diff(path: Path, fresh: Snapshot) -> list[str]:
    """The unified diff from the file at ``path`` to ``fresh``; empty when it is up to date.

    Compared as text (a malformed or missing file is simply stale), the PostgreSQL
    version line aside.
    """
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the schema snapshot {path}: {exc}") from None
    expected = fresh.to_text()
    if _VERSION_LINE.sub("", current) == _VERSION_LINE.sub("", expected):
        return []
    return [line.rstrip("\n") for line in difflib.unified_diff(
        current.splitlines(keepends=True), expected.splitlines(keepends=True),
        fromfile=f"{path} (committed)", tofile=f"{path} (from the migrations)", n=1)]
