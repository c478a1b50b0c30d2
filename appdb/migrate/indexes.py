"""Indexes a migration builds, as the catalog has them: what makes a ``CONCURRENTLY`` build whole.

An interrupted ``CREATE INDEX CONCURRENTLY`` leaves an INVALID index behind; the runner
drops it before the step runs again, and the ledger refuses a row while one remains.
"""

from __future__ import annotations

import psycopg


def invalid_index(conn: psycopg.Connection, name: str, table: str) -> tuple[str, str] | None:
    """(schema, name) of an INVALID index called ``name`` in the schema of ``table`` (regclass text).

    An interrupted ``CREATE INDEX CONCURRENTLY`` leaves one behind, and the retry's
    ``IF NOT EXISTS`` would then keep it for ever. The index lives in its table's
    schema; a table that does not exist (yet) has none.
    """
    row = conn.execute(
        """
        SELECT n.nspname, ic.relname FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE NOT i.indisvalid AND ic.relname = %s
          AND ic.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass(%s::text))
        """,
        (name, table),
    ).fetchone()
    return (row[0], row[1]) if row else None

