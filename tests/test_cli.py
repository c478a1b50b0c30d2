"""The command line's contract: exit codes, one-line errors, no password in any output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, SHIPPED_SQL, write_migration

SECRET = "s3cr3t-pa55word"


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("appdb: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_apply_prints_one_progress_line_per_migration(db):
    result = db.run_cli("apply")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["027 memberships", "028 fix_memberships_unique_constraint",
                                                      "029 payment_events", "030 billing_logs"]
    assert all(" s" in line for line in lines)


def test_apply_again_says_there_is_nothing_to_do(db):
    db.run_cli("apply")
    result = db.run_cli("apply")
    assert result.returncode == 0
    assert "nothing to apply" in result.stdout


def test_status_json_lists_every_migration(db):
    db.run_cli("apply", "--only", "027")
    data = json.loads(db.run_cli("status", "--json").stdout)
    assert [(m["id"], m["state"]) for m in data["migrations"]] == [
        ("027", "applied"), ("028", "pending"), ("029", "pending"), ("030", "pending")]


def test_apply_json_reports_the_outcomes(db):
    data = json.loads(db.run_cli("apply", "--json").stdout)
    assert [o["id"] for o in data["outcomes"]] == ["027", "028", "029", "030"]
    assert data["complete"] is True


def test_apply_json_that_fails_still_says_what_was_applied_before(db, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    (sql_dir / "031_broken.sql").write_text("SELEC 1;\n")
    (sql_dir / "revert" / "031_broken.sql").write_text("-- no-op\n")
    result = db.run_cli("apply", "--json", sql_dir=sql_dir)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["complete"] is False
    assert [o["id"] for o in data["outcomes"]] == ["027", "028", "029", "030"]
    assert "031_broken.sql:1: syntax error" in one_line_error(result)


def test_a_malformed_dsn_is_exit_2_and_leaks_no_password(db):
    before = db.snapshot()
    result = db.run_cli("apply", "--dsn", f"host=/tmp password={SECRET} port=notaport =oops")
    assert result.returncode == 2
    assert "malformed connection string" in one_line_error(result)
    assert SECRET not in result.stderr + result.stdout
    assert db.snapshot() == before


def test_a_wrong_password_is_exit_2_and_not_echoed(db):
    params = {**db.tcp_params, "password": SECRET}
    url = f"postgresql://{params['user']}:{SECRET}@{params['host']}:{params['port']}/{params['dbname']}"
    result = db.run_cli("apply", "--dsn", url)
    assert result.returncode == 2
    assert "authentication failed" in one_line_error(result)
    assert SECRET not in result.stderr + result.stdout


def test_an_unreachable_server_is_exit_2(db):
    result = db.run_cli("status", "--dsn", "postgresql://postgres@127.0.0.1:1/postgres")
    assert result.returncode == 2
    assert "could not connect" in one_line_error(result)


def test_the_transaction_pooler_is_refused(db):
    result = db.run_cli("apply", "--dsn", f"postgresql://postgres.abc:{SECRET}@aws-0-eu.pooler.supabase.com:6543/postgres")
    assert result.returncode == 2
    line = one_line_error(result)
    assert "transaction pooler" in line and "session pooler" in line
    assert SECRET not in result.stderr


def test_a_missing_sql_directory_is_exit_2(db, tmp_path):
    result = db.run_cli("apply", sql_dir=tmp_path / "missing")
    assert result.returncode == 2
    assert "no migrations directory" in one_line_error(result)


def test_a_missing_revert_file_is_exit_2_and_changes_nothing(db, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    (sql_dir / "revert" / "028_fix_memberships_unique_constraint.sql").unlink()
    before = db.snapshot()
    result = db.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 2
    assert "has no revert" in one_line_error(result)
    assert db.snapshot() == before


def test_an_unknown_migration_id_is_exit_2(db):
    result = db.run_cli("apply", "--only", "099")
    assert result.returncode == 2
    assert "unknown migration id 099" in one_line_error(result)


def test_a_sql_syntax_error_names_the_file_and_line_and_changes_nothing(db, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    (sql_dir / "031_broken.sql").write_text("-- a broken migration\nCREATE TABLE app.ok (id bigint);\n\nCRATE TABLE app.typo (id bigint);\n")
    (sql_dir / "revert" / "031_broken.sql").write_text("-- no-op\n")
    db.run_cli("apply", sql_dir=sql_dir, env={"APPDB_TEST": "1"})  # 027 to 030 land; 031 fails
    before = db.snapshot()

    result = db.run_cli("apply", sql_dir=sql_dir)

    assert result.returncode == 1
    line = one_line_error(result)
    assert "031_broken.sql:4:" in line and "syntax error" in line
    assert db.snapshot() == before
    assert db.execute("SELECT to_regclass('app.ok')") == [(None,)]


def test_a_database_without_auth_users_fails_027_with_exit_1(db):
    with db.admin_connect() as conn:
        conn.execute("DROP SCHEMA auth CASCADE")
    before = db.snapshot()
    result = db.run_cli("apply")
    assert result.returncode == 1
    assert "auth.users does not exist" in one_line_error(result)
    assert db.snapshot() == before


def test_changed_migration_is_exit_1_and_names_it(db, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    db.run_cli("apply", sql_dir=sql_dir)
    path = sql_dir / "027_memberships.sql"
    path.write_text(path.read_text() + "-- edited\n")
    result = db.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 1
    assert "027 (memberships) was edited after it was applied" in one_line_error(result)


def test_revert_refusal_is_exit_1(db):
    db.load_state("production")
    db.run_cli("apply")
    result = db.run_cli("revert", "027")
    assert result.returncode == 1
    assert "cannot revert 027: 030" in one_line_error(result)


def test_revert_of_a_migration_not_applied_is_exit_0(db):
    result = db.run_cli("revert", "028")
    assert result.returncode == 0
    assert "not applied" in result.stdout


def test_bad_arguments_are_exit_2_in_one_line(db):
    result = db.run_cli("apply", "--lock-retries", "many")
    assert result.returncode == 2
    one_line_error(result)


@pytest.mark.parametrize("dsn", [
    f"postgresql://postgres:{SECRET}@127.0.0.1:1/postgres",
    f"host=127.0.0.1 port=1 user=postgres password={SECRET}",
])
def test_no_password_appears_when_connecting_fails(db, dsn):
    result = db.run_cli("verify", "--dsn", dsn)
    assert result.returncode == 2
    assert SECRET not in result.stdout + result.stderr


def test_libpq_environment_variables_are_used_without_a_dsn(db):
    params = db.tcp_params
    env = {"DATABASE_URL": "", "PGHOST": params["host"], "PGPORT": params["port"], "PGUSER": params["user"],
           "PGPASSWORD": params["password"], "PGDATABASE": params["dbname"]}
    result = db.run_cli("status", env=env)
    assert result.returncode == 0, result.stderr
    assert "027  pending" in result.stdout


def test_a_database_error_after_a_migration_committed_still_reports_it(db, tmp_path, monkeypatch, capsys):
    """The session's reset after a commit failed (a role's statement_timeout cut it short, in an attack
    review): --json printed nothing, though the migration was applied and recorded. It is told as soon
    as it commits, and the JSON says what was applied, with complete: false."""
    import psycopg

    from appdb.cli import main
    from appdb.migrate import runner

    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "001_a.sql", "CREATE TABLE IF NOT EXISTS app.after_a (id int);\n")
    write_migration(sql_dir, "002_b.sql", "CREATE TABLE IF NOT EXISTS app.after_b (id int);\n")
    calls = []
    real = runner.fresh_session

    def failing_after_the_first_commit(conn):
        calls.append(1)
        if len(calls) == 2:  # the first is under the lock, before any migration
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
        real(conn)

    monkeypatch.setattr(runner, "fresh_session", failing_after_the_first_commit)
    monkeypatch.setenv("DATABASE_URL", db.dsn)
    assert main(["apply", "--json", "--sql-dir", str(sql_dir)]) == 1
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["complete"] is False and [o["id"] for o in report["outcomes"]] == ["001"], out.out
    assert "database error: canceling statement" in out.err
    assert [row[0] for row in db.execute("SELECT id FROM appdb.migrations ORDER BY id")] == ["001"]

def test_new_creates_the_next_migration_and_its_revert(tmp_path):
    from appdb.cli import main

    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    assert main(["new", "add_refunds", "--sql-dir", str(sql_dir)]) == 0
    assert (sql_dir / "031_add_refunds.sql").read_text().startswith("-- 031: add refunds")
    assert (sql_dir / "revert" / "031_add_refunds.sql").exists()


def test_new_touches_only_files_so_it_takes_no_connection_string(tmp_path, capsys):
    """A --dsn that `new` would silently ignore reads as if it checked something: it is a usage error."""
    from appdb.cli import main

    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    assert main(["new", "add_refunds", "--sql-dir", str(sql_dir), "--dsn", "host=nowhere"]) == 2
    assert "unrecognized arguments: --dsn" in capsys.readouterr().err
    assert not (sql_dir / "031_add_refunds.sql").exists()
    with pytest.raises(SystemExit):
        main(["new", "--help"])
    assert "--dsn" not in capsys.readouterr().out


def test_inspect_reports_the_incident_findings(db):
    db.load_state("production")
    db.execute("ALTER TABLE app.memberships DISABLE ROW LEVEL SECURITY")
    data = json.loads(db.run_cli("inspect", "--json").stdout)
    kinds = {f["kind"] for f in data["findings"]}
    assert {"duplicate_unique", "rls_disabled"} <= kinds
    assert "memberships" in data["app_tables"]
    assert {t["name"] for t in data["tables"]["auth"]} == {"users"}


def test_inspect_finds_a_migration_referencing_a_table_that_exists_nowhere(db, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    (sql_dir / "031_bad_fk.sql").write_text(
        "ALTER TABLE app.memberships ADD COLUMN IF NOT EXISTS p uuid REFERENCES app.profiles (user_id);\n")
    (sql_dir / "revert" / "031_bad_fk.sql").write_text("-- no-op\n")
    data = json.loads(db.run_cli("inspect", "--json", sql_dir=sql_dir).stdout)
    assert any(f["kind"] == "fk_target_missing" and "app.profiles" in f["detail"] for f in data["findings"])


# --- one path for expected failures ---------------------------------------------------------


def _engine_modules() -> list[str]:
    import pkgutil

    import appdb

    return [m.name for m in pkgutil.walk_packages(appdb.__path__, "appdb.") if not m.name.endswith("__main__")]


def test_every_error_class_of_the_engine_lives_in_errors_py():
    import importlib

    from appdb.errors import AppdbError

    for name in _engine_modules():
        importlib.import_module(name)

    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    outside = [f"{c.__module__}.{c.__name__}" for c in subclasses(AppdbError)
               if c.__module__.startswith("appdb") and c.__module__ != "appdb.errors"]
    assert outside == []


def test_only_main_prints_the_error_line_and_the_library_never_prints():
    """A command raises; ``main`` (through ``_error``) is the one place that writes ``appdb: error:``."""
    import ast

    source = (ROOT / "appdb" / "cli.py").read_text(encoding="utf-8")
    printers = {node.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)
                and "appdb: error" in ast.get_source_segment(source, node)}
    assert printers == {"main", "_error"}
    for name in _engine_modules():
        path = ROOT / (name.replace(".", "/") + ".py")
        # The fork server is an entry point too: it answers Ctrl-C where the CLI never ran, and
        # its worker ends as Python ends a process (a SystemExit's message on stderr).
        if path.exists() and name not in ("appdb.cli", "appdb.forkserver.caller", "appdb.forkserver.worker"):
            assert "print(" not in path.read_text(encoding="utf-8"), name


BIN_APPDB = Path(__file__).resolve().parent.parent / "bin" / "appdb"


@pytest.mark.parametrize("pythonpath", [None, "", ":/nonexistent", "/nonexistent:", ".", "sub"])
@pytest.mark.parametrize("name", ["argparse", "logging", "appdb", "sitecustomize"])
def test_bin_appdb_imports_nothing_from_the_folder_it_runs_in(tmp_path, name, pythonpath):
    """A module in the caller's folder is never imported in place of appdb's own or the standard
    library's, whatever PYTHONPATH says (an empty or relative entry is that folder)."""
    for folder in (tmp_path, tmp_path / "sub"):
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.py").write_text("raise SystemExit('imported from the current folder')\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    result = subprocess.run([str(BIN_APPDB), "new", "--help"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: appdb new")


def test_bin_appdb_still_loads_site_for_every_command_it_runs_itself(tmp_path):
    """bin/appdb starts Python with -S (a served revert's caller needs builtins only); a command
    it runs still has what `site` gives: the virtualenv's packages (psycopg, to reach a port
    nobody listens on) and a sitecustomize on PYTHONPATH."""
    (tmp_path / "sitecustomize.py").write_text("import sys; sys.stderr.write('sitecustomize ran\\n')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for fork_server in ([], ["--fork-server"]):  # `status` with the flag: the CLI's usage error
        result = subprocess.run([str(BIN_APPDB), "status", "--dsn", "postgresql://nobody@127.0.0.1:1/none",
                                 *fork_server], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert result.stderr.startswith("sitecustomize ran\n"), result.stderr
        assert "Traceback" not in result.stderr and result.returncode in (1, 2), result.stderr
    # A revert that no server ran loads it too: tests/test_forkserver.py's chain through bin/appdb.


def test_bin_appdb_runs_through_a_symlink_and_refuses_a_copy_in_one_line(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "appdb").symlink_to(BIN_APPDB)
    (tmp_path / "again").symlink_to("bin/appdb")  # a relative link to a link
    for link in (tmp_path / "bin" / "appdb", tmp_path / "again"):
        done = subprocess.run([str(link), "--version"], cwd="/", capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout) == (0, "appdb 0.1.0\n"), done.stderr
    copy = tmp_path / "elsewhere" / "bin" / "appdb"
    copy.parent.mkdir(parents=True)
    shutil.copy2(BIN_APPDB, copy)
    done = subprocess.run([str(copy), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == (f"appdb: error: {tmp_path / 'elsewhere'} has no appdb/ next to bin/: run bin/appdb "
                           "from a checkout of the project\n")


def _to_a_reader_that_has_gone(db, *args: str, sql_dir: Path | None = None, unbuffered: bool = False):
    """``python -m appdb ARGS`` with stdout a pipe whose reader has already closed it."""
    import sys

    from tests.helpers import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "PYTHONUNBUFFERED"}
    env.update({"DATABASE_URL": db.dsn, "APPDB_SQL_DIR": str(sql_dir or SHIPPED_SQL), "PYTHONPATH": str(ROOT)})
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "appdb", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT, timeout=120, check=False)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("apply",)])
def test_a_reader_that_has_gone_gets_one_line_and_exit_1_however_stdout_is_buffered(db, args):
    """Small output waits in Python's buffer: the reader's absence must be found while appdb can still
    say so, not at the interpreter's exit (a warning and status 120) (attack review)."""
    result = _to_a_reader_that_has_gone(db, *args)
    assert result.returncode == 1
    assert one_line_error(result).startswith("appdb: error: the output was closed before appdb finished")


@pytest.mark.parametrize("unbuffered", [False, True])
def test_a_failed_apply_says_its_own_error_even_when_its_reader_has_gone(db, tmp_path, unbuffered):
    """The JSON of what was applied cannot be written: the migration's error line still is (attack review)."""
    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    (sql_dir / "031_boom.sql").write_text("SELECT 1/0;\n")
    (sql_dir / "revert" / "031_boom.sql").write_text("SELECT 1;\n")
    result = _to_a_reader_that_has_gone(db, "apply", "--json", sql_dir=sql_dir, unbuffered=unbuffered)
    assert result.returncode == 1
    assert "division by zero" in one_line_error(result)


@pytest.mark.parametrize("verbose", [False, True])
def test_psycopg_s_clean_up_warnings_stay_out_of_the_one_line_unless_verbose(verbose):
    """A Ctrl-C in the middle of a query leaves psycopg to warn "error ignored in rollback on
    <connection>" beside appdb's own line (seen once in CI); -v still shows such warnings."""
    import sys

    from tests.helpers import ROOT

    code = ("import logging, sys\nfrom appdb.cli import main\n"
            "status = main(['status', '--dsn', 'host=/nonexistent/appdb-test port=1', *sys.argv[1:]])\n"
            "logging.getLogger('psycopg').warning('error ignored in rollback on <psycopg.Connection>')\n"
            "sys.exit(status)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    result = subprocess.run([sys.executable, "-c", code, *(["-v"] if verbose else [])], cwd=ROOT,
                            env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert ("error ignored in rollback" in result.stderr) == verbose
    if not verbose:
        assert one_line_error(result).startswith("appdb: error: could not connect")
