"""The ledger table ``appdb.migrations``: what is applied, read and written, and the order rules.

A row is written in the same transaction as its migration's last step and deleted in
the same transaction as its revert's last step, so the ledger never claims more (or
less) than the database holds.

This is the one home of a migration's state (applied, pending, changed, removed: files
and ledger merged by :func:`states`) and of the order rules every command obeys
(:func:`refuse_out_of_order`, :func:`refuse_earlier_pending`): apply, verify, diff and
baseline all read them from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg

from appdb.errors import MigrationError, Refused
from appdb.migrate import indexes, statements
from appdb.migrate.files import Migration

APPLIED, PENDING, CHANGED, REMOVED = "applied", "pending", "changed", "removed"
# The ledger's own schema (ledger.sql makes appdb.migrations in it); the one name, kept where the
# lexer (which the ledger imports, not the other way) refuses migrations that touch it.
LEDGER_SCHEMA = statements.LEDGER_SCHEMA


@dataclass(frozen=True)
class Entry:
    """One applied migration as the ledger remembers it."""

    id: str
    name: str
    checksum: str
    revert_sql: str
    applied_at: datetime
    applied_by: str
    duration_ms: int

    @property
    def sort_key(self) -> int:
        return int(self.id)


def _ddl() -> str:
    return resources.files("appdb.migrate").joinpath("ledger.sql").read_text(encoding="utf-8")


def exists(conn: psycopg.Connection) -> bool:
    """Looked up in pg_class, not with to_regclass: a read-only login may lack USAGE on appdb."""
    row = conn.execute(
        "SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'appdb' AND c.relname = 'migrations'"
    ).fetchone()
    return row is not None


def read(conn: psycopg.Connection) -> dict[int, Entry]:
    """Applied migrations by version; empty when the ledger was never created."""
    if not exists(conn):
        return {}
    rows = conn.execute(
        "SELECT id, name, checksum, revert_sql, applied_at, applied_by, duration_ms FROM appdb.migrations"
    ).fetchall()
    entries = [Entry(*row) for row in rows]
    return {entry.sort_key: entry for entry in entries}


def latest(applied: dict[int, Entry]) -> Entry:
    """The migration applied last: by ``applied_at``, then by version (the order things happened)."""
    return max(applied.values(), key=lambda entry: (entry.applied_at, entry.sort_key))


def check_recordable(conn: psycopg.Connection, migration: Migration) -> None:
    """Refuse to write a row the database does not bear out.

    - An index the migration builds ``CONCURRENTLY`` is INVALID (an interrupted build):
      recorded, it would never be built again. Only such a build can leave one: any other
      ``CREATE INDEX`` commits whole or not at all, so a migration without one costs no lookup.
    A revert that cannot be parsed, or holds transaction control, never gets this far: the
    migration carries its parsed revert (``revert_steps``), so it was refused when the file
    was read (appdb/migrate/files.py, ``load``).

    The other refusal, the same version under another spelling (``027`` and ``0027``),
    is part of the INSERT itself (:func:`record`).
    """
    for index in migration.concurrent_indexes():
        invalid = indexes.invalid_index(conn, index.name, index.table)
        if invalid:
            raise MigrationError(
                f"{migration.id} was not recorded: index {invalid[0]}.{invalid[1]} ({migration.filename}:"
                f"{index.line}) is INVALID, left by an interrupted CREATE INDEX CONCURRENTLY; run apply again, "
                "which drops and rebuilds it"
            )


def record(conn: psycopg.Connection, migration: Migration, duration_ms: int, applied_by: str | None = None,
           ledger_exists: bool | None = None) -> None:
    """Write the row; the caller's transaction decides whether it sticks (:func:`record_all`)."""
    record_all(conn, [(migration, duration_ms)], applied_by, ledger_exists)


def record_all(conn: psycopg.Connection, rows: list[tuple[Migration, int]], applied_by: str | None = None,
               ledger_exists: bool | None = None) -> None:
    """Write a row for each (migration, duration in ms), in one statement; the caller's
    transaction decides whether they stick. ``apply --group`` writes a group's rows at once:
    a round trip and a plan each would be a fifth of a small migration's time (issue 20).

    ``applied_by`` defaults to the login; ``appdb baseline`` says it recorded without running.
    ``ledger_exists``: what the caller, holding the migration lock, already knows (None: look).

    Nothing is written when :func:`check_recordable` refuses, nor when the ledger holds the
    same version under another spelling (``027`` and ``0027`` are one migration): the INSERT
    checks that itself, in the same round trip. The ledger is created here, in the same
    transaction, so a failed first apply leaves no trace; the migration lock keeps two runs
    from creating it at once.
    """
    for migration, _ in rows:
        check_recordable(conn, migration)
    if not (exists(conn) if ledger_exists is None else ledger_exists):
        conn.execute(_ddl())
    # One statement: the rows, unless the ledger already holds one of their versions under any
    # spelling, which it then names. Its snapshot is from before the INSERT, so a clash is always
    # with a row that was there.
    written, ours, theirs = conn.execute(
        "WITH r AS (SELECT * FROM unnest(%(ids)s::text[], %(names)s::text[], %(checksums)s::text[], "
        "%(reverts)s::text[], %(durations)s::bigint[]) AS r(id, name, checksum, revert_sql, duration_ms)), "
        "clash AS (SELECT r.id AS ours, m.id AS theirs FROM r JOIN appdb.migrations AS m "
        "ON ltrim(m.id, '0') = ltrim(r.id, '0') LIMIT 1), "
        "written AS (INSERT INTO appdb.migrations (id, name, checksum, revert_sql, duration_ms, applied_by) "
        "SELECT r.id, r.name, r.checksum, r.revert_sql, r.duration_ms, coalesce(%(applied_by)s, current_user) "
        "FROM r WHERE NOT EXISTS (SELECT FROM clash) RETURNING 1) "
        "SELECT (SELECT count(*) FROM written), (SELECT ours FROM clash), (SELECT theirs FROM clash)",
        {"ids": [m.id for m, _ in rows], "names": [m.name for m, _ in rows],
         "checksums": [m.checksum for m, _ in rows], "reverts": [m.revert_sql for m, _ in rows],
         "durations": [ms for _, ms in rows], "applied_by": applied_by},
    ).fetchone()
    if written != len(rows):
        migration = next((m for m, _ in rows if m.id == ours), rows[0][0])
        raise Refused(
            f"{migration.id} was not recorded: the ledger already holds version {migration.sort_key} "
            f"as {theirs}; {migration.id} and {theirs} are one migration"
        )


def forget(conn: psycopg.Connection, entry: Entry) -> None:
    conn.execute("DELETE FROM appdb.migrations WHERE id = %s", (entry.id,))


# --- state: files and ledger merged ----------------------------------------------------


@dataclass(frozen=True)
class State:
    """One migration's state: from the files, the ledger, or both."""

    id: str
    name: str
    state: str
    checksum: str | None
    applied_at: str | None = None
    applied_by: str | None = None

    @property
    def sort_key(self) -> int:
        return int(self.id)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "checksum": self.checksum,
            "applied_at": self.applied_at,
            "applied_by": self.applied_by,
        }

    def line(self) -> str:
        return f"{self.id}  {self.state:<8} {self.name}"


@dataclass(frozen=True)
class Status:
    """Every migration's state, in version order: what ``appdb status`` prints."""

    states: tuple[State, ...]

    def __iter__(self):
        return iter(self.states)

    def ids(self, *wanted: str) -> list[str]:
        """The ids in any of the ``wanted`` states, in version order."""
        return [s.id for s in self.states if s.state in wanted]

    def by_id(self) -> dict[str, State]:
        return {s.id: s for s in self.states}

    def as_dict(self) -> dict[str, object]:
        return {"migrations": [s.as_dict() for s in self.states]}

    def lines(self) -> list[str]:
        return [s.line() for s in self.states] or ["no migrations"]


def states(migrations: list[Migration], applied: dict[int, Entry]) -> Status:
    """Files and ledger merged, in version order."""
    result: list[State] = []
    for migration in migrations:
        entry = applied.get(migration.sort_key)
        if entry is None:
            result.append(State(migration.id, migration.name, PENDING, migration.checksum))
            continue
        state = APPLIED if entry.checksum == migration.checksum else CHANGED
        result.append(State(migration.id, migration.name, state, migration.checksum,
                            entry.applied_at.isoformat(), entry.applied_by))
    on_disk = {m.sort_key for m in migrations}
    for key, entry in applied.items():
        if key not in on_disk:
            result.append(State(entry.id, entry.name, REMOVED, entry.checksum,
                                entry.applied_at.isoformat(), entry.applied_by))
    return Status(tuple(sorted(result, key=lambda s: s.sort_key)))


def status(conn: psycopg.Connection, migrations: list[Migration]) -> Status:
    """The state of every migration on this database."""
    return states(migrations, read(conn))


def applied_ids(applied: dict[int, Entry]) -> list[str]:
    """The ledger's ids in version order, as it spells them."""
    return [entry.id for _key, entry in sorted(applied.items())]


def not_applied(ids: Iterable[str], applied: dict[int, Entry]) -> list[str]:
    """Which of ``ids`` the ledger lacks, compared by version (``027`` is ``0027``)."""
    return [i for i in ids if int(i) not in applied]


def applied_except(ids: Iterable[str], applied: dict[int, Entry]) -> list[str]:
    """What the ledger holds beyond ``ids``, by version, as the ledger spells it."""
    known = {int(i) for i in ids}
    return [entry.id for key, entry in sorted(applied.items()) if key not in known]


# --- the order rules -------------------------------------------------------------------


def refuse_out_of_order(candidates: Iterable[Migration], current: Status) -> None:
    """A pending migration older than the newest applied one is refused, as Flyway does by default.

    Applied after a newer one, it would run against a schema its author never saw, and
    the order of the ledger would no longer be the order of the files.
    """
    candidates = list(candidates)
    applied = [s for s in current if s.state in (APPLIED, CHANGED, REMOVED)]
    if not applied or not candidates:
        return
    newest = max(applied, key=lambda s: s.sort_key)
    older = [m for m in candidates if m.sort_key < newest.sort_key]
    if older:
        first = older[0]
        raise Refused(
            f"{first.id} ({first.name}) is pending but older than {newest.id} ({newest.name}), which is "
            f"applied: migrations apply in version order only; give {first.filename} (and its revert) "
            f"a version after {newest.id}"
        )


def refuse_earlier_pending(migrations: list[Migration], target: Migration, current: Status,
                           refusal: str, remedy: str, they_are: str = "not applied here") -> None:
    """``target`` alone only once every migration before it is applied: the ledger's order is the files'.

    ``refusal`` opens the message ("cannot apply 029 alone"), ``they_are`` says what the
    earlier ones are, ``remedy`` ends it.
    """
    pending = set(current.ids(PENDING))
    earlier = [m.id for m in migrations if m.sort_key < target.sort_key and m.id in pending]
    if earlier:
        raise Refused(f"{refusal}: earlier migration(s) {', '.join(earlier)} are {they_are}; {remedy}")
