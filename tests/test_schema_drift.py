"""Schema drift: the canonical description, the committed snapshot, and `appdb diff` against it.

Every database here is a fresh copy of the session's template (tests/fixtures/database.py), brought
to "after `pulumi up`" in-process: the migrations with appdb's runner, then the access
plan's grants (appdb/schema/fresh.py). Only the tests of `schema --check/--write` build their
own throwaway cluster, as those commands do.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from appdb.errors import ConfigError
from appdb.local.cluster import SUPERUSER
from appdb.migrate import runner
from appdb.migrate.files import discover
from appdb.schema import drift, snapshot
from appdb.schema import fresh as scratch
from appdb.schema.describe import describe, parse
from tests.helpers import (
    ROOT,
    SQL_DIR,
    TEMPLATE,
    Database,
    documented_readonly_login_sql,
    free_port,
    project_sql_for_the_cli,
)

SNAPSHOT = SQL_DIR / "schema.snapshot"
MIGRATION_IDS = tuple(m.id for m in discover(SQL_DIR))
_copies = itertools.count()
# The one way the production state differs from the migrations after 027 and 028: its
# status default was 'active' before 027, which adds missing columns but alters none.
PRODUCTION_STATUS = ("different: column app.memberships.status: snapshot has text NOT NULL DEFAULT "
                     "'incomplete'::text; live has text NOT NULL DEFAULT 'active'::text")



@pytest.fixture(autouse=True)
def _the_project_s_migrations(monkeypatch):
    """What the project's migrations build is this module's subject: the CLI reads sql/ as it is."""
    project_sql_for_the_cli(monkeypatch)


def deploy(db) -> None:
    """What `pulumi up` does after the schema and roles: every migration, then the grants."""
    with db.connect() as conn:
        runner.apply(conn, discover(SQL_DIR), runner.Options())
        scratch.apply_grants(conn)


def drift_lines(db) -> list[str]:
    with db.connect() as conn:
        report = drift.run(conn, snapshot.read(SNAPSHOT))
    assert report.status in (drift.MATCH, drift.DRIFT), report.as_dict()
    return [d.line() for d in report.differences]


@pytest.fixture(scope="module")
def deployed(cluster):
    """Two templates made once per module: fresh after the deploy, and production after it."""
    names = {"fresh": f"drift_fresh_{os.getpid()}", "production": f"drift_production_{os.getpid()}"}
    for state, name in names.items():
        with cluster.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
        template = Database(cluster, name)
        if state == "production":
            template.load_state("production")
        deploy(template)
    yield names
    with cluster.connect(user=SUPERUSER) as conn:
        for name in names.values():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _copy(cluster, template: str) -> Iterator[Database]:
    name = f"{template}_{next(_copies)}"
    with cluster.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(name), sql.Identifier(template)))
    try:
        yield Database(cluster, name)
    finally:
        with cluster.connect(user=SUPERUSER) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def fresh(cluster, deployed):
    """A fresh database after the deploy: what the committed snapshot describes."""
    yield from _copy(cluster, deployed["fresh"])


@pytest.fixture
def production(cluster, deployed):
    """The production state (adopted table, both unique constraints, rows) after the deploy."""
    yield from _copy(cluster, deployed["production"])


# --- the description --------------------------------------------------------------------


def test_a_fresh_database_after_apply_shows_no_drift(fresh):
    result = fresh.run_cli("diff")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no drift: app on postgres@")
    assert f"matches {SNAPSHOT}" in result.stdout and f"migrations {', '.join(MIGRATION_IDS)})" in result.stdout


def test_two_databases_built_the_same_way_describe_byte_identically(cluster, fresh):
    other = Database(cluster, fresh.name + "_twin")
    with cluster.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(other.name), sql.Identifier(TEMPLATE)))
    try:
        deploy(other)
        with fresh.connect() as a, other.connect() as b:
            text_a, text_b = describe(a).to_text(), describe(b).to_text()
    finally:
        with cluster.connect(user=SUPERUSER) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(other.name)))
    assert text_a == text_b
    # ... and the same as the committed snapshot, built on another cluster by another path.
    assert text_a == snapshot.read(SNAPSHOT).description.to_text()


def test_the_description_reads_back_from_its_text_and_json(fresh):
    with fresh.connect() as conn:
        conn.execute("""
            CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN

                NEW.updated_at := now();
                RETURN NEW;
            END $$;
            CREATE TRIGGER memberships_touch BEFORE UPDATE ON app.memberships
                FOR EACH ROW EXECUTE FUNCTION app.touch();
        """)
        description = describe(conn)
    assert parse(description.to_text(), "app") == description
    function = description.entries["function app.touch()"]
    assert function.startswith("owner postgres\nCREATE OR REPLACE FUNCTION app.touch()") and "\n\n" in function
    assert description.entries["trigger app.memberships.memberships_touch"] == (
        "CREATE TRIGGER memberships_touch BEFORE UPDATE ON app.memberships FOR EACH ROW EXECUTE FUNCTION app.touch()")
    result = fresh.run_cli("schema", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == "app" and data["objects"]["rls app.memberships"] == "enabled"
    assert list(data["objects"]) == list(description.entries)




def test_the_documented_read_only_login_finds_no_drift_without_usage_on_auth(fresh):
    """The previews' and the drift job's login has no USAGE on Supabase's auth; its own USAGE
    on app, and its read of the ledger, are the entries of the committed ignore list."""
    password = secrets.token_hex(16)
    with fresh.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS appdb_readonly")  # roles are cluster-wide
        conn.execute(documented_readonly_login_sql(password))
    params = {**fresh.cluster.params(fresh.name), "user": "appdb_readonly", "password": password}
    try:
        with psycopg.connect(**params, autocommit=True) as conn:
            assert not conn.execute("SELECT has_schema_privilege('auth', 'USAGE')").fetchone()[0]
            report = drift.run(conn, snapshot.read(SNAPSHOT), drift.read_ignore(SQL_DIR / "drift-ignore.toml"))
        assert report.status == drift.MATCH, [d.line() for d in report.differences]
        assert [item["identity"] for item in report.ignored] == [
            "privilege schema app TO appdb_readonly", "privilege schema appdb TO appdb_readonly",
            "privilege table appdb.migrations TO appdb_readonly"]
    finally:
        with fresh.admin_connect() as conn:
            conn.execute("DROP OWNED BY appdb_readonly; DROP ROLE appdb_readonly")


# --- hand-made changes on a production-shaped database ----------------------------------

HAND_MADE = {
    "dropped index": (
        "DROP INDEX app.memberships_stripe_customer_idx",
        "missing: index app.memberships.memberships_stripe_customer_idx: CREATE INDEX memberships_stripe_customer_idx "
        "ON app.memberships USING btree (stripe_customer_id)",
    ),
    "changed default": (
        "ALTER TABLE app.memberships ALTER COLUMN cancel_at_period_end SET DEFAULT true",
        "different: column app.memberships.cancel_at_period_end: snapshot has boolean NOT NULL DEFAULT false; "
        "live has boolean NOT NULL DEFAULT true",
    ),
    "edited policy": (
        "ALTER POLICY memberships_select_own ON app.memberships TO authenticated, anon USING (true)",
        "different: policy app.memberships.memberships_select_own: snapshot has PERMISSIVE FOR SELECT TO "
        "authenticated USING ((( SELECT auth.uid() AS uid) = user_id)); live has PERMISSIVE FOR SELECT TO "
        "anon, authenticated USING (true)",
    ),
    "RLS disabled": (
        "ALTER TABLE app.memberships DISABLE ROW LEVEL SECURITY",
        "different: rls app.memberships: snapshot has enabled; live has disabled",
    ),
    "extra unique constraint": (
        "ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_unique UNIQUE (user_id)",
        "extra: constraint app.memberships.memberships_user_unique: UNIQUE (user_id)",
    ),
    "retargeted foreign key": (
        "CREATE TABLE public.profiles (user_id uuid PRIMARY KEY);"
        "ALTER TABLE app.memberships DROP CONSTRAINT memberships_user_id_fkey,"
        " ADD CONSTRAINT memberships_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.profiles (user_id) NOT VALID",
        "different: constraint app.memberships.memberships_user_id_fkey: snapshot has FOREIGN KEY (user_id) "
        "REFERENCES auth.users(id) ON DELETE CASCADE; live has FOREIGN KEY (user_id) "
        "REFERENCES public.profiles(user_id) NOT VALID",
    ),
    "column type changed": (
        "ALTER TABLE app.memberships ALTER COLUMN stripe_price_id TYPE varchar(64)",
        "different: column app.memberships.stripe_price_id: snapshot has text; live has character varying(64)",
    ),
    "grant to anon": (
        "GRANT SELECT ON app.memberships TO anon",
        "extra: privilege table app.memberships TO anon: SELECT",
    ),
    # The ledger: a role that can write it can change a revert the deploy login runs.
    "grant on the ledger": (
        "GRANT UPDATE ON appdb.migrations TO app_reader",
        "extra: privilege table appdb.migrations TO app_reader: UPDATE",
    ),
    "ledger column grant": (
        "GRANT UPDATE (revert_sql) ON appdb.migrations TO app_backend",
        "extra: privilege column appdb.migrations.revert_sql TO app_backend: UPDATE",
    ),
    "ledger schema opened to everyone": (
        "GRANT USAGE ON SCHEMA appdb TO PUBLIC",
        "extra: privilege schema appdb TO PUBLIC: USAGE",
    ),
    "default privileges in the ledger's schema": (
        "ALTER DEFAULT PRIVILEGES IN SCHEMA appdb GRANT SELECT ON TABLES TO app_reader",
        "extra: default privileges IN SCHEMA appdb FOR ROLE postgres ON TABLES TO app_reader: SELECT",
    ),
}


@pytest.fixture
def with_index(production, tmp_path):
    """Production plus an index, and a snapshot that has it: so dropping an index can be shown."""
    with production.connect() as conn:
        conn.execute("CREATE INDEX memberships_stripe_customer_idx ON app.memberships (stripe_customer_id)")
        expected = snapshot.Snapshot(describe(conn), MIGRATION_IDS, "15")
    path = tmp_path / "schema.snapshot"
    snapshot.write(path, expected)
    return production, path


@pytest.mark.parametrize("change", list(HAND_MADE), ids=[c.replace(" ", "_") for c in HAND_MADE])
def test_each_hand_made_change_is_reported_as_one_precise_line(with_index, change):
    db, path = with_index
    statement, expected_line = HAND_MADE[change]
    with db.connect() as conn:
        before = drift.run(conn, snapshot.read(path))
        assert before.status == drift.MATCH, [d.line() for d in before.differences]
        conn.execute(statement)
        after = drift.run(conn, snapshot.read(path))
    assert [d.line() for d in after.differences] == [expected_line]


def test_the_production_state_shows_its_old_status_default_against_the_committed_snapshot(production):
    assert drift_lines(production) == [PRODUCTION_STATUS]


def drift_output(db: Database, result) -> list[str]:
    """diff's lines; on a major other than the snapshot's (15), its last line notes so, and is taken off."""
    lines = result.stdout.splitlines()
    if db.major != 15:
        assert lines[-1].startswith(f"note: {ROOT / 'sql' / 'schema.snapshot'} was built on PostgreSQL 15, "
                                    f"this database runs {db.major}")
        return lines[:-1]
    return lines


def test_appdb_diff_exits_1_with_the_lines_and_a_one_line_summary(production):
    with production.connect() as conn:
        conn.execute("GRANT SELECT ON app.memberships TO anon")
    result = production.run_cli("diff")
    assert result.returncode == 1
    assert drift_output(production, result) == [PRODUCTION_STATUS, "extra: privilege table app.memberships TO anon: SELECT"]
    assert result.stderr.startswith("appdb: error: drift: app on postgres@")
    assert result.stderr.rstrip().endswith("(1 extra, 1 different)") and result.stderr.count("\n") == 1
    data = json.loads(production.run_cli("diff", "--json").stdout)
    assert data["status"] == "drift" and data["counts"] == {"missing": 0, "extra": 1, "different": 1}
    assert data["differences"][1] == {"change": "extra", "identity": "privilege table app.memberships TO anon",
                                      "snapshot": None, "live": "SELECT"}


def test_appdb_diff_names_a_grant_on_the_ledger_and_nothing_of_its_rows(fresh):
    with fresh.connect() as conn:
        conn.execute("UPDATE appdb.migrations SET duration_ms = duration_ms + 1")  # rows are not described
        conn.execute("GRANT SELECT, UPDATE ON appdb.migrations TO app_writer")
    result = fresh.run_cli("diff")
    assert result.returncode == 1
    assert drift_output(fresh, result) == ["extra: privilege table appdb.migrations TO app_writer: SELECT, UPDATE"]
    assert result.stderr.rstrip().endswith("(1 extra)")


def test_appdb_diff_names_a_ledger_given_to_another_owner(fresh):
    with fresh.admin_connect() as conn:
        conn.execute("ALTER TABLE appdb.migrations OWNER TO app_writer")
    with fresh.admin_connect() as conn:  # diff reads the ledger, which postgres no longer may
        report = drift.run(conn, snapshot.read(SNAPSHOT))
    assert [d.line() for d in report.differences] == [
        "different: table appdb.migrations: snapshot has owner postgres; live has owner app_writer"]


def test_a_failed_concurrent_index_build_shows_as_an_invalid_index(fresh):
    with fresh.connect() as conn:
        conn.execute("INSERT INTO auth.users (id) VALUES (gen_random_uuid()), (gen_random_uuid())")
        conn.execute("INSERT INTO app.memberships (user_id) SELECT id FROM auth.users")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY memberships_status_key ON app.memberships (status)")
    assert drift_lines(fresh) == [
        "extra: index app.memberships.memberships_status_key: CREATE UNIQUE INDEX memberships_status_key "
        "ON app.memberships USING btree (status) INVALID"]


def test_a_changed_function_body_is_shown_as_a_diff_of_the_two_definitions(fresh, tmp_path):
    with fresh.connect() as conn:
        conn.execute("CREATE FUNCTION app.plan() RETURNS text LANGUAGE sql AS $$ SELECT 'month' $$")
        path = tmp_path / "schema.snapshot"
        snapshot.write(path, snapshot.Snapshot(describe(conn), MIGRATION_IDS, "15"))
        conn.execute("CREATE OR REPLACE FUNCTION app.plan() RETURNS text LANGUAGE sql AS $$ SELECT 'year' $$")
    result = fresh.run_cli("diff", "--snapshot", str(path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "different: function app.plan(): the definitions differ (below, snapshot then live)"
    assert "    -AS $function$ SELECT 'month' $function$" in lines
    assert "    +AS $function$ SELECT 'year' $function$" in lines


# --- the ledger, the ignore list ---------------------------------------------------------


def test_a_database_whose_ledger_is_behind_is_told_so_not_reported_as_drift(db):
    with db.connect() as conn:
        runner.apply(conn, discover(SQL_DIR), runner.Options(), only="027")
    result = db.run_cli("diff")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "is behind" in result.stderr and f"{', '.join(MIGRATION_IDS[1:])} not applied" in result.stderr
    assert "pending migrations are not drift" in result.stderr and result.stderr.count("\n") == 1
    data = json.loads(db.run_cli("diff", "--json").stdout)
    assert (data["status"], data["pending"], data["differences"]) == ("behind", list(MIGRATION_IDS[1:]), [])


def test_the_ignore_list_excuses_matching_objects_and_says_so(production, tmp_path):
    rules = tmp_path / "ignore.toml"
    rules.write_text('[[ignore]]\npattern = "column app.memberships.status"\n'
                     'reason = "production kept its old default; the backend always sets status"\n')
    result = production.run_cli("diff", "--ignore", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == f"ignored ({rules}): column app.memberships.status"
    data = json.loads(production.run_cli("diff", "--json", "--ignore", str(rules)).stdout)
    assert data["ignored"][0]["reason"].startswith("production kept")


def test_an_ignore_entry_without_a_reason_is_a_configuration_error(fresh, tmp_path):
    rules = tmp_path / "ignore.toml"
    rules.write_text('[[ignore]]\npattern = "privilege table app.* TO anon"\n')
    result = fresh.run_cli("diff", "--ignore", str(rules))
    assert result.returncode == 2
    assert result.stderr == (f"appdb: error: {rules}: [[ignore]] entry 1 ('privilege table app.* TO anon') "
                             "has no reason: say why it is made outside the migrations\n")


def test_the_committed_ignore_list_is_valid_and_every_entry_has_a_reason():
    for rule in drift.read_ignore(SQL_DIR / "drift-ignore.toml", required=True):
        assert rule.reason


# --- bad input ----------------------------------------------------------------------------


def test_an_unreachable_database_is_one_line_exit_2(db):
    result = db.run_cli("diff", "--dsn", f"postgresql://postgres:hunter2secret@127.0.0.1:{free_port()}/x")
    assert result.returncode == 2
    assert result.stderr.startswith("appdb: error: could not connect to postgres@127.0.0.1:")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_a_malformed_snapshot_is_one_line_exit_2_naming_the_file_and_line(db, tmp_path):
    bad = tmp_path / "schema.snapshot"
    bad.write_text("# schema: app\n# migrations: 027 028\nschema app\n    owner postgres\nDROP TABLE x;\n")
    result = db.run_cli("diff", "--snapshot", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith(f"appdb: error: {bad}:5: 'DROP TABLE x;' is neither an identity")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    bad.write_text("just text\n")
    result = db.run_cli("diff", "--snapshot", str(bad))
    assert (result.returncode, result.stderr) == (
        2, f"appdb: error: {bad}: not an appdb schema snapshot (no '# schema:' header line); "
           "rebuild it with appdb schema --write\n")


def test_a_missing_schema_is_one_line_exit_2(db):
    with db.connect() as conn:
        conn.execute("DROP SCHEMA app")
    for args in (("diff",), ("schema",)):
        result = db.run_cli(*args)
        assert result.returncode == 2, args
        assert result.stderr == ("appdb: error: schema 'app' does not exist in this database: "
                                 "is it the right database?\n")


def test_a_missing_snapshot_is_one_line_exit_2(db, tmp_path):
    result = db.run_cli("diff", "--snapshot", str(tmp_path / "nope.snapshot"))
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)
    assert "no schema snapshot at" in result.stderr and "appdb schema --write" in result.stderr


def test_schema_check_refuses_a_dsn(db):
    result = db.run_cli("schema", "--check", "--dsn", db.dsn)
    assert result.returncode == 2 and "drop --dsn" in result.stderr


def test_parse_rejects_a_definition_before_any_identity_and_an_identity_twice():
    with pytest.raises(ConfigError, match=r"x:1: an indented definition line"):
        parse("    owner postgres\n", "app", "x")
    with pytest.raises(ConfigError, match=r"x:3: 'schema app' appears twice"):
        parse("schema app\n    owner a\nschema app\n    owner b\n", "app", "x")
    with pytest.raises(ConfigError, match=r"x:1: 'schema app' has no definition"):
        parse("schema app\nrls app.t\n    enabled\n", "app", "x")


# --- the committed snapshot ----------------------------------------------------------------


def test_the_committed_snapshot_is_up_to_date_with_the_migrations():
    """If this fails: bin/appdb schema --write, and commit sql/schema.snapshot."""
    fresh_snapshot = snapshot.build(discover(SQL_DIR))
    assert snapshot.stale_diff(SNAPSHOT, fresh_snapshot) == [], "run bin/appdb schema --write"


def test_schema_check_fails_on_a_stale_snapshot_and_write_makes_it_pass(db, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir, ignore=shutil.ignore_patterns("*.snapshot", "*.toml"))
    (sql_dir / "999_notes.sql").write_text("CREATE TABLE IF NOT EXISTS app.notes (body text);\n")
    (sql_dir / "revert" / "999_notes.sql").write_text("DROP TABLE IF EXISTS app.notes;\n")
    stale = sql_dir / "schema.snapshot"
    shutil.copy(SNAPSHOT, stale)

    result = db.run_cli("schema", "--check", sql_dir=sql_dir)
    assert result.returncode == 1
    assert "+table app.notes" in result.stdout.splitlines()
    assert f"+# migrations: {' '.join(MIGRATION_IDS)} 999" in result.stdout.splitlines()
    assert result.stderr.startswith(f"appdb: error: {stale} is stale") and result.stderr.count("\n") == 1

    result = db.run_cli("schema", "--write", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {stale}: ") and f"from {', '.join(MIGRATION_IDS)}, 999" in result.stdout
    written = snapshot.read(stale)
    assert written.migrations == (*MIGRATION_IDS, "999")
    assert written.description.entries["rls app.notes"] == "disabled"
    assert snapshot.stale_diff(stale, written) == []
