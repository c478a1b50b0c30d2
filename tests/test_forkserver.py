"""The fork server that Pulumi's chain of reverts shares (appdb/forkserver/).

A command it serves must be the command a process of its own would have been: the same
output on the caller's stdout and stderr, the same exit status, the same database; and
the server must never serve another OS user, keep Pulumi waiting, run stale code, or
let a worker outlive a caller that was killed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appdb import forkserver
from appdb.forkserver import address, caller, protocol
from components.migrations import revert_command
from tests.helpers import copy_shipped, readable_checkout, throwaway_os_user, wait_for

ROOT = Path(__file__).resolve().parent.parent
PROBE = "appdb_fsprobe"
SERVE = "import sys; from appdb.forkserver import server as f; f.preload(); f.serve(sys.argv[1], idle=float(sys.argv[2]))"
CLIENT = "import sys; from appdb.forkserver.caller import run_via_server as r; print(r(sys.argv[1], sys.argv[2:]))"


@pytest.fixture
def server(tmp_path: Path):
    """A server on a socket of the test's own, started as the cold path starts one; stopped after."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "test.sock"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(path), "60"], cwd=ROOT, env=env)
    try:
        wait_for(path.exists, timeout=30, what="the server's socket")
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def runtime():
    """A short private folder for XDG_RUNTIME_DIR (tmp_path can be too long for a socket's name)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="fs-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def applied(db, tmp_path: Path) -> Path:
    """The shipped migrations applied; their sql/ copied."""
    sql_dir = tmp_path / "sql"
    copy_shipped(sql_dir)
    result = db.run_cli("apply", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    return sql_dir


def applied_ids(db) -> list[str]:
    return [row[0] for row in db.execute("SELECT id FROM appdb.migrations ORDER BY id")]


def servers_bind(folder: Path, count: int) -> None:
    """A server binds its socket just after it is forked, while its first caller runs on, which
    may be after that caller has ended on a loaded machine: wait for it."""
    wait_for(lambda: len(list(folder.glob("*.sock"))) == count, timeout=30, what=f"{count} server socket(s)")


def assert_no_server_binds(folder: Path) -> None:
    """No server: given the time one would take to bind, so that a late one is not missed."""
    import time

    time.sleep(1.0)
    assert not list(folder.glob("*.sock"))


def test_the_flag_main_checks_is_the_flag_revert_takes():
    assert forkserver.FLAG == "--fork-server"
    assert revert_command("030", allow_data_loss=False).endswith(f" {forkserver.FLAG}")
    source = (ROOT / "appdb" / "__main__.py").read_text()
    assert f'"{forkserver.FLAG}" in argv' in source
    spelled = "(" + ", ".join(f'"{value}"' for value in forkserver.ON) + ")"
    assert f'os.environ.get("{forkserver.VARIABLE}", "").strip().lower() in {spelled}' in source


@pytest.mark.parametrize(("value", "asked"), [("1", True), (" 1 ", True), ("true", True), ("ON", True), ("yes", True),
                                              ("0", False), ("", False), ("false", False), ("no", False),
                                              ("off", False), (" 0", False), ("2", False)])
def test_the_variable_asks_for_a_server_only_when_it_says_so(monkeypatch, value, asked):
    monkeypatch.setenv(forkserver.VARIABLE, value)
    assert forkserver.asked(["status"]) is asked


@pytest.mark.parametrize(("value", "warned"), [("maybe", True), ("2", True), ("off", False), ("", False)])
def test_a_value_of_the_variable_that_is_neither_on_nor_off_is_said(runtime, value, warned):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(runtime), forkserver.VARIABLE: value}
    done = subprocess.run([str(ROOT / "bin" / "appdb"), "status", "--sql-dir", str(runtime / "none")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    said = f"appdb: warning: {forkserver.VARIABLE}={value!r} is neither"
    assert done.stderr.startswith(said) is warned, done.stderr
    assert_no_server_binds(runtime / "appdb")


def test_a_served_command_writes_to_the_callers_streams_and_returns_its_status(db, applied, server, capfd):
    argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    assert caller.run_via_server(str(server), argv) == 0
    out, err = capfd.readouterr()
    assert out.startswith("030 billing_logs: reverted in ") and err == ""
    assert applied_ids(db) == ["027", "028", "029"]

    # A refusal: exit 1, the one line on the caller's stderr, nothing changed.
    refused = ["revert", "027", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    assert caller.run_via_server(str(server), refused) == 1
    out, err = capfd.readouterr()
    assert err.startswith("appdb: error: cannot revert 027: 029") and err.count("\n") == 1
    assert applied_ids(db) == ["027", "028", "029"]

    # A usage error keeps its exit code, 2.
    assert caller.run_via_server(str(server), ["revert", "x", "--dsn", db.dsn, forkserver.FLAG]) == 2
    assert "is not a number" in capfd.readouterr().err


@pytest.mark.parametrize("where", ["environment", "argument"])
def test_a_caller_that_names_its_own_descriptors_by_path_is_not_served(db, applied, server, where, monkeypatch):
    """`PGSERVICEFILE=<(...)` is /dev/fd/63, which only the caller has: it runs on its own."""
    argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    if where == "environment":
        monkeypatch.setenv("PGSERVICEFILE", "/dev/fd/63")
    else:
        argv[argv.index("--sql-dir") + 1] = "/proc/self/cwd/sql"
    assert caller.run_via_server(str(server), argv) is None
    assert applied_ids(db) == ["027", "028", "029", "030"]


def test_a_served_revert_s_caller_needs_only_what_the_interpreter_has_built_in(db, applied, server):
    """Each revert of a chain runs the caller before it can reach the server: ``socket``,
    ``hashlib`` and ``signal`` (with ``enum`` and ``selectors``) were 7 of its 40 ms (issue 20).
    Started without ``site``, so only appdb's own imports show."""
    code = ("import sys; from appdb.forkserver.address import socket_path; from appdb.forkserver.caller import "
            "run_via_server; socket_path(); status = run_via_server(sys.argv[1], sys.argv[2:]); "
            "print(status, *sorted(sys.modules))")
    argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    result = subprocess.run([sys.executable, "-S", "-c", code, str(server), *argv], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    status, *modules = result.stdout.split("\n")[-2].split()
    assert status == "0", result.stdout + result.stderr
    assert applied_ids(db) == ["027", "028", "029"]
    heavy = {"socket", "hashlib", "_hashlib", "signal", "enum", "selectors", "ssl", "psycopg",
             "appdb.cli", "appdb.errors", "appdb.forkserver.server", "appdb.forkserver.relay",
             "appdb.forkserver.worker"}
    assert heavy.isdisjoint(modules), sorted(heavy.intersection(modules))
    assert {"appdb.forkserver.caller", "appdb.forkserver.protocol", "_socket"} <= set(modules)


def test_a_served_command_runs_in_the_callers_folder_with_the_callers_environment(db, applied, server, tmp_path,
                                                                                  monkeypatch):
    # No --sql-dir and no --dsn: the worker must take both from the caller (APPDB_SQL_DIR, DATABASE_URL).
    monkeypatch.setenv("APPDB_SQL_DIR", str(applied))
    monkeypatch.setenv("DATABASE_URL", db.dsn)
    monkeypatch.chdir(tmp_path)
    assert caller.run_via_server(str(server), ["revert", "030", forkserver.FLAG]) == 0
    assert applied_ids(db) == ["027", "028", "029"]
    # The same revert file check as ever: an edited revert file is refused, from the caller's folder.
    (applied / "revert" / "029_payment_events.sql").write_text("DROP TABLE app.memberships;\n")
    monkeypatch.setenv("APPDB_SQL_DIR", "sql")
    assert caller.run_via_server(str(server), ["revert", "029", forkserver.FLAG]) == 1
    assert applied_ids(db) == ["027", "028", "029"]


def test_a_chain_of_reverts_through_bin_appdb_matches_processes_of_their_own(new_db, tmp_path: Path, runtime):
    """What Pulumi runs, line for line: the same outputs, statuses and databases with the server as without."""
    results = {}
    for flag in (False, True):
        db = new_db()
        sql_dir = tmp_path / f"sql-{flag}"
        copy_shipped(sql_dir)
        assert db.run_cli("apply", sql_dir=sql_dir).returncode == 0
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "DATABASE_URL": db.dsn,
               "APPDB_SQL_DIR": str(sql_dir), "XDG_RUNTIME_DIR": str(runtime)}
        runs = []
        for migration in ("030", "028", "029", "028", "027", "027"):
            command = revert_command(migration, allow_data_loss=True)
            if not flag:
                command = command.removesuffix(f" {forkserver.FLAG}")
            # As Pulumi's command provider runs each delete: the create's output in the environment.
            each = {**env, "PULUMI_COMMAND_STDOUT": f"{migration} applied", "APPDB_MIGRATION_FILE": migration}
            done = subprocess.run(["sh", "-c", command], cwd=ROOT, env=each, capture_output=True, text=True,
                                  timeout=120, check=False)
            # Durations and applied_at differ from run to run; nothing else may.
            out = re.sub(r" in [0-9.]+ s", "", done.stdout)
            runs.append((done.returncode, out, re.sub(r"\(at [^)]*\)", "(at ...)", done.stderr)))
        results[flag] = (runs, applied_ids(db))
    # The first command with the flag started a server in the private folder, and it outlived
    # the command: the pipes Pulumi reads were released at once (subprocess.run returned). One
    # server for the chain, though each delete's environment differs.
    servers_bind(runtime / "appdb", 1)
    assert results[True] == results[False]
    assert [code for code, _out, _err in results[True][0]] == [0, 1, 0, 0, 0, 0]


def _same_in_every_run(text: str) -> str:
    """Output with what differs from run to run (durations, times) taken out."""
    text = re.sub(r" in [0-9.]+ s", " in ... s", text)
    text = re.sub(r'"seconds": [0-9.e-]+', '"seconds": ...', text)
    return re.sub(r"\d{4}-\d\d-\d\d[ T][0-9:.+]+", "...", text)


@pytest.mark.parametrize("asked", ["flag", "variable"])
def test_the_everyday_commands_through_a_server_match_processes_of_their_own(new_db, tmp_path: Path, runtime, asked):
    """status, apply (each way), verify, through bin/appdb: the same outputs, statuses and databases
    served as not, successes and failures alike, asked for by the flag or by APPDB_FORK_SERVER."""
    commands = [["status"], ["apply", "--dry-run"], ["apply", "--only", "027"], ["status", "--json"],
                ["apply", "--only", "099"], ["apply", "--group", "--json"], ["apply"], ["apply", "--only", "030"],
                ["verify"], ["verify", "--json"], ["verify"], ["status", "--sql-dir", "missing"], ["apply"],
                ["status"], ["revert", "031"], ["status"]]
    results = {}
    for served in (False, True):
        db = new_db()
        sql_dir = tmp_path / f"sql-{served}"
        copy_shipped(sql_dir)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "DATABASE_URL": db.dsn,
               "APPDB_SQL_DIR": str(sql_dir), "XDG_RUNTIME_DIR": str(runtime / str(served))}
        (runtime / str(served)).mkdir()
        if served and asked == "variable":
            env[forkserver.VARIABLE] = "1"
        runs = []
        for number, argv in enumerate(commands):
            if number == 10:  # 028's incident again, which verify must fail on
                db.execute("ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_id_again UNIQUE (user_id)")
            if number == 12:  # a migration that fails half-way: exit 1, nothing of it kept
                (sql_dir / "031_broken.sql").write_text("CREATE TABLE app.t031 (id int);\nSELECT 1/0;\n")
                (sql_dir / "revert" / "031_broken.sql").write_text("DROP TABLE app.t031;\n")
            if served and asked == "flag":
                argv = [*argv, forkserver.FLAG]
            done = subprocess.run([str(ROOT / "bin" / "appdb"), *argv], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=120, check=False)
            runs.append((argv[0], done.returncode, _same_in_every_run(done.stdout),
                         _same_in_every_run(done.stderr).replace(str(sql_dir), "SQL")))
        results[served] = (runs, applied_ids(db), db.execute("SELECT to_regclass('app.t031') IS NULL")[0][0])
        if served:
            servers_bind(runtime / str(served) / "appdb", 1)
        else:
            assert_no_server_binds(runtime / str(served) / "appdb")
    assert results[True] == results[False]
    statuses = [code for _command, code, _out, _err in results[True][0]]
    assert statuses == [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0], results[True][0]
    assert results[True][1:] == (["027", "028", "029", "030"], True)


def test_a_served_apply_is_stopped_by_ctrl_c_as_its_own_process_would_be(db, applied, server, tmp_path):
    """A migration waiting for a lock: Ctrl-C in the caller stops it, rolls it back, exit 130."""
    (applied / "031_waits.sql").write_text("LOCK TABLE app.memberships IN ACCESS EXCLUSIVE MODE;\n"
                                          "CREATE TABLE app.t031 (id int);\n")
    (applied / "revert" / "031_waits.sql").write_text("DROP TABLE app.t031;\n")
    code = ("import sys; from appdb.forkserver.caller import run_via_server as r; "
            "print(r(sys.argv[1], sys.argv[2:]), flush=True)")
    with db.connect() as holder:
        holder.execute("BEGIN; LOCK TABLE app.memberships IN SHARE MODE")
        argv = ["apply", "--dsn", db.dsn, "--sql-dir", str(applied), "--lock-timeout", "30", forkserver.FLAG]
        caller_process = subprocess.Popen([sys.executable, "-c", code, str(server), *argv], cwd=ROOT,
                                          env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND database = (SELECT oid FROM pg_database " \
                  "WHERE datname = current_database())"
        wait_for(lambda: holder.execute(waiting).fetchone()[0] == 1, timeout=30,
                 what="the served apply to wait for the table's lock")
        caller_process.send_signal(signal.SIGINT)
        out, err = caller_process.communicate(timeout=60)
        holder.execute("ROLLBACK")
    assert out.strip().splitlines()[-1] == "130", out + err
    assert "interrupted" in err
    assert applied_ids(db) == ["027", "028", "029", "030"]
    assert db.execute("SELECT to_regclass('app.t031') IS NULL")[0][0]


def lock_waiters(holder) -> int:
    """appdb connections to the test database other than the holder's: a worker polling for the lock."""
    return holder.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND application_name = 'appdb' AND pid <> pg_backend_pid()").fetchone()[0]


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def blocked_caller(db, applied, server, holder, ignore_term: bool = False) -> subprocess.Popen:
    """A served `revert 030` whose worker waits for the migration lock the test holds."""
    holder.execute("SELECT pg_advisory_lock(%s)", (0x6170706462,))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), "--wait", "120", forkserver.FLAG]
    code = ("import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else "") + CLIENT
    # As a terminal's foreground process has it: a shell's background job (bin/test runs one
    # major in the background) starts with SIGINT ignored, and so would the caller and its worker.
    caller = subprocess.Popen([sys.executable, "-c", code, str(server), *argv], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    wait_for(lambda: lock_waiters(holder) == 1, timeout=30, what="the worker to wait for the migration lock")
    return caller


@pytest.mark.parametrize("ignore_term", [False, True], ids=["default", "caller-ignores-sigterm"])
def test_a_worker_whose_caller_is_killed_is_stopped_too(db, applied, server, ignore_term):
    """Pulumi cancelled: the revert stops as a process of its own would, and takes nothing with it.

    A caller that ignores SIGTERM hands that to its worker, as a parent does to a child; the
    worker still goes, by SIGKILL after the grace period."""
    with db.connect() as holder:
        caller = blocked_caller(db, applied, server, holder, ignore_term)
        caller.send_signal(signal.SIGKILL)
        caller.communicate(timeout=30)
        wait_for(lambda: lock_waiters(holder) == 0, timeout=30, what="the worker to stop with its caller")
    assert applied_ids(db) == ["027", "028", "029", "030"]


def serving(path: Path) -> int:
    """The pid of the server the ``server`` fixture started on ``path``."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if SERVE.encode() in argv and os.fsencode(path) in argv:
            return int(entry.name)
    raise AssertionError(f"no server on {path}")


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listing:
        return [int(child) for child in listing.read().split()]


def in_session(sid: int) -> list[int]:
    """The processes of session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            # After the command's closing parenthesis: state, ppid, pgrp, session.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        if int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


def workers(server: Path) -> list[int]:
    """The server's workers: each relay's one child, busy or forked ahead for the next command."""
    return [worker for relay in children(serving(server)) for worker in children(relay)]


def worker_of(caller: subprocess.Popen, server: Path) -> int:
    """The worker running ``caller``'s command: the one whose stdout is the caller's."""
    stdout = os.readlink(f"/proc/{caller.pid}/fd/1")
    [worker] = [pid for pid in workers(server) if os.readlink(f"/proc/{pid}/fd/1") == stdout]
    return worker


def test_a_worker_killed_before_it_could_report_gives_the_status_a_killed_process_has(db, applied, server):
    """The worker reports its status just before it exits; one that never gets there (the OOM
    killer) is still answered for, from its exit: 128 + SIGKILL, as a shell reports it."""
    with db.connect() as holder:
        caller = blocked_caller(db, applied, server, holder)
        os.kill(worker_of(caller, server), signal.SIGKILL)
        out, _err = caller.communicate(timeout=30)
        assert out.strip() == str(128 + signal.SIGKILL)
        wait_for(lambda: lock_waiters(holder) == 0, timeout=30, what="the killed worker's session to end")
    assert applied_ids(db) == ["027", "028", "029", "030"]


def test_a_relay_killed_once_its_worker_has_the_command_is_not_taken_for_a_command_that_never_ran(db, applied,
                                                                                                  server):
    """Before, the caller ran the command again on its own: a revert or an apply that had committed
    said `nothing to do`, exit 0. Now: exit 1, one line saying it is not run again, and the worker
    goes with its relay (its step rolled back), as a killed process of its own would leave it."""
    with db.connect() as holder:
        caller_process = blocked_caller(db, applied, server, holder)
        worker = worker_of(caller_process, server)
        relay = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(relay, signal.SIGKILL)
        out, err = caller_process.communicate(timeout=30)
        assert out.strip() == "1", out + err
        assert err == f"appdb: error: {caller.COMMAND_LOST}\n"
        wait_for(lambda: lock_waiters(holder) == 0, timeout=30, what="the worker to go with its relay")
    assert applied_ids(db) == ["027", "028", "029", "030"]


def test_a_server_that_closes_before_a_worker_has_the_command_leaves_it_to_the_caller(tmp_path: Path):
    """Nothing ran: the caller runs the command itself (None), and says nothing."""
    path = tmp_path / "closing.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def close_at_once() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    import threading

    thread = threading.Thread(target=close_at_once)
    thread.start()
    assert caller.run_via_server(str(path), ["status", forkserver.FLAG]) is None
    thread.join(timeout=30)
    listener.close()


def test_a_worker_signalled_while_it_waits_for_a_command_is_not_given_one(db, applied, server):
    """The next command's worker is forked ahead and waits with every signal held: one sent to
    it meanwhile (`pkill -f appdb`) would strike at the command's first step. A new worker
    runs the command instead, and the signalled one is gone."""
    wait_for(lambda: len(workers(server)) == 1, timeout=30, what="the worker forked ahead")
    [waiting] = workers(server)
    os.kill(waiting, signal.SIGTERM)
    argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    assert caller.run_via_server(str(server), argv) == 0
    assert applied_ids(db) == ["027", "028", "029"]
    assert not Path(f"/proc/{waiting}").exists()


@pytest.mark.parametrize("which", ["worker", "relay"])
def test_a_stopped_process_forked_ahead_is_not_given_the_command(db, applied, server, which):
    """SIGSTOP cannot be held (`kill -STOP`, a debugger, a profiler): a stopped relay or worker
    given the command would hang its caller, and Pulumi's delete with it (attack review). A new
    one serves it instead."""
    wait_for(lambda: len(workers(server)) == 1, timeout=30, what="the relay and worker forked ahead")
    [relay] = children(serving(server))
    [worker] = children(relay)
    stopped = worker if which == "worker" else relay
    os.kill(stopped, signal.SIGSTOP)
    try:
        argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
        result = subprocess.run([sys.executable, "-c", CLIENT, str(server), *argv], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.stdout.splitlines()[-1] == "0", result.stdout + result.stderr
        assert applied_ids(db) == ["027", "028", "029"]
        wait_for(lambda: not Path(f"/proc/{stopped}").exists(), timeout=30, what="the stopped one to be gone")
    finally:
        if Path(f"/proc/{stopped}").exists():
            os.kill(stopped, signal.SIGCONT)


def test_a_worker_holds_nothing_but_its_command_s_descriptors_even_when_its_relay_was_replaced(db, applied,
                                                                                               server):
    """The waiting relay killed: the server forks another while it holds the caller's socket,
    which that relay, and so its worker, must not keep (attack review). A worker has its
    caller's 0-2, its database connection and its report pipe, nothing else."""
    wait_for(lambda: len(workers(server)) == 1, timeout=30, what="the relay forked ahead")
    [relay] = children(serving(server))
    os.kill(relay, signal.SIGKILL)
    with db.connect() as holder:
        caller = blocked_caller(db, applied, server, holder)
        worker = worker_of(caller, server)
        fd_dir = Path(f"/proc/{worker}/fd")

        def extra() -> list[str]:
            return sorted(os.readlink(fd_dir / name).split(":")[0] for name in os.listdir(fd_dir) if int(name) > 2)

        # Seen between two of its polls for the lock: during a query psycopg holds an epoll
        # descriptor of its own for a moment, which a look at the wrong time would count.
        wait_for(lambda: extra() == ["pipe", "socket"], timeout=10, what=f"only its own descriptors ({extra()})")
        holder.execute("SELECT pg_advisory_unlock_all()")
        out, err = caller.communicate(timeout=60)
    assert out.splitlines()[-1] == "0", out + err


def under_a_subreaper(path: Path, idle: float, body: str) -> list[str]:
    """Run a server on ``path`` (``idle`` seconds) from a process that is a child subreaper,
    ``body`` (Python, with ``server`` started and listening) meanwhile, and after the server has
    exited count the processes that were left to that subreaper. Its printed lines, the last
    ``orphans N``."""
    script = f"""
import ctypes, os, socket, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
server = subprocess.Popen([sys.executable, "-c", {SERVE!r}, {str(path)!r}, "{idle}"])
while not os.path.exists({str(path)!r}):
    time.sleep(0.05)
{body}
assert server.wait(timeout=60) == 0
time.sleep(0.5)
orphans = 0
while True:
    try:
        pid, _status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        time.sleep(0.1)
        continue
    orphans += 1
print("orphans", orphans)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def test_no_process_is_left_unreaped_when_callers_go_unserved(tmp_path: Path):
    """A relay whose caller sends nothing (or is refused) ends its worker and reaps it, and the
    server reaps its relays, the one still waiting too when it leaves: nothing is left to a
    PID 1 that never reaps (`pulumi` in a container without --init; attack review). Orphans
    would come to this subreaper."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "reap.sock"
    body = f"""
for _ in range(5):
    with socket.socket(socket.AF_UNIX) as caller:
        caller.connect({str(path)!r})
    time.sleep(0.1)
"""
    assert under_a_subreaper(path, 1.5, body) == ["orphans 0"]


def test_a_stopped_server_is_passed_over(db, applied, server):
    """A stopped server (`kill -STOP`, a debugger, a frozen cgroup) still takes connections into
    its backlog, and would hold the command, and its caller, for ever: the caller sends it
    nothing and runs the command itself (attack review)."""
    stopped = serving(server)
    os.kill(stopped, signal.SIGSTOP)
    try:
        argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
        result = subprocess.run([sys.executable, "-c", CLIENT, str(server), *argv], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.stdout.splitlines()[-1] == "None", result.stdout + result.stderr
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert applied_ids(db) == ["027", "028", "029", "030"]


def test_no_server_is_started_where_site_changes_what_a_caller_would_send(db, applied, runtime, tmp_path):
    """A served caller skips `site` (bin/appdb's -S): a sitecustomize that sets a variable
    (PGTZ here; PGSSLMODE would weaken TLS) would be missing from its command. So no server
    starts, and every revert sees what a process of its own does (attack review)."""
    (tmp_path / "sitecustomize.py").write_text("import os\nos.environ['PGTZ'] = 'Asia/Tokyo'\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)}
    for _run in range(2):  # the second would be served, were there a server
        result = subprocess.run([str(ROOT / "bin" / "appdb"), "revert", "027", "--dsn", db.dsn, "--sql-dir",
                                 str(applied), forkserver.FLAG], env=env, capture_output=True, text=True, timeout=60)
        # Refused (028 came after it), with when 028 was applied, in the session's time zone.
        assert result.returncode == 1 and "+09:00" in result.stderr, result.stderr
    assert not list(runtime.glob("**/*.sock"))
    assert applied_ids(db) == ["027", "028", "029", "030"]


def test_a_server_that_goes_idle_waits_for_the_command_still_running(db, applied, tmp_path: Path):
    """A revert longer than the idle time (waiting for the lock): the server stops listening, and
    waits for that command's relay before it exits, so the relay is not left to a PID 1 that may
    never reap it (attack review). Orphans would come to this subreaper."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "long.sock"
    argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    body = f"""
import psycopg
with psycopg.connect({db.dsn!r}, autocommit=True) as holder:
    holder.execute("SELECT pg_advisory_lock(%s)", ({0x6170706462},))
    caller = subprocess.Popen([sys.executable, "-c", {CLIENT!r}, {str(path)!r}, *{argv!r}, "--wait", "60"],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(4)  # the server's idle time passes while the revert waits
    holder.execute("SELECT pg_advisory_unlock_all()")
    print("caller", caller.communicate(timeout=60)[0].strip().splitlines()[-1])
"""
    # Idle long enough for a caller to reach it on a loaded machine (0.5 s was not, with both
    # majors' suites running), and still well within the 4 s the revert waits for the lock.
    assert under_a_subreaper(path, 1.5, body)[-2:] == ["caller 0", "orphans 0"]
    assert applied_ids(db) == ["027", "028", "029"]


def test_a_caller_that_cannot_fork_a_server_runs_its_revert_itself(db, applied, runtime):
    """Under a pids limit (a container, CI), no server can be forked: the revert runs in the
    caller's own process, as it would without the flag, not a traceback (attack review)."""
    code = ("import os, sys\n"
            "def refuse():\n"
            "    raise BlockingIOError(11, 'Resource temporarily unavailable')\n"
            "os.fork = refuse\n"
            "from appdb import forkserver\n"
            "sys.exit(forkserver.main(sys.argv[1:]))")
    argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(runtime)})
    assert result.returncode == 0 and result.stdout.startswith("030 billing_logs: reverted"), result.stderr
    assert applied_ids(db) == ["027", "028", "029"]


@pytest.mark.parametrize(("escapes", "status"), [(KeyboardInterrupt, 130), (RuntimeError, 1)])
def test_a_worker_never_leaves_through_the_relay_s_code(monkeypatch, escapes, status):
    """Whatever escapes the command's frame (a Ctrl-C in the instant before the worker holds its
    signals) ends the worker with 130 or 1, never with the relay's 0: a failed revert must not
    reach Pulumi as done (attack review)."""
    from appdb.forkserver import worker as serving

    def work(*_args):
        print("030 billing_logs: reverted")  # buffered, as a command's last line is
        raise escapes()

    monkeypatch.setattr(serving, "_work", work)
    read_end, write_end = os.pipe()
    out_read, out_write = os.pipe()
    relay_end, worker_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            sys.stdout = os.fdopen(out_write, "w")
            serving._worker_process(worker_end, [relay_end], os.getppid(), read_end, write_end)
        finally:
            os._exit(0)  # what the relay's code would have done
    for fd in (write_end, read_end, out_write):
        os.close(fd)
    worker_end.close()
    body = protocol.encode_request(["revert", "030"])
    socket.send_fds(relay_end, [protocol.HEADER.pack(len(body))], [0, 1, 2])
    relay_end.sendall(body)
    relay_end.close()
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == status
    with os.fdopen(out_read) as printed:
        said = printed.read()
    if escapes is KeyboardInterrupt:  # a late Ctrl-C: what the command printed still gets out
        assert said == "030 billing_logs: reverted\n"


def test_a_caller_that_began_with_a_stream_closed_is_not_served(db, applied, server):
    """Its socket would take the free number, and the worker would be handed the caller's own
    end of it as stdin (a killed caller then goes unnoticed) or stdout (its output read as the
    protocol's bytes)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    done = subprocess.run([sys.executable, "-c", CLIENT, str(server), *argv], cwd=ROOT, env=env,
                          preexec_fn=lambda: os.close(0), capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == "None", done.stderr
    assert applied_ids(db) == ["027", "028", "029", "030"]


def test_a_revert_whose_reader_is_gone_ends_as_a_process_of_its_own_does(db, applied, server):
    """Output to a pipe nobody reads any more (`| head -1` that has had its line): served or not,
    the revert is done, exit 1, and no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import sys; from appdb.forkserver.caller import run_via_server as r; "
            "sys.stderr.write(f'status {r(sys.argv[1], sys.argv[2:])}')")
    served = [sys.executable, "-c", code, str(server), "revert", "030", forkserver.FLAG]
    alone = [str(ROOT / "bin" / "appdb"), "revert", "029"]
    results = []
    for command in (served, alone):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = subprocess.run([*command, "--dsn", db.dsn, "--sql-dir", str(applied)], cwd=ROOT,
                                  env=env, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                                  check=False)
        finally:
            os.close(write_end)
        assert "Traceback" not in done.stderr, done.stderr
        results.append(done)
    said = "appdb: error: the output was closed before appdb finished (its reader stopped), so it stopped there"
    assert results[0].stderr.startswith(said) and results[0].stderr.endswith("\nstatus 1")
    assert results[1].returncode == 1 and results[1].stderr.startswith(said)
    assert results[1].stderr.count("\n") == 1
    assert applied_ids(db) == ["027", "028"]


def test_the_libpq_warm_up_reaches_nothing_whatever_the_environment_says(tmp_path):
    """It must not connect anywhere: not to PGHOST/PGHOSTADDR, nor to a host a service file names."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        services = tmp_path / "pg_service.conf"
        services.write_text(f"[other]\nhostaddr=127.0.0.1\nport={port}\n")
        for extra in ({"PGHOST": "127.0.0.1", "PGHOSTADDR": "127.0.0.1", "PGPORT": str(port)},
                      {"PGSERVICE": "other", "PGSERVICEFILE": str(services)}):
            env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
            done = subprocess.run([sys.executable, "-c", "from appdb.forkserver import server; "
                                   "server._warm_libpq_crypto()"], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            listener.settimeout(0.3)
            with pytest.raises(TimeoutError):
                listener.accept()


@pytest.mark.parametrize("kind", ["fifo", "process-substitution"])
def test_the_libpq_warm_up_reads_no_service_file(tmp_path, kind):
    """A service file that is a pipe: the warm-up (in the first revert of a chain) must neither
    wait on it (a FIFO nobody writes hung the revert) nor read it up (`PGSERVICEFILE=<(...)`,
    whose one read the revert's own connection needs)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = ("import os, sys; from appdb.forkserver import server; server._warm_libpq_crypto(); "
             "print(os.environ['PGSERVICEFILE'] == sys.argv[1], open(sys.argv[1]).read() if sys.argv[2] == 'read' "
             "else '')")
    if kind == "fifo":
        fifo = tmp_path / "pg_service.conf"
        os.mkfifo(fifo)
        done = subprocess.run([sys.executable, "-c", probe, str(fifo), "-"], cwd=ROOT,
                              env={**env, "PGSERVICEFILE": str(fifo), "PGSYSCONFDIR": str(tmp_path)},
                              capture_output=True, text=True, timeout=30, check=False)
        assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr
    else:
        read_end, write_end = os.pipe()
        os.write(write_end, b"[mine]\nhost=/nowhere\n")
        os.close(write_end)
        try:
            done = subprocess.run([sys.executable, "-c", probe, f"/dev/fd/{read_end}", "read"], cwd=ROOT,
                                  env={**env, "PGSERVICEFILE": f"/dev/fd/{read_end}"}, pass_fds=(read_end,),
                                  capture_output=True, text=True, timeout=30, check=False)
        finally:
            os.close(read_end)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["True", "[mine]", "host=/nowhere"]


def test_ctrl_c_in_the_caller_interrupts_the_worker_as_it_would_a_process_of_its_own(db, applied, server):
    with db.connect() as holder:
        caller = blocked_caller(db, applied, server, holder)
        caller.send_signal(signal.SIGINT)
        out, err = caller.communicate(timeout=30)
        assert out.strip() == "130"  # the status the caller got: what `appdb` exits with on Ctrl-C
        assert err.startswith("appdb: error: interrupted; the step in progress was rolled back")
        assert "Traceback" not in err
        wait_for(lambda: lock_waiters(holder) == 0, timeout=30, what="the worker to stop")
    assert applied_ids(db) == ["027", "028", "029", "030"]


def test_a_caller_with_other_groups_is_not_served(db, applied, server):
    """The same uid with other supplementary groups (or capabilities): a worker would have the server's."""
    if os.geteuid() != 0:
        pytest.skip("needs root: runs the caller with other supplementary groups")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    done = subprocess.run([sys.executable, "-c", CLIENT, str(server), *argv], cwd=ROOT, env=env,
                          extra_groups=[*os.getgroups(), 4242], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.stdout.strip() == "None", done.stderr
    assert applied_ids(db) == ["027", "028", "029", "030"]


def test_the_server_keeps_no_pipe_of_its_callers_open(db, applied, runtime):
    """A shell or CI wrapper may hand the command more than 0-2: its reader must not wait for the server."""
    read_end, write_end = os.pipe()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "DATABASE_URL": db.dsn,
           "APPDB_SQL_DIR": str(applied), "XDG_RUNTIME_DIR": str(runtime)}
    try:
        done = subprocess.run(["sh", "-c", revert_command("030", allow_data_loss=False)], cwd=ROOT, env=env,
                              pass_fds=[write_end], capture_output=True, text=True, timeout=120, check=False)
        os.close(write_end)
        write_end = -1
        assert done.returncode == 0, done.stderr
        servers_bind(runtime / "appdb", 1)
        import select

        assert select.select([read_end], [], [], 5.0)[0], "the pipe stayed open: the server holds it"
        assert os.read(read_end, 1) == b""
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_the_server_goes_after_it_is_idle_and_takes_its_socket(tmp_path: Path):
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "idle.sock"
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(path), "0.3"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    assert proc.wait(timeout=60) == 0
    assert not path.exists() and not Path(f"{path}.lock").exists()
    # The relay and worker it had forked for the next command go with it.
    wait_for(lambda: not in_session(proc.pid), timeout=30, what="the waiting relay and worker to leave")
    # Nobody listening: the caller is told so (None) and runs the command itself.
    assert caller.run_via_server(str(path), ["--version"]) is None


def test_only_one_server_per_socket(server):
    # A second server for the same path leaves at once: it cannot take the path's lock.
    second = subprocess.run([sys.executable, "-c", SERVE, str(server), "60"], cwd=ROOT, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert second.returncode == 0 and server.exists()


@pytest.mark.parametrize("name", ["PSYCOPG_IMPL", "LD_PRELOAD", "OPENSSL_CONF", "PGLOCALEDIR", "HOME", "TMPDIR"])
def test_a_variable_read_as_a_process_starts_gets_a_server_of_its_own(runtime, monkeypatch, name):
    """psycopg picks its libpq from PSYCOPG_IMPL as it is imported, the loader reads LD_*, OpenSSL
    its configuration...: once, in the server. A caller whose value differs must not be served by
    it (a libpq older than 16 cannot insist on SCRAM: a served command would give its password away)."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv(name, raising=False)
    before = address.socket_path()
    monkeypatch.setenv(name, "/elsewhere")
    assert address.socket_path() != before


# Not `nice -n 19` nor `chrt --idle`: on a busy machine their server could wait long for a CPU to bind on.
@pytest.mark.parametrize("scheduled", [["nice", "-n", "5"], ["chrt", "--batch", "0"]], ids=["nice", "chrt"])
def test_a_caller_scheduled_otherwise_gets_a_server_of_its_own(db, applied, runtime, scheduled):
    """A worker has its server's scheduling: `nice -n 15 appdb apply` must not run at the first
    caller's priority, nor an interactive apply at a cron job's SCHED_IDLE."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(runtime)}
    argv = [str(ROOT / "bin" / "appdb"), "status", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    for prefix in ([], scheduled):
        done = subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    servers_bind(runtime / "appdb", 2)


@pytest.mark.parametrize("name", ["PGPASSWORD", "PGHOST", "DATABASE_URL", "APPDB_SQL_DIR", "APPDB_MIGRATION_FILE",
                                  "PULUMI_COMMAND_STDOUT", "PULUMI_COMMAND_STDERR", "PWD", "OLDPWD", "_", "SHLVL"])
def test_a_variable_each_command_reads_for_itself_shares_the_server(runtime, monkeypatch, name):
    """What libpq reads at each connect and appdb in each command, and what Pulumi sets for each
    delete (the create's output): a chain of reverts must share one server."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv(name, "one")
    before = address.socket_path()
    monkeypatch.setenv(name, "another")
    assert address.socket_path() == before


SECRET_DSN = "postgresql://postgres:hunter2-Sekr1t@127.0.0.1:1/elsewhere"


@pytest.mark.parametrize("argv", [
    ["status", "--dsn", SECRET_DSN],
    ["status", "--dsn", SECRET_DSN, "--dsn", "host=h"],  # argparse keeps the last; ps shows both
    ["status", f"--dsn={SECRET_DSN}", "--dsn="],
    ["status", "--dsn=host=h password=hunter2-Sekr1t"],
    ["revert", "--dsn", "host=h", SECRET_DSN],  # a DSN where the id goes
    ["apply", "--only", SECRET_DSN],
    ["status", "--sql-dir", "host=h sslpassword=hunter2-Sekr1t"],
])
def test_no_argument_that_holds_a_password_lets_a_server_start(argv):
    assert not forkserver._parses_without_secrets(argv)
    assert forkserver._parses_without_secrets(["status", "--dsn", "host=h dbname=x"])


def test_a_file_that_cannot_be_read_in_the_checkout_does_not_stop_a_served_command(runtime):
    """An editor's lock file (Emacs's .#cli.py, a dangling link) while the socket's name is made:
    the command runs, served or not, with no traceback."""
    copy, _path = readable_checkout()
    try:
        shutil.copytree(ROOT / "bin", copy / "bin")
        (copy / ".venv").symlink_to(ROOT / ".venv")
        (copy / "appdb" / ".#cli.py").symlink_to("root@host.1234:1700000000")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "XDG_RUNTIME_DIR": str(runtime)}
        done = subprocess.run([str(copy / "bin" / "appdb"), "status", "--dsn", "host=/nonexistent", forkserver.FLAG],
                              env=env, capture_output=True, text=True, timeout=60, check=False)
    finally:
        shutil.rmtree(copy)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr


def test_a_password_in_the_arguments_starts_no_server(db, applied, runtime):
    """The server and its spares keep the first caller's arguments, which /proc shows every user:
    a caller with a password in --dsn runs on its own; one with it in the environment starts one."""
    params = db.tcp_params
    password = params.pop("password")
    dsn = " ".join(f"{key}={value}" for key, value in params.items())
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "XDG_RUNTIME_DIR": str(runtime)}
    argv = [str(ROOT / "bin" / "appdb"), "status", "--sql-dir", str(applied), forkserver.FLAG]
    in_arguments = subprocess.run([*argv, "--dsn", f"{dsn} password={password}"], env=env, capture_output=True,
                                  text=True, timeout=60, check=False)
    assert in_arguments.returncode == 0, in_arguments.stderr
    assert_no_server_binds(runtime / "appdb")
    in_environment = subprocess.run([*argv, "--dsn", dsn], env={**env, "PGPASSWORD": password}, capture_output=True,
                                    text=True, timeout=60, check=False)
    assert in_environment.returncode == 0, in_environment.stderr
    servers_bind(runtime / "appdb", 1)


@pytest.mark.parametrize("kind", ["open", "symlink", "file"])
def test_a_folder_that_is_not_private_is_passed_over(tmp_path: Path, monkeypatch, kind):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    target = runtime / "appdb"
    if kind == "open":
        target.mkdir(mode=0o700)
        target.chmod(0o755)
    elif kind == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        target.symlink_to(tmp_path / "elsewhere")
    else:
        target.write_text("")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert address.private_folder() == f"/tmp/appdb-{os.getuid()}"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "fresh"))
    (tmp_path / "fresh").mkdir()
    assert address.private_folder() == str(tmp_path / "fresh" / "appdb")
    assert (tmp_path / "fresh" / "appdb").stat().st_mode & 0o777 == 0o700


def test_a_folder_too_long_for_a_socket_is_passed_over(tmp_path: Path, monkeypatch):
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    assert address.socket_path().startswith(f"/tmp/appdb-{os.getuid()}/")


def test_another_module_path_or_interpreter_flag_gets_a_server_of_its_own(tmp_path: Path, runtime, monkeypatch):
    """A worker imports lazily from its server's sys.path: `python -m appdb` puts the folder it ran in there."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "from appdb.forkserver import address; print(address.socket_path())"

    def path(*flags: str, before: str = "") -> str:
        return subprocess.run([sys.executable, *flags, "-c", before + code], env=env, capture_output=True,
                              text=True, check=True, cwd=ROOT).stdout.strip()

    assert path() == path()
    assert path(before=f"import sys; sys.path.insert(0, {str(tmp_path)!r}); ") != path()
    assert path("-P") != path()
    assert path("-B") != path("-P")


def test_changed_code_gets_a_server_of_its_own(tmp_path: Path, runtime, monkeypatch):
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "appdb", copy / "appdb", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    env = {**os.environ, "PYTHONPATH": str(copy)}

    def path() -> str:
        return subprocess.run([sys.executable, "-c", "from appdb.forkserver import address; print(address.socket_path())"],
                              env=env, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()

    before = path()
    assert before.startswith(str(runtime / "appdb")) and before != address.socket_path()
    runner = copy / "appdb" / "migrate" / "runner.py"
    runner.write_text(runner.read_text() + "\n# edited\n")
    assert path() != before


@pytest.fixture(scope="module")
def probe():
    """A throwaway OS user of this module's own (another module's may be removed meanwhile)."""
    with throwaway_os_user(PROBE) as account:
        yield account


PROBE_CLIENT = """
import socket, sys
from appdb.forkserver.caller import run_via_server
probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
probe.connect(sys.argv[1])  # the socket is open to everyone: the connection itself succeeds
probe.close()
print("connected", run_via_server(sys.argv[1], sys.argv[2:]))
"""


def test_another_os_user_is_not_served_even_through_an_open_socket(db, applied, probe):
    """A mistake opens the folder and the socket to everyone: the peer's uid still decides."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="appdb-fs-test-", dir="/tmp"))
    path = folder / "open.sock"
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(path), "60"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(path.exists, timeout=30, what="the server's socket")
        folder.chmod(0o711)
        path.chmod(0o666)
        copy, pythonpath = readable_checkout()  # the checkout may be closed to the probe user
        argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
        done = subprocess.run(["/usr/bin/python3", "-c", PROBE_CLIENT, str(path), *argv], user=probe.pw_uid,
                              group=probe.pw_gid, extra_groups=[], cwd="/", capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath}, timeout=60,
                              check=False)
        shutil.rmtree(copy, ignore_errors=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "connected None"
    assert applied_ids(db) == ["027", "028", "029", "030"]


@pytest.mark.parametrize("argv", [[], ["revert", "030", ""], ["--dsn", "password=é\udcff x", "ünï"]])
def test_a_request_carries_arguments_environment_and_folder_byte_for_byte(argv, monkeypatch, tmp_path):
    """Undecodable bytes (a surrogate-escaped name), empty arguments and '=' in values arrive as they left."""
    monkeypatch.setenv("APPDB_ODD", "a=b=c")
    monkeypatch.setenv("APPDB_EMPTY", "")
    monkeypatch.setitem(os.environb, b"APPDB_RAW", b"\xff\xfe")
    monkeypatch.chdir(tmp_path)
    request = protocol.decode_request(protocol.encode_request(argv))
    assert [os.fsdecode(arg) for arg in request.argv] == argv
    assert request.env == dict(os.environb)
    assert request.cwd == os.getcwdb() and 0 <= request.umask <= 0o777


@pytest.mark.parametrize("body", [b"", b"1\0/\x0018\x000", b"2\0/\x0018\0\0\0x", b"2\0/\x0018\0\0\0" b"5\0only-one",
                                  b"2\0/\x0018\0x\0\0" b"0", b"2\0/\x001000\0\0\0" b"0"])
def test_bytes_that_are_not_a_request_are_refused(body):
    assert protocol.decode_request(body) is None


def test_a_request_carries_the_callers_ignored_and_blocked_signals():
    code = ("import signal, os; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
            "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1]); "
            "from appdb.forkserver import protocol as f; r = f.decode_request(f.encode_request([])); "
            "print(sorted(r.ignored), sorted(r.blocked))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, check=True)
    ignored, blocked = done.stdout.strip().split("] [")
    assert str(int(signal.SIGHUP)) in ignored.strip("[").split(", ")
    assert blocked.strip("]").split(", ") == [str(int(signal.SIGUSR1))]


def test_the_caller_sends_nothing_to_a_server_of_another_user(tmp_path: Path, probe):
    """A folder swapped between the check and the connect: the listener is another user's; it gets nothing."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="appdb-fs-test-", dir="/tmp"))
    os.chown(folder, probe.pw_uid, probe.pw_gid)
    path, got = folder / "theirs.sock", folder / "received"
    # Bound under another name and renamed once listening: a caller that comes at once is not refused.
    listener = (
        "import os, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1] + '.new'); os.chmod(sys.argv[1] + '.new', 0o666)\n"
        "s.listen(1); os.rename(sys.argv[1] + '.new', sys.argv[1]); c, _ = s.accept(); c.settimeout(5)\n"
        "data = b''\n"
        "try:\n"
        "    while chunk := c.recv(65536): data += chunk\n"
        "except OSError: pass\n"
        "open(sys.argv[2], 'wb').write(data)\n"
    )
    theirs = subprocess.Popen(["/usr/bin/python3", "-c", listener, str(path), str(got)], user=probe.pw_uid,
                              group=probe.pw_gid, extra_groups=[], cwd="/", env={"PATH": "/usr/bin:/bin"})
    try:
        wait_for(path.exists, timeout=30, what="the other user's socket")
        assert caller.run_via_server(str(path), ["revert", "030", "--dsn", "password=secret"]) is None
        assert theirs.wait(timeout=30) == 0
        assert got.read_bytes() == b""
    finally:
        theirs.kill()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_folder_in_a_parent_others_may_write_is_passed_over(tmp_path: Path, monkeypatch):
    """Whoever may rename entries of the parent could swap our folder for theirs after the check."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    assert address.private_folder() == f"/tmp/appdb-{os.getuid()}"
    shared.chmod(0o1777)  # sticky: only the owner of an entry may rename it
    assert address.private_folder() == str(shared / "appdb")


def test_a_caller_in_other_namespaces_is_not_served(db, applied, server):
    """A sandbox of the same uid (bwrap, unshare --net): a worker would have the server's network and files."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare: runs the caller in a network namespace of its own")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", CLIENT, str(server), *argv], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"unshare is not allowed here: {done.stderr.strip()}")
    assert done.stdout.strip() == "None", done.stderr
    assert applied_ids(db) == ["027", "028", "029", "030"]


EARLY_INTERRUPT = """
import os, socket, sys
from appdb.forkserver import protocol as f
client = socket.socket(socket.AF_UNIX)
client.connect(sys.argv[1])
body = f.encode_request(sys.argv[2:])
socket.send_fds(client, [f.HEADER.pack(len(body))], [0, 1, 2])
client.sendall(body + f.INTERRUPT)  # Ctrl-C at once: before the worker has set anything up
assert f.receive_exactly(client, len(f.STARTED)) == f.STARTED
print(f.STATUS.unpack(f.receive_exactly(client, f.STATUS.size))[0])
"""


def test_a_ctrl_c_that_comes_at_once_is_not_lost(db, applied, server):
    with db.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (0x6170706462,))
        argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), "--wait", "120", forkserver.FLAG]
        done = subprocess.run([sys.executable, "-c", EARLY_INTERRUPT, str(server), *argv], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=60, check=False, preexec_fn=_sigint_default)
        assert done.stdout.strip() == "130", done.stderr
        assert "interrupted" in done.stderr and "Traceback" not in done.stderr
    assert applied_ids(db) == ["027", "028", "029", "030"]


DOUBLE_CTRL_C = """
import os, signal, sys, types, _socket
from appdb.forkserver import caller as c
from appdb.forkserver.protocol import INTERRUPT
class Sock(_socket.socket):
    pressed = False
    def sendall(self, data, *rest):
        if data == INTERRUPT and not Sock.pressed:
            Sock.pressed = True
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C, as the first is passed on
        return super().sendall(data, *rest)
fake = types.ModuleType("_socket"); fake.__dict__.update(_socket.__dict__); fake.socket = Sock
c._socket = fake
print(c.run_via_server(sys.argv[1], sys.argv[2:]), flush=True)
"""


def test_ctrl_c_twice_is_an_interrupted_command_not_a_lost_one(db, applied, server):
    """A second Ctrl-C while the first is on its way: 'interrupted', exit 130, as a process of its own."""
    with db.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (0x6170706462,))
        argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), "--wait", "120", forkserver.FLAG]
        process = subprocess.Popen([sys.executable, "-c", DOUBLE_CTRL_C, str(server), *argv], cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
        wait_for(lambda: lock_waiters(holder) == 1, timeout=30, what="the worker to wait for the lock")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert out.strip() == "130", (out, err)
    assert caller.COMMAND_LOST not in err and "interrupted" in err
    assert applied_ids(db) == ["027", "028", "029", "030"]


def test_root_never_makes_its_folder_in_another_users_runtime_folder(tmp_path: Path, monkeypatch, probe):
    theirs = tmp_path / "run-user"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, probe.pw_uid, probe.pw_gid)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(theirs))
    assert address.private_folder() == f"/tmp/appdb-{os.getuid()}"
    assert list(theirs.iterdir()) == []


def test_a_caller_that_ignores_ctrl_c_has_a_worker_that_ignores_it(db, applied, server):
    """A shell's background job ignores SIGINT, and so does a process it starts: so does the worker."""
    with db.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (0x6170706462,))
        code = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n" + EARLY_INTERRUPT
        argv = ["revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), "--wait", "3", forkserver.FLAG]
        done = subprocess.run([sys.executable, "-c", code, str(server), *argv], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=60, check=False)
    # The interrupt was ignored: the worker waited out --wait for the lock, as the caller's own process would.
    assert done.stdout.strip() == "1", done.stderr
    assert done.stderr.startswith("appdb: error: another appdb run holds the migration lock")
    assert applied_ids(db) == ["027", "028", "029", "030"]


@pytest.mark.parametrize("argv", [["inspect", forkserver.FLAG], ["new", "x", forkserver.FLAG], [forkserver.FLAG],
                                  ["revert", forkserver.FLAG], ["status", "--nonsense", forkserver.FLAG]])
def test_the_flag_where_it_does_not_belong_is_a_usage_error_and_starts_no_server(argv, runtime):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(runtime)}
    done = subprocess.run([str(ROOT / "bin" / "appdb"), *argv], env=env, cwd=runtime, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("appdb: error: ") and done.stderr.count("\n") == 1
    assert_no_server_binds(runtime / "appdb")


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_caller_with_a_closed_stream_runs_on_its_own_and_starts_no_server(db, applied, runtime, closed):
    """Such a process has no sys.stdout (or stderr): a server forked from it would print nothing for anyone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(runtime)}
    argv = [str(ROOT / "bin" / "appdb"), "revert", "030", "--dsn", db.dsn, "--sql-dir", str(applied), forkserver.FLAG]
    fd = 1 if closed == "stdout" else 2
    done = subprocess.run(argv, env=env, cwd=runtime, capture_output=True, text=True, timeout=60, check=False,
                          preexec_fn=lambda: os.close(fd))
    assert done.returncode == 0, done.stderr
    assert applied_ids(db) == ["027", "028", "029"]
    assert_no_server_binds(runtime / "appdb")
    # The next caller, with its streams, starts one, and its output reaches it.
    argv[2] = "029"
    shown = subprocess.run([*argv, "--allow-data-loss"], env=env, cwd=runtime, capture_output=True, text=True,
                           timeout=60, check=False)
    assert shown.returncode == 0 and shown.stdout.startswith("029 payment_events: reverted"), shown.stderr


def test_an_upgraded_or_edited_dependency_gets_a_server_of_its_own(runtime, monkeypatch, tmp_path):
    """A server keeps the psycopg it imported: a caller whose psycopg was upgraded (a new version's
    folder in site-packages) or edited in place must not be served by it."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    site = tmp_path / "site-packages"
    (site / "psycopg").mkdir(parents=True)
    module = site / "psycopg" / "__init__.py"
    module.write_text("version = 1\n")
    monkeypatch.setattr(address, "site_packages", lambda: [str(site)])
    names = [address.socket_path()]
    module.write_text("version = 22\n")  # edited in place: another size
    names.append(address.socket_path())
    os.utime(module, ns=(1, 1))  # or only touched
    names.append(address.socket_path())
    (site / "psycopg-3.4.0.dist-info").mkdir()  # another package installed or upgraded
    names.append(address.socket_path())
    assert len(set(names)) == len(names)


def test_a_server_loads_from_site_packages_only_what_its_name_covers():
    """address.DEPENDENCIES must name every package the served commands import from the virtualenv."""
    code = ("import json, sys; from appdb.forkserver import server, address; server.preload(); "
            "print(json.dumps([address.site_packages(), [getattr(m, '__file__', None) or '' "
            "for m in list(sys.modules.values())]]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60, check=True)
    (folder,), files = json.loads(done.stdout)
    loaded = {Path(f).relative_to(folder).parts[0] for f in files if f.startswith(folder + os.sep)}
    assert loaded and loaded <= set(address.DEPENDENCIES), loaded - set(address.DEPENDENCIES)
