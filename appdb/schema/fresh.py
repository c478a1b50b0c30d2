"""A throwaway Supabase-shaped database with every migration applied and the program's grants.

This is what the committed schema snapshot describes, and what ``appdb schema --check``
and ``--write`` build. It takes a few seconds: a new PostgreSQL cluster from
appdb/local/throwaway.py (the same Supabase shape, major version, random passwords and
access rules as ``appdb local up`` and the tests), reachable over its Unix socket only
(no TCP port to collide with), removed on exit.

The database is built in the order ``pulumi up`` builds a real one:

1. :func:`prepare`: the schema (owned by the login that runs the migrations), the group
   roles the migrations' policies name and the backend's login in the writer group (without
   a password), as components/schema.py and roles.py create them;
2. every migration, with appdb's own runner, as the non-superuser ``postgres`` login;
3. :func:`apply_grants`: the access plan of appdb/access.py, exactly as components/grants.py
   turns it into ``postgresql.Grant`` and ``postgresql.DefaultPrivileges`` resources: for each
   role, USAGE on the schema when ``schema_usage``; the table privileges on all tables or the
   listed ones (revoking first, so an empty list revokes); the sequence privileges; and
   ``ALTER DEFAULT PRIVILEGES FOR ROLE <owner>`` for tables and sequences when ``future``.

This module is the one builder of such a database: the snapshot (appdb/schema/snapshot.py),
``pull`` and ``baseline`` (appdb/adopt/) all build through :func:`throwaway`.

API::

    with throwaway(schema) as built:                  # -> Throwaway, after step 1
        built.apply(migrations); built.grant()         # steps 2 and 3, in as many stages as needed
        built.describe(ledger=False); built.conn      # what a stage left
    fresh_description(migrations, schema="app") -> Description   # all three steps, described
    build(conn, migrations)                           # steps 1-3 on a database you already have
    prepare(conn) / apply_grants(conn)                # the steps one by one
    program_baseline(conn)                            # prepare + the grants that need no table

``program_baseline`` is the start of the engine's tests, CI's throwaway databases and the
benchmarks: what the Pulumi program has made, with the access plan's USAGE on the schema
and default privileges already in place, so the tables the migrations create get the
plan's privileges as they appear (the table grants of the plan follow in :func:`apply_grants`).

``build`` and friends need a database shaped like Supabase (``Cluster.shape``) and a
connection as the ``postgres`` login.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from appdb.access import DEFAULT_ACCESS, GROUP_ROLES, SCHEMA, TABLE_PRIVILEGES, WRITER, TableAccess
from appdb.local.cluster import BACKEND, LOGIN, Cluster
from appdb.local.throwaway import throwaway_cluster
from appdb.migrate.files import Migration
from appdb.schema.describe import Description, describe

log = logging.getLogger(__name__)

@contextmanager
def scratch_cluster() -> Iterator[Cluster]:
    """A new, started, Supabase-shaped cluster, socket only; stopped and removed after."""
    with throwaway_cluster("appdb-scratch-") as cluster:
        yield cluster


@dataclass(frozen=True)
class Throwaway:
    """A connection to a throwaway database with the schema and roles made: apply, grant, describe."""

    conn: psycopg.Connection
    schema: str = SCHEMA
    owner: str = LOGIN

    def apply(self, migrations: list[Migration]) -> None:
        """The pending ones of ``migrations``, with appdb's own runner, as a deploy runs them."""
        from appdb.migrate import runner

        runner.apply(self.conn, migrations, runner.Options())

    def grant(self, access: tuple[TableAccess, ...] = DEFAULT_ACCESS) -> None:
        apply_grants(self.conn, access, self.schema, self.owner)

    def describe(self, ledger: bool = True) -> Description:
        return describe(self.conn, self.schema, ledger=ledger)

    @property
    def postgresql(self) -> str:
        """The server's major version, as the snapshot's header records it."""
        return str(self.conn.info.server_version // 10000)


@contextmanager
def throwaway(schema: str = SCHEMA, owner: str = LOGIN) -> Iterator[Throwaway]:
    """A new Supabase-shaped database with what the program makes before the first migration (step 1)."""
    with scratch_cluster() as cluster, cluster.connect() as conn:
        prepare(conn, schema, owner)
        yield Throwaway(conn, schema, owner)


def fresh_description(
    migrations: list[Migration],
    access: tuple[TableAccess, ...] = DEFAULT_ACCESS,
    schema: str = SCHEMA,
) -> Description:
    """The description of ``schema`` on a brand-new database built from ``migrations``."""
    with throwaway(schema) as built:
        built.apply(migrations)
        built.grant(access)
        return built.describe()


def build(
    conn: psycopg.Connection,
    migrations: list[Migration],
    access: tuple[TableAccess, ...] = DEFAULT_ACCESS,
    schema: str = SCHEMA,
    owner: str = LOGIN,
) -> None:
    """Schema and roles, every pending migration, then the grants: ``pulumi up``'s order."""
    prepare(conn, schema, owner)
    built = Throwaway(conn, schema, owner)
    built.apply(migrations)
    built.grant(access)


def prepare(conn: psycopg.Connection, schema: str = SCHEMA, owner: str = LOGIN) -> None:
    """What the program creates before the first migration: the schema, the group roles, the backend's login.

    Roles are cluster-wide, so each is made only when missing. The login gets no password
    here: a cluster that lets it in gives it its own (``Cluster.set_password``).
    """
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
        sql.Identifier(schema), sql.Identifier(owner)))
    wanted = [*GROUP_ROLES.values(), BACKEND]
    existing = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (wanted,))}
    for role in GROUP_ROLES.values():
        if role not in existing:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    if BACKEND not in existing:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
            sql.Identifier(BACKEND), sql.Identifier(WRITER)))


def program_baseline(
    conn: psycopg.Connection,
    access: tuple[TableAccess, ...] = DEFAULT_ACCESS,
    schema: str = SCHEMA,
    owner: str = LOGIN,
) -> None:
    """:func:`prepare`, then the access plan's grants that need no table: USAGE on the schema, default privileges."""
    prepare(conn, schema, owner)
    apply_grants(conn, access, schema, owner, tables=False)


def apply_grants(
    conn: psycopg.Connection,
    access: tuple[TableAccess, ...] = DEFAULT_ACCESS,
    schema: str = SCHEMA,
    owner: str = LOGIN,
    tables: bool = True,
) -> None:
    """The access plan as components/grants.py applies it, one transaction per role.

    ``tables=False`` leaves out the grants on tables and sequences that exist (before the
    first migration there are none, and a listed table is not there yet).
    """
    s = sql.Identifier(schema)
    for plan in access:
        role = sql.Identifier(plan.role)
        with conn.transaction():
            if plan.schema_usage:
                conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(s, role))
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, role))
            if tables:
                _table_grants(conn, plan, s, role)
            if plan.future:
                for kind, privileges in (("TABLES", plan.privileges), ("SEQUENCES", plan.sequence_privileges)):
                    if not privileges:
                        continue
                    prefix = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {}").format(
                        sql.Identifier(owner), s)
                    conn.execute(sql.SQL("{} REVOKE ALL ON {} FROM {}").format(prefix, sql.SQL(kind), role))
                    conn.execute(sql.SQL("{} GRANT {} ON {} TO {}").format(
                        prefix, _privileges(privileges), sql.SQL(kind), role))
    log.info("grants of the access plan applied to schema %s", schema)


def _table_grants(conn: psycopg.Connection, plan: TableAccess, s: sql.Identifier, role: sql.Identifier) -> None:
    """The plan's privileges on the tables (all, or the listed ones) and sequences there are, revoking first."""
    if plan.tables:
        objects = sql.SQL(", ").join(sql.SQL("{}.{}").format(s, sql.Identifier(t)) for t in plan.tables)
        conn.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(objects, role))
    else:
        objects = sql.SQL("ALL TABLES IN SCHEMA {}").format(s)
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(objects, role))
    if plan.privileges:
        on = sql.SQL("TABLE {}").format(objects) if plan.tables else objects
        conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(_privileges(plan.privileges), on, role))
    if plan.sequence_privileges:
        conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(s, role))
        conn.execute(sql.SQL("GRANT {} ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            _privileges(plan.sequence_privileges), s, role))


def _privileges(names: tuple[str, ...]) -> sql.Composable:
    """Privilege keywords, checked against a fixed list (they cannot be identifiers or parameters)."""
    unknown = set(names) - TABLE_PRIVILEGES - {"USAGE"}
    if unknown:
        raise ValueError(f"not privileges: {', '.join(sorted(unknown))}")
    return sql.SQL(", ").join(sql.SQL(name) for name in names)
