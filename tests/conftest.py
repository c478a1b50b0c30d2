"""Fixtures: one throwaway Supabase-shaped cluster per session, one fresh database per test.

Under pytest-xdist each worker is its own session, so each starts its own cluster.

The cluster comes from appdb/local/throwaway.py, the one place a temporary cluster is
made (the same Cluster, Supabase shape and major version as ``appdb local up``; as the
``postgres`` OS user when the tests run as root), with its socket in a temp folder and
TCP on a free loopback port. It runs the project's PostgreSQL major version, or
``APPDB_PG_MAJOR``'s (bin/test runs the database tests on the other major with it).
Its passwords are its own, random, in its 0600 password file
(``cluster.password(role)``): the superuser's is used only through the socket, and
app_backend (made by the program's baseline) gets the file's. Each test's database is a
copy of a template that holds the Supabase shape plus what the Pulumi program makes
before the first migration (appdb/schema/fresh.py's ``program_baseline``, from the
access plan), and is dropped WITH (FORCE) afterwards.

Database tests never skip for a missing PostgreSQL: .ci/run installs it, and a skip
would hide the failure.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from appdb.local.cluster import BACKEND, SUPERUSER, Cluster
from appdb.local.throwaway import free_port, throwaway_cluster
from appdb.schema.fresh import program_baseline

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
STATES = Path(__file__).resolve().parent / "states"
TEMPLATE = "appdb_template"
_counter = itertools.count()

__all__ = ["free_port"]  # the tests' helpers import it from here


def state_sql(name: str) -> str:
    return (STATES / f"{name}.sql").read_text()


def production(db: "Database") -> "Database":
    """Production before 029 and 030: memberships with both unique keys, the two older payment tables, rows."""
    db.load_state("production")
    db.load_state("production_billing")
    return db


def foreign_keys(db: "Database", table: str) -> list[tuple]:
    """(name, definition, validated) of each foreign key on ``table``, by name."""
    return db.execute(
        "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname",
        (table,),
    )


@dataclass
class Database:
    """One test's database on the session cluster."""

    cluster: Cluster
    name: str

    @property
    def major(self) -> int:
        """The PostgreSQL major version the cluster runs (the project's, or APPDB_PG_MAJOR's)."""
        return self.cluster.major

    @property
    def dsn(self) -> str:
        """The non-superuser ``postgres`` login over the socket, as the engine deploys."""
        return self.cluster.dsn(self.name)

    @property
    def tcp_params(self) -> dict[str, str]:
        """The ``postgres`` login over TCP with its password, for tests that hand it on (PG*, a URL)."""
        params = self.cluster.params(self.name, tcp=True)
        del params["passfile"]
        return {**params, "password": self.cluster.password()}

    def backend_params(self) -> dict[str, str]:
        """app_backend over TCP with its password, as the backend logs in."""
        return {**self.tcp_params, "user": BACKEND, "password": self.cluster.password(BACKEND)}

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, **kwargs)

    def admin_connect(self) -> psycopg.Connection:
        """The superuser, through the socket: its only way in."""
        return self.cluster.connect(self.name, user=SUPERUSER)

    def execute(self, query: str, params: tuple | None = None) -> list[tuple]:
        with self.connect() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def load_state(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(state_sql(name))

    def run_cli(self, *args: str, sql_dir: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
        """``python -m appdb ARGS`` in a subprocess, connected through DATABASE_URL."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        full_env.update({
            "DATABASE_URL": self.dsn,
            "APPDB_SQL_DIR": str(sql_dir or SQL_DIR),
            "PYTHONPATH": str(ROOT),
        })
        full_env.update(env or {})
        return subprocess.run([sys.executable, "-m", "appdb", *args], capture_output=True, text=True,
                              env=full_env, cwd=ROOT, timeout=timeout, check=False)

    def snapshot(self) -> dict[str, object]:
        """The app and auth catalog plus every app row: equal snapshots mean nothing changed."""
        with self.connect() as conn:
            catalog = conn.execute(
                """
                SELECT n.nspname, c.relname, c.relkind::text, c.relrowsecurity,
                       (SELECT array_agg(conname || ':' || pg_get_constraintdef(oid) || ':' || convalidated
                                         ORDER BY conname) FROM pg_constraint WHERE conrelid = c.oid),
                       (SELECT array_agg(attname || ':' || format_type(atttypid, atttypmod) ORDER BY attnum)
                        FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped),
                       (SELECT array_agg(polname ORDER BY polname) FROM pg_policy WHERE polrelid = c.oid)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname IN ('app', 'auth', 'appdb') ORDER BY 1, 2
                """
            ).fetchall()
            rows = {}
            for schema, table, kind, *_ in catalog:
                if kind == "r" and schema in ("app", "auth", "appdb"):
                    query = sql.SQL("SELECT to_jsonb(t)::text FROM {}.{} t ORDER BY 1").format(
                        sql.Identifier(schema), sql.Identifier(table))
                    rows[f"{schema}.{table}"] = [r[0] for r in conn.execute(query).fetchall()]
        return {"catalog": catalog, "rows": rows}


# Test files that start clusters of their own rather than through the fixtures below.
_OWN_CLUSTERS = {"test_local.py", "test_tls.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that touches a database `database`: bin/test runs them on the other major too."""
    for item in items:
        if {"cluster", "db", "new_db"} & set(getattr(item, "fixturenames", ())) or item.path.name in _OWN_CLUSTERS:
            item.add_marker(pytest.mark.database)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster("appdb-test-", tcp=True, settings={"max_connections": "200"}) as node:
        with node.connect(user=SUPERUSER) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        node.shape(TEMPLATE)
        with node.connect(TEMPLATE) as conn:
            program_baseline(conn)
        with node.connect(user=SUPERUSER) as conn:
            node.set_password(conn, BACKEND)
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(TEMPLATE)))
        yield node


@pytest.fixture
def new_db(cluster: Cluster) -> Iterator[Callable[[], Database]]:
    """Makes fresh databases on demand (a test that needs a second one); all dropped afterwards."""
    made: list[str] = []

    def make() -> Database:
        name = f"t_{os.getpid()}_{next(_counter)}"
        with cluster.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)))
        made.append(name)
        return Database(cluster, name)

    try:
        yield make
    finally:
        with cluster.connect(user=SUPERUSER) as conn:
            for name in made:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db(new_db: Callable[[], Database]) -> Database:
    return new_db()
