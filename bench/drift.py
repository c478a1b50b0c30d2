"""How long `appdb diff` takes next to `appdb verify`, for a small and a large schema.

    .venv/bin/python bench/drift.py                    # 3 and 200 tables, 5 rounds each
    .venv/bin/python bench/drift.py --tables 3 50 200 --rounds 7

It starts its own throwaway Supabase-shaped cluster (appdb/scratch.py: a temp folder,
Unix socket only), and for each size builds a database with every migration in sql/,
the access plan's grants, and synthetic tables up to the size. Each synthetic table looks
like the app's: a uuid primary key, a foreign key to auth.users, a unique constraint, a
check, an index, a default, RLS with two policies, and the grants. The snapshot of each
database is written to a temp file, so `diff` compares all of it and finds no drift.

It times, as the workflows run them (a new process each, connecting over the socket):
`appdb verify --json` and `appdb diff --json`, median of --rounds; and in-process, the
description alone (the one catalog query and its parsing). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appdb.local.cluster import SUPERUSER  # noqa: E402
from appdb.migrate.files import discover  # noqa: E402
from appdb.schema.describe import describe  # noqa: E402
from appdb.schema.fresh import apply_grants, build, scratch_cluster  # noqa: E402
from appdb.schema.snapshot import Snapshot, write  # noqa: E402

SYNTHETIC = """
CREATE TABLE app.{t} (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    code text NOT NULL UNIQUE,
    amount_cents bigint CHECK (amount_cents >= 0),
    state text NOT NULL DEFAULT 'new',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX {t}_user_idx ON app.{t} (user_id);
ALTER TABLE app.{t} ENABLE ROW LEVEL SECURITY;
CREATE POLICY {t}_own ON app.{t} FOR SELECT TO authenticated USING ((SELECT auth.uid()) = user_id);
CREATE POLICY {t}_writer ON app.{t} FOR ALL TO app_writer USING (true) WITH CHECK (true);
"""


def app_tables(conn) -> int:
    return conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = 'app' AND c.relkind IN ('r', 'p')").fetchone()[0]


def timed_cli(args: list[str], dsn: str, rounds: int) -> tuple[float, int]:
    """Median wall time of ``bin/appdb ARGS`` (what a person and the deploy run) and its exit code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"DATABASE_URL": dsn, "APPDB_SQL_DIR": str(ROOT / "sql")})
    times, code = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        result = subprocess.run([str(ROOT / "bin" / "appdb"), *args], env=env, cwd=ROOT,
                                capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        code = result.returncode
        if code != 0:
            raise SystemExit(f"appdb {' '.join(args)} exited {code}: {result.stderr.strip()}")
    return statistics.median(times), code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/drift.py", description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, nargs="+", default=[3, 200], help="schema sizes (app tables)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    migrations = discover(ROOT / "sql")
    rows = []
    version = "?"
    with scratch_cluster() as cluster, tempfile.TemporaryDirectory(prefix="appdb-bench-drift-") as tmp:
        for size in args.tables:
            dbname = f"bench_{size}"
            with cluster.connect(user=SUPERUSER) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER postgres").format(sql.Identifier(dbname)))
            cluster.shape(dbname)
            with cluster.connect(dbname) as conn:
                build(conn, migrations)
                for index in range(max(0, size - app_tables(conn))):
                    conn.execute(SYNTHETIC.format(t=f"bench_{index:03d}"))
                apply_grants(conn)
                tables = app_tables(conn)
                version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
                started = time.perf_counter()
                for _ in range(args.rounds):
                    description = describe(conn)
                describe_s = (time.perf_counter() - started) / args.rounds
                snapshot_path = Path(tmp) / f"{dbname}.snapshot"
                write(snapshot_path, Snapshot(description, tuple(m.id for m in migrations),
                                              str(conn.info.server_version // 10000)))
            dsn = cluster.dsn(dbname)
            verify_s, _ = timed_cli(["verify", "--json"], dsn, args.rounds)
            diff_s, _ = timed_cli(["diff", "--json", "--snapshot", str(snapshot_path)], dsn, args.rounds)
            rows.append((tables, len(description), verify_s, diff_s, describe_s))

    print(f"median of {args.rounds} rounds; each command a new process (Python start-up included); "
          f"PostgreSQL {version}, {os.cpu_count()} cores")
    print(f"{'app tables':>10} {'objects':>8} {'appdb verify':>13} {'appdb diff':>11} {'diff/verify':>12} "
          f"{'describe() alone':>17}")
    for tables, objects, verify_s, diff_s, describe_s in rows:
        print(f"{tables:>10} {objects:>8} {verify_s * 1000:>10.0f} ms {diff_s * 1000:>8.0f} ms "
              f"{diff_s / verify_s:>11.2f}x {describe_s * 1000:>14.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
