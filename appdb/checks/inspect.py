"""`appdb inspect`: the inventory the incident was debugged with by hand, as one command.

Tables per schema (app, public, auth), each app table's constraints and indexes, and
findings: a foreign key in a migration to a table that exists nowhere, duplicate
unique keys, an app table without row level security, an invalid index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg

from appdb.checks import catalog
from appdb.migrate.files import Migration, strip_comments

SCHEMAS = ("app", "public", "auth")
_REFERENCES = re.compile(r"\bREFERENCES\s+([a-z_][a-z0-9_]*)\s*\.\s*([a-z_][a-z0-9_]*)", re.IGNORECASE)
_CREATES = re.compile(
    r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)\s*\.\s*([a-z_][a-z0-9_]*)", re.IGNORECASE
)


@dataclass(frozen=True)
class Finding:
    kind: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail}


@dataclass
class Inventory:
    tables: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    app: dict[str, dict[str, list[dict[str, object]]]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"tables": self.tables, "app_tables": self.app,
                "findings": [finding.as_dict() for finding in self.findings]}


def run(conn: psycopg.Connection, migrations: list[Migration]) -> Inventory:
    inventory = Inventory()
    for schema in SCHEMAS:
        rows = conn.execute(
            """
            SELECT c.relname, c.relrowsecurity, greatest(c.reltuples, 0)::bigint
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname
            """,
            (schema,),
        ).fetchall()
        inventory.tables[schema] = [{"name": n, "rls": rls, "estimated_rows": est} for n, rls, est in rows]
    for table, rls in catalog.app_tables(conn):
        inventory.app[table] = {"constraints": _constraints(conn, f"app.{table}"),
                                "indexes": _indexes(conn, f"app.{table}")}
        if not rls:
            inventory.findings.append(Finding("rls_disabled", f"app.{table} has row level security off"))
        inventory.findings.extend(_duplicate_unique_keys(conn, f"app.{table}"))
    inventory.findings.extend(
        Finding("invalid_index", f"{index.describe()}: a failed CREATE INDEX CONCURRENTLY left it; no query uses it")
        for index in catalog.invalid_indexes(conn, "app")
    )
    inventory.findings.extend(_missing_fk_targets(conn, migrations))
    return inventory


def _constraints(conn: psycopg.Connection, table: str) -> list[dict[str, object]]:
    rows = conn.execute(
        """
        SELECT conname, contype, pg_get_constraintdef(oid), convalidated FROM pg_constraint
        WHERE conrelid = %s::oid ORDER BY conname
        """,
        (catalog.relation_oid(conn, table),),
    ).fetchall()
    return [{"name": n, "type": t, "definition": d, "validated": v} for n, t, d, v in rows]


def _indexes(conn: psycopg.Connection, table: str) -> list[dict[str, object]]:
    rows = conn.execute(
        """
        SELECT ic.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisvalid AND i.indisready
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = %s::oid ORDER BY ic.relname
        """,
        (catalog.relation_oid(conn, table),),
    ).fetchall()
    return [{"name": n, "definition": d, "unique": u, "valid": v} for n, d, u, v in rows]


def _duplicate_unique_keys(conn: psycopg.Connection, table: str) -> list[Finding]:
    by_columns: dict[tuple[str, ...], list[str]] = {}
    for key in catalog.unique_keys(conn, table):
        if not key.partial:
            by_columns.setdefault(key.columns, []).append(key.label)
    return [
        Finding("duplicate_unique", f"{table}({', '.join(columns)}) has {len(labels)} unique keys: {', '.join(labels)}")
        for columns, labels in by_columns.items() if len(labels) > 1
    ]


def _missing_fk_targets(conn: psycopg.Connection, migrations: list[Migration]) -> list[Finding]:
    """A migration's REFERENCES to a table that neither exists nor is created by any migration."""
    code = {m.filename: strip_comments(m.sql) for m in migrations}
    created = {(s.lower(), t.lower()) for text in code.values() for s, t in _CREATES.findall(text)}
    findings = []
    for migration in migrations:
        for schema, table in sorted(set(_REFERENCES.findall(code[migration.filename]))):
            key = (schema.lower(), table.lower())
            if key not in created and not catalog.table_exists(conn, f"{key[0]}.{key[1]}"):
                findings.append(Finding(
                    "fk_target_missing",
                    f"{migration.filename} references {key[0]}.{key[1]}, which exists nowhere in this database",
                ))
    return findings
