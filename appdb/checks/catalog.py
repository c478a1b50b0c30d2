"""Catalog reads shared by ``verify`` and ``inspect``: keys found by columns, never by name."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class ForeignKey:
    name: str
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


_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def relation_oid(conn: psycopg.Connection, qualified: str) -> int | None:
    """A table's OID from the catalog alone.

    ``to_regclass`` and ``has_table_privilege(role, text)`` resolve names with the
    caller's schema privileges, and the read-only login the previews and the drift
    check use has no USAGE on Supabase's ``auth`` (which ``postgres`` cannot grant).
    """
    schema, _, name = qualified.partition(".")
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return row[0] if row else None


def table_exists(conn: psycopg.Connection, qualified: str) -> bool:
    return relation_oid(conn, qualified) is not None


def foreign_keys(conn: psycopg.Connection, table: str, columns: tuple[str, ...]) -> list[ForeignKey]:
    """Foreign keys of ``table`` whose key is exactly ``columns``, with their targets spelt out."""
    rows = conn.execute(
        """
        SELECT c.conname,
               format('%%s(%%s)', c.confrelid::regclass,
                      (SELECT string_agg(a.attname, ', ' ORDER BY k.ord)
                       FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord)
                       JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum)),
               c.confdeltype, c.convalidated
        FROM pg_constraint c
        WHERE c.conrelid = %s::oid AND c.contype = 'f'
          AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
               FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) = %s::text[]
        ORDER BY c.conname
        """,
        (relation_oid(conn, table), list(columns)),
    ).fetchall()
    return [ForeignKey(name, target, _ON_DELETE.get(deltype, deltype), valid) for name, target, deltype, valid in rows]


def unique_keys(conn: psycopg.Connection, table: str) -> list[UniqueKey]:
    """Every unique index of ``table`` (expression indexes aside) and its owning constraint."""
    rows = conn.execute(
        """
        SELECT ic.relname, con.conname,
               (SELECT array_agg(a.attname::text ORDER BY k.ord)
                FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
               i.indpred IS NOT NULL
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('u', 'p')
        WHERE i.indrelid = %s::oid AND i.indisunique AND i.indexprs IS NULL AND i.indisvalid
        ORDER BY ic.relname
        """,
        (relation_oid(conn, table),),
    ).fetchall()
    return [UniqueKey(index, constraint, tuple(columns or ()), partial) for index, constraint, columns, partial in rows]


def app_tables(conn: psycopg.Connection, schema: str = "app") -> list[tuple[str, bool]]:
    """(table, row level security enabled) for each ordinary or partitioned table of ``schema``."""
    return conn.execute(
        """
        SELECT c.relname, c.relrowsecurity FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname
        """,
        (schema,),
    ).fetchall()


def roles_that_exist(conn: psycopg.Connection, names: tuple[str, ...]) -> list[str]:
    rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname", (list(names),))
    return [row[0] for row in rows.fetchall()]


def readable_by(conn: psycopg.Connection, qualified: str, roles: list[str]) -> list[str]:
    """Which of ``roles`` may SELECT from the table (directly or through membership)."""
    return [role for role in roles if has_privilege(conn, role, qualified, "SELECT")]


def has_privilege(conn: psycopg.Connection, role: str, qualified: str, privileges: str) -> bool:
    """Whether ``role`` holds any of ``privileges`` on the table (looked up by OID)."""
    oid = relation_oid(conn, qualified)
    if oid is None:
        return False
    return conn.execute("SELECT has_table_privilege(%s, %s::oid, %s)", (role, oid, privileges)).fetchone()[0]


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


def invalid_indexes(conn: psycopg.Connection, schema: str = "app") -> list[InvalidIndex]:
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
