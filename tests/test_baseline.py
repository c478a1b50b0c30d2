"""`appdb baseline ID`: a migration recorded as applied without running it, where the catalog has it.

The proof that nothing of the migration ran is the server's own statement log: the
database under test logs every statement (log_statement = all), and none of the
migration's appears in it, while the ledger's INSERT does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from psycopg import sql

from tests.helpers import SHIPPED_SQL, Database, one_line_error, production, pull, write_migration


@pytest.fixture
def adopted(new_db, tmp_path) -> tuple[Database, Path]:
    """A production-shaped database and its pulled migration, 001, in a folder of its own."""
    source = production(new_db())
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    assert pull(source, sql_dir).returncode == 0
    return source, sql_dir


def ledger(db: Database) -> list[tuple[str, str]]:
    exists = db.execute("SELECT to_regclass('appdb.migrations') IS NOT NULL")[0][0]
    return db.execute("SELECT id, applied_by FROM appdb.migrations ORDER BY id") if exists else []


def executed(log: str) -> str:
    """The statements in a server log, without the parameters' values (the ledger row holds the revert)."""
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", log)
    return "\n".join(e for e in entries if "LOG:  statement: " in e or re.search(r"LOG:  execute [^:]*: ", e))


def log_statements(db: Database) -> None:
    with db.admin_connect() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(sql.Identifier(db.name)))


def test_baseline_records_the_migration_and_runs_none_of_it(adopted):
    source, sql_dir = adopted
    log_statements(source)
    logfile = source.cluster.logfile
    start = logfile.stat().st_size
    before = source.snapshot()

    result = source.run_cli("baseline", "001", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert "001 recorded as applied" in result.stdout and "without running it" in result.stdout

    with logfile.open(encoding="utf-8", errors="replace") as log:
        log.seek(start)
        logged = executed(log.read())
    assert "INSERT INTO appdb.migrations" in logged  # the log does show this database's statements
    migration = (sql_dir / "001_adopt_production.sql").read_text()
    for statement in ("CREATE OR REPLACE FUNCTION app.stamp_received_at", "CREATE TABLE IF NOT EXISTS app.",
                      "CREATE INDEX CONCURRENTLY", "DROP POLICY IF EXISTS", "VALIDATE CONSTRAINT", "$pull$"):
        assert statement in migration
        assert statement not in logged
    after = source.snapshot()
    assert after["rows"]["app.memberships"] == before["rows"]["app.memberships"]
    assert ledger(source) == [("001", "postgres (baseline)")]
    status = source.run_cli("status", sql_dir=sql_dir)
    assert status.stdout.split()[:2] == ["001", "applied"]
    assert source.run_cli("apply", sql_dir=sql_dir).stdout.startswith("nothing to apply")


def test_baseline_refuses_a_database_that_lacks_what_the_migration_makes(adopted, new_db):
    _, sql_dir = adopted
    fresh = new_db()
    result = fresh.run_cli("baseline", "001", sql_dir=sql_dir)
    assert result.returncode == 1
    line = one_line_error(result)
    assert "001 was not recorded: this database does not have what it makes (" in line
    assert "missing: table app.billing_logs: 001 makes owner postgres" in result.stdout
    assert ledger(fresh) == []


def test_baseline_names_the_one_object_that_is_missing_or_different(adopted, new_db):
    source, sql_dir = adopted
    twin = production(new_db())
    with twin.connect() as conn:
        conn.execute("DROP INDEX app.payment_events_event_type_idx")
        conn.execute("ALTER TABLE app.billing_logs ALTER COLUMN detail SET DEFAULT '[]'::jsonb")
    result = twin.run_cli("baseline", "001", sql_dir=sql_dir)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "different: column app.billing_logs.detail: 001 makes jsonb NOT NULL DEFAULT '{}'::jsonb; "
        "the database has jsonb NOT NULL DEFAULT '[]'::jsonb",
        "missing: index app.payment_events.payment_events_event_type_idx: 001 makes CREATE INDEX "
        "payment_events_event_type_idx ON app.payment_events USING btree (event_type)",
    ]
    assert ledger(twin) == []


def test_baseline_of_a_migration_that_drops_checks_that_it_is_gone(db, tmp_path):
    sql_dir = tmp_path / "sql"
    for name, forward in (("001_notes", "CREATE TABLE IF NOT EXISTS app.notes (id bigint PRIMARY KEY, body text);\n"
                                        "CREATE INDEX IF NOT EXISTS notes_body_idx ON app.notes (body);\n"),
                          ("002_drop_notes_body_idx", "DROP INDEX IF EXISTS app.notes_body_idx;\n")):
        write_migration(sql_dir, f"{name}.sql", forward, "-- a no-op for this test\n")
    assert db.run_cli("apply", "--only", "001", sql_dir=sql_dir).returncode == 0
    refused = db.run_cli("baseline", "002", sql_dir=sql_dir)
    assert refused.returncode == 1
    assert refused.stdout.splitlines() == ["still there: index app.notes.notes_body_idx: 002 drops it"]
    with db.connect() as conn:
        conn.execute("DROP INDEX app.notes_body_idx")
    result = db.run_cli("baseline", "002", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert [row[0] for row in ledger(db)] == ["001", "002"]


def test_baseline_refuses_what_it_cannot_check_rows_and_other_schemas(db, tmp_path):
    """An attack review: baseline recorded a migration whose other schema's table, and whose rows,
    the database did not have; it compared the app schema only."""
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_two_schemas.sql",
                    "CREATE TABLE IF NOT EXISTS app.bl_a (id int PRIMARY KEY);\n"
                    "CREATE SCHEMA IF NOT EXISTS extra;\n"
                    "CREATE TABLE IF NOT EXISTS extra.bl_b (id int PRIMARY KEY);\n")
    write_migration(sql_dir, "002_rows.sql",
                    "CREATE TABLE IF NOT EXISTS app.bl_c (id int PRIMARY KEY);\n"
                    "WITH fresh AS (SELECT 1 AS id)\nINSERT INTO app.bl_c SELECT id FROM fresh ON CONFLICT DO NOTHING;\n")
    db.execute("CREATE TABLE app.bl_a (id int PRIMARY KEY)")
    other = db.run_cli("baseline", "001", sql_dir=sql_dir)
    assert other.returncode == 1
    line = one_line_error(other)
    assert "001 also changes what lies outside schema app (" in line and "schema extra" in line, line
    assert "r extra.bl_b" in line, line
    assert ledger(db) == []
    db.execute("CREATE SCHEMA extra; CREATE TABLE extra.bl_b (id int PRIMARY KEY)")
    assert db.run_cli("apply", "--only", "001", sql_dir=sql_dir).returncode == 0
    db.execute("CREATE TABLE app.bl_c (id int PRIMARY KEY)")
    rows = db.run_cli("baseline", "002", sql_dir=sql_dir)
    assert rows.returncode == 1
    assert "002_rows.sql:2: 002 writes rows (INSERT)" in one_line_error(rows), rows.stderr
    assert [row[0] for row in ledger(db)] == ["001"]


@pytest.mark.parametrize(("change", "said"), [
    ("DO $$ BEGIN INSERT INTO app.bl_d VALUES (1); END $$;", "writes rows (app.bl_d"),
    ("CREATE TABLE app.bl_copy AS SELECT 1 AS id;", "writes rows (app.bl_copy"),
    ("ALTER TABLE public.bl_ext ADD COLUMN secret_flag int;", "outside schema app (r public.bl_ext)"),
    ("CREATE OR REPLACE FUNCTION public.bl_f() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'select 42';",
     "outside schema app (routine public.bl_f()"),
    # (A GRANT to anon on a public table changes nothing here: Supabase's default privileges gave it already.)
    ("REVOKE ALL ON public.bl_ext FROM anon;", "outside schema app (r public.bl_ext)"),
    # (On 16+ the creator is made a member of the new role too, which is named first.)
    ("CREATE ROLE bl_role NOLOGIN;", "role bl_role)"),
    ("ALTER ROLE anon CONNECTION LIMIT 0;", "role anon)"),  # a third review: the limit was not compared
])
def test_baseline_sees_rows_and_changes_outside_its_schema_however_they_are_written(db, tmp_path, change, said):
    """The first version compared names and top-level statements: a DO block's insert, CREATE TABLE AS,
    a new column or body or grant on an object outside app passed (a second attack review)."""
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_outside.sql",
                    "CREATE TABLE IF NOT EXISTS public.bl_ext (id int);\n"
                    "CREATE OR REPLACE FUNCTION public.bl_f() RETURNS int LANGUAGE sql AS 'select 1';\n")
    write_migration(sql_dir, "002_change.sql", f"CREATE TABLE IF NOT EXISTS app.bl_d (id int);\n{change}\n")
    assert db.run_cli("apply", "--only", "001", sql_dir=sql_dir).returncode == 0
    db.execute("CREATE TABLE app.bl_d (id int); CREATE TABLE app.bl_copy (id int)")
    refused = db.run_cli("baseline", "002", sql_dir=sql_dir)
    assert refused.returncode == 1, refused.stdout
    line = one_line_error(refused)
    assert said in line and ("writes rows" in line or "outside schema app (" in line), line
    assert [row[0] for row in ledger(db)] == ["001"]

def test_default_privileges_in_the_compared_schema_are_not_outside_it(db, tmp_path):
    """A third review: ALTER DEFAULT PRIVILEGES IN SCHEMA app was refused as a change outside app."""
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_dp.sql", "CREATE TABLE IF NOT EXISTS app.dp (id int);\n"
                                           "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO authenticated;\n")
    db.execute("CREATE TABLE app.dp (id int)")
    result = db.run_cli("baseline", "001", sql_dir=sql_dir)
    assert "outside schema app" not in result.stderr, result.stderr

def test_baseline_keeps_the_version_order_as_apply_does(db, tmp_path):
    """Recorded after a newer one, an older migration would be reverted out of version order."""
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_a.sql", "CREATE TABLE IF NOT EXISTS app.ord_a (id int);\n")
    write_migration(sql_dir, "003_c.sql", "CREATE TABLE IF NOT EXISTS app.ord_c (id int);\n")
    assert db.run_cli("apply", sql_dir=sql_dir).returncode == 0
    write_migration(sql_dir, "002_b.sql", "CREATE TABLE IF NOT EXISTS app.ord_b (id int);\n")
    db.execute("CREATE TABLE app.ord_b (id int)")
    refused = db.run_cli("baseline", "002", sql_dir=sql_dir)
    assert refused.returncode == 1
    assert "002 (b) is pending but older than 003 (c), which is applied" in one_line_error(refused)
    assert [row[0] for row in ledger(db)] == ["001", "003"]

def test_a_migration_that_changes_nothing_on_a_fresh_database_cannot_be_baselined(new_db, tmp_path):
    """028 only drops a duplicate that a fresh database never has: there is nothing to compare."""
    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    db = production(new_db())
    assert db.run_cli("apply", "--only", "027", sql_dir=sql_dir).returncode == 0
    refused = db.run_cli("baseline", "028", sql_dir=sql_dir)
    assert refused.returncode == 1
    assert "028 changes nothing in schema app on a fresh database" in one_line_error(refused)
    assert [row[0] for row in ledger(db)] == ["027"]


def test_bad_ids_and_ledger_states_are_refused_with_nothing_recorded(adopted, new_db, tmp_path):
    source, sql_dir = adopted
    unknown = source.run_cli("baseline", "007", sql_dir=sql_dir)
    assert unknown.returncode == 2
    assert "unknown migration id 007" in one_line_error(unknown)
    not_a_number = source.run_cli("baseline", "adopt", sql_dir=sql_dir)
    assert not_a_number.returncode == 2
    assert ledger(source) == []

    assert source.run_cli("baseline", "001", sql_dir=sql_dir).returncode == 0
    again = source.run_cli("baseline", "001", sql_dir=sql_dir)
    assert again.returncode == 1
    assert "001 (adopt_production) is already applied" in one_line_error(again)
    assert ledger(source) == [("001", "postgres (baseline)")]

    shipped = tmp_path / "shipped"
    shutil.copytree(SHIPPED_SQL, shipped)
    fresh = new_db()
    early = fresh.run_cli("baseline", "028", sql_dir=shipped)
    assert early.returncode == 1
    assert "earlier migration(s) 027 are not applied here" in one_line_error(early)
    assert ledger(fresh) == []


def test_baseline_without_a_server_or_a_schema(db, adopted):
    from tests.helpers import free_port

    _, sql_dir = adopted
    dsn = f"postgresql://postgres:Hj4k-Secret-Pw9z@127.0.0.1:{free_port()}/postgres?connect_timeout=3"
    unreachable = db.run_cli("baseline", "001", "--dsn", dsn, sql_dir=sql_dir)
    assert unreachable.returncode == 2
    assert "could not connect" in one_line_error(unreachable)
    assert "Hj4k-Secret-Pw9z" not in unreachable.stdout + unreachable.stderr
    missing = db.run_cli("baseline", "001", "--schema", "billing", sql_dir=sql_dir)
    assert missing.returncode == 2
    assert "schema 'billing' does not exist" in one_line_error(missing)
    assert ledger(db) == []
