"""What the tests share that is not a fixture: paths, states, the Database handle, small helpers.

Fixtures live in the plugin tests/fixtures/database.py (registered by the root conftest.py);
test files import helpers from here, never from conftest.py or from one another.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from appdb.local.cluster import BACKEND, SUPERUSER, Cluster
from appdb.local.throwaway import free_port
from appdb.schema.describe import Description, describe

__all__ = ["free_port"]  # one free_port, appdb/local/throwaway.py's

ROOT = Path(__file__).resolve().parent.parent
# The project's migrations, as they are: for the tests of what they build (verify, RLS, the
# snapshot's freshness, the files' own checks).
SQL_DIR = ROOT / "sql"
# The migrations the tests of the runner's machinery were written around: the incident's 027 and
# 028, then 029 and 030. Those tests use these (SHIPPED_SQL, copy_shipped), not all of sql/, so that
# a migration the team adds next (031, ...) changes none of them, and a test's own 031 never meets it.
SHIPPED = ("027", "028", "029", "030")
STATES = Path(__file__).resolve().parent / "states"
TEMPLATE = "appdb_template"



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
            "APPDB_SQL_DIR": str(sql_dir or CLI_SQL_DIR),
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


PROGRAM_OWNED = ("privilege ", "default privileges ")


def migrations_part(db: Database) -> Description:
    """The description less what the Pulumi program owns (grants, default privileges) and the ledger."""
    with db.connect() as conn:
        full = describe(conn, "app", ledger=False)
    return full.without({k for k in full if k.startswith(PROGRAM_OWNED)})


def pull(db: Database, sql_dir: Path, *extra: str, env: dict[str, str] | None = None):
    return db.run_cli("pull", "adopt_production", *extra, sql_dir=sql_dir, env=env)


def squawk(*files: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).parent / "squawk"
    return subprocess.run([str(tool), *map(str, files)], cwd=ROOT, capture_output=True, text=True, check=False)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appdb: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def documented_readonly_login_sql(password: str) -> str:
    """docs/delivery.md's SQL that creates the read-only login, exactly as written there."""
    text = (ROOT / "docs" / "delivery.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```sql\n(.*?)```", text, re.S) if "CREATE ROLE appdb_readonly" in b]
    assert len(blocks) == 1, "docs/delivery.md must show the read-only login's SQL once"
    return blocks[0].replace("<a long random password>", password)


@contextmanager
def throwaway_os_user(name: str) -> Iterator[pwd.struct_passwd]:
    """An OS user made with useradd (no home, no shell) and removed afterwards, when this call made it.

    Skips the test without root: only root can make one.
    """
    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root: makes a throwaway OS user with useradd")
    made = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                          capture_output=True, text=True, check=False)
    try:
        yield pwd.getpwnam(name)
    finally:
        if made.returncode == 0:
            subprocess.run(["userdel", name], capture_output=True, check=False)


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    """Poll ``condition`` until it returns something true (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def write_migration(sql_dir: Path, name: str, text: str = "SELECT 1;\n", revert: str | None = "-- no-op\n") -> None:
    """``sql_dir/name`` and, unless ``revert`` is None, its revert in ``sql_dir/revert/``."""
    (sql_dir / "revert").mkdir(parents=True, exist_ok=True)
    (sql_dir / name).write_text(text)
    if revert is not None:
        (sql_dir / "revert" / name).write_text(revert)


# What another OS user needs of the checkout to run appdb, and of the virtualenv to run psycopg.
_FOR_OTHER_USERS = ("appdb", "sql", "Pulumi.yaml", "Pulumi.local.yaml")
_PACKAGES_FOR_OTHER_USERS = ("psycopg", "psycopg_binary", "psycopg_binary.libs", "typing_extensions.py")


def readable_checkout() -> tuple[Path, str]:
    """A copy of appdb, sql/, the stack files and psycopg that every OS user can read, and its PYTHONPATH.

    The checkout itself may be closed to others (a home, or a mktemp folder, is 0700): tests
    that run appdb as another user run this copy. The caller removes the folder.
    """
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="appdb-readable-", dir="/tmp"))
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    ignore = shutil.ignore_patterns("__pycache__")
    for base, names, into in ((ROOT, _FOR_OTHER_USERS, root), (site, _PACKAGES_FOR_OTHER_USERS, root / "site")):
        into.mkdir(exist_ok=True)
        for name in names:
            source = base / name
            if source.is_dir():
                shutil.copytree(source, into / name, ignore=ignore)
            elif source.exists():
                shutil.copy2(source, into / name)
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644 | (os.stat(os.path.join(folder, name)).st_mode & 0o111))
    return root, f"{root}:{root / 'site'}"


def copy_shipped(into: Path) -> Path:
    """``into``, made an sql/ folder holding the shipped migrations (:data:`SHIPPED`), their reverts
    and the folder's drift rules; and its schema snapshot while sql/ holds nothing else (one made
    from more migrations describes more)."""
    import shutil

    (into / "revert").mkdir(parents=True)
    # By name, not through discover(): a migration of the team's still being written (no revert
    # yet) must not stop every test module that imports this one.
    files = sorted(SQL_DIR.glob("[0-9]*.sql"))
    for path in files:
        if path.name.partition("_")[0] in SHIPPED:
            shutil.copy2(path, into / path.name)
            shutil.copy2(SQL_DIR / "revert" / path.name, into / "revert" / path.name)
    shutil.copy2(SQL_DIR / "drift-ignore.toml", into / "drift-ignore.toml")
    if tuple(path.name.partition("_")[0] for path in files) == SHIPPED:
        shutil.copy2(SQL_DIR / "schema.snapshot", into / "schema.snapshot")
    return into


def _shipped_sql() -> Path:
    """A folder of this process's own with the shipped migrations (copy_shipped), removed at its
    exit; those a killed run left (their process gone) are removed here."""
    import atexit
    import shutil
    import tempfile

    for left in Path(tempfile.gettempdir()).glob("appdb-shipped-*-*"):
        pid = left.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(left, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"appdb-shipped-{os.getpid()}-"))
    atexit.register(shutil.rmtree, folder, True)
    return copy_shipped(folder / "sql")


SHIPPED_SQL = _shipped_sql()
# The folder Database.run_cli reads unless told: the shipped migrations; a test module about what
# the project's own build (verify, drift) makes it SQL_DIR (project_sql_for_the_cli).
CLI_SQL_DIR = SHIPPED_SQL


def project_sql_for_the_cli(monkeypatch) -> None:  # noqa: ANN001 - pytest's MonkeyPatch
    """For a test of what the project's migrations build: Database.run_cli reads sql/ as it is."""
    monkeypatch.setattr(sys.modules[__name__], "CLI_SQL_DIR", SQL_DIR)
