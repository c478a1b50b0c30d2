"""The benchmark of issue 20: deploy time against the size of the migration history.

    .venv/bin/python bench/history.py                                  # both tables, 3 rounds
    .venv/bin/python bench/history.py --rounds 1 --sizes 0 25 100 --cli-sizes 100
    .venv/bin/python bench/history.py --tables cli --peers-bin /opt/bench-peers/bin
    .venv/bin/python bench/history.py --tables cli --tools "psql -1" appdb goose dbmate
    .venv/bin/python bench/history.py --plot docs/performance-history.png

Each synthetic migration creates a table and an index, and has a revert (as in the
issue's figures). Two tables, each printed with its targets next to it:

1. Through Pulumi: a copy of the project in a temp folder (tests/pulumi_engine.py's
   ``copy_project``) with N synthetic migrations after the shipped ones, the local
   stack's file, a ``file://`` backend and the local passphrase, against a fresh
   database of a throwaway Supabase-shaped cluster. Timed, each a new ``pulumi``
   process: the first ``up``, a no-op ``preview``, a no-op ``up``, ``destroy`` (``up``
   and ``destroy`` with ``--skip-preview``, as the Automation API runs them), and
   ``appdb apply`` of the same files in one process on a fresh database. Skipped,
   saying why, without the Pulumi CLI or its pinned plugins.
2. The engine's CLI against peer tools: N synthetic migrations applied from empty,
   then a no-op with N applied, by ``psql -1`` (the concatenated files in one
   transaction: the floor), appdb, goose, dbmate, golang-migrate, yoyo, Flyway and
   sqitch, each on its own fresh database of one cluster, each in its own format
   generated from the same SQL. A peer that is not installed is skipped with the
   command that installs it (docs/performance.md). Then, on the shipped schema: a
   no-op ``appdb apply``, ``apply --only ID`` of an applied migration, ``status`` and
   ``verify``.

Times are medians over ``--rounds`` (the no-ops: over ``--noop-runs`` runs of each
round). Results go to bench/results/history-<UTC time>.json (git-ignored); ``--plot``
draws the growth curve when matplotlib is installed. Exit 1 when a measured target is
missed. Not part of the test suite: a benchmark prints its targets, it never asserts them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appdb.forkserver import FLAG as FORK_SERVER  # noqa: E402
from appdb.local.cluster import BACKEND, LOGIN, ROLES, SUPERUSER, Cluster  # noqa: E402
from appdb.local.postgres import find_bindir, project_major  # noqa: E402
from appdb.local.throwaway import throwaway_cluster  # noqa: E402
from appdb.migrate.files import REVERT_DIR, discover  # noqa: E402
from appdb.schema.fresh import build, prepare  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT_PEERS_BIN = Path(os.environ.get("APPDB_BENCH_PEERS_BIN", "/opt/bench-peers/bin"))
TEMPLATE = "history_template"
# Durability off, as in every throwaway cluster (appdb/local/throwaway.py): commits cost the
# same for every tool, so the figures measure the tools, not this machine's disk. psql -1 of
# 1,000 migrations holds every new table's locks in one transaction: hence the larger lock table.
SERVER_SETTINGS = {
    "shared_buffers": "'256MB'",
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'30min'",
    "max_connections": "100",
    "max_locks_per_transaction": "256",
}

# --- the synthetic migrations -------------------------------------------------------------

FORWARD = """CREATE TABLE app.{table} (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    label text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX {table}_label_idx ON app.{table} (label);
"""
REVERT = "DROP TABLE app.{table};\n"


@dataclass(frozen=True)
class Synthetic:
    """One synthetic migration: its version, a name every tool accepts, the SQL both ways."""

    version: int
    width: int

    @property
    def id(self) -> str:
        return f"{self.version:0{self.width}d}"

    @property
    def table(self) -> str:
        return f"bench_{self.id}"

    @property
    def forward(self) -> str:
        return FORWARD.format(table=self.table)

    @property
    def revert(self) -> str:
        return REVERT.format(table=self.table)


def synthetic(count: int, first: int = 1, width: int = 4) -> list[Synthetic]:
    return [Synthetic(version, width) for version in range(first, first + count)]


def write_appdb(folder: Path, migrations: list[Synthetic]) -> None:
    """appdb's layout: NNNN_name.sql with its revert in revert/."""
    (folder / "revert").mkdir(parents=True, exist_ok=True)
    for m in migrations:
        (folder / f"{m.id}_{m.table}.sql").write_text(m.forward)
        (folder / "revert" / f"{m.id}_{m.table}.sql").write_text(m.revert)


def write_psql(folder: Path, migrations: list[Synthetic]) -> None:
    """One file, every migration concatenated: what ``psql -1 -f`` runs in one transaction."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "all.sql").write_text("".join(m.forward for m in migrations))


def write_goose(folder: Path, migrations: list[Synthetic]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for m in migrations:
        (folder / f"{m.id}_{m.table}.sql").write_text(
            f"-- +goose Up\n{m.forward}\n-- +goose Down\n{m.revert}")


def write_dbmate(folder: Path, migrations: list[Synthetic]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for m in migrations:
        (folder / f"{m.id}_{m.table}.sql").write_text(f"-- migrate:up\n{m.forward}\n-- migrate:down\n{m.revert}")


def write_migrate(folder: Path, migrations: list[Synthetic]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for m in migrations:
        (folder / f"{m.id}_{m.table}.up.sql").write_text(m.forward)
        (folder / f"{m.id}_{m.table}.down.sql").write_text(m.revert)


def write_yoyo(folder: Path, migrations: list[Synthetic]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for m in migrations:
        (folder / f"{m.id}_{m.table}.sql").write_text(m.forward)
        (folder / f"{m.id}_{m.table}.rollback.sql").write_text(m.revert)


def write_flyway(folder: Path, migrations: list[Synthetic]) -> None:
    """Flyway's versioned files; its community edition has no undo files, so no revert."""
    folder.mkdir(parents=True, exist_ok=True)
    for m in migrations:
        (folder / f"V{m.version}__{m.table}.sql").write_text(m.forward)


def write_sqitch(folder: Path, migrations: list[Synthetic]) -> None:
    """A sqitch project: the plan, and deploy/revert scripts that hold their own transaction, as sqitch's do."""
    for sub in ("deploy", "revert", "verify"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "sqitch.conf").write_text(
        "[core]\n\tengine = pg\n[user]\n\tname = bench\n\temail = bench@example.com\n")
    lines = ["%syntax-version=1.0.0", "%project=bench", ""]
    for m in migrations:
        lines.append(f"{m.table} 2026-01-01T00:00:00Z bench <bench@example.com> # synthetic {m.id}")
        (folder / "deploy" / f"{m.table}.sql").write_text(f"BEGIN;\n{m.forward}COMMIT;\n")
        (folder / "revert" / f"{m.table}.sql").write_text(f"BEGIN;\n{m.revert}COMMIT;\n")
        (folder / "verify" / f"{m.table}.sql").write_text(f"SELECT 1 FROM app.{m.table} LIMIT 0;\n")
    (folder / "sqitch.plan").write_text("\n".join(lines) + "\n")


# --- the tools --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where one tool's database is: a cluster reached over TCP as the ``postgres`` login.

    No command line holds the password (``ps`` shows argv to every user): ``url`` and
    ``conninfo`` leave it out, and each tool gets it through the environment the way the
    tool documents (:attr:`Tool.secrets`).
    """

    host: str
    port: int
    dbname: str
    password: str

    @property
    def url(self) -> str:
        return f"postgres://{LOGIN}@{self.host}:{self.port}/{self.dbname}?sslmode=disable"

    @property
    def url_with_password(self) -> str:
        """For a tool that reads its URL only from the environment (dbmate's DATABASE_URL, goose's GOOSE_DBSTRING)."""
        return f"postgres://{LOGIN}:{quote(self.password, safe='')}@{self.host}:{self.port}/{self.dbname}?sslmode=disable"

    @property
    def conninfo(self) -> str:
        return f"host={self.host} port={self.port} dbname={self.dbname} user={LOGIN}"


def libpq_password(target: Target) -> dict[str, str]:
    """libpq's own variable: psql, appdb (psycopg), yoyo (psycopg), sqitch (DBD::Pg), golang-migrate (lib/pq)."""
    return {"PGPASSWORD": target.password}


@dataclass(frozen=True)
class Tool:
    """A migration tool: how to lay out its files, its command for one database, and the password's way in."""

    name: str
    executable: str
    install: str
    write: Callable[[Path, list[Synthetic]], None]
    command: Callable[[str, Path, Target], list[str]]
    noop: Callable[[str, Path, Target], list[str]] | None = None
    env: dict[str, str] = field(default_factory=dict)
    secrets: Callable[[Target], dict[str, str]] = libpq_password
    # Run untimed on the fresh database just before the timed apply: a served tool's server is
    # then warm, as in a pipeline whose `status` comes before its `apply`.
    warm: Callable[[str, Path, Target], list[str]] | None = None

    def environment(self, target: Target) -> dict[str, str]:
        """The tool's environment for one database: no caller's PG*, its fixed settings, its password."""
        return clean_env({**self.env, **self.secrets(target)})


def _appdb_command(exe: str, folder: Path, target: Target) -> list[str]:
    return [exe, "apply", "--sql-dir", str(folder), "--dsn", target.conninfo]


def _appdb_group_command(exe: str, folder: Path, target: Target) -> list[str]:
    return [*_appdb_command(exe, folder, target), "--group"]


def _appdb_served_group_command(exe: str, folder: Path, target: Target) -> list[str]:
    return [*_appdb_group_command(exe, folder, target), FORK_SERVER]


def _appdb_served_noop(exe: str, folder: Path, target: Target) -> list[str]:
    return [*_appdb_command(exe, folder, target), FORK_SERVER]


def _appdb_served_warm(exe: str, folder: Path, target: Target) -> list[str]:
    return [exe, "status", "--sql-dir", str(folder), "--dsn", target.conninfo, FORK_SERVER]


def _psql_command(exe: str, folder: Path, target: Target) -> list[str]:
    return [exe, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", target.conninfo, "-f", str(folder / "all.sql")]


def _psql_noop(exe: str, folder: Path, target: Target) -> list[str]:
    return [exe, "-X", "-q", "-d", target.conninfo, "-c", "SELECT 1"]


SERVED_GROUP = f"appdb --group {FORK_SERVER}"
GO_INSTALL = "GOBIN=/opt/bench-peers/bin go install"
TOOLS = (
    Tool("psql -1", "psql", "apt-get install postgresql-client-15", write_psql, _psql_command, _psql_noop),
    Tool("appdb", str(ROOT / "bin" / "appdb"), "bin/setup", write_appdb, _appdb_command),
    # A hundred migrations a transaction (appdb/migrate/group.py, GROUP_MAX): psql -1's way, nearly.
    Tool("appdb --group", str(ROOT / "bin" / "appdb"), "bin/setup", write_appdb, _appdb_group_command,
         _appdb_command),
    # The same through a warm fork server (README, "A warm appdb"): what a pipeline that ran any
    # served command first pays. Its server is the benchmark's own (a private runtime folder).
    Tool(SERVED_GROUP, str(ROOT / "bin" / "appdb"), "bin/setup", write_appdb, _appdb_served_group_command,
         _appdb_served_noop, warm=_appdb_served_warm),
    Tool("goose", "goose", f"{GO_INSTALL} github.com/pressly/goose/v3/cmd/goose@v3.30.1", write_goose,
         lambda exe, folder, t: [exe, "-dir", str(folder), "up"],
         secrets=lambda t: {"GOOSE_DRIVER": "postgres", "GOOSE_DBSTRING": t.url_with_password}),
    Tool("dbmate", "dbmate", "see docs/performance.md (dbmate v2.28.0 built from its Go module)", write_dbmate,
         lambda exe, folder, t: [exe, "--migrations-dir", str(folder), "--no-dump-schema", "migrate"],
         secrets=lambda t: {"DATABASE_URL": t.url_with_password}),
    Tool("golang-migrate", "migrate",
         f"{GO_INSTALL} -tags 'postgres' github.com/golang-migrate/migrate/v4/cmd/migrate@v4.20.1", write_migrate,
         lambda exe, folder, t: [exe, "-path", str(folder), "-database", t.url, "up"]),
    Tool("yoyo", "yoyo", "python3 -m venv /opt/bench-peers/yoyo && /opt/bench-peers/yoyo/bin/pip install "
         "yoyo-migrations==9.0.0 'psycopg[binary]==3.3.9' && ln -s ../yoyo/bin/yoyo /opt/bench-peers/bin/yoyo",
         write_yoyo,
         lambda exe, folder, t: [exe, "apply", "--batch", "--no-config-file", "--database",
                                 t.url.replace("postgres://", "postgresql+psycopg://", 1), str(folder)]),
    Tool("flyway", "flyway", "see docs/performance.md (Flyway 11.20.3 from Maven Central, with a launcher script)",
         write_flyway,
         lambda exe, folder, t: [exe, f"-url=jdbc:postgresql://{t.host}:{t.port}/{t.dbname}", f"-user={LOGIN}",
                                 f"-locations=filesystem:{folder}", "-skipCheckForUpdate", "migrate"],
         env={"REDGATE_DISABLE_TELEMETRY": "true", "FLYWAY_TELEMETRY_OPTOUT": "true"},
         secrets=lambda t: {"FLYWAY_PASSWORD": t.password}),
    Tool("sqitch", "sqitch", "apt-get install sqitch libdbd-pg-perl", write_sqitch,
         lambda exe, folder, t: [exe, "deploy", f"db:pg://{LOGIN}@{t.host}:{t.port}/{t.dbname}"]),
)


def locate(tool: Tool, peers_bin: Path) -> tuple[str | None, str]:
    """The tool's executable (the peers folder first, then PATH), or None and why, with the install command."""
    candidate = Path(tool.executable)
    if candidate.is_absolute():
        return (str(candidate), "") if os.access(candidate, os.X_OK) else (None, f"{candidate} is missing: {tool.install}")
    in_peers = peers_bin / tool.executable
    if os.access(in_peers, os.X_OK):
        return str(in_peers), ""
    found = shutil.which(tool.executable)
    if found is None and tool.executable == "psql":
        bundled = find_bindir(project_major()) / "psql"
        found = str(bundled) if bundled.exists() else None
    if found:
        return found, ""
    return None, f"`{tool.executable}` is not in {peers_bin} nor on PATH; install it: {tool.install}"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without the caller's PG* or DATABASE_URL: every tool gets only its target."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env.update(extra or {})
    return env


# The throwaway clusters' password: tools may echo their connection string in an error.
SECRETS: set[str] = set()


def redact(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, "[password]").replace(quote(secret, safe=""), "[password]")
    return text


def timed(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 1800) -> float:
    """Wall time of one process; a failure stops the measurement with the process's last words."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(redact(f"exit {result.returncode}: {' | '.join(tail)[-400:]}"))
    return elapsed


# --- the clusters ------------------------------------------------------------------------


@contextmanager
def bench_cluster(label: str) -> Iterator[Cluster]:
    """A started Supabase-shaped cluster on a free loopback port (appdb/local/throwaway.py), removed after."""
    with throwaway_cluster(f"appdb-history-{label}-", tcp=True, settings=dict(SERVER_SETTINGS)) as cluster:
        SECRETS.update(cluster.password(role) for role in ROLES)
        yield cluster


def make_template(cluster: Cluster) -> None:
    """What every tool's database starts from: the Supabase shape, the app schema, the group roles."""
    with cluster.connect(user=SUPERUSER) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(TEMPLATE), sql.Identifier(LOGIN)))
    cluster.shape(TEMPLATE)
    with cluster.connect(TEMPLATE) as conn:
        prepare(conn)


def fresh_database(cluster: Cluster, name: str, template: str | None = TEMPLATE) -> Target:
    """A new database owned by the login, as a copy of the template (or shaped, for Pulumi)."""
    drop_database(cluster, name)
    with cluster.connect(user=SUPERUSER) as conn:
        query = "CREATE DATABASE {} OWNER {}" + (" TEMPLATE {}" if template else "")
        names = [sql.Identifier(name), sql.Identifier(LOGIN)] + ([sql.Identifier(template)] if template else [])
        conn.execute(sql.SQL(query).format(*names))
    if template is None:
        cluster.shape(name)
    return Target("127.0.0.1", cluster.port, name, cluster.password())


def drop_database(cluster: Cluster, name: str) -> None:
    with cluster.connect(user=SUPERUSER) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def bench_tables(cluster: Cluster, dbname: str) -> int:
    """How many synthetic tables the database has: a tool that exits 0 must have made them all."""
    with cluster.connect(dbname) as conn:
        return conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'app' AND tablename LIKE 'bench%'"
                            ).fetchone()[0]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def machine_pace(starts: int = 15) -> dict[str, float]:
    """A fixed piece of work, timed: Python's start-up (the median of ``starts``) and hashing
    16 MB. Figures from two runs compare only where these do: on a shared machine the same
    code's no-op preview took 1.01 s at 06:00 and 1.50 s at 06:45 (docs/performance.md)."""
    times = []
    for _ in range(starts):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-S", "-c", "pass"], check=True)
        times.append(time.perf_counter() - began)
    data = bytes(16 << 20)
    began = time.perf_counter()
    hashlib.sha256(data).digest()
    hashing = time.perf_counter() - began
    return {"python_start_ms": round(statistics.median(times) * 1000, 2), "sha256_16mb_ms": round(hashing * 1000, 2)}


def pace_line(pace: dict[str, float]) -> str:
    """The pace in words, as the tables print it."""
    return f"Python starts in {pace['python_start_ms']:.1f} ms, 16 MB hash in {pace['sha256_16mb_ms']:.1f} ms"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- 1. through Pulumi -------------------------------------------------------------------

PULUMI_STEPS = ("first up", "no-op preview", "no-op up", "rollback", "destroy", "appdb apply")
# The roles the local stack creates cluster-wide; a failed round may leave them behind.
STACK_ROLES = ("app_backend", "app_writer", "app_reader")


def pulumi_project(workdir: Path, extra: int) -> tuple[Path, int]:
    """The project copied to ``workdir`` with ``extra`` synthetic migrations after the shipped ones."""
    from tests.pulumi_engine import copy_project

    project = copy_project(workdir / "appdb")
    shipped = discover(project / "sql")
    newest = int(shipped[-1].id)
    width = max(len(shipped[-1].id), len(str(newest + extra)))
    write_appdb(project / "sql", synthetic(extra, newest + 1, width))
    return project, len(shipped) + extra


# A bash shim in place of the copy's bin/appdb (--time-deletes): when each command began and
# ended, from bash's own clock (no process of its own), beside the real script.
_SHIM = """#!/bin/bash
echo "start $EPOCHREALTIME $1" >> {log}
"${{0%/*}}/appdb.timed" "$@"
status=$?
echo "end $EPOCHREALTIME" >> {log}
exit $status
"""


def time_commands(project: Path, log_file: Path) -> None:
    """Have the copy's ``bin/appdb`` log each command's start and end; the shim's own cost (bash's
    start, about 1 ms) is counted in the command's time, not in Pulumi's."""
    appdb = project / "bin" / "appdb"
    appdb.rename(project / "bin" / "appdb.timed")
    appdb.write_text(_SHIM.format(log=shlex.quote(str(log_file))))
    appdb.chmod(0o755)


def revert_timings(lines: list[str]) -> dict[str, float | int | None]:
    """Medians over one step's reverts: each command's time, and Pulumi's between one revert's
    end and the next one's start (its step: the state write, the next delete's process)."""
    commands: list[float] = []
    gaps: list[float] = []
    began: float | None = None
    ended: float | None = None
    for line in lines:
        kind, _, rest = line.partition(" ")
        stamp, _, verb = rest.partition(" ")
        if kind == "start":
            began = float(stamp) if verb == "revert" else None
            if began is not None and ended is not None:
                gaps.append(began - ended)
            ended = None
        elif kind == "end" and began is not None:
            commands.append(float(stamp) - began)
            ended, began = float(stamp), None
    return {"reverts": len(commands), "command_ms": median(commands) * 1000 if commands else None,
            "between_ms": median(gaps) * 1000 if gaps else None}


def pulumi_env(state: Path, cluster: Cluster) -> dict[str, str]:
    """As bin/deploy-local runs `pulumi`: the cluster's passwords in PGPASSWORD and APPDB_BACKEND_PASSWORD."""
    from tests.pulumi_engine import PASSPHRASE, toolchain_env

    state.mkdir(parents=True, exist_ok=True)
    return clean_env({"PULUMI_BACKEND_URL": state.as_uri(), "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
                      "PULUMI_SKIP_UPDATE_CHECK": "true", "PGPASSWORD": cluster.password(),
                      "APPDB_BACKEND_PASSWORD": cluster.password(BACKEND), **toolchain_env()})


def pulumi_round(cluster: Cluster, cli: Cluster, project: Path, extra: int, round_no: int,
                 tmp: Path, time_log: Path | None = None) -> tuple[dict[str, float], dict[str, dict]]:
    """One lifecycle on a fresh database: up, preview, up, destroy; then appdb apply in one process.
    With ``time_log`` (the shim's, :func:`time_commands`), also each revert's timings."""
    name = f"stack_{extra}_{round_no}"
    forget_stack_roles(cluster)
    fresh_database(cluster, name, template=None)
    env = pulumi_env(tmp / f"state-{extra}-{round_no}", cluster)
    stack = ["--stack", "local", "--non-interactive"]

    def pulumi(*args: str) -> float:
        return timed(["pulumi", *args, *stack], env, project)

    deletes: dict[str, dict] = {}

    def logged(step: str, *args: str) -> float:
        """A timed `pulumi` run whose reverts, when the shim logs them, are timed one by one too."""
        if time_log is None:
            return pulumi(*args)
        before = len(time_log.read_text().splitlines()) if time_log.exists() else 0
        seconds = pulumi(*args)
        deletes[step] = revert_timings(time_log.read_text().splitlines()[before:])
        return seconds

    pulumi("stack", "init")
    try:
        pulumi("config", "set", "appdb:dbPort", str(cluster.port))
        pulumi("config", "set", "appdb:dbName", name)
        times = {
            "first up": pulumi("up", "--yes", "--skip-preview"),
            "no-op preview": pulumi("preview"),
            "no-op up": pulumi("up", "--yes", "--skip-preview"),
        }
        # A code rollback of every synthetic migration: their files go, and `up` reverts them
        # (one delete each, newest first); then they come back for the destroy.
        held = tmp / f"held-{extra}-{round_no}"
        moved = hold_synthetic(project, held)
        times["rollback"] = logged("rollback", "up", "--yes", "--skip-preview")
        restore_synthetic(project, held, moved)
        pulumi("up", "--yes", "--skip-preview")
        times["destroy"] = logged("destroy", "destroy", "--yes", "--skip-preview")
    finally:
        pulumi("stack", "rm", "--yes", "--force", "--preserve-config")
        drop_database(cluster, name)
    # The same files, one `appdb apply` process, on a database that has the schema and roles.
    one = f"one_{extra}_{round_no}"
    target = fresh_database(cli, one)
    times["appdb apply"] = timed([str(project / "bin" / "appdb"), "apply", "--sql-dir", str(project / "sql"),
                                  "--dsn", target.conninfo], clean_env(libpq_password(target)), project)
    drop_database(cli, one)
    return times, deletes


def hold_synthetic(project: Path, held: Path) -> list[str]:
    """Move the synthetic migrations (forward and revert) out of sql/, as a code rollback removes them."""
    sql_dir = project / "sql"
    names = sorted(p.name for p in sql_dir.glob("*_bench_*.sql"))
    (held / REVERT_DIR).mkdir(parents=True, exist_ok=True)
    for name in names:
        (sql_dir / name).rename(held / name)
        (sql_dir / REVERT_DIR / name).rename(held / REVERT_DIR / name)
    return names


def restore_synthetic(project: Path, held: Path, names: list[str]) -> None:
    sql_dir = project / "sql"
    for name in names:
        (held / name).rename(sql_dir / name)
        (held / REVERT_DIR / name).rename(sql_dir / REVERT_DIR / name)


def forget_stack_roles(cluster: Cluster) -> None:
    """Roles a failed round left behind would make the next first ``up`` fail: drop them."""
    with cluster.connect(user=SUPERUSER) as conn:
        for role in STACK_ROLES:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def run_pulumi_table(args: argparse.Namespace, cli: Cluster) -> dict:
    from tests.pulumi_engine import engine_missing

    why = engine_missing()
    if why:
        log(f"through Pulumi: skipped: {why}")
        return {"skipped": why}
    version = subprocess.run(["pulumi", "version"], capture_output=True, text=True, check=False).stdout.strip()
    rows: dict[int, dict] = {}
    with bench_cluster("pulumi") as cluster, tempfile.TemporaryDirectory(prefix="appdb-history-") as tmp:
        for extra in args.sizes:
            pace = machine_pace()
            project, total = pulumi_project(Path(tmp) / f"n{extra}", extra)
            time_log = Path(tmp) / f"n{extra}-commands.log" if args.time_deletes else None
            if time_log is not None:
                time_commands(project, time_log)
            samples: dict[str, list[float]] = {step: [] for step in PULUMI_STEPS}
            per_revert: dict[str, list[dict]] = {}
            errors: list[str] = []
            for round_no in range(args.rounds):
                try:
                    got, deletes = pulumi_round(cluster, cli, project, extra, round_no, Path(tmp), time_log)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    errors.append(redact(str(exc)))
                    log(f"through Pulumi, {total} migrations, round {round_no + 1}: FAILED {errors[-1]}")
                    continue
                for step, seconds in got.items():
                    samples[step].append(seconds)
                for step, timings in deletes.items():
                    per_revert.setdefault(step, []).append(timings)
                log(f"through Pulumi, {total} migrations, round {round_no + 1}/{args.rounds}: "
                    + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in got.items()))
            rows[extra] = {"migrations": total, "extra": extra, "errors": errors, "samples": samples,
                           "median": {step: median(values) for step, values in samples.items()}, "pace": pace}
            if per_revert:
                rows[extra]["per_revert"] = {step: _median_timings(runs) for step, runs in per_revert.items()}
    return {"pulumi": version, "rows": rows}


def _median_timings(runs: list[dict]) -> dict[str, float | int | None]:
    """Each figure's median over the rounds."""
    def of(key: str) -> float | None:
        values = [run[key] for run in runs if run.get(key) is not None]
        return median(values) if values else None
    return {"reverts": sum(run["reverts"] for run in runs), "command_ms": of("command_ms"),
            "between_ms": of("between_ms")}


def pulumi_targets(table: dict) -> list[dict]:
    """Issue 20's targets through Pulumi, from whatever sizes were measured."""
    rows = table.get("rows") or {}
    out: list[dict] = []

    def add(label: str, value: float | None, limit: float, unit: str = "s") -> None:
        if value is not None:
            out.append({"target": label, "measured": value, "limit": limit, "unit": unit, "met": value <= limit})

    if 100 in rows:
        add("first `up`, shipped + 100 migrations <= 8 s", rows[100]["median"]["first up"], 8.0)
    if 0 in rows:
        add("no-op `preview`, shipped migrations <= 1.2 s", rows[0]["median"]["no-op preview"], 1.2)
        add("no-op `up`, shipped migrations <= 1.2 s", rows[0]["median"]["no-op up"], 1.2)
    if 100 in rows:
        add("no-op `preview`, shipped + 100 <= 2 s", rows[100]["median"]["no-op preview"], 2.0)
        add("no-op `up`, shipped + 100 <= 2 s", rows[100]["median"]["no-op up"], 2.0)
    sizes = sorted(n for n, row in rows.items() if row["median"]["first up"] is not None)
    if len(sizes) >= 2 and sizes[-1] > sizes[0]:
        low, high = rows[sizes[0]]["median"], rows[sizes[-1]]["median"]
        span = sizes[-1] - sizes[0]
        for step in ("first up", "rollback", "destroy"):
            if low.get(step) is not None and high.get(step) is not None:
                add(f"`{step.split()[-1]}` cost per extra migration <= 50 ms",
                    (high[step] - low[step]) / span * 1000, 50.0, "ms")
    return out


# --- 2. the CLI against peers --------------------------------------------------------------


def run_cli_table(args: argparse.Namespace, cli: Cluster, tmp: Path) -> dict:
    """Every found tool, every size, every round: apply N from empty, then the no-op with N applied."""
    found: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for tool in TOOLS:
        if args.tools and tool.name not in args.tools:
            skipped[tool.name] = "not asked for (--tools)"
            continue
        exe, why = locate(tool, args.peers_bin)
        if exe:
            found[tool.name] = exe
        else:
            skipped[tool.name] = why
            log(f"{tool.name}: skipped: {why}")
    tools = [t for t in TOOLS if t.name in found]
    folders: dict[tuple[str, int], Path] = {}
    for n in args.cli_sizes:
        migrations = synthetic(n)
        for tool in tools:
            folder = tmp / "cli" / f"{_slug(tool.name)}-{n}"
            tool.write(folder, migrations)
            folders[tool.name, n] = folder
    apply: dict[str, dict[int, list[float]]] = {t.name: {n: [] for n in args.cli_sizes} for t in tools}
    noop: dict[str, dict[int, list[float]]] = {t.name: {n: [] for n in args.cli_sizes} for t in tools}
    errors: dict[str, list[str]] = {}
    for round_no in range(args.rounds):
        # A different order each round, so no tool always runs right after the same neighbour.
        order = tools[round_no % len(tools):] + tools[: round_no % len(tools)]
        for n in args.cli_sizes:
            for tool in order:
                try:
                    a, idle = cli_round(cli, tool, found[tool.name], folders[tool.name, n], n, args.noop_runs,
                                        tmp / "runtime")
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    errors.setdefault(tool.name, []).append(redact(f"N={n}: {exc}"))
                    log(f"{tool.name}, FAILED {errors[tool.name][-1]}")
                    continue
                apply[tool.name][n].append(a)
                noop[tool.name][n].extend(idle)
                log(f"round {round_no + 1}/{args.rounds}, N={n}: {tool.name}: apply {a:.2f} s, "
                    f"no-op {statistics.median(idle) * 1000:.0f} ms")
    return {
        "tools": {t.name: {"executable": found[t.name], "version": version_of(t, found[t.name])} for t in tools},
        "skipped": skipped,
        "errors": errors,
        "apply": {name: {n: median(v) for n, v in by_n.items()} for name, by_n in apply.items()},
        "noop": {name: {n: median(v) for n, v in by_n.items()} for name, by_n in noop.items()},
        "samples": {"apply": apply, "noop": noop},
    }


def _slug(name: str) -> str:
    """A tool's name as a folder or database name: ``appdb --group`` is ``appdb_group``."""
    return "_".join("".join(c if c.isalnum() else " " for c in name).split())


def cli_round(cluster: Cluster, tool: Tool, exe: str, folder: Path, n: int, noop_runs: int,
              runtime: Path) -> tuple[float, list[float]]:
    """One tool on its own fresh database: apply N, check they are all there, then its no-ops.

    A tool with a ``warm`` command runs it first, untimed, with ``runtime`` (private to the
    benchmark) as its XDG_RUNTIME_DIR: its fork server is then the benchmark's, never a user's.
    """
    name = f"cli_{_slug(tool.name)}_{n}"
    target = fresh_database(cluster, name)
    env = tool.environment(target)
    try:
        if tool.warm is not None:
            runtime.mkdir(mode=0o700, exist_ok=True)
            env["XDG_RUNTIME_DIR"] = str(runtime)
            timed(tool.warm(exe, folder, target), env, folder)
        applied = timed(tool.command(exe, folder, target), env, folder)
        made = bench_tables(cluster, name)
        if made != n:
            raise RuntimeError(f"exited 0 but made {made} of {n} tables")
        idle = [timed((tool.noop or tool.command)(exe, folder, target), env, folder) for _ in range(noop_runs)]
        if bench_tables(cluster, name) != n:
            raise RuntimeError("the no-op changed the tables")
        return applied, idle
    finally:
        drop_database(cluster, name)


def version_of(tool: Tool, exe: str) -> str:
    """What the tool says its version is (for the JSON), or '?'."""
    # Flyway checks for a newer version over the network unless told not to.
    flags = {"golang-migrate": ["-version"], "flyway": ["-skipCheckForUpdate", "-v"]}.get(tool.name, ["--version"])
    try:
        result = subprocess.run([exe, *flags], capture_output=True, text=True, timeout=60, check=False,
                                env=clean_env(tool.env))
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = [line for line in (result.stdout + result.stderr).splitlines() if any(c.isdigit() for c in line)]
    return lines[0].strip()[:80] if lines else "?"


def run_shipped(args: argparse.Namespace, cli: Cluster) -> dict:
    """appdb's everyday commands on the shipped schema (every migration applied, the grants given)."""
    migrations = discover(ROOT / "sql")
    name = "shipped"
    target = fresh_database(cli, name)
    with cli.connect(name) as conn:
        build(conn, migrations)
    appdb = str(ROOT / "bin" / "appdb")
    common = ["--sql-dir", str(ROOT / "sql"), "--dsn", target.conninfo]
    env = clean_env(libpq_password(target))
    commands = {
        "no-op apply": [appdb, "apply", *common],
        f"apply --only {migrations[-1].id}": [appdb, "apply", "--only", migrations[-1].id, *common],
        "status": [appdb, "status", *common],
        "verify": [appdb, "verify", *common],
    }
    # The same commands through a fork server of the benchmark's own (a private runtime folder):
    # warm after the first, as for a pipeline or a shell that runs them one after another.
    runtime = Path(tempfile.mkdtemp(prefix="appdb-bench-"))
    served_env = {**env, "XDG_RUNTIME_DIR": str(runtime)}
    served = {f"{label} {FORK_SERVER}": [*command, FORK_SERVER] for label, command in commands.items()}
    samples: dict[str, list[float]] = {label: [] for label in [*commands, *served]}
    cold = f"first {FORK_SERVER} call (starts the server)"
    samples[cold] = []
    cold_folders: list[str] = []
    try:
        for label, command in commands.items():
            timed(command, env, ROOT)  # warm the OS caches
        for label, command in served.items():
            timed(command, served_env, ROOT)  # and start the server: the samples below are of a warm one
        for _ in range(args.rounds * args.noop_runs):
            for label, command in commands.items():
                samples[label].append(timed(command, env, ROOT))
            for label, command in served.items():
                samples[label].append(timed(command, served_env, ROOT))
        for _ in range(args.rounds):  # a runtime folder of its own each time: no server to find
            fresh = tempfile.mkdtemp(prefix="appdb-bench-cold-")
            cold_folders.append(fresh)
            samples[cold].append(timed(served["no-op apply " + FORK_SERVER], {**env, "XDG_RUNTIME_DIR": fresh}, ROOT))
        bare = [sys.executable, "-c", f"import psycopg; psycopg.connect({target.conninfo!r}).execute('select 1')"]
        samples["bare python + psycopg connect"] = [timed(bare, env, ROOT) for _ in range(args.noop_runs)]
    finally:
        drop_database(cli, name)
        for folder in [runtime, *cold_folders]:  # a server still idling there leaves when its time is up
            shutil.rmtree(folder, ignore_errors=True)
    return {"samples": samples, "median": {label: median(v) for label, v in samples.items()}}


CLI_LIMITS_MS = {"no-op apply": 60.0, "apply --only": 60.0, "status": 60.0, "verify": 100.0}


def paired_ratio(table: dict, tool: str, other: str, n: int) -> float | None:
    """``tool``'s apply of N over ``other``'s: the median of each round's ratio, else of the medians.

    The tools of one round run within seconds of each other, and this shared machine swings
    between two paces for tens of seconds at a time (`psql -1` of 100: 150 ms, then 400 ms, the
    same code and cluster). A ratio of two medians can pair one tool's fast rounds with the
    other's slow ones; each round's own ratio compares like with like.
    """
    samples = (table.get("samples") or {}).get("apply") or {}
    mine = (samples.get(tool) or {}).get(n) or (samples.get(tool) or {}).get(str(n)) or []
    theirs = (samples.get(other) or {}).get(n) or (samples.get(other) or {}).get(str(n)) or []
    if mine and len(mine) == len(theirs) and all(theirs):  # a failed round leaves them unpaired
        return statistics.median(a / b for a, b in zip(mine, theirs))
    a, b = table.get("apply", {}).get(tool, {}).get(n), table.get("apply", {}).get(other, {}).get(n)
    return a / b if a and b else None


def cli_targets(table: dict, shipped: dict) -> list[dict]:
    out: list[dict] = []
    applies = table.get("apply", {})
    for tool, command in (("appdb", "appdb apply"), ("appdb --group", "appdb apply --group"),
                          (SERVED_GROUP, f"appdb apply --group {FORK_SERVER}, server warm")):
        for n, seconds in sorted(applies.get(tool, {}).items()):
            if seconds is None:
                continue
            ratio = paired_ratio(table, tool, "psql -1", n)
            if ratio is not None:
                out.append({"target": f"`{command}` of {n} <= 1.2x psql -1", "measured": ratio, "limit": 1.2,
                            "unit": "x", "met": ratio <= 1.2})
            for peer in ("goose", "dbmate"):
                theirs = applies.get(peer, {}).get(n)
                ratio = paired_ratio(table, tool, peer, n)
                if theirs and ratio is not None:
                    out.append({"target": f"`{command}` of {n} ahead of {peer} ({seconds:.2f} s, {peer} "
                                          f"{theirs:.2f} s; the ratio per round)",
                                "measured": ratio, "limit": 1.0, "unit": "x", "met": ratio < 1.0})
    for label, seconds in (shipped.get("median") or {}).items():
        limit = next((ms for key, ms in CLI_LIMITS_MS.items() if label.startswith(key)), None)
        if limit is not None and seconds is not None:
            out.append({"target": f"`{label}`, shipped schema <= {limit:.0f} ms", "measured": seconds * 1000,
                        "limit": limit, "unit": "ms", "met": seconds * 1000 <= limit})
    return out


# --- output ----------------------------------------------------------------------------


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def print_targets(targets: list[dict]) -> None:
    if not targets:
        return
    width = max(len(t["target"]) for t in targets)
    print(f"\n{'target':<{width}}  {'measured':>10}  met?")
    for t in targets:
        unit = t["unit"]
        value = f"{t['measured']:.2f}x" if unit == "x" else (
            f"{t['measured']:.0f} ms" if unit == "ms" else f"{t['measured']:.2f} s")
        print(f"{t['target']:<{width}}  {value:>10}  {'yes' if t['met'] else 'NO'}")


def print_pulumi(table: dict, targets: list[dict]) -> None:
    print("\n== Through Pulumi: the shipped migrations plus N synthetic ones ==")
    if "skipped" in table:
        print(f"skipped: {table['skipped']}")
        return
    print(f"{table['pulumi']}; each a new `pulumi` process; up and destroy with --skip-preview\n")
    header = ["migrations", *PULUMI_STEPS]
    print("  ".join(f"{h:>14}" for h in header))
    for row in table["rows"].values():
        cells = [str(row["migrations"]), *(fmt(row["median"].get(step)) for step in PULUMI_STEPS)]
        print("  ".join(f"{c:>14}" for c in cells) + ("  (failed rounds: see JSON)" if row["errors"] else ""))
    paced = [row for row in table["rows"].values() if row.get("pace")]
    if paced:
        print("\nthe machine's pace before each size (compare runs only where it matches):")
        for row in paced:
            print(f"  {row['migrations']:>5} migrations: {pace_line(row['pace'])}")
    timed_rows = [row for row in table["rows"].values() if row.get("per_revert")]
    if timed_rows:
        print("\neach revert, timed inside the step (--time-deletes; medians): the command, then Pulumi's own "
              "time before the next one")
        for row in timed_rows:
            for step, t in row["per_revert"].items():
                if t["command_ms"] is not None:
                    between = f"{t['between_ms']:.1f} ms" if t["between_ms"] is not None else "-"
                    print(f"  {row['migrations']:>5} migrations, {step:<8} {t['reverts']:>5} reverts: command "
                          f"{t['command_ms']:.1f} ms, between two {between}")
    print_targets(targets)


def print_cli(table: dict, shipped: dict, targets: list[dict]) -> None:
    print("\n== The engine's CLI against peer tools: N synthetic migrations ==")
    for name, why in table["skipped"].items():
        print(f"skipped {name}: {why}")
    names = list(table["apply"])
    widths = [max(15, len(name) + 2) for name in names]  # a long name must not run into its neighbour
    print("\n" + f"{'':<22}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths)))
    for n in sorted({n for by_n in table["apply"].values() for n in by_n}):
        print(f"{f'apply {n}':<22}" + "".join(f"{fmt(table['apply'][t].get(n)):>{w}}" for t, w in zip(names, widths)))
        print(f"{f'no-op, {n} applied':<22}"
              + "".join(f"{fmt(table['noop'][t].get(n)):>{w}}" for t, w in zip(names, widths)))
    for name, errors in table["errors"].items():
        print(f"failed {name}: {errors[0]}")
    if shipped.get("median"):
        print("\nappdb on the shipped schema (medians):")
        for label, seconds in shipped["median"].items():
            print(f"  {label:<46} {fmt(seconds):>10}")
    print_targets(targets)


def plot(path: Path, pulumi_table: dict, cli_table: dict, baseline: dict | None = None) -> bool:
    """The growth curve: seconds against the number of migrations, through Pulumi and through the CLI.

    ``baseline``: an earlier Pulumi table (a saved result's ``pulumi_before``), drawn faint for comparison.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n--plot: matplotlib is not installed; `.venv/bin/pip install matplotlib` (it is no "
              "requirement of the project) and run again")
        return False
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = sorted((pulumi_table.get("rows") or {}).values(), key=lambda r: r["migrations"])
    for step, style in zip(PULUMI_STEPS, ("o-", "s--", "^--", "x-", "v-", "D-")):
        points = [(r["migrations"], r["median"].get(step)) for r in rows if r["median"].get(step) is not None]
        if points:
            left.plot(*zip(*points), style, label=f"`{step}`" if step != "appdb apply" else "`appdb apply`, one process")
    before = sorted(((baseline or {}).get("rows") or {}).values(), key=lambda r: r["migrations"])
    for step in ("first up", "destroy"):
        points = [(r["migrations"], r["median"].get(step)) for r in before if r["median"].get(step) is not None]
        if points:
            left.plot(*zip(*points), ":", color="grey", label=f"`{step}`, before")
    left.set_title("Through Pulumi" if rows else "Through Pulumi (not measured)")
    for name, by_n in (cli_table.get("apply") or {}).items():
        points = sorted((n, s) for n, s in by_n.items() if s is not None)
        if points:
            right.plot(*zip(*points), "o-", label=name, linewidth=2.5 if name.startswith("appdb") else 1.2)
    right.set_title("Apply N migrations from empty (CLI)")
    right.set_xscale("log")
    right.set_yscale("log")
    for axes in (left, right):
        axes.set_xlabel("migrations")
        axes.set_ylabel("seconds")
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"\nwrote {path}")
    return True


# --- main ------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/history.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", choices=("pulumi", "cli"), default=["pulumi", "cli"],
                        help="which tables to measure (default: both)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 25, 100], metavar="N",
                        help="synthetic migrations on top of the shipped ones, through Pulumi (default: 0 25 100)")
    parser.add_argument("--cli-sizes", type=int, nargs="+", default=[100, 1000], metavar="N",
                        help="synthetic migrations for the CLI table (default: 100 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; times are medians (default 3)")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op runs per tool and round (default 3)")
    parser.add_argument("--peers-bin", type=Path, default=DEFAULT_PEERS_BIN,
                        help="folder with the peers' executables, searched before PATH "
                             "(default: $APPDB_BENCH_PEERS_BIN or /opt/bench-peers/bin)")
    parser.add_argument("--tools", nargs="+", choices=[t.name for t in TOOLS], metavar="TOOL",
                        help="measure only these tools in the CLI table (default: all; names as in the table)")
    parser.add_argument("--time-deletes", action="store_true",
                        help="also time each revert inside `rollback` and `destroy` (a bash shim in the copy's "
                             "bin/appdb): the command's time and Pulumi's between two, steadier than whole runs")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the growth curve (needs matplotlib)")
    parser.add_argument("--from", dest="saved", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: print (and --plot) saved results; of several files, each "
                             "table comes from the last one that has it")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.noop_runs < 1 or min(args.sizes) < 0 or min(args.cli_sizes) < 1:
        parser.error("--rounds and --noop-runs must be at least 1, --sizes at least 0, --cli-sizes at least 1")
    return args


def _int_keys(value: object) -> object:
    """JSON turned the sizes into strings: turn them back, so saved results print like fresh ones."""
    if isinstance(value, dict):
        return {int(k) if isinstance(k, str) and k.isdigit() else k: _int_keys(v) for k, v in value.items()}
    return value


def load_saved(paths: list[Path]) -> tuple[dict, dict, dict]:
    """The Pulumi table, the CLI table and the shipped-schema timings from saved results.

    A ``pulumi_before`` table (an earlier run kept beside a later one) rides along in the
    Pulumi table, for the plot.
    """
    pulumi_table: dict = {}
    cli_table: dict = {}
    shipped: dict = {}
    for path in paths:
        data = _int_keys(json.loads(path.read_text()))
        if data.get("pulumi"):
            pulumi_table = {**data["pulumi"], "before": data.get("pulumi_before") or {}}
        if data.get("cli"):
            cli_table, shipped = data["cli"], data.get("shipped") or {}
    return pulumi_table, cli_table, shipped


def report(args: argparse.Namespace, pulumi_table: dict, cli_table: dict, shipped: dict) -> dict:
    """Print both tables with their targets, draw the plot if asked; the targets, for the exit code."""
    targets = {"pulumi": pulumi_targets(pulumi_table), "cli": cli_targets(cli_table, shipped)}
    if pulumi_table:
        print_pulumi(pulumi_table, targets["pulumi"])
    if cli_table:
        print_cli(cli_table, shipped, targets["cli"])
    if args.plot:
        plot(args.plot, pulumi_table, cli_table, pulumi_table.get("before"))
    return targets


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.saved:
        targets = report(args, *load_saved(args.saved))
        return 0 if all(t["met"] for group in targets.values() for t in group) else 1
    pulumi_table: dict = {}
    cli_table: dict = {}
    shipped: dict = {}
    pace = {"before": machine_pace()}
    with bench_cluster("cli") as cli, tempfile.TemporaryDirectory(prefix="appdb-history-") as tmp:
        make_template(cli)
        with cli.connect(user=SUPERUSER) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]
        if "pulumi" in args.tables:
            pulumi_table = run_pulumi_table(args, cli)
        if "cli" in args.tables:
            cli_table = run_cli_table(args, cli, Path(tmp))
            shipped = run_shipped(args, cli)
    pace["after"] = machine_pace()
    targets = report(args, pulumi_table, cli_table, shipped)
    print(f"\nthe machine's pace: before, {pace_line(pace['before'])}; after, {pace_line(pace['after'])}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"history-{stamp}.json"
    out.write_text(json.dumps({
        "when": stamp,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "postgres": server, "server_settings": SERVER_SETTINGS,
                    "load_average": os.getloadavg(), "pace": pace},
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pulumi": pulumi_table, "cli": cli_table, "shipped": shipped, "targets": targets,
    }, indent=2, default=str))
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0 if all(t["met"] for group in targets.values() for t in group) else 1


if __name__ == "__main__":
    raise SystemExit(main())
