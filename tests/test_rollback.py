"""Code rollback (docs/rollback.md), through the path the command resources take.

A code rollback reverts the commit that added a migration and runs ``pulumi up``. The
migration's file is gone, so Pulumi deletes its command resource, and the delete runs
``./bin/appdb revert ID`` from the project folder with the stack's connection as libpq
variables: the revert SQL comes from the ledger, not from the (removed) file. These
tests run those exact command lines (from components/migrations.py) the same way, on
the throwaway Supabase-shaped PostgreSQL, with ``sql/`` copied to a temporary folder
so that files can be removed and restored.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.migrations import APPLY_PENDING, RECORDED, revert_command
from tests.helpers import SHIPPED_SQL, copy_shipped, wait_for, write_migration

ROOT = Path(__file__).resolve().parent.parent
FILE_027 = "027_memberships.sql"
FILE_028 = "028_fix_memberships_unique_constraint.sql"
FILE_029 = "029_payment_events.sql"
FILE_030 = "030_billing_logs.sql"
LATER_THAN_028 = (FILE_029, FILE_030)


@pytest.fixture
def full_sql_dir(tmp_path: Path) -> Path:
    """A copy of the shipped migrations that a test may remove files from and restore them to."""
    return copy_shipped(tmp_path / "sql")


@pytest.fixture
def sql_dir(full_sql_dir: Path) -> Path:
    """The copy as it was when 028 was the newest migration: the scenarios that roll back
    027 and 028 need them to be the latest (reverts run newest first)."""
    for filename in LATER_THAN_028:
        remove(full_sql_dir, filename)
    return full_sql_dir


def remove(sql_dir: Path, filename: str) -> None:
    (sql_dir / filename).unlink()
    (sql_dir / "revert" / filename).unlink()


def restore(sql_dir: Path, filename: str) -> None:
    shutil.copy2(SHIPPED_SQL / filename, sql_dir / filename)
    shutil.copy2(SHIPPED_SQL / "revert" / filename, sql_dir / "revert" / filename)


def command_resource(db, command: str, sql_dir: Path) -> subprocess.CompletedProcess:
    """Run a migration command as pulumi-command does: ``sh -c`` in the project folder,
    the connection as PG* variables (components/provider.py), no DATABASE_URL, no venv."""
    params = db.tcp_params
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in ("DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update({
        "PGHOST": params["host"], "PGPORT": str(params["port"]), "PGDATABASE": params["dbname"],
        "PGUSER": params["user"], "PGPASSWORD": params["password"], "PGSSLMODE": "disable",
        "PGCONNECT_TIMEOUT": "10", "APPDB_SQL_DIR": str(sql_dir),
    })
    return subprocess.run(["sh", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def states(db, sql_dir: Path) -> dict[str, str]:
    result = db.run_cli("status", "--json", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    return {m["id"]: m["state"] for m in json.loads(result.stdout)["migrations"]}


def verify(db, sql_dir: Path) -> tuple[int, dict]:
    result = db.run_cli("verify", "--json", sql_dir=sql_dir)
    return result.returncode, json.loads(result.stdout)


def schema_and_rows(db) -> dict:
    """The catalog and every row, minus the ledger's timestamps: what a rollback must restore."""
    snap = db.snapshot()
    rows = {table: data for table, data in snap["rows"].items() if table != "appdb.migrations"}
    return {"catalog": snap["catalog"], "rows": rows}


def unique_constraints_on_user_id(db) -> list[str]:
    return [row[0] for row in db.execute(
        """
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'app.memberships'::regclass AND contype = 'u'
          AND conkey = ARRAY[(SELECT attnum FROM pg_attribute
                              WHERE attrelid = 'app.memberships'::regclass AND attname = 'user_id')]::int2[]
        ORDER BY 1
        """
    )]


def deploy(db, sql_dir: Path) -> None:
    """What `pulumi up` runs: migrations-apply's `apply`, then each migration's own (no-op) create."""
    for command in (APPLY_PENDING, RECORDED):
        result = command_resource(db, command, sql_dir)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("start", ["empty", "production"])
def test_code_rollback_reverts_028_from_the_ledger_and_reapplies_it(db, sql_dir, start):
    if start == "production":
        db.load_state("production")
    deploy(db, sql_dir)
    deployed = schema_and_rows(db)
    assert unique_constraints_on_user_id(db) == ["memberships_user_id_key"]

    # The commit that added 028 is reverted: its files are gone, the ledger still has it.
    remove(sql_dir, FILE_028)
    assert states(db, sql_dir) == {"027": "applied", "028": "removed"}
    # Pulumi runs updates before deletes: verification during the rollback must hold.
    code, report = verify(db, sql_dir)
    ledger = next(c for c in report["checks"] if c["name"] == "ledger")
    assert code == 0 and report["ok"], report
    assert ledger["ok"] and "028" in ledger["detail"]
    # migrations-apply's update (its digest moved) leaves the removed migration to its revert.
    assert command_resource(db, APPLY_PENDING, sql_dir).returncode == 0
    assert states(db, sql_dir)["028"] == "removed"

    # The delete of 028's command resource, with allowDataLoss false as on prod.
    reverted = command_resource(db, revert_command("028", allow_data_loss=False), sql_dir)
    assert reverted.returncode == 0, reverted.stderr
    assert states(db, sql_dir) == {"027": "applied"}
    code, report = verify(db, sql_dir)
    assert code == 0 and report["ok"], report
    # 028's revert is a documented no-op: the duplicate constraint does not come back.
    assert unique_constraints_on_user_id(db) == ["memberships_user_id_key"]
    # A retried delete finds nothing to revert and succeeds.
    again = command_resource(db, revert_command("028", allow_data_loss=False), sql_dir)
    assert again.returncode == 0, again.stderr

    # Rolling forward again: the files are back, `pulumi up` creates 028's command.
    restore(sql_dir, FILE_028)
    assert states(db, sql_dir) == {"027": "applied", "028": "pending"}
    reapplied = command_resource(db, APPLY_PENDING, sql_dir)
    assert reapplied.returncode == 0, reapplied.stderr
    assert states(db, sql_dir) == {"027": "applied", "028": "applied"}
    code, report = verify(db, sql_dir)
    assert code == 0 and report["ok"], report
    assert schema_and_rows(db) == deployed


def test_reverts_run_newest_first(db, sql_dir):
    deploy(db, sql_dir)
    before = schema_and_rows(db)
    result = command_resource(db, revert_command("027", allow_data_loss=True), sql_dir)
    assert result.returncode == 1
    assert result.stderr.startswith("appdb: error: ") and result.stderr.count("\n") == 1
    assert "028" in result.stderr
    assert schema_and_rows(db) == before
    assert states(db, sql_dir) == {"027": "applied", "028": "applied"}


def test_revert_027_of_a_table_with_rows_is_refused_and_changes_nothing(db, sql_dir):
    db.load_state("production")
    deploy(db, sql_dir)
    # The code rollback removes both files; Pulumi deletes 028 first, then 027.
    remove(sql_dir, FILE_028)
    remove(sql_dir, FILE_027)
    assert command_resource(db, revert_command("028", allow_data_loss=False), sql_dir).returncode == 0
    before = schema_and_rows(db)

    refused = command_resource(db, revert_command("027", allow_data_loss=False), sql_dir)
    assert refused.returncode == 1
    message = refused.stderr
    assert message.startswith("appdb: error: ") and message.count("\n") == 1, message
    assert "027" in message and "row" in message
    assert "backup" in message and "--allow-data-loss" in message
    assert schema_and_rows(db) == before
    assert db.execute("SELECT count(*) FROM app.memberships") == [(5,)]

    # The stack stays consistent: 027 is still in the ledger, reported as a revert to run,
    # and verification holds, so the next `pulumi up` sees the same world.
    assert states(db, sql_dir) == {"027": "removed"}
    code, report = verify(db, sql_dir)
    assert code == 0 and report["ok"], report


def test_after_a_refused_revert_restoring_the_code_needs_no_database_change(db, sql_dir):
    db.load_state("production")
    deploy(db, sql_dir)
    remove(sql_dir, FILE_028)
    remove(sql_dir, FILE_027)
    command_resource(db, revert_command("028", allow_data_loss=False), sql_dir)
    assert command_resource(db, revert_command("027", allow_data_loss=False), sql_dir).returncode == 1

    # Runbook, option 1: restore the code (revert the revert) and `pulumi up`.
    restore(sql_dir, FILE_027)
    restore(sql_dir, FILE_028)
    assert states(db, sql_dir) == {"027": "applied", "028": "pending"}
    deploy(db, sql_dir)
    code, report = verify(db, sql_dir)
    assert code == 0 and report["ok"], report
    assert db.execute("SELECT count(*) FROM app.memberships") == [(5,)]


def test_after_a_backup_data_loss_allowed_on_purpose_drops_the_table(db, sql_dir):
    db.load_state("production")
    deploy(db, sql_dir)
    remove(sql_dir, FILE_028)
    remove(sql_dir, FILE_027)
    command_resource(db, revert_command("028", allow_data_loss=False), sql_dir)

    # Runbook, option 2: after a backup / PITR snapshot, allow data loss deliberately, by
    # hand (Pulumi runs a delete with the inputs in its state, which lack the flag).
    dropped = db.run_cli("revert", "027", "--allow-data-loss", sql_dir=sql_dir)
    assert dropped.returncode == 0, dropped.stderr
    assert db.execute("SELECT to_regclass('app.memberships')") == [(None,)]
    assert states(db, sql_dir) == {}
    # The next `pulumi up` retries the refused delete, which now has nothing to revert.
    retried = command_resource(db, revert_command("027", allow_data_loss=False), sql_dir)
    assert retried.returncode == 0, retried.stderr
    _, report = verify(db, sql_dir)
    assert next(c for c in report["checks"] if c["name"] == "ledger")["ok"], report
    # The group roles belong to the Pulumi program: a revert never drops them.
    assert db.execute("SELECT count(*) FROM pg_roles WHERE rolname IN ('app_writer', 'app_reader')") == [(2,)]


def test_code_rollback_of_029_and_030_refuses_to_drop_production_rows_then_rolls_forward(db, full_sql_dir):
    """On prod the tables predate 029 and 030, so their reverts refuse while rows exist."""
    db.load_state("production")
    db.load_state("production_billing")
    deploy(db, full_sql_dir)
    remove(full_sql_dir, FILE_030)
    remove(full_sql_dir, FILE_029)
    before = schema_and_rows(db)

    refused = command_resource(db, revert_command("030", allow_data_loss=False), full_sql_dir)
    assert refused.returncode == 1
    assert "030" in refused.stderr and "app.billing_logs" in refused.stderr and refused.stderr.count("\n") == 1
    assert schema_and_rows(db) == before
    # Mid-rollback verification holds: 029 and 030 are reverts still to run, not failures.
    code, report = verify(db, full_sql_dir)
    assert code == 0 and report["ok"], report

    restore(full_sql_dir, FILE_029)
    restore(full_sql_dir, FILE_030)
    assert states(db, full_sql_dir) == dict.fromkeys(("027", "028", "029", "030"), "applied")


# A row each shipped revert's table can take, and what must be reverted before it (newest first).
ROW_WHILE_REVERTING = {
    "030": ("app.billing_logs", "INSERT INTO app.billing_logs (action, amount_cents) VALUES ('charge', 4200)", ()),
    "029": ("app.payment_events", "INSERT INTO app.payment_events (stripe_event_id, event_type, payload) "
            "VALUES ('evt_in_flight', 'invoice.paid', '{}')", ("030",)),
    "027": ("app.memberships", "INSERT INTO app.memberships (user_id, plan_interval) "
            "VALUES ('00000000-0000-4000-a000-000000000001', 'month')", ("030", "029", "028")),
}


def commit_once_blocked(reverting: subprocess.Popen, writer, blocked, what: str) -> str:
    """Commit ``writer``'s transaction once the revert waits for its lock (``blocked``); the
    revert's stderr. A revert that ends before it waits fails the test with its own words."""
    try:
        wait_for(lambda: blocked() or reverting.poll() is not None, what=what)
        assert reverting.poll() is None, reverting.communicate()
        writer.commit()
        return reverting.communicate(timeout=60)[1]
    finally:
        if reverting.poll() is None:
            reverting.kill()
            reverting.wait()


@pytest.mark.parametrize("isolation", ["", "repeatable read", "serializable"])
@pytest.mark.parametrize("migration_id", sorted(ROW_WHILE_REVERTING))
def test_a_row_committed_while_a_revert_waits_for_its_table_is_counted_never_dropped(db, full_sql_dir, migration_id,
                                                                                      isolation):
    """A webhook's insert in flight as a revert starts: the revert waits for the writer's lock, the
    writer commits, and the revert refuses, for it now holds a row (the guard counts after the lock,
    steps.lock_first). Counted first, the row was not yet there; the drop then waited for the
    writer, and took the committed row with it."""
    table, insert, newer = ROW_WHILE_REVERTING[migration_id]
    deploy(db, full_sql_dir)
    db.execute("INSERT INTO auth.users (id) VALUES ('00000000-0000-4000-a000-000000000001')")
    for newer_id in newer:
        done = command_resource(db, revert_command(newer_id, allow_data_loss=False), full_sql_dir)
        assert done.returncode == 0, done.stderr
    with db.admin_connect() as writer:
        writer.autocommit = False
        writer.execute(insert)  # uncommitted: its transaction holds the table against a drop
        params = db.tcp_params
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
        env.update({"PGHOST": params["host"], "PGPORT": str(params["port"]), "PGDATABASE": params["dbname"],
                    "PGUSER": params["user"], "PGPASSWORD": params["password"], "PGSSLMODE": "disable",
                    "APPDB_SQL_DIR": str(full_sql_dir)})
        if isolation:  # a login or database whose transactions take one snapshot, at their first statement
            env["PGOPTIONS"] = f"-c default_transaction_isolation={isolation.replace(' ', chr(92) + ' ')}"
        # A long lock_timeout: the revert waits for the writer, rather than retrying around it.
        reverting = subprocess.Popen(["./bin/appdb", "revert", migration_id, "--lock-timeout", "30"], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stderr = commit_once_blocked(reverting, writer, lambda: db.execute(
            "SELECT 1 FROM pg_locks WHERE relation = to_regclass(%s) AND mode = 'AccessExclusiveLock' "
            "AND NOT granted", (table,)), f"the revert of {migration_id} to wait for {table}")
    assert reverting.returncode == 1, stderr
    assert "refused" in stderr and "1 row(s)" in stderr and stderr.count("\n") == 1, stderr
    assert db.execute(f"SELECT count(*) FROM {table}") == [(1,)]
    assert states(db, full_sql_dir)[migration_id] == "applied"


SCHEMA_GUARD = """-- appdb:step main
DO $guard$
DECLARE
    rows_held bigint;
BEGIN
    IF to_regclass('"Ledger$appdb_lock_first$"."held rows"') IS NOT NULL THEN
        SELECT count(*) INTO rows_held FROM "Ledger$appdb_lock_first$"."held rows";
        IF rows_held > 0 THEN
            RAISE EXCEPTION 'revert refused: % row(s) held', rows_held USING ERRCODE = 'AP001';
        END IF;
    END IF;
END
$guard$;
DROP SCHEMA IF EXISTS other_schema, "Ledger$appdb_lock_first$" CASCADE;
"""


def test_a_row_committed_while_a_revert_waits_to_drop_its_schema_is_counted_never_dropped(db, tmp_path):
    """The same race as above for a revert that drops a whole schema (DROP SCHEMA ... CASCADE): the
    runner locks every table in it before the guard counts (steps.lock_first), partitions too."""
    sql_dir = tmp_path / "sql"
    (sql_dir / "revert").mkdir(parents=True)
    (sql_dir / "001_ledger.sql").write_text(
        'CREATE SCHEMA "Ledger$appdb_lock_first$";\n'
        'CREATE TABLE "Ledger$appdb_lock_first$"."held rows" (id int, at date) PARTITION BY RANGE (at);\n'
        'CREATE TABLE "Ledger$appdb_lock_first$".y2026 PARTITION OF "Ledger$appdb_lock_first$"."held rows" '
        "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');\n")
    (sql_dir / "revert" / "001_ledger.sql").write_text(SCHEMA_GUARD)
    applied = db.run_cli("apply", sql_dir=sql_dir)
    assert applied.returncode == 0, applied.stderr
    with db.admin_connect() as writer:
        writer.autocommit = False
        # Into the partition, an insert that also holds the partitioned table against the drop.
        writer.execute("""INSERT INTO "Ledger$appdb_lock_first$".y2026 VALUES (1, '2026-12-08')""")
        reverting = subprocess.Popen(
            [sys.executable, "-m", "appdb", "revert", "001", "--lock-timeout", "30"], cwd=ROOT,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "DATABASE_URL": db.dsn,
                 "APPDB_SQL_DIR": str(sql_dir), "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Blocked on the partitioned table (the writer's insert holds it too) or on the partition.
        stderr = commit_once_blocked(reverting, writer, lambda: db.execute(
            "SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'Ledger$appdb_lock_first$' "
            "AND l.mode = 'AccessExclusiveLock' AND NOT l.granted"), "the revert to wait for the writer's tables")
    assert reverting.returncode == 1, stderr
    assert "refused: 1 row(s) held" in stderr, stderr
    assert db.execute('SELECT count(*) FROM "Ledger$appdb_lock_first$"."held rows"') == [(1,)]
    # Emptied, the revert drops the schema (the other one named does not exist: IF EXISTS).
    db.execute('DELETE FROM "Ledger$appdb_lock_first$"."held rows"')
    done = db.run_cli("revert", "001", sql_dir=sql_dir)
    assert done.returncode == 0, done.stderr
    assert db.execute("""SELECT count(*) FROM pg_namespace WHERE nspname = 'Ledger$appdb_lock_first$'""") == [(0,)]

def test_a_schema_holding_a_table_the_login_may_not_lock_is_still_dropped_by_its_owner(db, tmp_path):
    """The lock before a DROP SCHEMA ... CASCADE passes over another role's table the login has no
    right to lock: its owner may drop the schema with it, as before (an attack review's regression)."""
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_s.sql", "CREATE SCHEMA IF NOT EXISTS s_theirs;\n"
                                          "CREATE TABLE IF NOT EXISTS s_theirs.mine (id int);\n",
                    revert="DROP SCHEMA s_theirs CASCADE;\n")
    assert db.run_cli("apply", sql_dir=sql_dir).returncode == 0
    with db.admin_connect() as admin:  # the superuser's table, nothing granted to the login
        admin.execute("CREATE TABLE s_theirs.theirs (id int); REVOKE ALL ON s_theirs.theirs FROM PUBLIC")
    done = db.run_cli("revert", "001", sql_dir=sql_dir)
    assert done.returncode == 0, done.stderr
    assert db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 's_theirs'") == [(0,)]

def test_code_rollback_of_029_and_030_on_a_fresh_stack_drops_their_empty_tables(db, full_sql_dir):
    deploy(db, full_sql_dir)
    remove(full_sql_dir, FILE_030)
    remove(full_sql_dir, FILE_029)
    for migration_id in ("030", "029"):
        result = command_resource(db, revert_command(migration_id, allow_data_loss=False), full_sql_dir)
        assert result.returncode == 0, result.stderr
    assert db.execute("SELECT to_regclass('app.payment_events'), to_regclass('app.billing_logs')") == [(None, None)]
    assert states(db, full_sql_dir) == {"027": "applied", "028": "applied"}
    code, report = verify(db, full_sql_dir)
    assert code == 0 and report["ok"], report


def test_the_lock_before_a_drop_passes_over_what_is_no_table_and_any_name(db, tmp_path):
    """A DROP TABLE of an index gets PostgreSQL's own error, not the lock's; a table whose name holds
    the lock block's dollar tag is dropped like any other (steps.lock_first)."""
    odd = 'app."x$appdb_lock_first$y"'
    sql_dir = tmp_path / "sql"
    (sql_dir / "revert").mkdir(parents=True)
    for number, text in enumerate([f"CREATE TABLE {odd} (i int);\nCREATE INDEX x_i ON {odd} (i);\n",
                                   "DROP TABLE IF EXISTS app.x_i;\n"], start=1):
        (sql_dir / f"00{number}_m.sql").write_text(text)
        (sql_dir / "revert" / f"00{number}_m.sql").write_text("-- no-op\n")
    refused = db.run_cli("apply", sql_dir=sql_dir)
    assert refused.returncode == 1
    assert '002_m.sql:1: "x_i" is not a table' in refused.stderr, refused.stderr
    (sql_dir / "002_m.sql").write_text(f"DROP TABLE {odd};\n")
    done = db.run_cli("apply", sql_dir=sql_dir)
    assert done.returncode == 0, done.stderr
    assert db.execute("SELECT to_regclass('app.\"x$appdb_lock_first$y\"')") == [(None,)]
