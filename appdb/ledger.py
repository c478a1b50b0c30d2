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

from appdb.migration import Migration


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
    return resources.files("appdb").joinpath("sql", "ledger.sql").read_text(encoding="utf-8")


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


def record(conn: psycopg.Connection, migration: Migration, duration_ms: int, applied_by: str | None = None) -> None:
    """Write the row; the caller's transaction decides whether it sticks.

    ``applied_by`` defaults to the login; ``appdb baseline`` says it recorded without running.

    The ledger is created here, in the same transaction, so a failed first apply leaves
    no trace; the migration lock keeps two runs from creating it at once.
    """
    if not exists(conn):
        conn.execute(_ddl())
    conn.execute(
        "INSERT INTO appdb.migrations (id, name, checksum, revert_sql, duration_ms, applied_by) "
        "VALUES (%s, %s, %s, %s, %s, coalesce(%s, current_user))",
        (migration.id, migration.name, migration.checksum, migration.revert_sql, duration_ms, applied_by),
    )


def forget(conn: psycopg.Connection, entry: Entry) -> None:
    conn.execute("DELETE FROM appdb.migrations WHERE id = %s", (entry.id,))
