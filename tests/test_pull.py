"""`appdb pull`: a live schema as a migration that converges, and its revert.

The source is production-shaped (tests/states/production.sql and production_billing.sql:
all three tables with rows, the duplicate unique constraint, a policy, a trigger, a
serial and an identity). What pull writes is judged by the canonical description of
appdb/schema/describe.py, not by text: applied to a fresh Supabase-shaped database it must give
the source's catalog in `app`, less the grants, which are the Pulumi program's.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from tests.helpers import SHIPPED_SQL, Database, migrations_part, one_line_error, production, pull, squawk


@pytest.fixture
def pulled(new_db, tmp_path) -> tuple[Database, Path]:
    """A production-shaped database and what pull wrote from it into an empty migrations folder."""
    source = production(new_db())
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    result = pull(source, sql_dir)
    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout and "appdb baseline 001" in result.stdout
    return source, sql_dir


def test_pull_then_apply_elsewhere_gives_the_same_catalog(pulled, new_db):
    source, sql_dir = pulled
    assert sorted(p.name for p in sql_dir.rglob("*.sql")) == ["001_adopt_production.sql"] * 2
    target = new_db()
    result = target.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    expected, actual = migrations_part(source), migrations_part(target)
    assert actual.to_text() == expected.to_text()
    # What the incident turned on is there, by name.
    assert "constraint app.memberships.memberships_user_unique" in actual
    assert "policy app.billing_logs.billing_logs_backend" in actual
    assert "trigger app.payment_events.payment_events_stamp" in actual


def test_the_pulled_files_pass_squawk_and_hold_no_transaction_control(pulled):
    _, sql_dir = pulled
    files = sorted(sql_dir.rglob("*.sql"))
    result = squawk(*files)
    assert result.returncode == 0, result.stdout + result.stderr
    for path in files:
        text = path.read_text()
        assert "CREATE SCHEMA" not in text and "OWNER TO" not in text
        assert "GRANT " not in text and "REVOKE " not in text
        for word in ("BEGIN;", "COMMIT;", "ROLLBACK;", "\\restrict", "SET search_path"):
            assert word not in text


def test_the_pulled_migration_converges_on_the_source_shape_without_touching_a_row(pulled, new_db):
    _, sql_dir = pulled
    twin = production(new_db())
    before = twin.snapshot()
    result = twin.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    after = twin.snapshot()
    for state in (before, after):  # the ledger gains its row; the rest must not change
        state["catalog"] = [row for row in state["catalog"] if row[0] != "appdb"]
        state["rows"].pop("appdb.migrations", None)
    assert after == before
    assert twin.run_cli("apply", sql_dir=sql_dir).stdout.startswith("nothing to apply")


def test_the_revert_drops_what_it_made_and_refuses_to_lose_rows(pulled, new_db):
    source, sql_dir = pulled
    empty = new_db()
    assert empty.run_cli("apply", sql_dir=sql_dir).returncode == 0
    result = empty.run_cli("revert", "001", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert [k for k in migrations_part(empty) if not k.startswith("schema ")] == []

    twin = production(new_db())
    assert twin.run_cli("apply", sql_dir=sql_dir).returncode == 0
    before = twin.snapshot()
    refused = twin.run_cli("revert", "001", sql_dir=sql_dir)
    assert refused.returncode == 1
    assert "refused: reverting 001 drops app." in one_line_error(refused)
    assert twin.snapshot() == before


def test_after_the_shipped_migrations_pull_adds_only_what_they_lack_and_its_revert_keeps_their_tables(
        new_db, tmp_path):
    """Production after 027-030, pulled as 031: a fresh database gets 027-031 and passes verify."""
    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    source = production(new_db())
    assert source.run_cli("apply", sql_dir=sql_dir).returncode == 0
    result = pull(source, sql_dir)
    assert result.returncode == 0, result.stderr
    forward = (sql_dir / "031_adopt_production.sql").read_text()
    revert = (sql_dir / "revert" / "031_adopt_production.sql").read_text()
    # Production's unique index of its own name is 029's unique key: not made twice.
    assert ("index app.payment_events.payment_events_event_uniq: an earlier migration makes the same "
            "(constraint app.payment_events.payment_events_stripe_event_id_key)") in forward
    assert "CREATE UNIQUE INDEX" not in forward
    assert "DROP TABLE" not in revert  # every table is an earlier migration's
    assert "payment_events_event_type_idx" in revert and "billing_logs_backend" in revert

    fresh = new_db()
    applied = fresh.run_cli("apply", sql_dir=sql_dir)
    assert applied.returncode == 0, applied.stderr
    assert fresh.run_cli("verify", sql_dir=sql_dir).returncode == 0
    made = migrations_part(fresh)
    for identity in ("index app.payment_events.payment_events_event_type_idx",
                     "trigger app.payment_events.payment_events_stamp",
                     "policy app.billing_logs.billing_logs_backend"):
        assert identity in made
    with fresh.connect() as conn:
        conn.execute("INSERT INTO auth.users (id) VALUES ('00000000-0000-4000-8000-0000000000aa')")
        conn.execute("INSERT INTO app.memberships (user_id) VALUES ('00000000-0000-4000-8000-0000000000aa')")
    assert fresh.run_cli("revert", "031", sql_dir=sql_dir).returncode == 0
    kept = migrations_part(fresh)
    assert "index app.payment_events.payment_events_event_type_idx" not in kept
    assert "trigger app.payment_events.payment_events_stamp" not in kept
    assert {"table app.memberships", "table app.payment_events", "table app.billing_logs"} <= set(kept)
    assert fresh.execute("SELECT count(*) FROM app.memberships") == [(1,)]


# --- bad input: one line, the right exit code, nothing written ----------------------------


def test_an_unreachable_server_is_a_one_line_error_without_the_password(db, tmp_path, cluster):
    from tests.helpers import free_port

    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    dsn = f"postgresql://postgres:Hj4k-Secret-Pw9z@127.0.0.1:{free_port()}/postgres?connect_timeout=3"
    result = pull(db, sql_dir, "--dsn", dsn)
    assert result.returncode == 2
    assert "could not connect" in one_line_error(result)
    assert "Hj4k-Secret-Pw9z" not in result.stdout + result.stderr
    assert list(sql_dir.iterdir()) == []


def test_a_schema_that_does_not_exist(db, tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    result = pull(db, sql_dir, "--schema", "billing")
    assert result.returncode == 2
    assert "schema 'billing' does not exist" in one_line_error(result)
    assert list(sql_dir.iterdir()) == []


def test_pg_dump_missing(db, tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    result = pull(db, sql_dir, env={"APPDB_PG_DUMP": str(tmp_path / "no-pg_dump")})
    assert result.returncode == 2
    assert "is not an executable pg_dump" in one_line_error(result)
    assert list(sql_dir.iterdir()) == []


def test_pg_dump_older_than_the_server(db, tmp_path):
    old = tmp_path / "pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.13'\n")
    old.chmod(old.stat().st_mode | stat.S_IXUSR)
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    result = pull(production(db), sql_dir, env={"APPDB_PG_DUMP": str(old)})
    assert result.returncode == 2
    assert (f"is version 14, older than the server's {db.major}: install postgresql-client-{db.major}"
            in one_line_error(result))
    assert list(sql_dir.iterdir()) == []


def test_an_empty_schema_and_a_bad_name_write_nothing(db, tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    empty = pull(db, sql_dir)
    assert empty.returncode == 1
    assert "holds nothing to pull" in one_line_error(empty)
    bad = db.run_cli("pull", "Adopt Production!", sql_dir=sql_dir)
    assert bad.returncode == 2
    assert "use lower-case letters" in one_line_error(bad)
    assert list(sql_dir.iterdir()) == []


def test_objects_pull_cannot_converge_are_refused_by_name_and_nothing_is_written(db, tmp_path):
    db.execute("""
        CREATE TABLE app.ledger_entries (id bigint NOT NULL, booked_on date NOT NULL) PARTITION BY RANGE (booked_on);
        CREATE TABLE app.ledger_entries_2026 PARTITION OF app.ledger_entries
            FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        CREATE FUNCTION app.cents_add(bigint, bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT $1 + $2';
        CREATE OPERATOR app.=== (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = app.cents_add);
    """)
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    result = pull(db, sql_dir)
    assert result.returncode == 1
    line = one_line_error(result)
    assert "pull cannot yet rewrite these objects" in line
    assert "TABLE ATTACH ledger_entries_2026" in line and "OPERATOR ===" in line
    assert "appdb new NAME" in line
    assert list(sql_dir.iterdir()) == []


def test_the_read_only_login_is_told_it_needs_select_and_pulls_once_granted(new_db, tmp_path):
    """docs/adoption.md: the read-only login of docs/delivery.md, given SELECT for the pull only."""
    source = production(new_db())
    login = f"appdb_readonly_{source.name}"
    source.execute(f"""
        CREATE ROLE {login} LOGIN PASSWORD 'Rv3m-Tq8z-Lw5k' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
            NOBYPASSRLS CONNECTION LIMIT 5;
        ALTER ROLE {login} SET default_transaction_read_only = on;
        GRANT USAGE ON SCHEMA app TO {login};
    """)
    params = source.tcp_params
    dsn = f"postgresql://{login}:Rv3m-Tq8z-Lw5k@{params['host']}:{params['port']}/{source.name}"
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    try:
        refused = pull(source, sql_dir, "--dsn", dsn)
        assert refused.returncode == 2
        line = one_line_error(refused)
        assert f"login {login} has no SELECT on app.billing_logs, app.memberships, app.payment_events" in line
        assert f"GRANT SELECT ON ALL TABLES IN SCHEMA app TO {login}" in line
        assert "Rv3m-Tq8z-Lw5k" not in refused.stdout + refused.stderr
        assert list(sql_dir.iterdir()) == []

        source.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA app TO {login}")
        granted = pull(source, sql_dir, "--dsn", dsn)
        assert granted.returncode == 0, granted.stderr
        assert (sql_dir / "001_adopt_production.sql").is_file()
    finally:
        with source.admin_connect() as conn:
            conn.execute(f"DROP OWNED BY {login}")
            conn.execute(f"DROP ROLE {login}")


@pytest.mark.parametrize("major, insists", [(18, True), (15, False)])
def test_pg_dump_is_told_to_answer_only_scram_on_this_machine_when_its_libpq_can(db, tmp_path, major, insists):
    """pg_dump connects again, with its own libpq: a program on a local port that let appdb's own
    SCRAM connection through could ask pg_dump for the password in clear. A pg_dump of 16 or newer
    gets require_auth; an older one cannot take it (its libpq would refuse the keyword)."""
    if major < db.major:
        pytest.skip(f"a pg_dump {major} is refused for a PostgreSQL {db.major} server before it runs")
    seen = tmp_path / "dbname.txt"
    fake = tmp_path / "pg_dump"
    fake.write_text("#!/bin/sh\n"
                    f"if [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) {major}.1'; exit 0; fi\n"
                    f"for arg; do case $arg in --dbname=*) printf '%s' \"$arg\" > '{seen}';; esac; done\n"
                    "echo 'pg_dump: error: stopped by the test' >&2; exit 1\n")
    fake.chmod(0o755)
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    from psycopg.conninfo import make_conninfo

    result = pull(production(db), sql_dir, env={"APPDB_PG_DUMP": str(fake),
                                                "DATABASE_URL": make_conninfo(**db.tcp_params)})
    assert result.returncode == 1 and "stopped by the test" in one_line_error(result), result.stderr
    assert ("require_auth=scram-sha-256" in seen.read_text()) is insists
    assert db.tcp_params["password"] not in seen.read_text()


def test_a_line_break_or_semicolon_inside_a_label_or_a_name_is_pulled_as_it_is(new_db, tmp_path):
    """An enum label holding ';' and a line break, and a table name holding a line break, with a
    primary key: the pulled migration applies elsewhere and builds the same (an attack review found
    the label's statement cut at its ';' and the name re-indented, another name)."""
    source = production(new_db())
    source.execute("CREATE TYPE app.mood AS ENUM ('x;\ny', 'plain')")
    source.execute('CREATE TABLE app."we;ird\nname" (id int PRIMARY KEY, feeling app.mood)')
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    result = pull(source, sql_dir)
    assert result.returncode == 0, result.stderr
    target = new_db()
    applied = target.run_cli("apply", sql_dir=sql_dir)
    assert applied.returncode == 0, applied.stderr
    assert migrations_part(target).to_text() == migrations_part(source).to_text()
    assert target.execute("SELECT enum_range(NULL::app.mood)::text[]") == [(["x;\ny", "plain"],)]
    assert target.execute("SELECT to_regclass('app.\"we;ird\nname\"') IS NOT NULL") == [(True,)]
