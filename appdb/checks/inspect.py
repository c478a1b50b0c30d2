"""`appdb inspect`: the inventory the incident was debugged with by hand, as one command.

Tables per schema (app, public, auth), each app table's constraints and indexes, and
findings: a foreign key in a migration to a table that exists nowhere, duplicate
unique keys, an app table without row level security, an invalid index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg

from appdb.access import SCHEMA
from appdb.checks import catalog
from appdb.migrate.files import Migration, strip_comments

SCHEMAS = (SCHEMA, "public", "auth")
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

    def lines(self) -> list[str]:
        """Tables per schema, each app table's constraints and indexes, then the findings."""
        lines = []
        for schema, tables in self.tables.items():
            names = ", ".join(f"{t['name']}{'' if t['rls'] else ' (no RLS)'}" for t in tables) or "(none)"
            lines.append(f"{schema}: {names}")
        for table, parts in self.app.items():
            lines += ["", f"{SCHEMA}.{table}"]
            lines += [f"  constraint {c['name']}: {c['definition']}" for c in parts["constraints"]]
            lines += [f"  index {i['name']}{'' if i['valid'] else ' INVALID'}: {i['definition']}"
                      for i in parts["indexes"]]
        lines += ["", "findings:" if self.findings else "findings: none"]
        lines += [f"  {finding.kind}: {finding.detail}" for finding in self.findings]
        return lines


def run(conn: psycopg.Connection, migrations: list[Migration]) -> Inventory:
    """The inventory from catalog.py's queries: each kind of fact read once, for every table."""
    references = _references(migrations)
    relations = catalog.relations(conn, {*SCHEMAS, *(schema for _, schema, _ in references)})
    inventory = Inventory()
    for schema in SCHEMAS:
        inventory.tables[schema] = [{"name": t.name, "rls": t.rls, "estimated_rows": t.estimated_rows}
                                    for t in relations.tables(schema)]
    app = relations.tables(SCHEMA)
    oids = [t.oid for t in app]
    constraints, indexes = catalog.constraints(conn, oids), catalog.indexes(conn, oids)
    unique_keys = catalog.unique_keys(conn, oids)
    for table in app:
        inventory.app[table.name] = {"constraints": constraints.get(table.oid, []),
                                     "indexes": indexes.get(table.oid, [])}
        if not table.rls:
            inventory.findings.append(Finding("rls_disabled", f"{table.qualified} has row level security off"))
        inventory.findings.extend(_duplicate_unique_keys(table.qualified, unique_keys.get(table.oid, [])))
    inventory.findings.extend(
        Finding("invalid_index", f"{index.describe()}: a failed CREATE INDEX CONCURRENTLY left it; no query uses it")
        for index in catalog.invalid_indexes(conn, SCHEMA)
    )
    inventory.findings.extend(_missing_fk_targets(migrations, references, relations))
    return inventory


def _duplicate_unique_keys(table: str, keys: list[catalog.UniqueKey]) -> list[Finding]:
    by_columns: dict[tuple[str, ...], list[str]] = {}
    for key in keys:
        if not key.partial:
            by_columns.setdefault(key.columns, []).append(key.label)
    return [
        Finding("duplicate_unique", f"{table}({', '.join(columns)}) has {len(labels)} unique keys: {', '.join(labels)}")
        for columns, labels in by_columns.items() if len(labels) > 1
    ]


def _references(migrations: list[Migration]) -> list[tuple[str, str, str]]:
    """(file, schema, table) for each table a migration's REFERENCES names, lower-cased, in file order."""
    return [(m.filename, schema.lower(), table.lower()) for m in migrations
            for schema, table in sorted(set(_REFERENCES.findall(strip_comments(m.sql))))]


def _missing_fk_targets(migrations: list[Migration], references: list[tuple[str, str, str]],
                        relations: catalog.Relations) -> list[Finding]:
    """A migration's REFERENCES to a table that neither exists nor is created by any migration."""
    created = {(s.lower(), t.lower()) for m in migrations for s, t in _CREATES.findall(strip_comments(m.sql))}
    return [
        Finding("fk_target_missing", f"{filename} references {schema}.{table}, which exists nowhere in this database")
        for filename, schema, table in references
        if (schema, table) not in created and relations.get(f"{schema}.{table}") is None
    ]
