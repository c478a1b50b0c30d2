"""The runner: the ledger, apply once, revert from the ledger, and its refusals."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from appdb.errors import ConfigError, MigrationError, Refused
from appdb.migrate import ledger, runner
from appdb.migrate.files import discover, find
from tests.helpers import SHIPPED_SQL, write_migration

OPTIONS = runner.Options(lock_timeout=5)
IDS = ["027", "028", "029", "030"]
ALL_PENDING = dict.fromkeys(IDS, "pending")
ALL_APPLIED = dict.fromkeys(IDS, "applied")


def revert_all(conn, options=OPTIONS) -> None:
    """Newest first, as the runner requires."""
    for migration_id in reversed(IDS):
        runner.revert(conn, migration_id, options)


def migrations(sql_dir: Path = SHIPPED_SQL):
    return discover(sql_dir)


def copy_sql(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, target)
    return target


def states(db, sql_dir: Path = SHIPPED_SQL) -> dict[str, str]:
    with db.connect() as conn:
        return {s.id: s.state for s in ledger.status(conn, migrations(sql_dir))}


def test_status_before_anything_is_pending_without_creating_the_ledger(db):
    assert states(db) == ALL_PENDING
    assert db.execute("SELECT to_regclass('appdb.migrations')") == [(None,)]


def test_apply_records_each_migration_in_the_ledger(db):
    with db.connect() as conn:
        done = runner.apply(conn, migrations(), OPTIONS)
        entries = ledger.read(conn)

    assert [o.id for o in done] == IDS
    assert sorted(e.id for e in entries.values()) == IDS
    entry = entries[27]
    assert entry.applied_by == "postgres"
    assert entry.checksum == migrations()[0].checksum
    assert "DROP TABLE IF EXISTS app.memberships" in entry.revert_sql


def test_apply_twice_applies_nothing_the_second_time(db):
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)
        first = ledger.read(conn)
        conn.execute("CREATE TABLE app.sentinel (id bigint)")  # DDL the second run would trip over if it re-ran
        again = runner.apply(conn, migrations(), OPTIONS)
        second = ledger.read(conn)

    assert again == []
    assert first == second


def test_apply_revert_apply_ends_with_the_same_catalog(db):
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)
    after_first = db.snapshot()["catalog"]
    with db.connect() as conn:
        revert_all(conn)
    assert db.execute("SELECT to_regclass('app.memberships')") == [(None,)]
    assert states(db) == ALL_PENDING
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)

    assert db.snapshot()["catalog"] == after_first


def test_a_changed_file_is_reported_and_refused(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
    path = sql_dir / "028_fix_memberships_unique_constraint.sql"
    path.write_text(path.read_text() + "\n-- an edit after apply\n")

    assert states(db, sql_dir)["028"] == "changed"
    with db.connect() as conn, pytest.raises(Refused, match="028 .*edited after it was applied"):
        runner.apply(conn, migrations(sql_dir), OPTIONS)


def test_the_checksum_ignores_line_endings(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
    path = sql_dir / "027_memberships.sql"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))

    assert states(db, sql_dir) == ALL_APPLIED


def test_a_removed_file_is_reported_and_reverted_from_the_ledger(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
    (sql_dir / "030_billing_logs.sql").unlink()
    (sql_dir / "revert" / "030_billing_logs.sql").unlink()

    assert states(db, sql_dir) == {**ALL_APPLIED, "030": "removed"}
    with db.connect() as conn:
        assert runner.apply(conn, migrations(sql_dir), OPTIONS) == []  # removed is left alone
        outcome = runner.revert(conn, "030", OPTIONS)
    assert outcome is not None and outcome.action == "reverted"
    assert states(db, sql_dir) == {"027": "applied", "028": "applied", "029": "applied"}


def test_only_applies_just_that_migration(db):
    with db.connect() as conn:
        done = runner.apply(conn, migrations(), OPTIONS, only="027")
    assert [o.id for o in done] == ["027"]
    assert states(db) == {**ALL_PENDING, "027": "applied"}


def test_only_refuses_when_an_earlier_migration_is_pending(db):
    with db.connect() as conn, pytest.raises(Refused, match="earlier migration.*027.*pending"):
        runner.apply(conn, migrations(), OPTIONS, only="028")
    assert states(db) == ALL_PENDING


def test_only_with_an_applied_migration_does_nothing(db):
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)
        assert runner.apply(conn, migrations(), OPTIONS, only="027") == []


def test_only_with_an_unknown_id_is_a_usage_error(db):
    with db.connect() as conn, pytest.raises(ConfigError, match="unknown migration id 099"):
        runner.apply(conn, migrations(), OPTIONS, only="099")


def test_dry_run_changes_nothing(db):
    before = db.snapshot()
    with db.connect() as conn:
        planned = runner.apply(conn, migrations(), OPTIONS, dry_run=True)
    assert [o.action for o in planned] == ["would apply"] * len(IDS)
    assert db.snapshot() == before


def test_revert_of_a_migration_that_is_not_applied_is_a_no_op(db):
    with db.connect() as conn:
        assert runner.revert(conn, "028", OPTIONS) is None


def test_revert_refuses_a_migration_that_is_not_the_latest(db):
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)
        with pytest.raises(Refused, match="cannot revert 027: 030"):
            runner.revert(conn, "027", OPTIONS)
    assert states(db) == ALL_APPLIED


def test_reverting_027_with_rows_is_refused_unless_data_loss_is_allowed(db):
    db.load_state("production")
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)
        for migration_id in ("030", "029", "028"):  # 029 and 030 made empty tables: nothing to lose
            runner.revert(conn, migration_id, OPTIONS)
    before = db.snapshot()

    with db.connect() as conn, pytest.raises(Refused, match=r"drops app.memberships and its 5 row\(s\)"):
        runner.revert(conn, "027", OPTIONS)
    assert db.snapshot() == before

    with db.connect() as conn:
        runner.revert(conn, "027", runner.Options(lock_timeout=5, allow_data_loss=True))
    assert db.execute("SELECT to_regclass('app.memberships')") == [(None,)]
    assert states(db) == ALL_PENDING


def test_reverting_027_on_an_empty_table_needs_no_permission(db):
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)
        revert_all(conn)
    assert db.execute("SELECT to_regclass('app.memberships')") == [(None,)]


def test_the_ledger_is_not_readable_by_the_api_roles(db):
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)
    for role in ("anon", "authenticated", "service_role"):
        assert db.execute("SELECT has_schema_privilege(%s, 'appdb', 'USAGE')", (role,)) == [(False,)]


def test_a_non_transactional_step_runs_in_autocommit_and_the_ledger_follows_it(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    (sql_dir / "031_user_status_index.sql").write_text(
        "-- appdb:step build transaction=false\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS memberships_status_idx ON app.memberships (status);\n")
    (sql_dir / "revert" / "031_user_status_index.sql").write_text(
        "-- appdb:step drop transaction=false\nDROP INDEX CONCURRENTLY IF EXISTS app.memberships_status_idx;\n")
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
        assert conn.execute("SHOW lock_timeout").fetchone()[0] != "5s"  # session settings were reset
    assert db.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'app.memberships_status_idx'::regclass") == [(True,)]
    assert states(db, sql_dir)["031"] == "applied"

    with db.connect() as conn:
        runner.revert(conn, "031", OPTIONS)
    assert db.execute("SELECT to_regclass('app.memberships_status_idx')") == [(None,)]
    assert states(db, sql_dir)["031"] == "pending"


def hand_made(sql_dir: Path, text: str) -> list:
    """The project's migrations plus a 031 built in memory, past the checks load() makes."""
    from dataclasses import replace

    from appdb.migrate.files import Step

    base = migrations(sql_dir)
    extra = replace(base[-1], id="031", name="hand_made", path=sql_dir / "031_hand_made.sql", sql=text,
                    checksum="x", steps=(Step(name="main", sql=text, first_line=1),))
    return [*base, extra]


@pytest.mark.parametrize("text, message", [
    ("CREATE TABLE app.t031 (id bigint);\nCOMMIT;\n", "ended the runner's transaction"),
    ("CREATE TABLE app.t031 (id bigint);\nSET LOCAL lock_timeout = 0;\n", "changed the runner's settings"),
    ("CREATE TABLE app.t031 (id bigint);\nRESET ALL;\n", "changed the runner's settings"),
])
def test_a_step_that_leaves_the_runners_transaction_or_settings_records_nothing(db, text, message):
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)
        with pytest.raises(MigrationError, match=f"031, step main.*{message}.*nothing was recorded"):
            runner.apply(conn, hand_made(SHIPPED_SQL, text), OPTIONS)
    assert db.execute("SELECT count(*) FROM appdb.migrations WHERE id = '031'") == [(0,)]


@pytest.mark.parametrize("text", [
    "CREATE TABLE app.t031 (id bigint) -- the last line: a comment, no semicolon",
    "SELECT 1;\nCREATE TABLE app.t031 (id bigint);\nSELECT 'a result in the middle';\n/* a block comment */",
])
def test_a_step_is_sent_with_its_settings_in_one_query_whatever_its_last_line(db, text):
    """The step runs between the set_config and the settings check, in one round trip (steps.run_in_transaction)."""
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)
        [outcome] = runner.apply(conn, hand_made(SHIPPED_SQL, text), OPTIONS)
        assert conn.execute("SHOW lock_timeout").fetchone()[0] != "5s"  # set locally, gone with the transaction
    assert outcome.id == "031"
    assert db.execute("SELECT to_regclass('app.t031') IS NOT NULL") == [(True,)]
    assert db.execute("SELECT count(*) FROM appdb.migrations WHERE id = '031'") == [(1,)]


def add_migration(sql_dir: Path, filename: str, forward: str = "SELECT 1;\n", revert: str = "-- no-op\n") -> None:
    (sql_dir / filename).write_text(forward)
    (sql_dir / "revert" / filename).write_text(revert)


def test_a_pending_migration_older_than_the_newest_applied_is_refused(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
        add_migration(sql_dir, "032_later.sql")
        runner.apply(conn, migrations(sql_dir), OPTIONS)
        add_migration(sql_dir, "031_merged_late.sql")
        for only in (None, "031"):
            with pytest.raises(Refused, match=r"031 \(merged_late\) is pending but older than 032 \(later\)"):
                runner.apply(conn, migrations(sql_dir), OPTIONS, only=only)
    assert states(db, sql_dir) == {**ALL_APPLIED, "031": "pending", "032": "applied"}

    result = db.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "appdb: error: 031 (merged_late) is pending but older than 032 (later), which is applied: migrations "
        "apply in version order only; give 031_merged_late.sql (and its revert) a version after 032"]


def test_revert_follows_the_order_migrations_were_applied_not_their_versions(db):
    with db.connect() as conn:
        runner.apply(conn, migrations(), OPTIONS)
        # As if 029 had been applied last (a baseline, or an older engine that applied out of order).
        conn.execute("UPDATE appdb.migrations SET applied_at = now() + interval '1 hour' WHERE id = '029'")
        with pytest.raises(Refused, match=r"cannot revert 030: 029 \(payment_events\) was applied after it "
                                          r"\(at \d{4}-\d\d-\d\dT[\d:]+\+00:00\); revert 029 first"):
            runner.revert(conn, "030", OPTIONS)
        assert runner.revert(conn, "029", OPTIONS).action == "reverted"


def test_revert_refuses_when_the_revert_file_differs_from_the_ledger(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
    path = sql_dir / "revert" / "030_billing_logs.sql"
    path.write_text(path.read_text() + "\nDROP TABLE app.memberships;\n")

    result = db.run_cli("revert", "030", sql_dir=sql_dir)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "cannot revert 030: the revert SQL in the ledger (appdb.migrations row '030'" in line
    assert f"differs from {path}; restore {path} to what was applied, or" in line
    assert states(db, sql_dir)["030"] == "applied"

    # The same file with a BOM and Windows line endings is the same revert.
    path.write_bytes(b"\xef\xbb\xbf" + (SHIPPED_SQL / "revert" / "030_billing_logs.sql").read_bytes().replace(b"\n", b"\r\n"))
    assert db.run_cli("revert", "030", sql_dir=sql_dir).returncode == 0
    assert states(db, sql_dir)["030"] == "pending"


def test_revert_uses_the_ledgers_copy_when_the_files_are_gone(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
    (sql_dir / "030_billing_logs.sql").unlink()
    (sql_dir / "revert" / "030_billing_logs.sql").unlink()
    result = db.run_cli("revert", "030", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert db.execute("SELECT to_regclass('app.billing_logs')") == [(None,)]


def test_revert_with_a_revert_folder_it_cannot_read_says_so_in_one_line_and_changes_nothing(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
    shutil.rmtree(sql_dir / "revert")
    (sql_dir / "revert").symlink_to("revert")  # a loop: unreadable even for root
    result = db.run_cli("revert", "030", sql_dir=sql_dir)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == (f"appdb: error: cannot read {sql_dir / 'revert'} (Too many levels of symbolic links) to compare "
                    "its revert of 030 with the ledger's: make it readable, or pass another --sql-dir")
    assert states(db)["030"] == "applied"


def test_revert_with_a_revert_file_it_cannot_read_says_so_in_one_line_and_changes_nothing(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
    path = sql_dir / "revert" / "030_billing_logs.sql"
    path.unlink()
    path.mkdir()  # unreadable as a file, even for root
    result = db.run_cli("revert", "030", sql_dir=sql_dir)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == f"appdb: error: cannot read {path} (Is a directory): it must be a readable file"
    assert states(db)["030"] == "applied"


def test_revert_where_revert_is_a_file_runs_the_ledgers_copy(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
    shutil.rmtree(sql_dir / "revert")
    (sql_dir / "revert").write_text("not a folder\n")
    assert db.run_cli("revert", "030", sql_dir=sql_dir).returncode == 0
    assert db.execute("SELECT to_regclass('app.billing_logs')") == [(None,)]


def test_a_renamed_file_with_the_same_version_is_the_same_migration(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
    for folder in (sql_dir, sql_dir / "revert"):
        (folder / "030_billing_logs.sql").rename(folder / "0030_billing_logs.sql")

    assert states(db, sql_dir) == {"027": "applied", "028": "applied", "029": "applied", "0030": "applied"}
    with db.connect() as conn:
        assert runner.apply(conn, migrations(sql_dir), OPTIONS) == []
        assert runner.apply(conn, migrations(sql_dir), OPTIONS, only="30") == []
        renamed = find_migration(sql_dir, "0030")
        with pytest.raises(Refused, match="the ledger already holds version 30 as 030"):
            with conn.transaction():
                ledger.record(conn, renamed, 0)
        assert [e.id for e in ledger.read(conn).values()].count("030") == 1
    result = db.run_cli("revert", "0030", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("030 billing_logs: reverted")
    assert db.execute("SELECT count(*) FROM appdb.migrations WHERE id IN ('030', '0030')") == [(0,)]
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), OPTIONS)
    assert db.execute("SELECT id FROM appdb.migrations WHERE id IN ('030', '0030')") == [("0030",)]
    assert db.run_cli("revert", "30", sql_dir=sql_dir).returncode == 0
    assert states(db, sql_dir)["0030"] == "pending"


def find_migration(sql_dir: Path, migration_id: str):
    return find(migrations(sql_dir), migration_id)


def test_strings_are_read_as_the_lexer_read_them_so_no_commit_hides_in_one(db, tmp_path):
    """With standard_conforming_strings off, `'\\''` ends a string the lexer still sees open: the
    COMMIT after it would run, unrefused at load. The runner keeps it on and refuses a step that
    turns it off; nothing of the migration stays behind."""
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "031_x.sql",
                    "SET standard_conforming_strings = off;\n-- appdb:step two\nCREATE TABLE app.t1 (id int);\n"
                    "SELECT '\\''; COMMIT; -- '\nCREATE TABLE app.after_commit (id int);\n",
                    "DROP TABLE IF EXISTS app.t1;\n")
    with db.connect() as conn:
        with pytest.raises(MigrationError, match="standard_conforming_strings is 'off', not 'on'"):
            runner.apply(conn, discover(sql_dir), OPTIONS)
    assert db.execute("SELECT to_regclass('app.t1'), to_regclass('app.after_commit')") == [(None, None)]


def test_a_database_default_that_turns_standard_strings_off_does_not_reach_the_first_step(db, tmp_path):
    sql_dir = tmp_path / "sql"
    # Read with standard strings on (as the lexer does): one SELECT of a string, then a CREATE.
    write_migration(sql_dir, "031_x.sql", "SELECT '\\''; COMMIT; -- ';\nCREATE TABLE app.after_commit (id int);\n",
                    "SELECT 1;\n")
    db.execute(f"ALTER ROLE postgres IN DATABASE {db.name} SET standard_conforming_strings = off")
    try:
        with db.connect() as conn:
            done = runner.apply(conn, discover(sql_dir), OPTIONS)
    finally:
        db.execute(f"ALTER ROLE postgres IN DATABASE {db.name} RESET standard_conforming_strings")
    assert [o.id for o in done] == ["031"]
    assert db.execute("SELECT to_regclass('app.after_commit')") == [("app.after_commit",)]


# --- what a step may do to the session (attack review, 2026-12-07) ------------------------------

HIDDEN_COMMIT = ("SELECT '\\' AS a, '\n; COMMIT; CREATE TABLE app.after_commit AS SELECT "
                 "current_setting('lock_timeout') AS lt; -- ' AS b;\n")


@pytest.mark.parametrize("turn_off", [
    # a transaction=false step, then the hidden COMMIT in the next step of the same migration
    "-- appdb:step off transaction=false\nSET standard_conforming_strings = off;\n-- appdb:step hide\n",
    # a transactional step that turns it off for the session, hidden behind a local 'on'
    "SELECT set_config('standard_conforming_strings', 'off', false), "
    "set_config('standard_conforming_strings', 'on', true);\n-- appdb:step hide\n",
])
def test_a_step_cannot_turn_off_standard_conforming_strings_to_hide_a_commit(db, tmp_path, turn_off):
    """The server reads every step as the lexer did: with standard_conforming_strings on."""
    sql_dir = copy_sql(tmp_path)
    add_migration(sql_dir, "031_turn_off.sql", turn_off + "CREATE TABLE app.before (i int);\n" + HIDDEN_COMMIT)
    result = db.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 1, result.stderr
    assert "(step hide" in result.stderr and "syntax error" in result.stderr, result.stderr  # as the lexer read it
    assert db.execute("SELECT to_regclass('app.after_commit'), to_regclass('app.before')") == [(None, None)]
    assert states(db, sql_dir)["031"] == "pending"


def test_the_next_migration_is_read_with_standard_conforming_strings_on_too(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    add_migration(sql_dir, "031_turn_off.sql", "-- appdb:step off transaction=false\n"
                                                 "SELECT set_config('standard_conforming_strings', 'off', false);\n")
    add_migration(sql_dir, "032_hide.sql", HIDDEN_COMMIT)
    result = db.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 1 and "032" in result.stderr and "syntax error" in result.stderr, result.stderr
    assert db.execute("SELECT to_regclass('app.after_commit')") == [(None,)]
    assert states(db, sql_dir)["032"] == "pending"


SESSION_031 = ("SET search_path = app;\nCREATE TABLE IF NOT EXISTS app.a (i int);\n"
               "CREATE TEMP TABLE audit_note (i int);\nPREPARE noted AS SELECT 1;\n")
SESSION_032 = ("CREATE TABLE where_am_i (i int);\nCREATE TABLE IF NOT EXISTS public.audit_note (i int);\n"
               "INSERT INTO audit_note VALUES (1);\nPREPARE noted AS SELECT 2;\n")


@pytest.mark.parametrize("split", [False, True])
def test_what_a_migration_leaves_in_its_session_does_not_reach_the_next(db, tmp_path, split):
    """One apply, or one migration per apply: the same files build the same schema (a SET, a
    temporary table that would take the next one's INSERT, a prepared statement's name)."""
    sql_dir = copy_sql(tmp_path)
    if split:  # each migration in an apply of its own
        assert db.run_cli("apply", sql_dir=sql_dir).returncode == 0
        add_migration(sql_dir, "031_session.sql", SESSION_031)
        assert db.run_cli("apply", sql_dir=sql_dir).returncode == 0
        add_migration(sql_dir, "032_where.sql", SESSION_032)
        result = db.run_cli("apply", sql_dir=sql_dir)
    else:
        add_migration(sql_dir, "031_session.sql", SESSION_031)
        add_migration(sql_dir, "032_where.sql", SESSION_032)
        result = db.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert db.execute("SELECT to_regclass('public.where_am_i') IS NOT NULL, to_regclass('app.where_am_i')") == [
        (True, None)]
    assert db.execute("SELECT count(*) FROM public.audit_note") == [(1,)]


@pytest.mark.parametrize("text", [
    "CREATE TABLE app.t031 (i int);\nSELECT pg_advisory_unlock_all();\n",
    "CREATE TABLE app.t031 (i int);\n-- appdb:step discard transaction=false\nDISCARD ALL;\n",
])
def test_a_step_that_lets_go_of_the_migration_lock_records_nothing_and_stops(db, tmp_path, text):
    sql_dir = copy_sql(tmp_path)
    add_migration(sql_dir, "031_unlock.sql", text)
    add_migration(sql_dir, "032_after.sql", "CREATE TABLE app.t032 (i int);\n")
    result = db.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 1
    assert "031, step " in result.stderr and "let go of the migration lock" in result.stderr
    assert "nothing was recorded" in result.stderr and len(result.stderr.splitlines()) == 1
    assert states(db, sql_dir)["031"] == "pending" and states(db, sql_dir)["032"] == "pending"
    assert db.execute("SELECT to_regclass('app.t032')") == [(None,)]


def test_a_lock_timeout_under_a_millisecond_is_one_millisecond_never_none(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    add_migration(sql_dir, "031_lt.sql", "CREATE TABLE app.lt AS SELECT current_setting('lock_timeout') AS lt;\n")
    with db.connect() as conn:
        runner.apply(conn, migrations(sql_dir), replace(OPTIONS, lock_timeout=0.0004))
    assert db.execute("SELECT lt FROM app.lt") == [("1ms",)]


@pytest.mark.parametrize("flags", [["--lock-timeout", "0.0004"], ["--lock-timeout", "nan"], ["--lock-timeout", "inf"],
                                   ["--lock-timeout", "1e308"], ["--wait", "nan"], ["--wait", "-1"]])
def test_seconds_that_would_lift_a_limit_are_a_usage_error(db, flags):
    result = db.run_cli("apply", *flags)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("appdb: error: ")


def test_an_open_cursor_or_another_session_user_does_not_reach_the_next_migration(db, tmp_path):
    """What RESET ALL leaves: a WITH HOLD cursor, LISTEN, SET SESSION AUTHORIZATION (a superuser's)."""
    from appdb.local.cluster import LOGIN, SUPERUSER

    sql_dir = copy_sql(tmp_path)
    add_migration(sql_dir, "031_leave.sql", "-- appdb:step leave transaction=false\n"
                                            "DECLARE left_open CURSOR WITH HOLD FOR SELECT 1;\n")
    add_migration(sql_dir, "032_listen.sql", "-- appdb:step listen transaction=false\nLISTEN left_listening;\n")
    add_migration(sql_dir, "033_become.sql", "-- appdb:step become transaction=false\n"
                                             f"SET SESSION AUTHORIZATION {LOGIN};\n")
    add_migration(sql_dir, "034_check.sql", f"""DO $$ BEGIN
    IF EXISTS (SELECT FROM pg_cursors WHERE name = 'left_open') THEN RAISE 'a cursor reached 034'; END IF;
    IF EXISTS (SELECT FROM pg_listening_channels()) THEN RAISE 'a LISTEN reached 034'; END IF;
    IF session_user <> '{SUPERUSER}' THEN RAISE '034 ran as %', session_user; END IF;
END $$;
CREATE TABLE app.owned (i int);
""")
    with db.admin_connect() as conn:  # only a superuser may SET SESSION AUTHORIZATION
        runner.apply(conn, migrations(SHIPPED_SQL), OPTIONS)
        # 033 records its row as the user it became: let that user write the ledger here.
        conn.execute(f"GRANT USAGE ON SCHEMA appdb TO {LOGIN}; GRANT ALL ON appdb.migrations TO {LOGIN}")
        outcomes = runner.apply(conn, migrations(sql_dir), OPTIONS)
    assert [o.id for o in outcomes][-1] == "034"
    assert db.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'app.owned'::regclass") == [
        (SUPERUSER,)]


def test_several_statements_in_a_step_outside_a_transaction_fail_saying_why_and_run_alone_once_split(db, tmp_path):
    """The server runs them as one transaction block, where CONCURRENTLY fails: the message says
    what to do, and the step before stays committed. A file of transaction-safe statements in
    such a step, applied long ago, is not refused when read (a newcomer's review, then the
    author's: refusing at load would stop every command of an existing history)."""
    sql_dir = copy_sql(tmp_path)
    add_migration(sql_dir, "031_two.sql", "-- appdb:step safe transaction=false\nSELECT 1;\nSELECT 2;\n")
    add_migration(sql_dir, "032_idx.sql", "CREATE TABLE app.t032 (i int, j int);\n-- appdb:step build transaction=false\n"
                                          "CREATE INDEX CONCURRENTLY t032_i ON app.t032 (i);\n"
                                          "CREATE INDEX CONCURRENTLY t032_j ON app.t032 (j);\n")
    result = db.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "032_idx.sql:" in result.stderr and "25001" in result.stderr
    assert "a transaction=false step holds one statement" in result.stderr
    assert states(db, sql_dir)["031"] == "applied" and states(db, sql_dir)["032"] == "pending"
