"""Catalog reads shared by ``verify`` and ``inspect``: keys found by columns, never by name.

Each query is a named constant with a one-line comment, as atlas keeps its inspection SQL.
A command reads each kind of fact once, for every table it cares about at the same time:
:func:`relations` resolves names to OIDs once, and every later read takes a list of OIDs
(or of roles), so the number of statements does not grow with tables or roles.

Names are resolved from ``pg_class`` alone, never with ``to_regclass`` or
``has_table_privilege(role, text)``: those resolve with the caller's schema privileges,
and the read-only login the previews and the drift check use has no USAGE on Supabase's
``auth`` (which ``postgres`` cannot grant).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

from appdb.access import RESERVED_ROLES, SCHEMA, SERVICE_ROLES, TABLE_PRIVILEGES


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    target: str
    on_delete: str
    validated: bool

    def describe(self) -> str:
        state = "validated" if self.validated else "NOT VALID"
        return f"{self.name} -> {self.target} ON DELETE {self.on_delete} ({state})"


@dataclass(frozen=True)
class UniqueKey:
    """A unique index on some columns, and the constraint that owns it, if any."""

    index: str
    constraint: str | None
    columns: tuple[str, ...]
    partial: bool

    @property
    def label(self) -> str:
        return f"constraint {self.constraint}" if self.constraint else f"index {self.index}"


@dataclass(frozen=True)
class Relation:
    """A table, view or foreign table, as ``pg_class`` has it."""

    oid: int
    schema: str
    name: str
    kind: str  # relkind: r, p (tables), v, m, f
    rls: bool
    estimated_rows: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def is_table(self) -> bool:
        return self.kind in ("r", "p")


@dataclass(frozen=True)
class Relations:
    """Every relation of some schemas, by qualified name: the one name-to-OID lookup of a command."""

    by_name: dict[str, Relation] = field(default_factory=dict)

    def get(self, qualified: str) -> Relation | None:
        return self.by_name.get(qualified)

    def tables(self, schema: str) -> list[Relation]:
        """The ordinary and partitioned tables of ``schema``, by name."""
        return sorted((r for r in self.by_name.values() if r.schema == schema and r.is_table), key=lambda r: r.name)


@dataclass(frozen=True)
class Policy:
    table: str  # qualified
    name: str
    roles: tuple[str, ...]
    command: str  # SELECT, INSERT, UPDATE, DELETE or ALL
    using: str | None


@dataclass(frozen=True)
class Trigger:
    name: str
    type: int  # pg_trigger.tgtype bits
    enabled: str  # O, D, R, A

    # pg_trigger.tgtype bits.
    ROW, BEFORE, DELETE, UPDATE = 1, 2, 8, 16

    def refuses_update_and_delete(self) -> bool:
        """An enabled BEFORE UPDATE OR DELETE row trigger."""
        bits = self.ROW | self.BEFORE | self.UPDATE | self.DELETE
        return self.enabled != "D" and self.type & bits == bits


@dataclass(frozen=True)
class Privileges:
    """What some roles (those that exist) hold on some tables: SELECT, and any table privilege at all."""

    roles: tuple[str, ...]
    select: frozenset[tuple[str, int]]
    any: frozenset[tuple[str, int]]

    def readers(self, oid: int) -> list[str]:
        return [role for role in self.roles if (role, oid) in self.select]

    def holders(self, oid: int) -> list[str]:
        return [role for role in self.roles if (role, oid) in self.any]


_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

# Tables, views and foreign tables of some schemas, with RLS and the planner's row estimate.
RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relrowsecurity, greatest(c.reltuples, 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""

# Foreign keys of some tables: key columns in order, the target spelt table(columns).
FOREIGN_KEYS = """
SELECT c.conrelid, c.conname,
       (SELECT array_agg(a.attname::text ORDER BY k.ord)
        FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
       format('%%s(%%s)', c.confrelid::regclass,
              (SELECT string_agg(a.attname, ', ' ORDER BY k.ord)
               FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum)),
       c.confdeltype, c.convalidated
FROM pg_constraint c
WHERE c.conrelid = ANY(%s::oid[]) AND c.contype = 'f'
ORDER BY c.conrelid, c.conname
"""

# Valid unique indexes of some tables (expression indexes aside) and the constraint owning each.
UNIQUE_KEYS = """
SELECT i.indrelid, ic.relname, con.conname,
       (SELECT array_agg(a.attname::text ORDER BY k.ord)
        FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
       i.indpred IS NOT NULL
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('u', 'p')
WHERE i.indrelid = ANY(%s::oid[]) AND i.indisunique AND i.indexprs IS NULL AND i.indisvalid
ORDER BY i.indrelid, ic.relname
"""

# Every constraint of some tables, as pg_get_constraintdef prints it (inspect).
CONSTRAINTS = """
SELECT conrelid, conname, contype, pg_get_constraintdef(oid), convalidated FROM pg_constraint
WHERE conrelid = ANY(%s::oid[]) ORDER BY conrelid, conname
"""

# Every index of some tables, as pg_get_indexdef prints it, and whether queries can use it (inspect).
INDEXES = """
SELECT i.indrelid, ic.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisvalid AND i.indisready
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = ANY(%s::oid[]) ORDER BY i.indrelid, ic.relname
"""

# Row level security policies of some tables: to whom, for which command, and their USING clause.
POLICIES = """
SELECT p.polrelid, p.polname,
       CASE WHEN p.polroles = '{0}' THEN ARRAY['public']
            ELSE ARRAY(SELECT rolname::text FROM pg_roles WHERE oid = ANY(p.polroles) ORDER BY rolname) END,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                     WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
       pg_get_expr(p.polqual, p.polrelid)
FROM pg_policy p WHERE p.polrelid = ANY(%s::oid[]) ORDER BY p.polrelid, p.polname
"""

# User triggers of some tables (constraint triggers of foreign keys aside).
TRIGGERS = """
SELECT tgrelid, tgname, tgtype, tgenabled FROM pg_trigger
WHERE tgrelid = ANY(%s::oid[]) AND NOT tgisinternal ORDER BY tgrelid, tgname
"""

# Which of some roles exist, and what each holds on some tables (by OID, never by name).
PRIVILEGES = """
SELECT r.rolname, t.oid, has_table_privilege(r.oid, t.oid, 'SELECT'), has_table_privilege(r.oid, t.oid, %s)
FROM pg_roles r LEFT JOIN unnest(%s::oid[]) AS t(oid) ON true
WHERE r.rolname = ANY(%s) ORDER BY r.rolname
"""


def relations(conn: psycopg.Connection, schemas: Iterable[str]) -> Relations:
    """Every table, view and foreign table of ``schemas``: the command's one lookup of names."""
    wanted = tuple(sorted(set(schemas)))
    rows = conn.execute(RELATIONS, (list(wanted),)).fetchall()
    found = {f"{schema}.{name}": Relation(oid, schema, name, kind, rls, rows_)
             for oid, schema, name, kind, rls, rows_ in rows}
    return Relations(found)


def _grouped(rows: Iterable[tuple], make) -> dict[int, list]:
    """Rows whose first column is a table's OID, made into objects and grouped by it."""
    grouped: dict[int, list] = {}
    for oid, *rest in rows:
        grouped.setdefault(oid, []).append(make(*rest))
    return grouped


def foreign_keys(conn: psycopg.Connection, oids: list[int]) -> dict[int, list[ForeignKey]]:
    """Each table's foreign keys, by OID, with their targets spelt out."""
    rows = conn.execute(FOREIGN_KEYS, (oids,)).fetchall()
    return _grouped(rows, lambda name, columns, target, deltype, valid: ForeignKey(
        name, tuple(columns or ()), target, _ON_DELETE.get(deltype, deltype), valid))


def unique_keys(conn: psycopg.Connection, oids: list[int]) -> dict[int, list[UniqueKey]]:
    """Each table's unique indexes (expression indexes aside) and their owning constraints, by OID."""
    rows = conn.execute(UNIQUE_KEYS, (oids,)).fetchall()
    return _grouped(rows, lambda index, constraint, columns, partial: UniqueKey(
        index, constraint, tuple(columns or ()), partial))


def constraints(conn: psycopg.Connection, oids: list[int]) -> dict[int, list[dict[str, object]]]:
    rows = conn.execute(CONSTRAINTS, (oids,)).fetchall()
    return _grouped(rows, lambda n, t, d, v: {"name": n, "type": t, "definition": d, "validated": v})


def indexes(conn: psycopg.Connection, oids: list[int]) -> dict[int, list[dict[str, object]]]:
    rows = conn.execute(INDEXES, (oids,)).fetchall()
    return _grouped(rows, lambda n, d, u, v: {"name": n, "definition": d, "unique": u, "valid": v})


def policies(conn: psycopg.Connection, relations_: Relations, oids: list[int]) -> list[Policy]:
    by_oid = {r.oid: r.qualified for r in relations_.by_name.values()}
    rows = conn.execute(POLICIES, (oids,)).fetchall()
    return [Policy(by_oid[oid], name, tuple(roles), command, using) for oid, name, roles, command, using in rows]


def triggers(conn: psycopg.Connection, oids: list[int]) -> dict[int, list[Trigger]]:
    return _grouped(conn.execute(TRIGGERS, (oids,)).fetchall(), Trigger)


def privileges(conn: psycopg.Connection, roles: Iterable[str], oids: list[int],
               any_of: Iterable[str] = sorted(TABLE_PRIVILEGES)) -> Privileges:
    """One statement for every (role, table): whether it may SELECT, and whether it holds any of ``any_of``."""
    rows = conn.execute(PRIVILEGES, (", ".join(any_of), oids, list(roles))).fetchall()
    existing = tuple(dict.fromkeys(role for role, *_ in rows))
    select = frozenset((role, oid) for role, oid, can_select, _ in rows if oid is not None and can_select)
    holds = frozenset((role, oid) for role, oid, _, holds_any in rows if oid is not None and holds_any)
    return Privileges(existing, select, holds)


@dataclass(frozen=True)
class InvalidIndex:
    """An index PostgreSQL keeps but does not use: a failed or interrupted ``CREATE INDEX CONCURRENTLY``.

    ``ready`` is false while (or when) the build never reached the point where writes
    maintain it; ``valid`` false means no query uses it. An invalid unique index says
    nothing about the rows that were there before it.
    """

    schema: str
    name: str
    table: str
    ready: bool

    def describe(self) -> str:
        state = "invalid" if self.ready else "invalid, not ready"
        return f"{self.schema}.{self.name} on {self.schema}.{self.table} ({state})"


def invalid_indexes(conn: psycopg.Connection, schema: str = SCHEMA) -> list[InvalidIndex]:
    """Every index of ``schema`` with ``indisvalid`` or ``indisready`` false, by table and name."""
    rows = conn.execute(
        """
        SELECT ic.relname, tc.relname, i.indisready
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class tc ON tc.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE n.nspname = %s AND NOT (i.indisvalid AND i.indisready)
        ORDER BY tc.relname, ic.relname
        """,
        (schema,),
    ).fetchall()
    return [InvalidIndex(schema, name, table, ready) for name, table, ready in rows]


def reserved_memberships(conn: psycopg.Connection, app_roles: tuple[str, ...]) -> list[tuple[str, str]]:
    """(member, role): every role but a superuser directly in a reserved role, and every one of
    ``app_roles`` in one of Supabase's service roles."""
    return conn.execute(
        "SELECT m.rolname, r.rolname FROM pg_catalog.pg_auth_members AS a "
        "JOIN pg_catalog.pg_roles AS r ON r.oid = a.roleid JOIN pg_catalog.pg_roles AS m ON m.oid = a.member "
        "WHERE NOT m.rolsuper AND (r.rolname = ANY(%s) OR (r.rolname = ANY(%s) AND m.rolname = ANY(%s))) "
        "ORDER BY 1, 2",
        (list(RESERVED_ROLES), list(SERVICE_ROLES), list(app_roles)),
    ).fetchall()


# The read-only login of CI's previews and the drift check (docs/delivery.md) reads the
# ledger to say what is applied: exactly this, and nothing more, besides the owner.
LEDGER_READER = "appdb_readonly"
LEDGER_READS = {"schema appdb": ("USAGE",), "appdb.migrations": ("SELECT",)}


@dataclass(frozen=True)
class LedgerObject:
    """The ``appdb`` schema or an object in it, its owner, and who else holds what on it."""

    what: str  # "schema appdb", "appdb.migrations", "column appdb.migrations.revert_sql", "function appdb.f()"
    owner: str
    grants: tuple[tuple[str, tuple[str, ...]], ...]  # (grantee or PUBLIC, privileges), owner left out


def ledger_objects(conn: psycopg.Connection) -> list[LedgerObject]:
    """Schema ``appdb`` first, then each relation, column ACL and function in it, from their ACLs.

    A NULL ACL is the built-in default (``acldefault``): PUBLIC may EXECUTE a new function.
    Grants are the direct ones, PUBLIC included; a member of a grantee holds what it holds.
    """
    rows = conn.execute(
        """
        WITH ns AS (SELECT oid, nspowner, nspacl FROM pg_namespace WHERE nspname = 'appdb'),
        objects (sort, what, owner, acl) AS (
            SELECT 0, 'schema appdb', ns.nspowner, coalesce(ns.nspacl, acldefault('n', ns.nspowner)) FROM ns
            UNION ALL
            SELECT 1, 'appdb.' || quote_ident(c.relname), c.relowner,
                   coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))
            FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
            UNION ALL
            SELECT 2, 'column appdb.' || quote_ident(c.relname) || '.' || quote_ident(a.attname), c.relowner, a.attacl
            FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE a.attacl IS NOT NULL
            UNION ALL
            SELECT 3, 'function appdb.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid)
                      || ')', p.proowner, coalesce(p.proacl, acldefault('f', p.proowner))
            FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
        )
        SELECT o.what, pg_get_userbyid(o.owner), e.holder,
               e.privilege_type || CASE WHEN e.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
        FROM objects o
        LEFT JOIN LATERAL (
            SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END AS holder,
                   x.privilege_type, x.is_grantable
            FROM aclexplode(o.acl) x WHERE x.grantee <> o.owner
        ) e ON true
        ORDER BY o.sort, o.what COLLATE "C", e.holder COLLATE "C",
                 array_position(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER',
                                      'MAINTAIN', 'USAGE', 'CREATE', 'EXECUTE'], e.privilege_type)
        """
    ).fetchall()
    grouped: dict[tuple[str, str], dict[str, list[str]]] = {}
    for what, owner, grantee, privilege in rows:
        grants = grouped.setdefault((what, owner), {})
        if grantee is not None:
            grants.setdefault(grantee, []).append(privilege)
    return [
        LedgerObject(what, owner, tuple((grantee, tuple(privileges)) for grantee, privileges in grants.items()))
        for (what, owner), grants in grouped.items()
    ]
