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

    - An index the migration builds is INVALID (an interrupted ``CONCURRENTLY`` build):
      recorded, it would never be built again.
    - Its revert cannot be parsed, or holds transaction control: recorded, it would
      fail on the day it is needed.
    - The ledger holds the same version under another spelling (``027`` and ``0027``).
    """
    for index in migration.created_indexes():
        invalid = indexes.invalid_index(conn, index.name, index.table)
        if invalid:
            raise MigrationError(
                f"{migration.id} was not recorded: index {invalid[0]}.{invalid[1]} ({migration.filename}:"
                f"{index.line}) is INVALID, left by an interrupted CREATE INDEX CONCURRENTLY; run apply again, "
                "which drops and rebuilds it"
            )
    parse_steps(migration.revert_sql, str(migration.revert_path))
    if exists(conn):
        for (other,) in conn.execute("SELECT id FROM appdb.migrations").fetchall():
            if other.isdigit() and int(other) == migration.sort_key:
                raise Refused(
                    f"{migration.id} was not recorded: the ledger already holds version {migration.sort_key} "
                    f"as {other}; {migration.id} and {other} are one migration"
                )


def record(conn: psycopg.Connection, migration: Migration, duration_ms: int, applied_by: str | None = None) -> None:
    """Write the row; the caller's transaction decides whether it sticks.

    ``applied_by`` defaults to the login; ``appdb baseline`` says it recorded without running.

    Nothing is written when :func:`check_recordable` refuses. The ledger is created here, in the same transaction, so a failed first apply leaves
    no trace; the migration lock keeps two runs from creating it at once.
    """
    check_recordable(conn, migration)
    if not exists(conn):
        conn.execute(_ddl())
    conn.execute(
        "INSERT INTO appdb.migrations (id, name, checksum, revert_sql, duration_ms, applied_by) "
        "VALUES (%s, %s, %s, %s, %s, coalesce(%s, current_user))",
        (migration.id, migration.name, migration.checksum, migration.revert_sql, duration_ms, applied_by),
    )


def forget(conn: psycopg.Connection, entry: Entry) -> None:
    conn.execute("DELETE FROM appdb.migrations WHERE id = %s", (entry.id,))
