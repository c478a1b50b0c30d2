"""The benchmark behind docs/performance.md: online-safety of 027 + 028 under writes.

    .venv/bin/python bench/run.py                 # 1,000,000 rows, 3 rounds (a few minutes)
    .venv/bin/python bench/run.py --rows 100000 --rounds 1

It starts its own throwaway Supabase-shaped cluster (appdb.local.Cluster, as the tests
do: a temp folder and a free port), builds app.memberships with ``--rows`` rows whose
user_id references app.profiles(user_id) (the broken state 027 repairs), the matching
auth.users rows, and both unique constraints on user_id (the duplicate 028 drops). Each
round copies that database once per variant and, while a writer keeps inserting and
updating memberships and updating auth.users rows, runs:

- naive: one validated ``ADD FOREIGN KEY`` (with the drop of the old one), through psql;
- psql -f: ``psql -f 027 -f 028`` of the same SQL files;
- appdb apply: ``bin/appdb apply``.

It records each variant's wall time and the longest single write stall, then compares
a no-op ``bin/appdb apply`` with a bare ``python -c "import psycopg; ...connect..."``.
Targets are ratios measured in the same run. It prints a table and writes JSON to
bench/results/ (git-ignored). It is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appdb.local.cluster import SUPERUSER, Cluster  # noqa: E402
from appdb.local.postgres import find_bindir, project_major  # noqa: E402
from appdb.local.throwaway import DURABILITY_OFF, throwaway_cluster  # noqa: E402
from appdb.schema.fresh import program_baseline  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TEMPLATE = "bench_template"
MIGRATIONS = [ROOT / "sql" / "027_memberships.sql", ROOT / "sql" / "028_fix_memberships_unique_constraint.sql"]

# Durability is off, as in every throwaway cluster (appdb/local/throwaway.py): commits cost
# the same for every variant, and the numbers measure locking, not this machine's disk.
SERVER_SETTINGS = {
    "shared_buffers": "'1GB'",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'30min'",
    "max_connections": "50",
}

# The table as a broken local migration left it: every column 027 expects, but user_id
# references app.profiles(user_id); two identical unique constraints on user_id.
SETUP = """
CREATE TABLE app.profiles (user_id uuid PRIMARY KEY);
ALTER TABLE app.profiles ENABLE ROW LEVEL SECURITY;

INSERT INTO auth.users (id, aud, role, email, created_at)
SELECT gen_random_uuid(), 'authenticated', 'authenticated', 'member' || n || '@example.com', now()
FROM generate_series(1, {users}) AS n;
INSERT INTO app.profiles (user_id) SELECT id FROM auth.users;

CREATE TABLE app.memberships (
    membership_id uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    status text NOT NULL DEFAULT 'incomplete',
    plan_interval text,
    stripe_customer_id text,
    stripe_subscription_id text,
    stripe_price_id text,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO app.memberships (user_id, status, plan_interval, stripe_customer_id, stripe_subscription_id,
                             current_period_end)
SELECT user_id, 'active', CASE WHEN n % 4 = 0 THEN 'year' ELSE 'month' END, 'cus_' || n, 'sub_' || n,
       now() + interval '20 days'
FROM (SELECT user_id, row_number() OVER () AS n FROM app.profiles) AS p
WHERE n <= {rows};
ALTER TABLE app.memberships ADD PRIMARY KEY (membership_id);
ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_id_key UNIQUE (user_id);
ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_unique UNIQUE (user_id);
ALTER TABLE app.memberships ADD CONSTRAINT memberships_plan_interval_check
    CHECK (plan_interval IN ('month', 'year'));
ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES app.profiles (user_id);
"""

NAIVE = (
    "ALTER TABLE app.memberships DROP CONSTRAINT memberships_user_id_fkey, "
    "ADD CONSTRAINT memberships_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE"
)

RESULT_FK = """
SELECT c.confrelid::regclass::text, c.convalidated FROM pg_constraint AS c
WHERE c.conrelid = 'app.memberships'::regclass AND c.conname = 'memberships_user_id_fkey'
"""


def psql_path() -> str:
    found = shutil.which("psql")
    return found or str(find_bindir(project_major()) / "psql")


# --- the writer -------------------------------------------------------------------------


@dataclass
class Writer:
    """Paced writes from one connection: insert a membership, update one, update a user."""

    dsn: str
    spare_users: list[str]
    members: list[str]
    interval: float
    samples: list[tuple[float, float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        ops = [
            ("insert membership", "INSERT INTO app.memberships (user_id, status, plan_interval) "
                                  "VALUES (%s, 'incomplete', 'month')"),
            ("update membership", "UPDATE app.memberships SET status = 'active', updated_at = now() "
                                  "WHERE user_id = %s"),
            ("update auth user", "UPDATE auth.users SET last_sign_in_at = now() WHERE id = %s"),
        ]
        spare = iter(self.spare_users)
        count = 0
        conn = psycopg.connect(self.dsn, autocommit=True)
        try:
            next_at = time.perf_counter()
            while not self._stop.is_set():
                label, statement = ops[count % len(ops)]
                key = next(spare) if label == "insert membership" else self.members[count % len(self.members)]
                started = time.perf_counter()
                try:
                    conn.execute(statement, (key,))
                except psycopg.Error as exc:
                    self.errors.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                    if conn.broken:
                        conn = psycopg.connect(self.dsn, autocommit=True)
                self.samples.append((started, time.perf_counter() - started, label))
                count += 1
                next_at += self.interval
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                else:
                    next_at = time.perf_counter()
        finally:
            conn.close()

    def longest(self, start: float, end: float) -> tuple[float, str]:
        """The longest write that overlapped [start, end], in seconds, and what it was."""
        overlapping = [(lat, label) for began, lat, label in self.samples if began <= end and began + lat >= start]
        return max(overlapping) if overlapping else (0.0, "")


# --- the bench ----------------------------------------------------------------------------


@dataclass
class Run:
    variant: str
    round: int
    seconds: float
    stall_ms: float
    stall_op: str
    engine_seconds: float | None
    quiet_stall_ms: float
    writes: int
    write_errors: list[str]
    ok: bool
    detail: str


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._cluster = throwaway_cluster("appdb-bench-", tcp=True, port=args.port or None, settings=SERVER_SETTINGS)
        self.cluster: Cluster | None = None
        self.spare: list[str] = []
        self.members: list[str] = []
        self.psql = psql_path()
        self.noop_dsn: str | None = None

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def admin(self) -> psycopg.Connection:
        return self.cluster.connect(user=SUPERUSER)

    # setup

    def start(self) -> None:
        self.cluster = self._cluster.__enter__()
        self.log(f"started a throwaway cluster in {self.cluster.home} on port {self.cluster.port}")
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        self.cluster.shape(TEMPLATE)
        rows, users = self.args.rows, self.args.rows + self.args.spare_users
        started = time.perf_counter()
        with self.cluster.connect(TEMPLATE) as conn:
            program_baseline(conn)
            conn.execute(SETUP.format(rows=rows, users=users))
            self.spare = [r[0] for r in conn.execute(
                "SELECT id::text FROM auth.users AS u"
                " WHERE NOT EXISTS (SELECT FROM app.memberships AS m WHERE m.user_id = u.id)").fetchall()]
            self.members = [r[0] for r in conn.execute(
                "SELECT user_id::text FROM app.memberships TABLESAMPLE SYSTEM (5) LIMIT 20000").fetchall()]
        with psycopg.connect(self.cluster.dsn(TEMPLATE, user=SUPERUSER), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE, FREEZE)")
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        self.log(f"built {rows:,} memberships and {users:,} auth users ({size}) in "
                 f"{time.perf_counter() - started:.0f} s")

    def fresh_database(self, name: str) -> str:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)))
            # A database's privileges are not copied from its template; the shape grants these.
            conn.execute(sql.SQL("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO postgres").format(
                sql.Identifier(name)))
        dsn = self.cluster.dsn(name)
        with psycopg.connect(dsn, autocommit=True) as conn:  # warm the cache the same way for everyone
            conn.execute("SELECT count(*) FROM app.memberships").fetchone()
            conn.execute("SELECT count(*) FROM auth.users").fetchone()
        return dsn

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # variants

    def command(self, variant: str, dsn: str) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
        psql = [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn]
        if variant == "naive":
            return [*psql, "-c", NAIVE], env
        if variant == "psql -f":
            return [*psql, *[arg for path in MIGRATIONS for arg in ("-f", str(path))]], env
        env.update({"DATABASE_URL": dsn, "APPDB_SQL_DIR": str(ROOT / "sql")})
        return [str(ROOT / "bin" / "appdb"), "apply", "--json"], env

    def run_variant(self, variant: str, round_no: int) -> Run:
        name = f"bench_{variant.split()[0].replace('-', '')}_{round_no}"
        dsn = self.fresh_database(name)
        # Each database is a fresh copy, so the same spare users are free again.
        writer = Writer(dsn, self.spare, self.members, interval=self.args.write_interval / 1000)
        command, env = self.command(variant, dsn)
        writer.start()
        time.sleep(self.args.quiet)
        quiet_end = time.perf_counter()
        started = time.perf_counter()
        result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        ended = time.perf_counter()
        time.sleep(0.3)
        writer.stop()
        quiet, _ = writer.longest(quiet_end - self.args.quiet + 0.2, quiet_end)
        stall, op = writer.longest(started, ended)
        with psycopg.connect(dsn, autocommit=True) as conn:
            fk = conn.execute(RESULT_FK).fetchone()
        ok = result.returncode == 0 and fk == ("auth.users", True)
        detail = "" if ok else f"exit {result.returncode}, fk {fk}: {(result.stderr or result.stdout).strip()[-500:]}"
        if variant == "appdb apply" and ok and round_no == self.args.rounds - 1:
            self.noop_dsn = dsn  # everything applied: the no-op comparison runs here
        else:
            self.drop_database(name)
        writes = sum(1 for began, _, _ in writer.samples if started <= began <= ended)
        engine = None
        if variant == "appdb apply" and ok:  # the migrations' own time, as the engine measured it
            engine = sum(o["seconds"] for o in json.loads(result.stdout)["outcomes"])
        return Run(variant, round_no, ended - started, stall * 1000, op, engine, quiet * 1000, writes,
                   writer.errors[:5], ok, detail)

    def noop(self) -> dict[str, object]:
        """A no-op ``bin/appdb apply`` against a bare psycopg connect, alternating, medians compared."""
        dsn = self.noop_dsn
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
        appdb = ([str(ROOT / "bin" / "appdb"), "apply"], {**env, "DATABASE_URL": dsn,
                                                        "APPDB_SQL_DIR": str(ROOT / "sql")})
        python = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() \
            else sys.executable
        bare = ([python, "-c", f"import psycopg; psycopg.connect({dsn!r}).execute('select 1')"], env)
        times: dict[str, list[float]] = {"noop apply": [], "bare connect": []}
        for index in range(self.args.noop_runs + 2):
            for label, (command, run_env) in (("noop apply", appdb), ("bare connect", bare)):
                started = time.perf_counter()
                result = subprocess.run(command, env=run_env, cwd=ROOT, capture_output=True, text=True, check=False)
                elapsed = time.perf_counter() - started
                if result.returncode != 0:
                    raise SystemExit(f"{label} failed: {result.stderr.strip()}")
                if index >= 2:  # the first two of each warm the OS caches
                    times[label].append(elapsed)
        return {label: {"median_ms": statistics.median(v) * 1000, "min_ms": min(v) * 1000,
                        "runs_ms": [round(x * 1000, 1) for x in v]} for label, v in times.items()}

    def close(self) -> None:
        if self.cluster is None:
            return
        if self.args.keep:
            self.log(f"cluster kept: {self.cluster.dsn()} (stop: pg_ctl -D {self.cluster.data_dir} stop)")
            return
        self._cluster.__exit__(None, None, None)


VARIANTS = ["naive", "psql -f", "appdb apply"]


def summarise(runs: list[Run], noop: dict[str, dict]) -> dict[str, object]:
    by_variant = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r.variant == variant and r.ok]
        if not mine:
            by_variant[variant] = None
            continue
        by_variant[variant] = {
            "median_seconds": statistics.median(r.seconds for r in mine),
            "worst_stall_ms": max(r.stall_ms for r in mine),
            "median_stall_ms": statistics.median(r.stall_ms for r in mine),
            "worst_quiet_stall_ms": max(r.quiet_stall_ms for r in mine),
            "rounds": len(mine),
        }
        if variant == "appdb apply":
            by_variant[variant]["median_engine_seconds"] = statistics.median(r.engine_seconds for r in mine)
    appdb, psql = by_variant.get("appdb apply"), by_variant.get("psql -f")
    targets = {}
    if appdb:
        targets["stall_under_50ms"] = {"value_ms": appdb["worst_stall_ms"], "target_ms": 50,
                                       "met": appdb["worst_stall_ms"] < 50}
    if appdb and psql:
        ratio = appdb["median_seconds"] / psql["median_seconds"]
        targets["apply_vs_psql"] = {"ratio": ratio, "target": 1.2, "met": ratio <= 1.2}
    if noop:
        ratio = noop["noop apply"]["median_ms"] / noop["bare connect"]["median_ms"]
        targets["noop_vs_bare_connect"] = {"ratio": ratio, "target": 1.3, "met": ratio <= 1.3}
    return {"variants": by_variant, "targets": targets}


def print_table(args: argparse.Namespace, summary: dict, noop: dict) -> None:
    print(f"\n{args.rows:,} memberships, writer every {args.write_interval:g} ms, {args.rounds} round(s); "
          "medians of the time, worst stall over rounds\n")
    print(f"{'variant':<14} {'time (s)':>9} {'longest write stall (ms)':>25} {'quiet stall (ms)':>17}")
    for variant in VARIANTS:
        row = summary["variants"][variant]
        if row is None:
            print(f"{variant:<14} {'failed':>9}")
            continue
        print(f"{variant:<14} {row['median_seconds']:>9.2f} {row['worst_stall_ms']:>25.1f} "
              f"{row['worst_quiet_stall_ms']:>17.1f}")
        if "median_engine_seconds" in row:
            print(f"{'  of which the migrations':<26} {row['median_engine_seconds']:>6.2f} s "
                  "(the rest: interpreter, imports, connect, ledger)")
    if noop:
        print(f"\n{'no-op appdb apply':<20} {noop['noop apply']['median_ms']:>7.0f} ms (median)")
        print(f"{'bare psycopg connect':<20} {noop['bare connect']['median_ms']:>7.0f} ms (median)")
    print("\ntargets")
    names = {"stall_under_50ms": "longest write stall under appdb apply < 50 ms",
             "apply_vs_psql": "appdb apply <= 1.2x psql -f",
             "noop_vs_bare_connect": "no-op appdb apply <= 1.3x bare connect"}
    for key, target in summary["targets"].items():
        value = f"{target['value_ms']:.1f} ms" if "value_ms" in target else f"{target['ratio']:.2f}x"
        print(f"  {'met   ' if target['met'] else 'MISSED'} {names[key]}: {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--spare-users", type=int, default=50_000, help="auth users without a membership")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write-interval", type=float, default=5.0, metavar="MS", help="one write every MS ms")
    parser.add_argument("--quiet", type=float, default=1.5, metavar="S", help="writes before each migration")
    parser.add_argument("--noop-runs", type=int, default=15)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args(argv)

    bench = Bench(args)
    runs: list[Run] = []
    noop: dict = {}
    try:
        bench.start()
        for round_no in range(args.rounds):
            for variant in VARIANTS:
                run = bench.run_variant(variant, round_no)
                runs.append(run)
                bench.log(f"round {round_no + 1}/{args.rounds}: {variant}: {run.seconds:.2f} s, longest stall "
                          f"{run.stall_ms:.1f} ms ({run.stall_op})"
                          f"{f', {len(run.write_errors)} failed writes' if run.write_errors else ''}"
                          f"{'' if run.ok else ' FAILED ' + run.detail}")
        if bench.noop_dsn:
            noop = bench.noop()
        with psycopg.connect(bench.cluster.dsn(user=SUPERUSER), autocommit=True) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]
    finally:
        bench.close()

    summary = summarise(runs, noop)
    print_table(args, summary, noop)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps({
        "when": stamp,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "postgres": server, "server_settings": {**DURABILITY_OFF, **SERVER_SETTINGS}},
        "parameters": vars(args),
        "summary": summary,
        "noop": noop,
        "runs": [asdict(r) for r in runs],
    }, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0 if all(t["met"] for t in summary["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
