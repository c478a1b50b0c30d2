"""The migration file model: naming, steps, checksums, and squawk's verdict on sql/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from appdb.errors import ConfigError
from appdb.migrate.files import checksum, discover, find, parse_steps
from tests.helpers import ROOT, SQL_DIR, write_migration


def test_the_project_migrations_are_found_in_order():
    """The shipped ones first, whatever the team adds after them."""
    found = [(m.id, m.name) for m in discover(SQL_DIR)]
    assert found[:4] == [
        ("027", "memberships"), ("028", "fix_memberships_unique_constraint"),
        ("029", "payment_events"), ("030", "billing_logs")]
    assert [int(i) for i, _ in found] == sorted({int(i) for i, _ in found})


def test_027_is_split_into_its_steps_and_validates_with_a_generous_timeout():
    migration = find(discover(SQL_DIR), "027")
    assert [s.name for s in migration.steps] == ["preflight", "table", "foreign_key", "validate"]
    assert migration.steps[0].statement_timeout == migration.steps[-1].statement_timeout == "1h"
    assert all(s.transactional for s in migration.steps)


def test_step_markers_split_a_file_and_carry_options():
    steps = parse_steps("SELECT 1;\n-- appdb:step build transaction=false\nCREATE INDEX CONCURRENTLY i ON t (c);\n", "x.sql")
    assert [(s.name, s.transactional, s.first_line) for s in steps] == [("main", True, 1), ("build", False, 3)]


def test_a_comment_only_file_is_one_empty_step():
    steps = parse_steps("-- nothing to do\n", "x.sql")
    assert len(steps) == 1 and steps[0].is_empty


@pytest.mark.parametrize("marker, message", [
    ("-- appdb:step", "needs a name"),
    ("-- appdb:step s frobnicate=1", "unknown step option"),
    ("-- appdb:step s transaction=maybe", "transaction must be true or false"),
    ("-- appdb:step s statement_timeout=soon", "not a duration"),
])
def test_a_malformed_step_marker_is_a_config_error(marker, message):
    with pytest.raises(ConfigError, match=message):
        parse_steps(f"{marker}\nSELECT 1;\n", "x.sql")


def test_a_step_name_used_twice_is_a_config_error():
    with pytest.raises(ConfigError, match="used twice"):
        parse_steps("-- appdb:step a\nSELECT 1;\n-- appdb:step a\nSELECT 2;\n", "x.sql")


def test_the_checksum_normalises_line_endings():
    assert checksum("a\r\nb\n") == checksum("a\nb\n") != checksum("a\nc\n")


def test_two_migrations_with_the_same_id_are_refused(tmp_path):
    write_migration(tmp_path, "029_a.sql")
    write_migration(tmp_path, "029_b.sql")
    with pytest.raises(ConfigError, match="two migrations share version 029"):
        discover(tmp_path)


def test_a_migration_without_a_revert_is_refused(tmp_path):
    write_migration(tmp_path, "029_a.sql", revert=None)
    with pytest.raises(ConfigError, match="has no revert"):
        discover(tmp_path)


@pytest.mark.parametrize("name", ["add-things.sql", "٠٣١_arabic_digits.sql", "０３１_wide_digits.sql"])
def test_a_badly_named_file_is_refused(tmp_path, name):
    write_migration(tmp_path, name)
    with pytest.raises(ConfigError, match="NNN_snake_description.sql"):
        discover(tmp_path)


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no migrations directory"):
        discover(tmp_path / "nope")


def test_squawk_finds_nothing_in_sql():
    squawk = Path(sys.executable).parent / "squawk"
    files = sorted(str(p.relative_to(ROOT)) for p in SQL_DIR.rglob("*.sql"))
    result = subprocess.run([str(squawk), *files], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_squawk_would_catch_an_unsafe_foreign_key(tmp_path):
    """The lint is live: a validated ADD FOREIGN KEY on an existing table is flagged."""
    squawk = Path(sys.executable).parent / "squawk"
    unsafe = tmp_path / "029_unsafe.sql"
    unsafe.write_text("ALTER TABLE app.memberships ADD CONSTRAINT f FOREIGN KEY (user_id) REFERENCES auth.users (id);\n")
    result = subprocess.run([str(squawk), str(unsafe)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "constraint-missing-not-valid" in result.stdout


# --- transaction control, quoting, encodings, bounds: refused when loaded ---------------


@pytest.mark.parametrize("text, line, word", [
    ("CREATE TABLE app.t (id bigint);\nROLLBACK;\n", 2, "ROLLBACK"),
    ("CREATE TABLE app.t (id bigint);\nCOMMIT;\nCREATE TABLE app.u (id bigint);\n", 2, "COMMIT"),
    ("begin;\nSELECT 1;\n", 1, "BEGIN"),
    ("START TRANSACTION;\n", 1, "START TRANSACTION"),
    ("SELECT 1;\n  end ;\n", 2, "END"),
    ("SELECT 1; ABORT;\n", 1, "ABORT"),
    ("SAVEPOINT s;\nSELECT 1;\nRELEASE SAVEPOINT s;\n", 1, "SAVEPOINT"),
    ("SELECT 1;\nRELEASE s;\n", 2, "RELEASE"),
    ("SELECT 1;\n\nROLLBACK TO SAVEPOINT s;\n", 3, "ROLLBACK"),
    ("PREPARE TRANSACTION 'x';\n", 1, "PREPARE TRANSACTION"),
    ("COMMIT PREPARED 'x';\n", 1, "COMMIT"),
    ("ROLLBACK PREPARED 'x';\n", 1, "ROLLBACK"),
    ("-- appdb:step a\nSELECT 1;\n-- appdb:step b\nSELECT 2;\n/* x */ COMMIT;\n", 5, "COMMIT"),
    ("CREATE FUNCTION app.f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND;\nEND;\n", 5, "END"),
    # psql's heuristic would nest on a `case` label and on a bare `begin`, and hide the COMMIT.
    ("CREATE FUNCTION app.f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1 AS case;\nEND;\nCOMMIT;\n",
     5, "COMMIT"),
    ("CREATE FUNCTION app.f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT t.case FROM app.t t;\nEND;\n"
     "ROLLBACK;\n", 5, "ROLLBACK"),
    ("CREATE FUNCTION app.f() RETURNS void LANGUAGE sql SET search_path = begin AS 'select';\nCOMMIT;\n",
     2, "COMMIT"),
])
def test_transaction_control_at_the_top_level_is_refused_with_the_file_and_line(tmp_path, text, line, word):
    write_migration(tmp_path, "029_a.sql", text)
    with pytest.raises(ConfigError) as refused:
        discover(tmp_path)
    assert str(refused.value).startswith(f"{tmp_path / '029_a.sql'}:{line}: {word} is transaction control")


def test_transaction_control_in_a_revert_file_is_refused_too(tmp_path):
    write_migration(tmp_path, "029_a.sql", revert="DROP TABLE IF EXISTS app.t;\nCOMMIT;\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'revert' / '029_a.sql'}:2: COMMIT is transaction control"):
        discover(tmp_path)


ALLOWED = {
    "a DO block's BEGIN and END": "DO $$\nBEGIN\n  PERFORM 1;\nEND\n$$;\n",
    "a tagged DO block with COMMIT in a string": "DO $do$ BEGIN RAISE NOTICE 'COMMIT;'; END $do$;\n",
    "a SQL-standard function body": (
        "CREATE OR REPLACE FUNCTION app.f(a int) RETURNS int LANGUAGE sql\n"
        "BEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\n  SELECT a;\nEND;\nSELECT app.f(1);\n"),
    "a procedure that commits in its body": (
        "CREATE PROCEDURE app.p() LANGUAGE plpgsql AS $body$\nBEGIN\n  COMMIT;\nEND\n$body$;\n"),
    "a procedure with a quoted body": "CREATE PROCEDURE app.q() LANGUAGE plpgsql AS 'BEGIN COMMIT; END';\n",
    "a string holding COMMIT;": "SELECT 'x;\nCOMMIT;', 'it''s; ROLLBACK;', E'\\'; BEGIN;';\n",
    "a comment holding BEGIN": "-- BEGIN;\n/* COMMIT; /* nested ROLLBACK; */ END; */\nSELECT 1;\n",
    "a quoted identifier": 'SELECT 1 AS "COMMIT;""";\n',
    "a prepared statement": "PREPARE q AS SELECT 1;\n",
    "a SQL-standard body with labels named case and end": (
        "CREATE FUNCTION app.g() RETURNS TABLE (a int, b int) LANGUAGE sql\n"
        "BEGIN ATOMIC\n  SELECT 1 AS case, 2 AS end;\nEND;\nSELECT app.g();\n"),
}


@pytest.mark.parametrize("text", ALLOWED.values(), ids=ALLOWED.keys())
def test_transaction_words_inside_bodies_strings_and_comments_are_allowed(tmp_path, text):
    write_migration(tmp_path, "029_a.sql", text, revert=text)
    assert discover(tmp_path)[0].sql == text


def test_what_the_lexer_allows_runs_on_postgresql(db):
    """The allowed texts are real SQL: each runs inside one transaction, as a step would."""
    with db.connect() as conn:
        for text in ALLOWED.values():
            if "PREPARE" in text:
                continue
            with conn.transaction():
                conn.execute(text)


@pytest.mark.parametrize("text, line, what", [
    ("SELECT 1;\nDO $body$ BEGIN END $bdy$;\n", 2, "dollar quote $body$"),
    ("SELECT 'abc;\n", 1, "string '"),
    ("SELECT 1;\n/* a /* b */\nSELECT 2;\n", 2, "comment /*"),
    ('SELECT "abc;\n', 1, 'quoted identifier "'),
    ("SELECT E'it\\'s;\n", 1, "string '"),
])
def test_an_unterminated_quote_or_comment_is_refused_in_a_migration_or_a_revert(tmp_path, text, line, what):
    write_migration(tmp_path, "029_a.sql", text)
    with pytest.raises(ConfigError, match=rf":{line}: unterminated {re.escape(what)} that starts here"):
        discover(tmp_path)
    write_migration(tmp_path, "029_a.sql", "SELECT 1;\n", revert="-- appdb:step undo\n" + text)
    with pytest.raises(ConfigError, match=rf"revert/029_a.sql:{line + 1}: unterminated"):
        discover(tmp_path)


@pytest.mark.parametrize("where", ["forward", "revert"])
@pytest.mark.parametrize("content, says", [
    (b"SELECT 1;\n-- caf\xe9 (Latin-1)\n", "2: not UTF-8 (byte 0xe9 at offset 16): save the file as UTF-8"),
    (b"CREATE TABLE app.n1 (i int); -- \x00\nCREATE TABLE app.n2 (i int);\n",
     "1: a NUL byte (at offset 32), after which PostgreSQL would see nothing: remove it"),
], ids=["not-utf8", "nul-byte"])
def test_a_file_whose_text_cannot_reach_the_server_whole_is_one_line_naming_it(db, tmp_path, where, content, says):
    """Not UTF-8, or a NUL byte (libpq ends a query's text there: what follows would never run,
    yet the migration would be recorded): refused at load, exit 2, nothing run."""
    write_migration(tmp_path, "029_a.sql")
    bad = tmp_path / "029_a.sql" if where == "forward" else tmp_path / "revert" / "029_a.sql"
    bad.write_bytes(content)
    result = db.run_cli("apply", sql_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"appdb: error: {bad}:{says}"]
    assert db.execute("SELECT to_regclass('app.n1')") == [(None,)]


@pytest.mark.parametrize("make", ["directory", "dangling symlink"])
def test_a_migration_path_that_is_no_readable_file_is_one_line(db, tmp_path, make):
    write_migration(tmp_path, "029_a.sql")
    odd = tmp_path / "030_odd.sql"
    if make == "directory":
        odd.mkdir()
    else:
        odd.symlink_to(tmp_path / "nowhere.sql")
    result = db.run_cli("status", sql_dir=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"appdb: error: cannot read {odd} (") and line.endswith("): it must be a readable file")


@pytest.mark.parametrize("text", ["COPY app.c FROM STDIN;", "copy app.c (a, b) from stdin with (format csv);",
                                  "COPY (SELECT 1) TO STDOUT;"])
def test_copy_with_stdin_or_stdout_is_refused_at_load(tmp_path, text):
    write_migration(tmp_path, "029_a.sql", f"SELECT 1;\n{text}\n")
    with pytest.raises(ConfigError, match=r"029_a.sql:2: COPY with STDIN or STDOUT needs a client"):
        discover(tmp_path)


def test_copy_from_a_server_file_or_a_table_named_stdin_is_not_refused(tmp_path):
    write_migration(tmp_path, "029_a.sql", "COPY app.c FROM '/tmp/c.csv';\nCOPY \"stdin\" TO '/tmp/x';\n"
                                           "COPY (SELECT * FROM stdin) TO '/tmp/y';\n")
    assert discover(tmp_path)[0].id == "029"


@pytest.mark.parametrize("command", [["apply", "--only", "²"], ["revert", "²"], ["baseline", "²"],
                                     ["apply", "--only", "٠٢٧"]])
def test_a_migration_id_of_other_digits_is_a_usage_error(db, command):
    result = db.run_cli(*command)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("appdb: error: migration id ") and "is not a number like 027" in line


def test_a_byte_order_mark_is_stripped_and_does_not_change_the_checksum(tmp_path):
    write_migration(tmp_path, "029_a.sql", "SELECT 1;\n")
    before = discover(tmp_path)[0]
    (tmp_path / "029_a.sql").write_bytes(b"\xef\xbb\xbfSELECT 1;\r\n")
    after = discover(tmp_path)[0]
    assert after.sql == "SELECT 1;\n" and after.steps[0].sql.startswith("SELECT")
    assert after.checksum == before.checksum


def test_a_byte_order_mark_does_not_break_the_first_statement(db, tmp_path):
    write_migration(tmp_path, "001_bom.sql")
    (tmp_path / "001_bom.sql").write_bytes(b"\xef\xbb\xbfCREATE TABLE app.bom (id bigint);\n")
    result = db.run_cli("apply", sql_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert db.execute("SELECT to_regclass('app.bom') IS NOT NULL") == [(True,)]


@pytest.mark.parametrize("value, ok", [
    ("1ms", True), ("30s", True), ("30min", True), ("24h", True), ("86400s", True),
    ("0", False), ("0s", False), ("25h", False), ("86401s", False), ("30", False),
    ("30m", False), ("1d", False), ("1.5h", False), ("-1s", False), ("٣٠s", False),
])
def test_statement_timeouts_are_bounded_and_need_a_known_unit(value, ok):
    text = f"-- appdb:step s statement_timeout={value}\nSELECT 1;\n"
    if ok:
        assert parse_steps(text, "x.sql")[0].statement_timeout == value
    else:
        with pytest.raises(ConfigError, match="statement_timeout .*(not a duration: a whole number with a unit "
                                              r"\(ms, s, min or h\)|out of bounds: .*above 0 .*at most 24h)"):
            parse_steps(text, "x.sql")


def test_transaction_control_anywhere_stops_apply_before_any_migration_runs(db, tmp_path):
    write_migration(tmp_path, "001_first.sql", "CREATE TABLE app.first (id bigint);\n")
    write_migration(tmp_path, "002_second.sql", "CREATE TABLE app.second (id bigint);\nROLLBACK;\n")
    before = db.snapshot()
    result = db.run_cli("apply", sql_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"appdb: error: {tmp_path / '002_second.sql'}:2: ROLLBACK is transaction control, which the engine owns: "
        "remove it, and split work that needs its own transaction into steps ('-- appdb:step NAME')"]
    assert db.snapshot() == before


def test_the_lexers_identifier_classes_are_postgresqls_for_every_code_point():
    """Written as the ASCII they exclude (fast to compile); the same sets as the plain ranges."""
    from appdb.migrate import statements

    pairs = [(statements._IDENT_START_CLASS, r"[A-Za-z_\u0080-\U0010ffff]"),
             (statements._IDENT_REST_CLASS, r"[A-Za-z0-9_$\u0080-\U0010ffff]"),
             (statements._TAG_REST_CLASS, r"[A-Za-z0-9_\u0080-\U0010ffff]")]
    for fast, plain in pairs:
        fast_re, plain_re = re.compile(fast), re.compile(plain)
        differ = [hex(c) for c in range(0x110000) if bool(fast_re.match(chr(c))) != bool(plain_re.match(chr(c)))]
        assert differ == [], (fast, differ[:5])


def test_the_lexers_whitespace_run_is_what_isspace_calls_whitespace_for_every_code_point():
    """The lexer skips a run of whitespace with one regex match; it must stop where isspace() would."""
    from appdb.migrate import statements

    def skipped_as_space(char: str) -> bool:
        found = statements._TOKEN.match(char)
        return found is not None and found.lastindex == statements._SPACE

    differ = [hex(c) for c in range(0x110000) if skipped_as_space(chr(c)) != chr(c).isspace()]
    assert differ == []


@pytest.mark.parametrize("text, tables", [
    ("DROP TABLE IF EXISTS app.billing_logs;", [("app", "billing_logs")]),
    ('drop table a, "App"."Odd name" cascade;', [("a",), ("App", "Odd name")]),
    ("TRUNCATE ONLY app.x *, app.y RESTART IDENTITY;", [("app", "x"), ("app", "y")]),
    ("TRUNCATE TABLE app.z;\nDROP TABLE app.z;", [("app", "z")]),
    ("DROP /* a comment */ TABLE -- and another\n app.c;", [("app", "c")]),
    # As PostgreSQL folds and reads them: only ASCII letters fold; U&"..." escapes decoded.
    ("DROP TABLE App.Ärger;", [("app", "Ärger")]),
    ('DROP TABLE app.U&"r\\0032";', [("app", "r2")]),
    ("DROP TABLE app.U&\"d!0061t!+000061\" UESCAPE '!';", [("app", "data")]),
    # Not top-level statements, or not a table's rows: nothing to lock.
    ("DO $$ BEGIN DROP TABLE app.q; END $$;", []),
    ("SELECT 'DROP TABLE app.s';", []),
    ("DROP INDEX app.i; DROP VIEW app.v; ALTER TABLE app.t DROP COLUMN c;", []),
])
def test_the_tables_a_step_drops_or_empties_are_read_with_the_file(text, tables):
    """What the runner locks before the step's first statement (appdb/migrate/steps.py, lock_first)."""
    (step,) = parse_steps(text, "x.sql")
    assert list(step.emptied_tables) == tables


@pytest.mark.parametrize(("text", "schemas"), [
    ("DROP SCHEMA billing CASCADE;", ["billing"]),
    ('drop schema if exists billing, "Odd Name", App cascade;', ["billing", "Odd Name", "app"]),
    ('DROP SCHEMA U&"b\\0069lling" CASCADE;', ["billing"]),
    # Without CASCADE a schema that holds a table is not dropped: nothing to lock.
    ("DROP SCHEMA billing;", []),
    ("DROP SCHEMA billing RESTRICT;", []),
    ("DO $$ BEGIN DROP SCHEMA billing CASCADE; END $$;", []),
    ("DROP TABLE app.x CASCADE;", []),
])
def test_the_schemas_a_step_drops_with_their_tables_are_read_with_the_file(text, schemas):
    """Each table in them is locked before the step's first statement (steps.lock_first)."""
    (step,) = parse_steps(text, "x.sql")
    assert list(step.emptied_schemas) == schemas

@pytest.mark.parametrize("text", [
    "ALTER SCHEMA appdb RENAME TO appdb_old;",
    "DROP SCHEMA IF EXISTS appdb CASCADE;",
    'SELECT 1;\nDELETE FROM "appdb".migrations WHERE id = \'027\';',
    "TRUNCATE appdb.migrations;",
    "GRANT USAGE ON SCHEMA appdb TO anon;",
    "DROP SCHEMA IF EXISTS app_old, appdb CASCADE;",
    "ALTER TABLE app.t SET SCHEMA appdb;",
    "WITH gone AS (DELETE FROM appdb.migrations RETURNING id) SELECT count(*) FROM gone;",
    "CREATE SCHEMA IF NOT EXISTS appdb;",
    # From a third attack review: statements that run what they name.
    "EXPLAIN ANALYZE DELETE FROM appdb.migrations WHERE id < '031';",
    "PREPARE p AS DELETE FROM appdb.migrations;",
    "SELECT appdb.f();",
])
def test_a_migration_that_names_the_ledgers_schema_is_refused_when_read(text):
    """A transaction=false step that renamed it left every migration pending (an attack review)."""
    with pytest.raises(ConfigError, match=r"x\.sql:\d: this statement names the appdb schema"):
        parse_steps(text, "x.sql")
    assert parse_steps(text, "x.sql", from_ledger=True)  # a revert already stored runs as it was


@pytest.mark.parametrize("text", [
    "CREATE TABLE app.appdb (id int);", "SELECT 'appdb.migrations';",
    "COMMENT ON TABLE app.t IS 'see SCHEMA appdb';", "CREATE SCHEMA appdb_archive;",
    # From an attack review of the first version, which refused these: a role, a column, an alias, a setting.
    "GRANT USAGE ON SCHEMA app TO appdb;",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO appdb;",
    "CREATE SCHEMA app2 AUTHORIZATION appdb;",
    "CREATE TABLE app.t (schema text, appdb text);",
    "SET LOCAL appdb.allow_data_loss = on;",
    "SELECT appdb.id FROM app.x AS appdb;",
    "ALTER TABLE app.t RENAME COLUMN a TO appdb;",
    "ALTER ROLE app_backend SET appdb.something = 1;",
    "ALTER DATABASE postgres SET appdb.x = 'y';",
    "UPDATE app.t AS appdb SET n = appdb.n + 1;",
])
def test_the_word_appdb_elsewhere_is_no_reference_to_the_ledger(text):
    assert parse_steps(text, "x.sql")

def test_each_shipped_revert_locks_the_table_its_guard_counts():
    """027, 029 and 030's reverts count a table's rows, then drop it: the runner locks it first."""
    for migration in discover(SQL_DIR):
        steps = parse_steps(migration.revert_sql, migration.filename)
        counted = set(re.findall(r"SELECT count\(\*\) INTO rows_held FROM (app\.\w+)", migration.revert_sql))
        locked = {".".join(parts) for step in steps for parts in step.emptied_tables}
        assert counted <= locked, (migration.filename, counted, locked)


@pytest.mark.parametrize("text", ["SET LOCAL search_path TO app;\nDROP TABLE r3;",
                                  "SET search_path = app, public;\nTRUNCATE r3;"])
def test_an_unqualified_drop_after_the_steps_own_search_path_is_refused_in_a_file(text):
    """The lock before the step looks the name up on the search_path the step begins with."""
    with pytest.raises(ConfigError, match=r"x\.sql:2: 'r3' is dropped or emptied after this step's SET search_path"):
        parse_steps(text, "x.sql")
    # A revert already in a ledger still runs as it was stored.
    assert parse_steps(text, "x.sql", from_ledger=True)[0].emptied_tables == (("r3",),)
    assert parse_steps(text.replace(" r3", " app.r3"), "x.sql")[0].emptied_tables == (("app", "r3"),)
