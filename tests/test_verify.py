"""verify passes after a deploy and fails, with the right detail, on each broken state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from appdb.checks import verify
from appdb.migrate import runner
from appdb.migrate.files import discover
from tests.helpers import SQL_DIR, copy_shipped, project_sql_for_the_cli

OPTIONS = runner.Options(lock_timeout=5)



@pytest.fixture(autouse=True)
def _the_project_s_migrations(monkeypatch):
    """What the project's migrations build is this module's subject: the CLI reads sql/ as it is."""
    project_sql_for_the_cli(monkeypatch)


def deployed(db, sql_dir: Path = SQL_DIR) -> None:
    """Migrations applied and the table grant Pulumi gives afterwards (components/grants.py)."""
    with db.connect() as conn:
        runner.apply(conn, discover(sql_dir), OPTIONS)
        conn.execute("GRANT SELECT ON app.memberships TO authenticated")


def checks(db, sql_dir: Path = SQL_DIR) -> dict[str, verify.Check]:
    with db.connect() as conn:
        report = verify.run(conn, discover(sql_dir))
    return {check.name: check for check in report.checks}


def failing(db, sql_dir: Path = SQL_DIR) -> dict[str, str]:
    return {name: c.detail for name, c in checks(db, sql_dir).items() if not c.ok}


def test_verify_passes_after_a_deploy(db):
    deployed(db)
    assert failing(db) == {}


def test_verify_passes_after_deploying_over_the_production_state(db):
    db.load_state("production")
    deployed(db)
    assert failing(db) == {}


def test_verify_fails_before_the_deploy_with_pending_migrations(db):
    assert "pending: 027, 028, 029, 030" in failing(db)["ledger"]


def test_verify_names_the_wrong_target_of_the_foreign_key(db):
    deployed(db)
    with db.connect() as conn:
        conn.execute("CREATE TABLE app.profiles (user_id uuid PRIMARY KEY)")
        conn.execute("ALTER TABLE app.memberships DROP CONSTRAINT memberships_user_id_fkey")
        conn.execute("ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_id_fkey "
                     "FOREIGN KEY (user_id) REFERENCES app.profiles (user_id)")

    assert "app.profiles(user_id)" in failing(db)["memberships_user_fk"]


def test_verify_fails_on_a_foreign_key_without_cascade(db):
    deployed(db)
    with db.connect() as conn:
        conn.execute("ALTER TABLE app.memberships DROP CONSTRAINT memberships_user_id_fkey")
        conn.execute("ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_id_fkey "
                     "FOREIGN KEY (user_id) REFERENCES auth.users (id)")

    assert "ON DELETE NO ACTION" in failing(db)["memberships_user_fk"]


def test_verify_fails_on_a_foreign_key_that_is_not_validated(db):
    deployed(db)
    with db.connect() as conn:
        conn.execute("ALTER TABLE app.memberships DROP CONSTRAINT memberships_user_id_fkey")
        conn.execute("ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_id_fkey "
                     "FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE NOT VALID")

    assert "NOT VALID" in failing(db)["memberships_user_fk"]


def test_verify_fails_on_two_foreign_keys_and_names_both(db):
    deployed(db)
    db.execute("ALTER TABLE app.memberships ADD CONSTRAINT second_fk "
               "FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE")

    detail = failing(db)["memberships_user_fk"]
    assert "2 foreign keys" in detail and "second_fk" in detail and "memberships_user_id_fkey" in detail


def test_verify_fails_without_a_foreign_key(db):
    deployed(db)
    db.execute("ALTER TABLE app.memberships DROP CONSTRAINT memberships_user_id_fkey")

    assert failing(db)["memberships_user_fk"] == "no foreign key on app.memberships(user_id)"


def test_verify_lists_duplicate_unique_constraints_by_name(db):
    deployed(db)
    db.execute("ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_unique UNIQUE (user_id)")

    detail = failing(db)["memberships_user_unique"]
    assert "memberships_user_id_key" in detail and "memberships_user_unique" in detail


def test_verify_counts_a_redundant_unique_index_too(db):
    deployed(db)
    db.execute("CREATE UNIQUE INDEX memberships_user_idx ON app.memberships (user_id)")

    assert "index memberships_user_idx" in failing(db)["memberships_user_unique"]


def test_verify_ignores_a_partial_unique_index(db):
    deployed(db)
    db.execute("CREATE UNIQUE INDEX memberships_active_user ON app.memberships (user_id) WHERE status = 'active'")

    assert failing(db) == {}


def test_verify_fails_with_no_unique_key_on_user_id(db):
    deployed(db)
    db.execute("ALTER TABLE app.memberships DROP CONSTRAINT memberships_user_id_key")

    assert "no unique" in failing(db)["memberships_user_unique"]


def test_verify_fails_when_an_api_readable_app_table_has_no_rls(db):
    deployed(db)
    db.execute("CREATE TABLE app.invoices (id bigint PRIMARY KEY)")
    db.execute("GRANT SELECT ON app.invoices TO authenticated")

    assert "app.invoices" in failing(db)["rls"]


def test_verify_fails_when_rls_is_turned_off(db):
    deployed(db)
    db.execute("ALTER TABLE app.memberships DISABLE ROW LEVEL SECURITY")

    assert "app.memberships" in failing(db)["rls"]


def test_verify_fails_when_anon_gets_a_privilege(db):
    deployed(db)
    db.execute("GRANT SELECT ON app.memberships TO anon")

    assert "app.memberships" in failing(db)["anon_no_access"]


def test_verify_fails_without_the_own_row_policy(db):
    deployed(db)
    db.execute("DROP POLICY memberships_select_own ON app.memberships")

    assert "memberships_own_row_policy" in failing(db)


def test_verify_fails_when_the_ledger_is_readable_by_an_api_role(db):
    deployed(db)
    db.execute("GRANT USAGE ON SCHEMA appdb TO authenticated")

    assert "authenticated has USAGE on schema appdb" in failing(db)["ledger_private"]


@pytest.mark.parametrize("grant, named", [
    ("GRANT UPDATE ON appdb.migrations TO app_reader", "app_reader has UPDATE on appdb.migrations"),
    ("GRANT USAGE ON SCHEMA appdb TO PUBLIC", "PUBLIC has USAGE on schema appdb"),
    ("GRANT CREATE ON SCHEMA appdb TO app_writer", "app_writer has CREATE on schema appdb"),
    ("GRANT UPDATE (revert_sql) ON appdb.migrations TO app_backend",
     "app_backend has UPDATE on column appdb.migrations.revert_sql"),
    ("GRANT SELECT ON appdb.migrations TO app_backend WITH GRANT OPTION",
     "app_backend has SELECT WITH GRANT OPTION on appdb.migrations"),
    ("GRANT INSERT, DELETE ON appdb.migrations TO PUBLIC", "PUBLIC has INSERT, DELETE on appdb.migrations"),
    # A non-API role with no login, whose members hold what it holds.
    ("CREATE ROLE ledger_editors NOLOGIN; GRANT TRUNCATE ON appdb.migrations TO ledger_editors",
     "ledger_editors has TRUNCATE on appdb.migrations"),
    ("CREATE FUNCTION appdb.revert_sql_of(text) RETURNS text LANGUAGE sql SECURITY DEFINER "
     "AS 'SELECT revert_sql FROM appdb.migrations WHERE id = $1'",
     "PUBLIC has EXECUTE on function appdb.revert_sql_of(text)"),
])
def test_verify_fails_and_names_any_role_but_the_owner_holding_a_privilege_in_appdb(db, grant, named):
    deployed(db)
    db.execute(grant)

    detail = failing(db)["ledger_private"]
    assert detail.startswith(f"{named}: only postgres, the ledger's owner, may hold privileges in schema appdb")
    result = db.run_cli("verify")
    assert result.returncode == 1
    assert result.stderr.strip() == "appdb: error: verification failed: ledger_private"


def test_verify_fails_when_another_role_owns_the_ledger(db):
    deployed(db)
    with db.admin_connect() as conn:
        conn.execute("ALTER TABLE appdb.migrations OWNER TO app_writer")

    with db.connect() as conn:
        check = verify.check_ledger_private(conn)
    assert not check.ok
    assert check.detail.startswith("appdb.migrations is owned by app_writer, not by postgres: ")
    # postgres still reads the ledger, through pg_read_all_data as on Supabase, so the check itself says so.
    result = db.run_cli("verify")
    assert result.returncode == 1
    assert result.stderr.strip() == "appdb: error: verification failed: ledger_private"


def test_verify_lets_the_read_only_login_read_the_ledger_and_nothing_more(db):
    deployed(db)
    db.execute("CREATE ROLE appdb_readonly LOGIN NOINHERIT")
    db.execute("GRANT USAGE ON SCHEMA appdb TO appdb_readonly")
    db.execute("GRANT SELECT ON appdb.migrations TO appdb_readonly")
    check = checks(db)["ledger_private"]
    assert check.ok, check.detail
    assert check.detail == ("only postgres, the ledger's owner, holds privileges on schema appdb and its objects "
                            "(direct grants and PUBLIC checked)")

    db.execute("GRANT UPDATE ON appdb.migrations TO appdb_readonly")
    assert failing(db)["ledger_private"].startswith("appdb_readonly has SELECT, UPDATE on appdb.migrations: ")


def test_the_first_apply_makes_the_ledger_private_whatever_default_privileges_say(db):
    """Default privileges of the deploy login, for every schema, would grant on the ledger as it is made."""
    db.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT, UPDATE ON TABLES TO app_reader")
    db.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT USAGE ON SCHEMAS TO app_writer, PUBLIC")
    deployed(db)

    assert checks(db)["ledger_private"].ok, checks(db)["ledger_private"].detail
    # the owner's own privileges only: arwdDxt, and MAINTAIN (m) on 17+
    owner_only = "postgres=arwdDxt/postgres" if db.major < 17 else "postgres=arwdDxtm/postgres"
    assert db.execute("SELECT relacl::text[], (SELECT nspacl::text[] FROM pg_namespace WHERE nspname = 'appdb') "
                      "FROM pg_class WHERE oid = 'appdb.migrations'::regclass") == [
        ([owner_only], ["postgres=UC/postgres"])]


def test_verify_fails_on_a_changed_migration(db, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    deployed(db, sql_dir)
    path = sql_dir / "028_fix_memberships_unique_constraint.sql"
    path.write_text(path.read_text().replace("-- 028:", "-- 028 (edited):"))

    assert "changed after apply: 028" in failing(db, sql_dir)["ledger"]


def test_verify_reports_a_removed_migration_without_failing(db, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    deployed(db, sql_dir)
    (sql_dir / "028_fix_memberships_unique_constraint.sql").unlink()

    ledger = checks(db, sql_dir)["ledger"]
    assert ledger.ok
    assert "removed, revert pending: 028" in ledger.detail


@pytest.mark.parametrize("args, code", [(("verify",), 0), (("verify", "--json"), 0)])
def test_verify_cli_exits_0_and_prints_json_when_all_hold(db, args, code):
    deployed(db)
    result = db.run_cli(*args)
    assert result.returncode == code, result.stderr
    if "--json" in args:
        import json
        data = json.loads(result.stdout)
        assert data["ok"] is True
        assert {c["name"] for c in data["checks"]} >= {"memberships_user_fk", "memberships_user_unique", "ledger"}


def test_verify_cli_exits_1_on_failure_with_the_failed_checks_named(db):
    deployed(db)
    db.execute("ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_unique UNIQUE (user_id)")
    result = db.run_cli("verify", "--json")

    assert result.returncode == 1
    assert result.stderr.strip() == "appdb: error: verification failed: memberships_user_unique"


def test_verify_passes_after_deploying_over_production_with_its_older_payment_tables(db):
    db.load_state("production")
    db.load_state("production_billing")
    deployed(db)
    assert failing(db) == {}


def test_verify_fails_when_payment_events_loses_rls(db):
    deployed(db)
    db.execute("ALTER TABLE app.payment_events DISABLE ROW LEVEL SECURITY")
    assert failing(db)["payment_events_rls"] == "app.payment_events has row level security off"


def test_verify_fails_when_the_stripe_event_id_is_not_unique(db):
    deployed(db)
    db.execute("ALTER TABLE app.payment_events DROP CONSTRAINT payment_events_stripe_event_id_key")
    assert "stored twice" in failing(db)["payment_events_event_id_unique"]


def test_verify_names_a_link_that_would_block_deleting_a_user(db):
    deployed(db)
    db.execute("ALTER TABLE app.billing_logs DROP CONSTRAINT billing_logs_user_id_fkey")
    db.execute("ALTER TABLE app.billing_logs ADD CONSTRAINT billing_logs_user_fk "
               "FOREIGN KEY (user_id) REFERENCES auth.users (id)")
    detail = failing(db)["billing_logs_links"]
    assert "billing_logs_user_fk -> auth.users(id) ON DELETE NO ACTION" in detail
    assert "expected one -> auth.users(id) ON DELETE SET NULL" in detail


def test_verify_fails_when_the_append_only_trigger_is_disabled(db):
    deployed(db)
    db.execute("ALTER TABLE app.billing_logs DISABLE TRIGGER billing_logs_append_only")
    assert "disabled: billing_logs_append_only" in failing(db)["billing_logs_append_only"]


@pytest.mark.parametrize("role", ["authenticated", "anon"])
def test_verify_fails_when_an_api_role_gets_a_payment_table(db, role):
    deployed(db)
    db.execute(f"GRANT SELECT ON app.payment_events TO {role}")
    assert f"{role} on app.payment_events" in failing(db)["payment_tables_private"]


def test_verify_fails_when_authenticated_inherits_a_payment_table_through_a_group_role(db):
    """On Supabase the API roles are INHERIT: `GRANT app_reader TO authenticated` lets every signed-in
    user read the payment tables, and verify must judge that effective privilege, not only direct grants."""
    deployed(db)
    assert "payment_tables_private" not in failing(db)
    db.execute("GRANT app_reader TO authenticated")  # cluster-wide: revoked below whatever happens
    try:
        with db.connect() as conn:
            conn.execute("SET ROLE authenticated")
            conn.execute("SELECT count(*) FROM app.payment_events")  # no permission error: the leak is real
        detail = failing(db)["payment_tables_private"]
        assert "authenticated on app.payment_events" in detail
        assert "authenticated on app.billing_logs" in detail
    finally:
        db.execute("REVOKE app_reader FROM authenticated")


def invalid_index(db) -> None:
    """The real way: a CREATE UNIQUE INDEX CONCURRENTLY that meets duplicates fails and leaves its index."""
    db.execute("INSERT INTO app.billing_logs (action) VALUES ('refund'), ('refund')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("CREATE UNIQUE INDEX CONCURRENTLY billing_logs_action_key ON app.billing_logs (action)")


def test_verify_fails_on_an_index_a_failed_concurrent_build_left_and_names_it(db):
    deployed(db)
    invalid_index(db)

    detail = failing(db)["valid_indexes"]
    # Duplicates stop the build before writes maintain the index: not even ready.
    assert detail.startswith("app.billing_logs_action_key on app.billing_logs (invalid, not ready): ")
    assert set(failing(db)) == {"valid_indexes"}
    result = db.run_cli("verify")
    assert result.returncode == 1
    assert result.stderr.strip() == "appdb: error: verification failed: valid_indexes"
    assert "FAIL  valid_indexes: app.billing_logs_action_key on app.billing_logs" in result.stdout


def test_verify_names_a_ready_but_invalid_index_among_valid_ones(db):
    deployed(db)
    db.execute("CREATE INDEX billing_logs_action_idx ON app.billing_logs (action)")
    db.execute("CREATE INDEX memberships_status_idx ON app.memberships (status)")
    with db.admin_connect() as conn:
        # What a build that timed out waiting for older snapshots leaves: maintained, never validated.
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid IN "
                     "('app.billing_logs_action_idx'::regclass, 'app.memberships_status_idx'::regclass)")

    assert failing(db)["valid_indexes"].startswith(
        "app.billing_logs_action_idx on app.billing_logs (invalid); "
        "app.memberships_status_idx on app.memberships (invalid): ")


def test_verify_passes_once_the_invalid_index_is_dropped(db):
    deployed(db)
    invalid_index(db)
    db.execute("DROP INDEX CONCURRENTLY app.billing_logs_action_key")

    assert checks(db)["valid_indexes"].ok


def test_inspect_marks_an_invalid_index_and_lists_a_finding(db):
    deployed(db)
    invalid_index(db)

    text = db.run_cli("inspect")
    assert text.returncode == 0, text.stderr
    assert "  index billing_logs_action_key INVALID: CREATE UNIQUE INDEX" in text.stdout
    assert "  index billing_logs_pkey: CREATE UNIQUE INDEX" in text.stdout  # valid ones stay unmarked
    assert "invalid_index: app.billing_logs_action_key on app.billing_logs (invalid, not ready)" in text.stdout
    data = json.loads(db.run_cli("inspect", "--json").stdout)
    indexes = {i["name"]: i["valid"] for i in data["app_tables"]["billing_logs"]["indexes"]}
    assert indexes["billing_logs_action_key"] is False and indexes["billing_logs_pkey"] is True
    assert [f["kind"] for f in data["findings"]] == ["invalid_index"]



# --- the catalog is read once per command --------------------------------------------------


class CountingCursor(psycopg.Cursor):
    """Counts every statement sent, through conn.execute or a cursor alike."""

    sent: list[str]

    def execute(self, query, params=None, **kwargs):
        self.connection.sent.append(str(query) if isinstance(query, str) else repr(query))
        return super().execute(query, params, **kwargs)


def statements(db, run) -> list[str]:
    """The statements ``run(conn)`` sends on a fresh connection to ``db``."""
    with psycopg.connect(db.dsn, autocommit=True, cursor_factory=CountingCursor) as conn:
        conn.sent = []
        run(conn)
        return conn.sent


def verify_statements(db) -> list[str]:
    return statements(db, lambda conn: verify.run(conn, discover(SQL_DIR)))


def more_tables_and_roles(db, count: int = 6) -> None:
    """Tables and roles beyond the shipped schema's, each table granted to each role."""
    for n in range(count):
        db.execute(f"CREATE ROLE {db.name}_role_{n} NOLOGIN")
        db.execute(f"CREATE TABLE app.extra_{n} (id bigint PRIMARY KEY, name text UNIQUE, "
                   "user_id uuid REFERENCES auth.users (id))")
        db.execute(f"ALTER TABLE app.extra_{n} ENABLE ROW LEVEL SECURITY")
        db.execute(f"GRANT SELECT ON app.extra_{n} TO {db.name}_role_{n}, authenticated")


def test_verify_reads_the_shipped_schema_in_at_most_20_statements(db):
    deployed(db)
    sent = verify_statements(db)
    assert len(sent) <= 20, "\n".join(sent)
    assert failing(db) == {}


def test_verify_sends_as_many_statements_with_more_tables_and_roles(db):
    deployed(db)
    before = len(verify_statements(db))
    more_tables_and_roles(db)
    assert len(verify_statements(db)) == before


def test_inspect_sends_as_many_statements_with_more_tables(db):
    from appdb.checks import inspect

    deployed(db)
    before = statements(db, lambda conn: inspect.run(conn, discover(SQL_DIR)))
    more_tables_and_roles(db)
    after = statements(db, lambda conn: inspect.run(conn, discover(SQL_DIR)))
    assert len(after) == len(before) <= 10, "\n".join(after)


# --- per-migration expectations and the README ------------------------------------------


def readme_checks() -> list[str]:
    """The check names in the first column of README's Verification table, in order."""
    text = (SQL_DIR.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Verification\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [row.split("`")[1] for row in rows]


def test_readme_lists_every_check_verify_runs_in_its_order(db):
    deployed(db)
    ran = list(checks(db))
    assert ran == verify.check_names()
    assert readme_checks() == ran


def test_a_tables_checks_hold_by_saying_so_while_its_migration_is_not_in_sql(db, tmp_path):
    sql_dir = copy_shipped(tmp_path / "sql")  # without a later migration that would need 030
    for name in ("030_billing_logs.sql", "revert/030_billing_logs.sql"):
        (sql_dir / name).unlink()
    deployed(db, sql_dir)
    result = checks(db, sql_dir)
    for name in ("billing_logs_rls", "billing_logs_links", "billing_logs_append_only"):
        assert result[name].ok and "030_billing_logs.sql is not in sql/" in result[name].detail


def test_a_new_row_of_expectations_adds_its_checks(db, monkeypatch):
    """A new table's checks are a row of data: here, memberships must also be append-only, which it is not."""
    deployed(db)
    row = verify.TableExpectations("027_memberships.sql", "app.memberships", (verify.AppendOnly("memberships_append_only"),))
    monkeypatch.setattr(verify, "EXPECTATIONS", (*verify.EXPECTATIONS, row))
    assert failing(db) == {"memberships_append_only": "no enabled trigger refuses UPDATE and DELETE on app.memberships"}


def test_verify_json_still_prints_the_report_when_it_fails(db):
    deployed(db)
    db.execute("ALTER TABLE app.billing_logs DISABLE ROW LEVEL SECURITY")
    result = db.run_cli("verify", "--json")
    data = json.loads(result.stdout)
    assert (result.returncode, data["ok"]) == (1, False)
    assert [c["name"] for c in data["checks"] if not c["ok"]] == ["billing_logs_rls"]
    assert result.stderr == "appdb: error: verification failed: billing_logs_rls\n"


def test_a_membership_supabase_keeps_to_itself_fails_verify(db):
    """postgres (CREATEROLE) can grant itself pg_execute_server_program on PostgreSQL 15 without supautils."""
    from appdb.local.cluster import SUPERUSER

    deployed(db)
    with db.cluster.connect(user=SUPERUSER) as su:
        for role, member, fails in (("pg_execute_server_program", "postgres", True),
                                    ("supabase_auth_admin", "app_writer", True),
                                    ("supabase_storage_admin", "postgres", False)):  # older hosted projects
            su.execute(f"GRANT {role} TO {member}")
            try:
                detail = checks(db)["reserved_roles"]
                assert detail.ok is not fails, detail.detail
                if fails:
                    assert detail.detail.startswith(f"{member} is in {role}: Supabase refuses these memberships")
            finally:
                su.execute(f"REVOKE {role} FROM {member}")
    assert checks(db)["reserved_roles"].ok
