"""The ledger table ``appdb.migrations``: what is applied, read and written.

A row is written in the same transaction as its migration's last step and deleted in
the same transaction as its revert's last step, so the ledger never claims more (or
less) than the database holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg

from appdb.errors import MigrationError, Refused
from appdb.migrate import indexes
from appdb.migrate.files import Migration, parse_steps


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
    - Its revert cannot be parsed, or holds transaction control: recorded, it would
      fail on the day it is needed (the parse is the one made when the file was read).

    The third refusal, the same version under another spelling (``027`` and ``0027``),
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
    parse_steps(migration.revert_sql, str(migration.revert_path))


def record(conn: psycopg.Connection, migration: Migration, duration_ms: int, applied_by: str | None = None,
           ledger_exists: bool | None = None) -> None:
    """Write the row; the caller's transaction decides whether it sticks.

    ``applied_by`` defaults to the login; ``appdb baseline`` says it recorded without running.
    ``ledger_exists``: what the caller, holding the migration lock, already knows (None: look).

    Nothing is written when :func:`check_recordable` refuses, nor when the ledger holds the
    same version under another spelling (``027`` and ``0027`` are one migration): the INSERT
    checks that itself, in the same round trip. The ledger is created here, in the same
    transaction, so a failed first apply leaves no trace; the migration lock keeps two runs
    from creating it at once.
    """
    check_recordable(conn, migration)
    if not (exists(conn) if ledger_exists is None else ledger_exists):
        conn.execute(_ddl())
    written = conn.execute(
        "INSERT INTO appdb.migrations (id, name, checksum, revert_sql, duration_ms, applied_by) "
        "SELECT %(id)s, %(name)s, %(checksum)s, %(revert_sql)s, %(duration_ms)s, coalesce(%(applied_by)s, current_user) "
        "WHERE NOT EXISTS (SELECT FROM appdb.migrations WHERE ltrim(id, '0') = ltrim(%(id)s, '0'))",
        {"id": migration.id, "name": migration.name, "checksum": migration.checksum,
         "revert_sql": migration.revert_sql, "duration_ms": duration_ms, "applied_by": applied_by},
    ).rowcount
    if written != 1:
        row = conn.execute("SELECT id FROM appdb.migrations WHERE ltrim(id, '0') = ltrim(%s, '0')",
                           (migration.id,)).fetchone()
        other = row[0] if row else "?"
        raise Refused(
            f"{migration.id} was not recorded: the ledger already holds version {migration.sort_key} "
            f"as {other}; {migration.id} and {other} are one migration"
        )


def forget(conn: psycopg.Connection, entry: Entry) -> None:
    conn.execute("DELETE FROM appdb.migrations WHERE id = %s", (entry.id,))
