"""`apply --group`: consecutive pending migrations and their ledger rows in one transaction.

All of a group or none of it: a failure, a lock never granted, a lost migration lock or a
failed commit leaves the group's migrations unapplied, and what committed before it stays; a
lock timeout retries the group; a migration with a transaction=false step runs on its own;
each migration still starts from a fresh session; nothing is reported before its commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appdb.migrate import group as grouping
from appdb.migrate import ledger, runner
from appdb.migrate.files import discover
from tests.helpers import ROOT, SQL_DIR, copy_shipped, migrations_part, one_line_error, wait_for
from tests.helpers import SHIPPED as SHIPPED_IDS
from tests.test_faults import cli_env, ledger_ids
from tests.test_runner import SESSION_031, SESSION_032, add_migration, states

OPTIONS = runner.Options(lock_timeout=5)
SHIPPED = list(SHIPPED_IDS)


def copy_sql(tmp_path: Path) -> Path:
    """The shipped migrations in a folder of the test's own, where its 031 and later go."""
    return copy_shipped(tmp_path / "sql")
CONCURRENT = "-- appdb:step build transaction=false\nCREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON app.t031 (i);\n"


def add_migration_to(sql_dir: Path, filename: str, text: str) -> None:
    """A migration in a folder of the test's own making, its revert a no-op."""
    (sql_dir / "revert").mkdir(parents=True, exist_ok=True)
    add_migration(sql_dir, filename, text)


def shipped_then(db, tmp_path: Path, *texts: str) -> Path:
    """The shipped migrations applied (029 has a transaction=false step), then 031, 032... pending:
    031 makes app.t031 and an index, each later one runs its text."""
    sql_dir = copy_sql(tmp_path)
    assert db.run_cli("apply", sql_dir=sql_dir).returncode == 0
    add_migration(sql_dir, "031_first.sql", "CREATE TABLE app.t031 (i int);\nCREATE INDEX t031_i ON app.t031 (i);\n",
                  "DROP TABLE app.t031;\n")
    for number, text in enumerate(texts, start=32):
        add_migration(sql_dir, f"0{number}_more.sql", text)
    return sql_dir


@contextmanager
def held_table(db) -> Iterator[None]:
    """app.held, share-locked by another session for the block."""
    db.execute("CREATE TABLE IF NOT EXISTS app.held (i int)")
    with db.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE app.held IN ACCESS SHARE MODE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")


def apply_through_a_lock_timeout(db, sql_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    """`appdb apply FLAGS` while app.held is share-locked, released once apply has waited for it
    and timed out, not after a fixed time: on a busy machine the process could start after such
    a release and meet no lock timeout at all."""
    waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'app.held'::regclass"
    with held_table(db):
        process = subprocess.Popen([sys.executable, "-m", "appdb", "apply", *flags], env=cli_env(db, sql_dir),
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: db.execute(waiting) == [(1,)], timeout=60, what="apply to wait for app.held")
        wait_for(lambda: db.execute(waiting) == [(0,)], timeout=60, what="its lock timeout")
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def assert_none_of_the_group_applied(db, sql_dir: Path) -> None:
    assert {s: v for s, v in states(db, sql_dir).items() if s not in SHIPPED} == {
        m.id: "pending" for m in discover(sql_dir) if m.id not in SHIPPED}
    assert ledger_ids(db) == SHIPPED
    assert db.execute("SELECT to_regclass('app.t031')") == [(None,)]


def test_only_a_migration_of_one_transactional_step_joins_a_group(tmp_path):
    sql_dir = tmp_path / "sql"
    for name, text in [("001_a", "SELECT 1;\n"), ("002_b", "SELECT 2;\n"),
                       ("003_build", "-- appdb:step build transaction=false\nSELECT 3;\n"), ("004_c", "SELECT 4;\n"),
                       ("005_steps", "SELECT 5;\n-- appdb:step second\nSELECT 5;\n"), ("006_d", "SELECT 6;\n"),
                       ("007_e", "SELECT 7;\n")]:
        add_migration_to(sql_dir, f"{name}.sql", text)
    assert [[m.id for m in batch] for batch in grouping.groups(discover(sql_dir))] == [
        ["001", "002"], ["003"], ["004"], ["005"], ["006", "007"]]
    # The shipped ones have steps (027, 029, 030) or stand between them (028): each runs alone.
    shipped = [m for m in discover(SQL_DIR) if m.id in SHIPPED]
    assert [[m.id for m in batch] for batch in grouping.groups(shipped)] == [[i] for i in SHIPPED]
    assert grouping.groups([]) == []


def test_a_group_holds_at_most_group_max_migrations_as_its_locks_share_one_table(tmp_path):
    from dataclasses import replace

    add_migration_to(tmp_path / "sql", "001_one.sql", "SELECT 1;\n")
    [first] = discover(tmp_path / "sql")
    many = [replace(first, id=f"{n:04d}") for n in range(1, 2 * grouping.GROUP_MAX + 51)]
    assert [len(batch) for batch in grouping.groups(many)] == [grouping.GROUP_MAX, grouping.GROUP_MAX, 50]
    assert [m for batch in grouping.groups(many) for m in batch] == many


def test_every_migration_is_applied_and_reported_only_once_its_group_has_committed(db, tmp_path):
    sql_dir = shipped_then(db, tmp_path, "CREATE TABLE app.t032 (i int);\n")
    seen_committed: list[list[str]] = []

    def progress(outcome: runner.Outcome) -> None:
        seen_committed.append(ledger_ids(db))  # from another session: only what has committed

    with db.connect() as conn:
        outcomes = runner.apply(conn, discover(sql_dir), OPTIONS, progress=progress, group=True)
        entries = ledger.read(conn)

    everything = [*SHIPPED, "031", "032"]
    assert [o.id for o in outcomes] == ["031", "032"]
    assert all(o.action == "applied" for o in outcomes)
    assert seen_committed == [everything] * 2
    assert sorted(e.id for e in entries.values()) == everything
    assert db.execute("SELECT to_regclass('app.t031') IS NOT NULL, to_regclass('app.t032') IS NOT NULL") == [
        (True, True)]


def test_it_builds_the_same_schema_as_a_transaction_a_migration(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    assert db.run_cli("apply", "--group", sql_dir=sql_dir).returncode == 0
    together = migrations_part(db)
    for migration_id in reversed(SHIPPED):
        assert db.run_cli("revert", migration_id, "--allow-data-loss", sql_dir=sql_dir).returncode == 0
    assert db.run_cli("apply", sql_dir=sql_dir).returncode == 0
    assert migrations_part(db) == together


def test_a_failing_migration_applies_none_of_its_group_and_names_its_file_and_line(db, tmp_path):
    sql_dir = shipped_then(db, tmp_path, "CREATE TABLE app.t032 (i int);\nSELECT nothing FROM app.t031;\n")
    result = db.run_cli("apply", "--group", "--json", sql_dir=sql_dir)

    line = one_line_error(result)
    assert result.returncode == 1
    assert "032_more.sql:2: column \"nothing\" does not exist" in line
    assert "none of 031 to 032 (one transaction, --group) was applied" in line
    assert json.loads(result.stdout) == {"dry_run": False, "complete": False, "outcomes": [], "uncertain": []}
    assert_none_of_the_group_applied(db, sql_dir)


def test_a_migration_that_drops_a_table_locks_it_first_in_its_group_and_errors_keep_their_lines(db, tmp_path):
    """A DROP TABLE's lock comes before the migration's first statement (steps.lock_first), in a
    group too: a table dropped by the migration before is passed over, and the failing file is
    still the migration's own."""
    sql_dir = shipped_then(db, tmp_path, "DROP TABLE app.t031;\n", "CREATE TABLE app.t033 (i int);\n\nDROP TABLE app.t034;\n")
    result = db.run_cli("apply", "--group", sql_dir=sql_dir)
    assert result.returncode == 1
    # A missing table's error has no position: the line is the step's first, as without --group.
    assert '033_more.sql:1: table "t034" does not exist' in one_line_error(result), result.stderr
    assert_none_of_the_group_applied(db, sql_dir)
    (sql_dir / "033_more.sql").write_text("CREATE TABLE app.t033 (i int);\n\nDROP TABLE IF EXISTS app.t034;\n")
    done = db.run_cli("apply", "--group", sql_dir=sql_dir)
    assert done.returncode == 0, done.stderr
    assert db.execute("SELECT to_regclass('app.t031'), to_regclass('app.t033') IS NOT NULL") == [(None, True)]


def test_what_committed_before_the_failing_group_stays_and_is_reported(db, tmp_path):
    sql_dir = shipped_then(db, tmp_path, CONCURRENT.format(name="t031_j"), "SELECT 1;\n", "SELECT 1/0;\n")
    result = db.run_cli("apply", "--group", "--json", sql_dir=sql_dir)

    line = one_line_error(result)
    assert result.returncode == 1 and "034_more.sql:1: division by zero" in line and "none of 033 to 034" in line
    assert [o["id"] for o in json.loads(result.stdout)["outcomes"]] == ["031", "032"]
    assert ledger_ids(db) == [*SHIPPED, "031", "032"]
    assert db.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'app.t031_j'::regclass") == [(True,)]


def test_a_lock_timeout_anywhere_retries_the_group_and_each_migration_runs_once(db, tmp_path):
    sql_dir = shipped_then(db, tmp_path, "CREATE TABLE app.t032 (i int);\nLOCK TABLE app.held IN ACCESS EXCLUSIVE MODE;\n")
    result = apply_through_a_lock_timeout(db, sql_dir, "--group", "--lock-timeout", "0.2", "--lock-retries", "20", "-v")

    assert result.returncode == 0, result.stderr
    assert "032, step main: lock timeout, retry" in result.stderr
    assert ledger_ids(db) == [*SHIPPED, "031", "032"]
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["031 first", "032 more"]
    assert db.execute("SELECT count(*) FROM pg_index WHERE indexrelid = 'app.t031_i'::regclass") == [(1,)]


def test_a_lock_never_granted_gives_up_with_none_of_the_group_applied(db, tmp_path):
    sql_dir = shipped_then(db, tmp_path, "LOCK TABLE app.held IN ACCESS EXCLUSIVE MODE;\n")
    with held_table(db):
        result = db.run_cli("apply", "--group", "--lock-timeout", "0.1", "--lock-retries", "2", sql_dir=sql_dir)

    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and line.startswith("appdb: error: 032, step main: lock timeout"), result.stderr
    assert line.endswith("none of 031 to 032 (one transaction, --group) was applied")
    assert_none_of_the_group_applied(db, sql_dir)


def test_what_a_migration_leaves_in_its_session_does_not_reach_the_next_in_one_transaction(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    add_migration(sql_dir, "031_session.sql", SESSION_031)
    add_migration(sql_dir, "032_where.sql", SESSION_032)
    result = db.run_cli("apply", "--group", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert db.execute("SELECT to_regclass('public.where_am_i') IS NOT NULL, to_regclass('app.where_am_i')") == [
        (True, None)]
    assert db.execute("SELECT count(*) FROM public.audit_note") == [(1,)]


@pytest.mark.parametrize("text, message", [
    ("CREATE TABLE app.t032 (i int);\nSELECT pg_advisory_unlock_all();\n",
     "a migration of 031 to 032 let go of the migration lock"),
    ("CREATE TABLE app.t032 (i int);\nSET LOCAL lock_timeout = 0;\n", "032, step main changed the runner's settings"),
    ("CREATE TABLE app.t032 (i int);\nRESET ALL;\n", "032, step main changed the runner's settings"),
])
def test_a_migration_that_lets_go_of_the_lock_or_the_settings_applies_none_of_its_group(db, tmp_path, text, message):
    sql_dir = shipped_then(db, tmp_path, text)
    result = db.run_cli("apply", "--group", sql_dir=sql_dir)
    line = one_line_error(result)
    assert result.returncode == 1 and message in line
    assert_none_of_the_group_applied(db, sql_dir)


def test_a_deferred_check_that_fails_at_the_commit_applies_none_of_the_group(db, tmp_path):
    """032 makes the deferred check (and, saying DEFERRABLE, runs alone); 033 breaks it, and the
    group 033 to 034 fails at its commit, naming the constraint."""
    sql_dir = shipped_then(db, tmp_path, """CREATE TABLE app.parent (id int PRIMARY KEY);
CREATE TABLE app.child (parent_id int REFERENCES app.parent DEFERRABLE INITIALLY DEFERRED);
""", "INSERT INTO app.child VALUES (1);\n", "SELECT 1;\n")
    result = db.run_cli("apply", "--group", sql_dir=sql_dir)
    line = one_line_error(result)
    assert result.returncode == 1
    assert "033 to 034 failed at its commit" in line and "child_parent_id_fkey" in line and "23503" in line
    assert "none of them was applied" in line
    assert ledger_ids(db) == [*SHIPPED, "031", "032"]
    assert db.execute("SELECT count(*) FROM app.child") == [(0,)]


def test_three_runs_at_once_apply_each_migration_once(db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    add_migration(sql_dir, "031_slow.sql", "SELECT pg_sleep(1);\nCREATE TABLE app.t031 (i int);\n")
    runs = [subprocess.Popen([sys.executable, "-m", "appdb", "apply", "--group"], env=cli_env(db, sql_dir), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    wait_for(lambda: all(run.poll() is not None for run in runs), timeout=60, what="the three runs to end")
    outputs = [run.communicate() for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    applied = [line for out, _ in outputs for line in out.splitlines() if ": applied in " in line]
    assert len(applied) == 5 and ledger_ids(db) == [*SHIPPED, "031"]


def test_without_group_each_migration_still_commits_on_its_own(db, tmp_path):
    """The default is unchanged: a failure in 032 leaves 031 applied."""
    sql_dir = shipped_then(db, tmp_path, "SELECT 1/0;\n")
    result = db.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 1 and "none of" not in result.stderr
    assert ledger_ids(db) == [*SHIPPED, "031"]


def test_the_next_migration_of_a_group_is_read_with_standard_conforming_strings_on(db, tmp_path):
    """Its fresh session shares its query: the text is still parsed with standard strings on, as
    the lexer read it, whatever the migration before did to the session behind a local 'on'."""
    from tests.test_runner import HIDDEN_COMMIT

    turn_off = ("SELECT set_config('standard_conforming_strings', 'off', false), "
                "set_config('standard_conforming_strings', 'on', true);\n")
    sql_dir = shipped_then(db, tmp_path, turn_off, HIDDEN_COMMIT)
    result = db.run_cli("apply", "--group", sql_dir=sql_dir)
    line = one_line_error(result)
    assert result.returncode == 1 and "033_more.sql" in line and "syntax error" in line, line
    assert "none of 031 to 033" in line
    assert db.execute("SELECT to_regclass('app.after_commit')") == [(None,)]
    assert_none_of_the_group_applied(db, sql_dir)


# --- attack review of --group (2026-12-07) ---------------------------------------------------


def test_a_run_let_in_by_a_lost_lock_keeps_its_work_and_this_one_says_why_it_stopped(db, tmp_path):
    """031 lets go of the lock and waits (only while app.marker is missing): another run takes the
    lock meanwhile and applies 031 and 032. The group must notice before it writes its rows."""
    sql_dir = shipped_then(db, tmp_path, "CREATE TABLE IF NOT EXISTS app.t032 (i int);\n")
    (sql_dir / "031_first.sql").write_text(
        "SELECT pg_advisory_unlock_all() WHERE to_regclass('app.marker') IS NULL;\n"
        "SELECT pg_sleep(3) WHERE to_regclass('app.marker') IS NULL;\n"
        "CREATE TABLE IF NOT EXISTS app.t031 (i int);\n")
    first = subprocess.Popen([sys.executable, "-m", "appdb", "apply", "--group"], env=cli_env(db, sql_dir), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = "
                                "'appdb' AND query LIKE '%%pg_sleep%%'", (db.name,))[0][0], what="031 to wait")
    db.execute("CREATE TABLE app.marker ()")
    second = db.run_cli("apply", sql_dir=sql_dir)
    out, err = first.communicate(timeout=60)

    assert second.returncode == 0, second.stderr
    assert first.returncode == 1 and "let go of the migration lock" in err and "none of 031 to 032" in err, err
    assert out == ""
    assert ledger_ids(db) == [*SHIPPED, "031", "032"]


def test_a_connection_lost_during_the_commit_says_the_outcome_is_unknown(db, tmp_path):
    """A deferred trigger (made by 032, which runs alone) ends its own session at the commit of
    the group 033 to 034: the answer never comes."""
    sql_dir = shipped_then(db, tmp_path, """CREATE FUNCTION app.goodbye() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;
CREATE TABLE app.t032 (i int);
CREATE CONSTRAINT TRIGGER bye AFTER INSERT ON app.t032 DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION app.goodbye();
""", "INSERT INTO app.t032 VALUES (1);\n", "SELECT 1;\n")
    result = db.run_cli("apply", "--group", sql_dir=sql_dir)
    line = one_line_error(result)
    assert result.returncode == 1
    assert "connection to the server was lost during the commit of 033 to 034" in line and "appdb status" in line
    assert "SQLSTATE None" not in line
    assert ledger_ids(db) == [*SHIPPED, "031", "032"]  # here it did not commit; status is what tells


def test_a_cursor_left_open_over_a_temporary_table_does_not_fail_the_next_migration(db, tmp_path):
    sql_dir = shipped_then(db, tmp_path, "CREATE TEMP TABLE tt (i int);\nDECLARE c CURSOR FOR SELECT * FROM tt;\n",
                           "CREATE TABLE app.t033 (i int);\n")
    result = db.run_cli("apply", "--group", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert ledger_ids(db) == [*SHIPPED, "031", "032", "033"]


def test_a_group_ends_after_a_migration_whose_effect_lasts_until_its_commit(db, tmp_path):
    """An enum's new value cannot be used before its commit, and no RESET undoes SET CONSTRAINTS:
    each such migration ends its group, so the next sees it as it would without --group."""
    db.execute("CREATE TYPE app.mood AS ENUM ('a')")
    sql_dir = shipped_then(
        db, tmp_path,
        "ALTER TYPE app.mood ADD VALUE 'b';\n",
        "CREATE TABLE app.moods (m app.mood);\nINSERT INTO app.moods VALUES ('b');\n",
        "CREATE TABLE app.parent (id int PRIMARY KEY);\n"
        "CREATE TABLE app.child (parent_id int REFERENCES app.parent DEFERRABLE INITIALLY DEFERRED);\n",
        "SET CONSTRAINTS ALL IMMEDIATE;\n",
        "INSERT INTO app.child VALUES (1);\nINSERT INTO app.parent VALUES (1);\n")
    pending = [m for m in discover(sql_dir) if m.id not in SHIPPED]
    assert [[m.id for m in batch] for batch in grouping.groups(pending)] == [[i] for i in ("031", "032", "033", "034",
                                                                                          "035", "036")]
    result = db.run_cli("apply", "--group", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert ledger_ids(db) == [*SHIPPED, "031", "032", "033", "034", "035", "036"]


@pytest.mark.parametrize("text, ends", [
    ("ALTER TYPE app.mood ADD VALUE IF NOT EXISTS 'c' AFTER 'a';\n", True),
    ("alter type \"app\".mood add value 'c';\n", True),
    ("ALTER TYPE app.mood ADD /* a comment */ VALUE 'c';\n", True),
    ("ALTER TYPE app.mood ADD\n-- a comment\nVALUE 'c';\n", True),
    ("SET CONSTRAINTS app.child_parent_id_fkey IMMEDIATE;\n", True),
    # In a DO body or an EXECUTE string the lexer sees no statement: the words count anywhere.
    ("DO $$ BEGIN IF NOT EXISTS (SELECT) THEN ALTER TYPE app.mood ADD VALUE 'b'; END IF; END $$;\n", True),
    ("DO $$ BEGIN EXECUTE 'ALTER TYPE app.mood ADD VALUE ''b'''; END $$;\n", True),
    ("DO $$ BEGIN SET CONSTRAINTS ALL IMMEDIATE; END $$;\n", True),
    ("CREATE TABLE app.c (p int REFERENCES app.p DEFERRABLE INITIALLY DEFERRED);\n", True),
    ("SELECT 'SET CONSTRAINTS ALL IMMEDIATE';\n", True),  # taken for one: it only commits alone
    ("ALTER TYPE app.mood RENAME VALUE 'a' TO 'b';\n", False),
    ("INSERT INTO app.t VALUES (1), (2);\nALTER TABLE app.t ADD CONSTRAINT t_i CHECK (i > 0);\n", False),
])
def test_which_migrations_need_their_commit(tmp_path, text, ends):
    sql_dir = tmp_path / "sql"
    add_migration_to(sql_dir, "031_x.sql", text)
    assert discover(sql_dir)[0].needs_its_commit() is ends


def test_a_retried_group_starts_from_a_fresh_session(db, tmp_path):
    """A PREPARE survives the rollback of a lock timeout: the retry must not find it."""
    sql_dir = copy_sql(tmp_path)
    assert db.run_cli("apply", sql_dir=sql_dir).returncode == 0
    add_migration(sql_dir, "031_prepare.sql", "-- appdb:step a\nPREPARE p AS SELECT 1;\n"
                                              "-- appdb:step b\nLOCK TABLE app.held IN ACCESS EXCLUSIVE MODE;\n")
    result = apply_through_a_lock_timeout(db, sql_dir, "--group", "--lock-timeout", "0.2", "--lock-retries", "20")
    assert result.returncode == 0, result.stderr
    assert ledger_ids(db) == [*SHIPPED, "031"]


# --- second attack review of --group (2026-12-07) ---------------------------------------------

# Read in UTF-8, as the lexer reads it: one SELECT of two strings. Sent in EUC_JP the yen sign is
# the byte 0x5C, a backslash inside E'...': the string runs on, and the COMMIT after it runs.
YEN_HIDDEN_COMMIT = ("SELECT E'\u00a5' AS a, '\n; COMMIT; CREATE TABLE app.after_commit AS SELECT "
                     "current_setting('lock_timeout') AS lt; -- ' AS b;\n")


@pytest.mark.parametrize("group", [True, False])
def test_a_step_cannot_change_the_encoding_the_next_text_is_sent_in(db, tmp_path, group):
    sql_dir = shipped_then(db, tmp_path, "SET client_encoding = 'EUC_JP';\n-- appdb:step hide\n" + YEN_HIDDEN_COMMIT,
                           "SET client_encoding = 'EUC_JP';\n", YEN_HIDDEN_COMMIT)
    result = db.run_cli("apply", *(["--group"] if group else []), sql_dir=sql_dir)
    line = one_line_error(result)
    assert result.returncode == 1 and "client_encoding is 'EUC_JP', not 'UTF8'" in line, line
    assert db.execute("SELECT to_regclass('app.after_commit')") == [(None,)]
    assert ledger_ids(db) == [*SHIPPED, "031"]  # 031 commits alone: 032 follows it with steps


def test_an_encoding_changed_outside_a_transaction_is_reset_before_the_next_step(db, tmp_path):
    """The next step goes as UTF-8, and the server reads it as the lexer did: not one SELECT
    (a syntax error) rather than a COMMIT."""
    sql_dir = shipped_then(db, tmp_path, "-- appdb:step set transaction=false\nSET client_encoding = 'EUC_JP';\n"
                                         "-- appdb:step hide\n" + YEN_HIDDEN_COMMIT)
    result = db.run_cli("apply", "--group", sql_dir=sql_dir)
    line = one_line_error(result)
    assert result.returncode == 1 and "032_more.sql:5: syntax error" in line and "(step hide" in line, line
    assert db.execute("SELECT to_regclass('app.after_commit')") == [(None,)]
    assert ledger_ids(db) == [*SHIPPED, "031"]


def test_a_migration_whose_steps_need_their_own_commits_runs_alone(db, tmp_path):
    """Steps are how a file asks for a commit between its parts: an enum's new value used by the next step."""
    db.execute("CREATE TYPE app.mood AS ENUM ('a')")
    sql_dir = shipped_then(db, tmp_path, "-- appdb:step add\nALTER TYPE app.mood ADD VALUE 'b';\n-- appdb:step use\n"
                                         "CREATE TABLE app.moods (m app.mood);\nINSERT INTO app.moods VALUES ('b');\n",
                           "SELECT 1;\n")
    result = db.run_cli("apply", "--group", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    assert ledger_ids(db) == [*SHIPPED, "031", "032", "033"]


@pytest.mark.parametrize("held, wanted", [("0031", "031"), ("031", "031")])
def test_a_version_the_ledger_holds_already_is_refused_naming_its_row(db, tmp_path, held, wanted):
    from appdb.errors import Refused
    from appdb.migrate.files import find

    sql_dir = shipped_then(db, tmp_path, "SELECT 1;\n")
    (sql_dir / "031_first.sql").rename(sql_dir / f"{wanted}_first.sql")
    (sql_dir / "revert" / "031_first.sql").rename(sql_dir / "revert" / f"{wanted}_first.sql")
    migration = find(discover(sql_dir), wanted)
    with db.connect() as conn:
        ledger.record(conn, migration, 1)
        conn.execute("UPDATE appdb.migrations SET id = %s WHERE id = %s", (held, wanted))
        with pytest.raises(Refused, match=f"{wanted} was not recorded: the ledger already holds version 31 as {held}"):
            ledger.record_all(conn, [(find(discover(sql_dir), "032"), 1), (migration, 1)])
    assert ledger_ids(db) == sorted([*SHIPPED, held])


def test_ctrl_c_in_a_group_reports_in_json_what_committed_before_it(db, tmp_path):
    """A script reading --json learns what was applied, after Ctrl-C as after a failure (a newcomer's review)."""
    import signal

    from tests.test_faults import start_cli

    sql_dir = shipped_then(db, tmp_path, "SELECT 1;\n-- appdb:step two\nSELECT 2;\n", "SELECT pg_sleep(30);\n",
                           "SELECT 4;\n")
    run = start_cli(db, "apply", "--group", "--json", "--sql-dir", str(sql_dir))
    wait_for(lambda: db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = "
                                "'appdb' AND query LIKE '%%pg_sleep%%'", (db.name,))[0][0], what="the group to run")
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert "interrupted" in err.strip().splitlines()[-1]
    report = json.loads(out)
    assert report["complete"] is False and [o["id"] for o in report["outcomes"]] == ["031", "032"]
    assert ledger_ids(db) == [*SHIPPED, "031", "032"]


def test_a_throwaway_database_is_built_in_utf8_whatever_pgclientencoding_says(db, tmp_path):
    """schema --write builds the migrations on a throwaway database (a third attack review): in
    EUC_JP the yen sign was a backslash there, and the hidden COMMIT ran."""
    sql_dir = copy_sql(tmp_path)
    add_migration(sql_dir, "032_x.sql", YEN_HIDDEN_COMMIT)
    result = db.run_cli("schema", "--write", sql_dir=sql_dir, env={"PGCLIENTENCODING": "EUC_JP"})
    # Read as the lexer read it: not one SELECT but a syntax error, and no COMMIT.
    assert result.returncode == 1 and "syntax error" in one_line_error(result), result.stderr


def test_a_step_that_turns_the_session_to_sql_ascii_is_refused_in_words_not_bytes(db, tmp_path):
    sql_dir = shipped_then(db, tmp_path, "SET client_encoding = 'SQL_ASCII';\n")
    line = one_line_error(db.run_cli("apply", sql_dir=sql_dir))
    assert "client_encoding is 'SQL_ASCII', not 'UTF8'" in line and "b'" not in line


def test_a_dry_run_with_group_says_which_transaction_each_migration_would_commit_in(db, tmp_path):
    """The newcomer's question: where do the groups begin? Each line names its group, or says
    the migration would run alone (a transaction=false step, several steps, a group of one)."""
    sql_dir = shipped_then(db, tmp_path, "SELECT 2;\n", CONCURRENT.format(name="t031_c"), "SELECT 4;\n",
                           "SELECT 5;\n", "SELECT 6;\n", "-- not deferrable\nSELECT 7;\n", "SELECT 8;\n",
                           "-- appdb:step one\nSELECT 9;\n-- appdb:step two\nSELECT 9;\n")
    before = db.snapshot()
    env = {"APPDB_SQL_DIR": str(sql_dir)}
    planned = db.run_cli("apply", "--dry-run", "--group", env=env)
    assert planned.returncode == 0, planned.stderr
    assert [line.rsplit(" [", 1)[-1] for line in planned.stdout.splitlines()] == [
        "group 031-032]", "group 031-032]", "alone: a transaction=false step]", *["group 034-036]"] * 3,
        "alone: its text says ADD VALUE, SET CONSTRAINTS or DEFERR... (a comment counts)]", "alone]",
        "alone: 2 steps]"]
    as_json = json.loads(db.run_cli("apply", "--dry-run", "--group", "--json", env=env).stdout)
    assert [o["group"] for o in as_json["outcomes"]] == ["031-032", "031-032", "alone", *["034-036"] * 3,
                                                        "alone", "alone", "alone"]
    assert [o.get("alone_because") for o in as_json["outcomes"]][7:] == [None, "2 steps"]
    # Without --group, as before: no group named.
    plain = json.loads(db.run_cli("apply", "--dry-run", "--json", env=env).stdout)
    assert all("group" not in o for o in plain["outcomes"])
    assert "[" not in db.run_cli("apply", "--dry-run", env=env).stdout
    assert db.snapshot() == before


# --- a group's migrations in one query (issue 20, eighth round) ---------------------------------


def five_then(db, tmp_path: Path, failing: int | None = None, text: str = "SELECT 1;\nSELECT 1/0;\n") -> Path:
    """The shipped migrations applied; 031 to 035 pending, each making a table, and the one at
    index ``failing`` (0 for 031) running ``text`` instead."""
    sql_dir = shipped_then(db, tmp_path)
    (sql_dir / "031_first.sql").unlink()
    (sql_dir / "revert" / "031_first.sql").unlink()
    for index in range(5):
        forward = text if index == failing else f"CREATE TABLE app.q{index} (i int);\nCREATE INDEX ON app.q{index} (i);\n"
        add_migration(sql_dir, f"03{index + 1}_more.sql", forward)
    return sql_dir


def queries_sent(monkeypatch) -> list[str]:
    """The texts the group's queries carry, as they are sent."""
    sent: list[str] = []
    execute = grouping._KeepsResults.execute

    def counted(self, query, *args, **kwargs):
        sent.append(query)
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(grouping._KeepsResults, "execute", counted)
    return sent


@pytest.mark.parametrize("per_query", [grouping.QUERY_MAX_CHARS, 120, 0])
def test_a_group_goes_in_as_few_queries_as_its_size_allows_and_builds_the_same(db, tmp_path, monkeypatch, per_query):
    sql_dir = five_then(db, tmp_path)
    monkeypatch.setattr(grouping, "QUERY_MAX_CHARS", per_query)
    sent = queries_sent(monkeypatch)
    with db.connect() as conn:
        outcomes = runner.apply(conn, discover(sql_dir), OPTIONS, group=True)
    assert [o.id for o in outcomes] == ["031", "032", "033", "034", "035"]
    assert len(sent) == {grouping.QUERY_MAX_CHARS: 1, 120: 3, 0: 5}[per_query]
    assert all(o.seconds > 0 for o in outcomes)
    assert ledger_ids(db) == [*SHIPPED, "031", "032", "033", "034", "035"]
    assert db.execute("SELECT count(*) FROM pg_indexes WHERE tablename ~ '^q[0-4]$'") == [(5,)]


@pytest.mark.parametrize("per_query", [grouping.QUERY_MAX_CHARS, 120])
@pytest.mark.parametrize("failing", [0, 2, 4])
@pytest.mark.parametrize("text, line, message", [
    ("SELECT 1;\nSELECT 1/0;\n", 1, "division by zero"),  # no position (the step's line): by the rows
    ("SELECT 1;\n\nSELECT nothing FROM app.memberships;\n", 3, 'column "nothing" does not exist'),  # by its position
    ("SELECT 1;\nSELEKT 2;\n", 2, 'syntax error at or near "SELEKT"'),  # the query fails before anything runs
])
def test_a_failure_in_a_group_query_names_its_migration_and_line(db, tmp_path, monkeypatch, per_query, failing, text,
                                                                 line, message):
    sql_dir = five_then(db, tmp_path, failing, text)
    monkeypatch.setattr(grouping, "QUERY_MAX_CHARS", per_query)
    with db.connect() as conn, pytest.raises(runner.MigrationError) as raised:
        runner.apply(conn, discover(sql_dir), OPTIONS, group=True)
    assert str(raised.value).startswith(f"{sql_dir / f'03{failing + 1}_more.sql'}:{line}: {message}")
    assert str(raised.value).endswith("none of 031 to 035 (one transaction, --group) was applied")
    assert ledger_ids(db) == SHIPPED
    assert db.execute("SELECT count(*) FROM pg_tables WHERE tablename ~ '^q[0-4]$'") == [(0,)]


def test_a_lock_timeout_in_a_group_query_names_the_migration_that_waited(db, tmp_path):
    sql_dir = five_then(db, tmp_path, 2, "LOCK TABLE app.held IN ACCESS EXCLUSIVE MODE;\n")
    options = runner.Options(lock_timeout=0.1, lock_retries=0)
    with held_table(db), db.connect() as conn, pytest.raises(runner.LockTimeout) as raised:
        runner.apply(conn, discover(sql_dir), options, group=True)
    assert str(raised.value).startswith("033, step main: lock timeout: could not get a lock within 0.1 s on any of 1")
    assert ledger_ids(db) == SHIPPED


def test_without_psycopg_s_results_a_failed_group_is_sent_again_one_a_query_to_say_which(db, tmp_path, monkeypatch):
    """Should a psycopg upgrade stop keeping the results before an error, the group is not
    blamed on a wrong migration: it is rolled back and sent again a migration a query."""
    import psycopg

    sql_dir = five_then(db, tmp_path, 3)
    monkeypatch.setattr(grouping._KeepsResults, "_check_results", psycopg.Cursor._check_results)
    sent = queries_sent(monkeypatch)
    with db.connect() as conn, pytest.raises(runner.MigrationError, match=r"034_more.sql:1: division by zero"):
        runner.apply(conn, discover(sql_dir), OPTIONS, group=True)
    assert len(sent) == 1 + 4  # the group, then 031 to 034 one a query
    assert ledger_ids(db) == SHIPPED


def test_a_step_cannot_pass_for_the_group_query_s_own_rows(db, tmp_path):
    """The rows that carry each migration's settings are named at random for each run; a step
    that returns one by that name (it could read it in current_query()) is refused, not counted."""
    sql_dir = five_then(db, tmp_path, 1, f'SET LOCAL lock_timeout = 0;\nSELECT 1 AS "{grouping._MARK} read";\n')
    with db.connect() as conn, pytest.raises(runner.MigrationError, match="returned a result named as appdb's own"):
        runner.apply(conn, discover(sql_dir), OPTIONS, group=True)
    assert ledger_ids(db) == SHIPPED


def test_each_migration_of_a_group_query_is_timed_on_its_own(db, tmp_path):
    sql_dir = five_then(db, tmp_path, 2, "SELECT pg_sleep(0.3);\n")
    with db.connect() as conn:
        outcomes = runner.apply(conn, discover(sql_dir), OPTIONS, group=True)
    assert [o.seconds >= 0.3 for o in outcomes] == [False, False, True, False, False]
    assert db.execute("SELECT id FROM appdb.migrations WHERE duration_ms >= 300") == [("033",)]


# --- an attack review of the one query (2026-12-07) ---------------------------------------------


@pytest.mark.parametrize("where", [0, 2, 4])
def test_a_migration_that_sets_another_datestyle_does_not_trouble_the_group_s_clock(db, tmp_path, where):
    """Each migration's time is read as numeric seconds: a timestamp's text follows DateStyle,
    which psycopg could not read ('German'), and the group failed with a false message."""
    sql_dir = five_then(db, tmp_path, where, "SET DateStyle = 'German';\nSET TimeZone = 'Asia/Kolkata';\n")
    with db.connect() as conn:
        outcomes = runner.apply(conn, discover(sql_dir), OPTIONS, group=True)
    assert len(outcomes) == 5 and all(0 <= o.seconds < 5 for o in outcomes)
    assert ledger_ids(db) == [*SHIPPED, "031", "032", "033", "034", "035"]


def test_a_begin_atomic_left_open_is_blamed_on_its_own_file(db, tmp_path, monkeypatch):
    """Its body takes in the text of every migration after it, and the server's position then
    points at the query's end: a query that fails before any step ran is sent again one a query."""
    sql_dir = five_then(db, tmp_path, 1, "CREATE FUNCTION app.f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n")
    sent = queries_sent(monkeypatch)
    with db.connect() as conn, pytest.raises(runner.MigrationError) as raised:
        runner.apply(conn, discover(sql_dir), OPTIONS, group=True)
    assert str(raised.value).startswith(f"{sql_dir / '032_more.sql'}:4: syntax error at end of input")
    assert len(sent) == 1 + 2 and ledger_ids(db) == SHIPPED


def database_in(db, encoding: str):
    """A database of the test's cluster in ``encoding``, owned by the login."""
    from psycopg import sql

    from appdb.local.cluster import SUPERUSER
    from tests.helpers import Database

    name = f"{db.name}_{encoding.lower()}"
    with db.cluster.connect(user=SUPERUSER) as conn:
        conn.autocommit = True
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C' OWNER {}")
                     .format(sql.Identifier(name), sql.Literal(encoding), sql.Identifier(db.execute(
                         "SELECT current_user")[0][0])))
    return Database(db.cluster, name)


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("encoding", ["SQL_ASCII", "UTF8"])
def test_the_line_of_an_error_is_right_where_the_database_counts_bytes(db, tmp_path, encoding, group):
    """A SQL_ASCII database gives an error's position in bytes, not characters."""
    sql_dir = tmp_path / "own"
    add_migration_to(sql_dir, "001_a.sql", "-- " + "é" * 2000 + "\nCREATE TABLE public.a (i int);\n")
    add_migration_to(sql_dir, "002_b.sql", "SELECT '" + "ü" * 100 + "';\n\nSELECT nothing FROM public.a;\n")
    add_migration_to(sql_dir, "003_c.sql", "SELECT 3;\n")
    with database_in(db, encoding).connect(client_encoding="UTF8") as conn, \
            pytest.raises(runner.MigrationError) as raised:
        runner.apply(conn, discover(sql_dir), OPTIONS, group=group)
    assert str(raised.value).startswith(f"{sql_dir / '002_b.sql'}:3: column \"nothing\" does not exist")


def test_a_character_the_database_cannot_hold_is_blamed_on_its_own_file(db, tmp_path):
    """The query fails on arrival, with no position and no row: sent again one a query."""
    sql_dir = tmp_path / "own"
    add_migration_to(sql_dir, "001_a.sql", "CREATE TABLE public.a (i int);\n")
    add_migration_to(sql_dir, "002_b.sql", "SELECT 2;\n")
    add_migration_to(sql_dir, "003_c.sql", "SELECT 1;\nSELECT '€';\n")
    with database_in(db, "LATIN1").connect(client_encoding="UTF8") as conn, \
            pytest.raises(runner.MigrationError) as raised:
        runner.apply(conn, discover(sql_dir), OPTIONS, group=True)
    assert str(raised.value).startswith(f"{sql_dir / '003_c.sql'}:1: character with byte sequence")


def test_one_a_query_means_one_a_query_even_for_empty_migrations(tmp_path):
    """Else the fallback would send two empty migrations together, and could send them so for ever."""
    sql_dir = tmp_path / "own"
    add_migration_to(sql_dir, "001_a.sql", "")
    add_migration_to(sql_dir, "002_b.sql", "-- nothing\n")
    add_migration_to(sql_dir, "003_c.sql", "SELECT 3;\n")
    batch = discover(sql_dir)
    assert [[m.id for m in chunk] for chunk in grouping._chunks(batch, 0)] == [["001"], ["002"], ["003"]]
    assert [[m.id for m in chunk] for chunk in grouping._chunks(batch, 100)] == [["001", "002", "003"]]
