"""Faults on a real PostgreSQL: concurrent runs, a killed process, a killed connection,
long transactions, and bad input.

Each step of a migration commits on its own, so whatever happens to the process or
its connection, the database is as it was before the interrupted step: never with
``app.memberships.user_id`` left without a foreign key, never with a migration in the
ledger that did not fully apply, and the next ``appdb apply`` finishes the job.

Timings are asserted as correctness bounds with generous margins, never as speed: a
writer must not queue behind a migration for much longer than one ``lock_timeout``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import conninfo, sql

from tests.helpers import SHIPPED_SQL, wait_for, write_migration

if TYPE_CHECKING:
    from tests.helpers import Database

ROOT = Path(__file__).resolve().parent.parent

# The memberships table as a broken local migration left it: user_id references a
# app.profiles table (here it exists, so the foreign key is real) instead of auth.users.
PROFILES_STATE = """
CREATE TABLE app.profiles (user_id uuid PRIMARY KEY);
ALTER TABLE app.profiles ENABLE ROW LEVEL SECURITY;
INSERT INTO auth.users (id, aud, role, email)
SELECT ('00000000-0000-4000-9000-' || lpad(n::text, 12, '0'))::uuid, 'authenticated', 'authenticated',
       'member' || n || '@example.com'
FROM generate_series(1, {rows}) AS n;
INSERT INTO app.profiles (user_id) SELECT id FROM auth.users;
CREATE TABLE app.memberships (
    membership_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES app.profiles (user_id),
    status text NOT NULL DEFAULT 'active',
    plan_interval text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memberships_user_id_key UNIQUE (user_id),
    CONSTRAINT memberships_user_unique UNIQUE (user_id)
);
INSERT INTO app.memberships (user_id, plan_interval)
SELECT user_id, CASE WHEN random() < 0.5 THEN 'month' ELSE 'year' END FROM app.profiles;
"""

USER_FKS = """
SELECT c.conname, c.confrelid::regclass::text, c.convalidated
FROM pg_constraint AS c
JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.conrelid = 'app.memberships'::regclass AND c.contype = 'f' AND a.attname = 'user_id'
ORDER BY 1
"""


def load_profiles_state(db: Database, rows: int = 50) -> None:
    with db.connect() as conn:
        conn.execute(PROFILES_STATE.format(rows=int(rows)))


def user_fks(db: Database) -> list[tuple[str, str, bool]]:
    return [tuple(row) for row in db.execute(USER_FKS)]


def ledger_ids(db: Database) -> list[str]:
    if not db.execute("SELECT to_regclass('appdb.migrations') IS NOT NULL")[0][0]:
        return []
    return [row[0] for row in db.execute("SELECT id FROM appdb.migrations ORDER BY id")]


def cli_env(db: Database, sql_dir: Path = SHIPPED_SQL, **extra: str) -> dict[str, str]:
    """The environment Database.run_cli uses, for processes the test must start itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"DATABASE_URL": db.dsn, "APPDB_SQL_DIR": str(sql_dir), "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def start_cli(db: Database, *args: str) -> subprocess.Popen:
    """appdb in a subprocess that takes Ctrl-C as a terminal would give it.

    A shell starts background jobs with SIGINT ignored (bin/test runs the second major's
    tests so), and a Python started with it ignored never raises KeyboardInterrupt:
    the child gets the default disposition back before it starts.
    """
    return subprocess.Popen([sys.executable, "-m", "appdb", *args], env=cli_env(db), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def blocked_appdb_backend(db: Database) -> tuple[int, str] | None:
    """(pid, query) of this database's appdb session while it waits on a table lock.

    pg_stat_activity reads a backend's wait event as it is now, but its query from a copy made a
    moment before: a session that had just begun its transaction, and then waited, showed 'BEGIN'
    (a fresh clone's CI under load saw it). Such a row is not taken; the next look finds the query."""
    rows = db.execute(
        "SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND application_name = 'appdb'"
        " AND wait_event_type = 'Lock' AND state = 'active' AND query <> 'BEGIN'", (db.name,))
    return (rows[0][0], rows[0][1]) if rows else None


def appdb_sessions(db: Database) -> int:
    return db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'appdb'",
                      (db.name,))[0][0]


def backend_gone(db: Database, pid: int) -> bool:
    return not db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))


@contextmanager
def holding(conn: psycopg.Connection, statement: str) -> Iterator[None]:
    """Run ``statement`` in a transaction that stays open (and keeps its locks) for the block."""
    conn.execute("BEGIN")
    conn.execute(statement)
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exactly one ``appdb: error:`` line (retry warnings may come before it), and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    errors = [line for line in lines if line.startswith("appdb: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert all(line.startswith(("appdb: WARNING: ", "appdb: INFO: ")) for line in lines[:-1]), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    return errors[0]


def assert_migrated(db: Database) -> None:
    assert ledger_ids(db) == ["027", "028", "029", "030"]
    assert user_fks(db) == [("memberships_user_id_fkey", "auth.users", True)]
    verify = db.run_cli("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


# Each blocker makes 027 wait inside one step, after the steps before it committed.
# foreign_key needs SHARE ROW EXCLUSIVE on auth.users, which the table step does not.
BLOCKERS = {
    "table": "LOCK TABLE app.memberships IN ACCESS SHARE MODE",
    "foreign_key": "LOCK TABLE auth.users IN SHARE ROW EXCLUSIVE MODE",
}


# --- concurrency -------------------------------------------------------------------------


def test_five_concurrent_applies_apply_each_migration_exactly_once(db: Database) -> None:
    load_profiles_state(db)
    with db.admin_connect() as blocker:
        # Hold the first run inside 027 until all five are connected and contending.
        with holding(blocker, BLOCKERS["table"]):
            runs = [start_cli(db, "apply", "--lock-timeout", "30") for _ in range(5)]
            wait_for(lambda: appdb_sessions(db) == 5 and blocked_appdb_backend(db), what="five runs to contend")
        outputs = [run.communicate(timeout=60) for run in runs]

    assert [run.returncode for run in runs] == [0] * 5, outputs
    applied_lines = [line for out, _ in outputs for line in out.splitlines() if "applied in" in line]
    assert sorted(line.split(":")[0] for line in applied_lines) == [
        "027 memberships", "028 fix_memberships_unique_constraint", "029 payment_events", "030 billing_logs"]
    assert db.execute("SELECT id, count(*) FROM appdb.migrations GROUP BY id ORDER BY id") == [
        ("027", 1), ("028", 1), ("029", 1), ("030", 1)]
    uniques = db.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'app.memberships'::regclass"
                         " AND contype = 'u'")
    assert uniques == [(1,)]
    checks = db.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'app.memberships'::regclass"
                        " AND contype = 'c' AND conname = 'memberships_plan_interval_check'")
    assert checks == [(1,)]
    assert_migrated(db)


# --- the process or its connection dies mid-step --------------------------------------------


ORIGINAL_ROWS = "SELECT membership_id, user_id, status, plan_interval, created_at FROM app.memberships ORDER BY 1"


@pytest.mark.parametrize("step", ["table", "foreign_key"])
def test_sigkill_mid_step_leaves_the_database_as_before_that_step(db: Database, step: str) -> None:
    load_profiles_state(db, rows=2000)
    before, rows_before = db.snapshot(), db.execute(ORIGINAL_ROWS)
    with db.admin_connect() as blocker:
        with holding(blocker, BLOCKERS[step]):
            run = start_cli(db, "apply", "--lock-timeout", "60")
            pid, query = wait_for(lambda: blocked_appdb_backend(db), what="apply to wait on the lock")
            assert ("$fk$" in query) == (step == "foreign_key"), query
            run.send_signal(signal.SIGKILL)
            assert run.wait(timeout=10) == -signal.SIGKILL
            # The server notices the client is gone while the step still waits for its lock
            # (client_connection_check_interval), and rolls the step back.
            wait_for(lambda: backend_gone(db, pid), timeout=10, what="the orphaned backend to exit")

    assert ledger_ids(db) == []
    assert user_fks(db) == [("memberships_user_id_fkey", "app.profiles", True)]
    if step == "table":
        assert db.snapshot() == before
    else:
        # The table step committed (RLS, policies, columns); the foreign key step did not.
        assert db.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'app.memberships'::regclass") == [
            (True,)]
        assert db.execute(ORIGINAL_ROWS) == rows_before

    result = db.run_cli("apply")
    assert result.returncode == 0, result.stderr
    assert_migrated(db)


def test_connection_terminated_mid_step_fails_cleanly_and_the_next_apply_completes(db: Database) -> None:
    load_profiles_state(db)
    with db.admin_connect() as admin:
        with holding(admin, BLOCKERS["foreign_key"]):
            run = start_cli(db, "apply", "--lock-timeout", "60")
            pid, _ = wait_for(lambda: blocked_appdb_backend(db), what="apply to wait on the lock")
            with db.admin_connect() as admin_side:
                assert admin_side.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
            code = run.wait(timeout=20)
            _, stderr = run.communicate()

    result = subprocess.CompletedProcess(run.args, code, "", stderr)
    line = assert_one_line_error(result, 1, "027", "foreign_key", "connection")
    assert "rolled back" in line
    assert ledger_ids(db) == []
    assert user_fks(db) == [("memberships_user_id_fkey", "app.profiles", True)]

    again = db.run_cli("apply")
    assert again.returncode == 0, again.stderr
    assert_migrated(db)


def test_ctrl_c_mid_step_rolls_the_step_back(db: Database) -> None:
    load_profiles_state(db)
    with db.admin_connect() as blocker:
        with holding(blocker, BLOCKERS["foreign_key"]):
            run = start_cli(db, "apply", "--lock-timeout", "60")
            pid, _ = wait_for(lambda: blocked_appdb_backend(db), what="apply to wait on the lock")
            run.send_signal(signal.SIGINT)
            code = run.wait(timeout=20)
            _, stderr = run.communicate()
            # The query was cancelled: the backend no longer waits, though the blocker still holds.
            wait_for(lambda: not blocked_appdb_backend(db), timeout=10, what="the query to be cancelled")

    result = subprocess.CompletedProcess(run.args, code, "", stderr)
    assert_one_line_error(result, 130, "interrupted")
    assert ledger_ids(db) == []
    assert user_fks(db) == [("memberships_user_id_fkey", "app.profiles", True)]
    again = db.run_cli("apply")
    assert again.returncode == 0, again.stderr
    assert_migrated(db)


def test_the_server_ends_a_killed_runs_statement_promptly(db: Database, tmp_path: Path) -> None:
    # SIGKILL mid-statement: the server must notice the client is gone while the statement
    # runs (client_connection_check_interval), not when it ends, or the orphan keeps its
    # locks and the migration lock, and the next apply waits for it.
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_slow.sql", "CREATE TABLE app.slow (id int);\nSELECT pg_sleep(60);\n",
                    "DROP TABLE IF EXISTS app.slow;\n")
    env = cli_env(db, sql_dir)
    run = subprocess.Popen([sys.executable, "-m", "appdb", "apply"], env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = wait_for(lambda: db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'appdb'"
        " AND query LIKE '%%pg_sleep%%' AND state = 'active'", (db.name,)), what="the slow statement")
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)
    killed = time.monotonic()
    wait_for(lambda: backend_gone(db, rows[0][0]), timeout=20, what="the orphaned backend to exit")
    assert time.monotonic() - killed < 10
    assert db.execute("SELECT to_regclass('app.slow')") == [(None,)]
    assert ledger_ids(db) == []


# --- a long transaction holds a lock on app.memberships -------------------------------------


class Writer(threading.Thread):
    """Updates one membership over and over, recording the longest single statement."""

    def __init__(self, db: Database, user_id: str) -> None:
        super().__init__(daemon=True)
        self.db, self.user_id = db, user_id
        self.stop = threading.Event()
        self.longest = 0.0
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.db.connect() as conn:
                while not self.stop.is_set():
                    started = time.monotonic()
                    conn.execute("UPDATE app.memberships SET status = %s WHERE user_id = %s",
                                 (f"w{self.writes % 7}", self.user_id))
                    self.longest = max(self.longest, time.monotonic() - started)
                    self.writes += 1
                    time.sleep(0.01)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=30)
        assert self.error is None, self.error


FIRST_USER = "00000000-0000-4000-9000-000000000001"
OTHER_USER = "00000000-0000-4000-9000-000000000002"
LONG_TRANSACTION = f"UPDATE app.memberships SET status = 'held' WHERE user_id = '{FIRST_USER}'"


def test_apply_waits_out_a_short_lock_through_its_retries(db: Database) -> None:
    db.load_state("production")
    writer = Writer(db, OTHER_USER)
    with db.connect() as holder:
        holder.execute("BEGIN")
        holder.execute(LONG_TRANSACTION)
        writer.start()
        run = start_cli(db, "apply", "--lock-timeout", "0.5", "--lock-retries", "10", "-v")
        wait_for(lambda: blocked_appdb_backend(db), what="apply to wait on the lock")
        time.sleep(3)
        holder.execute("ROLLBACK")
        code = run.wait(timeout=60)
        stdout, stderr = run.communicate()
    writer.finish()

    assert code == 0, stderr
    assert "lock timeout, retry" in stderr
    assert_migrated(db)
    # Without lock_timeout the writer would have queued behind the migration for the 3 s.
    assert writer.longest < 0.5 + 1.5, f"a writer waited {writer.longest:.2f} s"
    assert writer.writes > 20


def test_apply_gives_up_on_a_long_lock_with_nothing_half_applied(db: Database) -> None:
    db.load_state("production")
    writer = Writer(db, OTHER_USER)
    with db.connect() as holder:
        holder.execute("BEGIN")
        holder.execute(LONG_TRANSACTION)
        before = db.snapshot()
        writer.start()
        started = time.monotonic()
        result = db.run_cli("apply", "--lock-timeout", "0.3", "--lock-retries", "3", timeout=60)
        elapsed = time.monotonic() - started
        holder.execute("ROLLBACK")
    writer.finish()

    assert_one_line_error(result, 1, "lock timeout", "027", "step table")
    assert elapsed < 20
    # The writer's own updates changed app.memberships rows: compare the catalog and ledger.
    after = db.snapshot()
    assert after["catalog"] == before["catalog"]
    assert ledger_ids(db) == []
    assert writer.longest < 0.3 + 1.5, f"a writer waited {writer.longest:.2f} s"
    assert writer.writes > 20


def test_a_deadlock_with_a_writer_is_retried_like_a_lock_timeout(db: Database) -> None:
    # A webhook's transaction touches auth.users, then app.memberships; the foreign key step
    # locks app.memberships, then auth.users. PostgreSQL aborts one of the two (here the
    # migration, which waited first): the step is rolled back and must be retried.
    load_profiles_state(db)
    with db.admin_connect() as webhook:
        # The deadlock check runs in whichever session has waited deadlock_timeout first:
        # make sure that is the migration (the superuser may raise it for its own session).
        webhook.execute("SET deadlock_timeout = '30s'")
        webhook.execute("BEGIN")
        webhook.execute("UPDATE auth.users SET last_sign_in_at = now() WHERE id = %s", (FIRST_USER,))
        run = start_cli(db, "apply", "--lock-timeout", "5", "--lock-retries", "3")
        _, query = wait_for(lambda: blocked_appdb_backend(db), what="apply to wait on auth.users")
        assert "$fk$" in query
        started = time.monotonic()
        webhook.execute("UPDATE app.memberships SET status = 'active' WHERE user_id = %s", (FIRST_USER,))
        waited = time.monotonic() - started
        webhook.execute("COMMIT")
        code = run.wait(timeout=60)
        _, stderr = run.communicate()

    assert code == 0, stderr
    assert "deadlock" in stderr
    assert waited < 5, f"the webhook waited {waited:.1f} s"
    assert_migrated(db)


# --- bad input: one line, the right exit code, nothing changed ------------------------------

SECRET = "s3cret-Pa55word"


def run_unchanged(db: Database, *args: str, code: int, env: dict[str, str] | None = None,
                  sql_dir: Path | None = None, timeout: float = 60) -> str:
    """Run the CLI; assert a one-line error with ``code``, no secret, and an unchanged database."""
    before = db.snapshot()
    result = db.run_cli(*args, env=env, sql_dir=sql_dir, timeout=timeout)
    line = assert_one_line_error(result, code)
    assert SECRET not in result.stdout + result.stderr
    assert db.snapshot() == before
    return line


@pytest.mark.parametrize("dsn", [
    f"postgresql://postgres:{SECRET}@localhost:notaport/postgres",
    f"host=localhost password={SECRET} port",
    f"host=localhost password='{SECRET}' sslmode=sometimes",
])
def test_a_malformed_dsn_is_a_usage_error(db: Database, dsn: str) -> None:
    line = run_unchanged(db, "apply", "--dsn", dsn, code=2)
    assert "connection string" in line or "sslmode" in line


def test_a_wrong_password_is_a_usage_error_without_the_password(db: Database) -> None:
    params = {**db.tcp_params, "password": SECRET}
    line = run_unchanged(db, "apply", "--dsn", conninfo.make_conninfo(**params), code=2)
    assert "authentication failed" in line
    url = f"postgresql://postgres:{SECRET}@{params['host']}:{params['port']}/{params['dbname']}"
    run_unchanged(db, "status", "--dsn", url, code=2)


def test_a_server_that_never_answers_is_ended_by_the_connect_timeout(db: Database) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever answers
        port = silent.getsockname()[1]
        dsn = f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/postgres?sslmode=disable"
        started = time.monotonic()
        line = run_unchanged(db, "apply", "--dsn", dsn, code=2, env={"PGCONNECT_TIMEOUT": "2"}, timeout=30)
        elapsed = time.monotonic() - started
    assert "no answer within 2 s" in line
    assert elapsed < 15, f"took {elapsed:.1f} s with a 2 s connect timeout"


def test_the_transaction_pooler_port_is_refused(db: Database) -> None:
    line = run_unchanged(db, "apply", "--dsn", f"postgresql://postgres:{SECRET}@127.0.0.1:6543/postgres", code=2)
    assert "6543" in line
    run_unchanged(db, "apply", code=2, env={"DATABASE_URL": "", "PGHOST": "127.0.0.1", "PGPORT": "6543"})


def test_a_missing_sql_directory_is_a_usage_error(db: Database, tmp_path: Path) -> None:
    line = run_unchanged(db, "apply", sql_dir=tmp_path / "nowhere", code=2)
    assert "nowhere" in line


def test_an_unknown_migration_id_is_a_usage_error(db: Database) -> None:
    line = run_unchanged(db, "apply", "--only", "999", code=2)
    assert "999" in line


def copy_sql(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, target)
    return target


def test_two_migrations_with_the_same_id_are_a_usage_error(db: Database, tmp_path: Path) -> None:
    sql_dir = copy_sql(tmp_path)
    for folder in (sql_dir, sql_dir / "revert"):
        shutil.copy(folder / "028_fix_memberships_unique_constraint.sql", folder / "028_again.sql")
    line = run_unchanged(db, "apply", sql_dir=sql_dir, code=2)
    assert "028" in line


def test_a_syntax_error_names_the_file_and_line_and_rolls_the_step_back(db: Database, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_broken.sql",
                    "-- a table, then a typo in the same step\n"
                    "CREATE TABLE app.broken (id int);\n"
                    "\n"
                    "SELEC 1;\n",
                    "DROP TABLE IF EXISTS app.broken;\n")
    line = run_unchanged(db, "apply", sql_dir=sql_dir, code=1)
    assert "001_broken.sql:4" in line
    assert "syntax error" in line


def test_a_database_without_auth_users_is_refused(db: Database) -> None:
    with db.admin_connect() as admin:
        admin.execute("DROP SCHEMA auth CASCADE")
    line = run_unchanged(db, "apply", code=1)
    assert "auth.users" in line


@pytest.mark.parametrize("name", ["drop table x; --", "Ümlaut", "../escape", ""])
def test_a_migration_name_that_is_not_an_identifier_is_a_usage_error(db: Database, tmp_path: Path,
                                                                      name: str) -> None:
    # `new NAME` is the only name appdb takes; schema and role names are fixed in the SQL.
    sql_dir = copy_sql(tmp_path)
    files = sorted(p.name for p in sql_dir.rglob("*.sql"))
    run_unchanged(db, "new", name, sql_dir=sql_dir, code=2)
    assert sorted(p.name for p in sql_dir.rglob("*.sql")) == files


# --- from an attack review: what is said when the step may have committed ----------------------


@contextmanager
def commits_wait_for_a_standby(db: Database) -> Iterator[None]:
    """Every commit in the database waits for a synchronous standby that never comes: a COMMIT is
    then in flight for as long as the test likes (the cluster is this test worker's own; its
    synchronous_commit is off, so the database turns it on)."""
    with db.admin_connect() as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(db.name)))
        admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        admin.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with db.admin_connect() as admin:
            admin.execute("ALTER SYSTEM RESET synchronous_standby_names")  # first: no commit waits after it
            admin.execute("SELECT pg_reload_conf()")
            admin.execute(sql.SQL("ALTER DATABASE {} RESET synchronous_commit").format(sql.Identifier(db.name)))


def committing_backend(db: Database) -> int | None:
    rows = db.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'appdb' "
                      "AND wait_event = 'SyncRep'", (db.name,))
    return rows[0][0] if rows else None


@pytest.mark.parametrize("how", ["connection lost", "ctrl-c"])
def test_a_step_stopped_as_it_commits_is_never_said_to_be_rolled_back(db: Database, tmp_path: Path, how: str) -> None:
    """The server had committed the migration and its ledger row; appdb said "rolled back, run apply
    again". Now it says that whether it committed is unknown, and the ledger tells."""
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_sync_victim.sql", "CREATE TABLE IF NOT EXISTS app.sync_victim (id int);\n")
    with commits_wait_for_a_standby(db):
        run = subprocess.Popen([sys.executable, "-m", "appdb", "apply", "--json"], env=cli_env(db, sql_dir), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        pid = wait_for(lambda: committing_backend(db), what="the step's COMMIT to wait for the standby")
        if how == "ctrl-c":
            run.send_signal(signal.SIGINT)
        else:
            with db.admin_connect() as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        stdout, stderr = run.communicate(timeout=30)
    assert run.returncode == (130 if how == "ctrl-c" else 1), stderr
    assert "rolled back" not in stderr, stderr
    assert "whether it did is unknown" in stderr or "committed is unknown" in stderr, stderr
    assert "'appdb status' tells" in stderr, stderr
    report = json.loads(stdout)
    assert report["complete"] is False and report["outcomes"] == [] and report["uncertain"] == ["001"], stdout
    # The truth, which the message sends the reader to: committed, and recorded.
    assert ledger_ids(db) == ["001"]
    assert db.execute("SELECT to_regclass('app.sync_victim') IS NOT NULL") == [(True,)]


def test_a_transaction_false_step_runs_once_while_its_ledger_row_waits_for_a_lock(db: Database,
                                                                                tmp_path: Path) -> None:
    """A lock timeout on the ledger's write retried the whole step, which had committed: the row it
    inserted was inserted three times for one ledger row. Only the ledger's write is retried now."""
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_runs.sql",
                    "CREATE TABLE IF NOT EXISTS app.runs (at timestamptz DEFAULT clock_timestamp());\n"
                    "-- appdb:step bump transaction=false\nINSERT INTO app.runs DEFAULT VALUES;\n")
    write_migration(sql_dir, "000_ledger.sql", "SELECT 1;\n")
    assert db.run_cli("apply", "--only", "000", sql_dir=sql_dir).returncode == 0  # the ledger exists
    with db.admin_connect() as blocker:
        with holding(blocker, "LOCK TABLE appdb.migrations IN SHARE MODE"):
            run = subprocess.Popen([sys.executable, "-m", "appdb", "apply", "--lock-timeout", "0.3",
                                    "--lock-retries", "8"], env=cli_env(db, sql_dir), cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_for(lambda: db.execute("SELECT count(*) FROM app.runs")[0][0] if db.execute(
                "SELECT to_regclass('app.runs') IS NOT NULL")[0][0] else None, what="the step to have run")
            time.sleep(1.0)  # some of the ledger write's lock timeouts
        stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert "lock timeout, retry" in stderr, stderr
    assert db.execute("SELECT count(*) FROM app.runs") == [(1,)]
    assert ledger_ids(db) == ["000", "001"]


def test_a_ledger_row_that_never_gets_its_lock_says_the_transaction_false_step_ran(db: Database,
                                                                                tmp_path: Path) -> None:
    """The step had run and stays; only its row is missing: the message says so, and that the next run
    runs it again (an attack review: it said only "lock timeout")."""
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "000_ledger.sql", "SELECT 1;\n")
    write_migration(sql_dir, "001_idx.sql", "CREATE TABLE IF NOT EXISTS app.ran (id int);\n"
                                            "-- appdb:step build transaction=false\n"
                                            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ran_id ON app.ran (id);\n")
    assert db.run_cli("apply", "--only", "000", sql_dir=sql_dir).returncode == 0
    with db.admin_connect() as blocker:
        with holding(blocker, "LOCK TABLE appdb.migrations IN SHARE MODE"):
            result = db.run_cli("apply", "--lock-timeout", "0.2", "--lock-retries", "1", sql_dir=sql_dir)
    line = assert_one_line_error(result, 1, "001", "lock timeout")
    assert "the step (transaction=false) ran and what it did stays, but it is not recorded" in line, line
    assert db.execute("SELECT to_regclass('app.ran_id') IS NOT NULL") == [(True,)]
    assert ledger_ids(db) == ["000"]
    again = db.run_cli("apply", sql_dir=sql_dir)
    assert again.returncode == 0, again.stderr
    assert ledger_ids(db) == ["000", "001"]

def test_apply_only_of_an_applied_migration_says_that_one_is_applied(db: Database, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_a.sql", "CREATE TABLE IF NOT EXISTS app.only_a (id int);\n")
    write_migration(sql_dir, "002_b.sql", "CREATE TABLE IF NOT EXISTS app.only_b (id int);\n")
    assert db.run_cli("apply", "--only", "001", sql_dir=sql_dir).returncode == 0
    again = db.run_cli("apply", "--only", "1", sql_dir=sql_dir)
    assert again.returncode == 0 and again.stdout == "nothing to apply: 001 is already applied\n", again.stdout
