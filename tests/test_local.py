"""`appdb local`: the project's own cluster, shaped like Supabase, from the command line.

Who gets in is tested as an attacker would: over TCP and through the socket, as each
role, with and without the passwords, and (as root only) as another OS user,
``appdb_probe``, made here with useradd and removed afterwards.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from appdb.errors import ConfigError
from appdb.local.cluster import (
    BACKEND,
    LOGIN,
    OLD_PASSWORDS,
    ROLES,
    SUPERUSER,
    Cluster,
    new_password,
    read_password_file,
    server_account,
    write_password_file,
)
from appdb.local.postgres import SUPPORTED, project_major
from appdb.migrate.files import discover
from tests.helpers import ROOT, free_port, readable_checkout, throwaway_os_user

PASSWORD_SHAPE = re.compile(r"[A-Z][a-z][0-9][a-z](-[A-Z][a-z][0-9][a-z]){5}")
# What the local stack gave app_backend before its password was random (Pulumi.local.yaml).
OLD_BACKEND_PASSWORD = "Zf4n-Pk8s-Lb6w-Jy3t"
# One per test process: bin/test runs test_local on both majors at once, and one run must not
# delete the other's user mid-test.
PROBE = f"appdb_probe_{os.getpid()}"


def run_appdb(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "APPDB_SQL_DIR": str(ROOT / "sql"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "appdb", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=120, check=False)


def open_folder(prefix: str) -> Path:
    """A folder the test makes, that anyone may enter (as a checkout's parent usually is)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def server_uid() -> int:
    account = server_account()
    return os.geteuid() if account is None else account.pw_uid


@pytest.fixture(scope="module")
def local():
    """`appdb local up --seed` in a new checkout-like folder on a free port; `down` afterwards."""
    base = open_folder("appdb-local-test-")
    home = base / "checkout" / ".appdb" / "local"
    port = str(free_port())

    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run_appdb(*args, env=env)

    result = cli("local", "up", "--seed", "--home", str(home), "--port", port)
    assert result.returncode == 0, result.stderr
    assert "notice" not in result.stderr
    try:
        yield cli, home, port
    finally:
        cli("local", "down", "--home", str(home), "--port", port)
        shutil.rmtree(base, ignore_errors=True)


def test_local_up_refuses_in_one_line_a_cluster_of_another_major_version(local):
    cli, home, port = local
    made_by = int((home / "data" / "PG_VERSION").read_text())
    assert made_by == project_major()  # local up runs the project's major (or APPDB_PG_MAJOR's)
    other = next(major for major in SUPPORTED if major != made_by)
    result = cli("local", "up", "--home", str(home), "--port", port, env={"APPDB_PG_MAJOR": str(other)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"is PostgreSQL {made_by}, and the project runs {other}" in result.stderr
    assert "'bin/appdb local reset'" in result.stderr
    with psycopg.connect(url_of(local)) as conn:  # still running, untouched
        assert conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()[0] == made_by


def test_local_database_has_the_supabase_extensions_on_the_search_path(local):
    with psycopg.connect(url_of(local)) as conn:
        assert conn.execute("SELECT uuid_generate_v4() IS NOT NULL").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM auth.users").fetchone()[0] == 3  # --seed


def url_of(local) -> str:
    cli, home, port = local
    return cli("local", "url", "--home", str(home), "--port", port).stdout.strip()


def test_local_url_connects_as_the_postgres_login_with_the_clusters_own_password(local):
    cli, home, port = local
    password = cli("local", "password", "--home", str(home), "--port", port).stdout.strip()
    assert PASSWORD_SHAPE.fullmatch(password)
    assert url_of(local) == f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    with psycopg.connect(url_of(local)) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"


def test_up_prints_the_url_without_its_password(local):
    cli, home, port = local
    result = cli("local", "up", "--home", str(home), "--port", port)
    password = Cluster(home=home, port=int(port)).password()
    assert password not in result.stdout + result.stderr
    assert "postgres:********@" in result.stdout


def test_every_cluster_has_its_own_random_passwords_in_a_file_only_its_owner_reads(local, cluster):
    _, home, port = local
    mine, tests = Cluster(home=home, port=int(port)), cluster
    for node in (mine, tests):
        info = os.lstat(node.password_file)
        assert stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o600
        passwords = read_password_file(node.password_file)
        assert set(passwords) == set(ROLES)
        assert all(PASSWORD_SHAPE.fullmatch(p) for p in passwords.values()), "no word and no identifier"
        assert len(set(passwords.values())) == len(ROLES)
    assert not set(read_password_file(mine.password_file).values()) & set(read_password_file(tests.password_file).values())
    assert not set(read_password_file(mine.password_file).values()) & {*OLD_PASSWORDS, OLD_BACKEND_PASSWORD}


def test_passwords_are_no_word_and_no_identifier():
    """Pulumi masks every occurrence of a secret's text: `postgres` once garbled `pulumi-resource-postgresql`."""
    made = {new_password() for _ in range(200)}
    assert len(made) == 200
    for password in made:
        assert not re.search(r"[A-Za-z]{4,}", password), password
        assert not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", password), password
        assert len(password) == 29


def test_the_password_file_is_0600_from_the_start_and_never_overwritten(tmp_path):
    path = tmp_path / "pgpass"
    previous = os.umask(0)  # the most careless umask: the file is still the owner's alone
    try:
        write_password_file(path, {"postgres": "Ab1c-De2f"})
    finally:
        os.umask(previous)
    assert mode(path) == 0o600
    with pytest.raises(FileExistsError):
        write_password_file(path, {"postgres": "Gh3i-Jk4l"})
    assert read_password_file(path) == {"postgres": "Ab1c-De2f"}
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="only you can read"):
        read_password_file(path)


def test_the_superuser_gets_in_through_the_socket_only(local):
    _, home, port = local
    node = Cluster(home=home, port=int(port))
    with node.connect(user=SUPERUSER) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    tcp = {**node.params(user=SUPERUSER, tcp=True), "password": node.password(SUPERUSER)}
    with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
        psycopg.connect(**tcp, connect_timeout=10)


def test_the_postgres_login_needs_its_password_over_tcp(local):
    _, home, port = local
    node = Cluster(home=home, port=int(port))
    tcp = {key: value for key, value in node.params(tcp=True).items() if key != "passfile"}
    with psycopg.connect(**tcp, password=node.password(), connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == LOGIN
    for wrong in ("", *OLD_PASSWORDS, node.password(SUPERUSER)):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed|no password supplied"):
            psycopg.connect(**tcp, password=wrong, passfile="/nonexistent", connect_timeout=10)


def test_the_clusters_folders_are_the_server_users_alone(local):
    _, home, port = local
    node = Cluster(home=home, port=int(port))
    for folder in (node.data_dir, node.socket_dir, node.log_dir):
        assert mode(folder) == 0o700, folder
        assert folder.stat().st_uid == server_uid(), folder
    assert node.password_file.stat().st_uid == os.geteuid()
    assert "reject" in (node.data_dir / "pg_hba.conf").read_text()


def test_up_makes_the_missing_folders_and_changes_no_mode_of_those_that_were_there(local):
    _, home, _ = local
    checkout, base = home.parent.parent, home.parent.parent.parent
    assert mode(base) == 0o755  # made by the fixture: left as it was
    for made in (checkout, home.parent, home):
        if os.geteuid() == 0:  # the postgres OS user passes through, nobody else
            assert mode(made) == 0o710 and made.stat().st_gid == server_account().pw_gid, made
        else:
            assert mode(made) == 0o700, made


def test_the_postgres_login_is_not_a_superuser_as_on_supabase(local):
    with psycopg.connect(url_of(local)) as conn:
        row = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
                           "WHERE rolname = 'postgres'").fetchone()
        assert row == (False, True, True, True)
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        assert {"supabase_admin", "anon", "authenticated", "service_role", "authenticator"} <= roles
        assert conn.execute("SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role'").fetchone()[0]
        owner = conn.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'auth'").fetchone()[0]
        assert owner != "postgres"
        assert conn.execute("SELECT count(*) FROM auth.users").fetchone()[0] == 3  # --seed


def test_auth_helpers_read_the_jwt_claims_like_supabase(local):
    with psycopg.connect(url_of(local)) as conn:
        conn.execute("""SELECT set_config('request.jwt.claims', '{"sub": "00000000-0000-4000-8000-000000000001", "role": "authenticated"}', false)""")
        row = conn.execute("SELECT auth.uid()::text, auth.role(), auth.jwt() ->> 'role'").fetchone()
    assert row == ("00000000-0000-4000-8000-000000000001", "authenticated", "authenticated")


def test_the_engine_alone_deploys_on_the_local_database_and_creates_the_group_roles(local):
    """Without Pulumi: no app schema, no group roles; 027 makes what its policies need."""
    cli, _, _ = local
    url = url_of(local)
    env = {"DATABASE_URL": url}
    assert cli("apply", env=env).returncode == 0
    result = cli("verify", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('app_writer', 'app_reader') "
                            "ORDER BY 1").fetchall()
    assert rows == [("app_reader", False), ("app_writer", False)]
    with psycopg.connect(url) as conn:
        tables = conn.execute("SELECT relname FROM pg_class WHERE relnamespace = 'app'::regnamespace "
                              "AND relkind = 'r' ORDER BY 1").fetchall()
    assert {("billing_logs",), ("memberships",), ("payment_events",)} <= set(tables)  # and any the team adds
    for migration in reversed(discover(ROOT / "sql")):
        assert cli("revert", migration.id, env=env).returncode == 0
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname IN ('app_writer', 'app_reader')").fetchone()[0] == 2


def test_the_local_database_listens_where_it_was_made_whatever_port_a_later_command_says(local):
    cli, home, port = local
    other = str(free_port())
    for args, env in ((["--port", other], None), ([], {"APPDB_LOCAL_PORT": other})):
        result = cli("local", "url", "--home", str(home), *args, env=env)
        assert result.returncode == 0, result.stderr
        assert f"@127.0.0.1:{port}/postgres" in result.stdout
        assert result.stderr == (f"appdb: notice: the local database in {home} listens on port {port}, set when it "
                                 f"was made, not {other}: 'bin/appdb local reset --home {home}' makes it anew on {other}\n")
    again = cli("local", "up", "--home", str(home), "--port", other)
    assert again.returncode == 0 and f"127.0.0.1:{port}/postgres" in again.stdout, again.stderr


def test_local_up_twice_is_harmless_and_keeps_the_passwords(local):
    cli, home, port = local
    before = Cluster(home=home, port=int(port)).password_file.read_text()
    result = cli("local", "up", "--home", str(home), "--port", port)
    assert result.returncode == 0, result.stderr
    assert "notice" not in result.stderr
    assert Cluster(home=home, port=int(port)).password_file.read_text() == before


def test_local_reset_gives_a_fresh_database_with_new_passwords(local):
    cli, home, port = local
    url = url_of(local)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.leftover (id bigint)")
    home_mode = mode(home)
    assert cli("local", "reset", "--home", str(home), "--port", port).returncode == 0
    assert mode(home) == home_mode
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url, connect_timeout=10)
    with psycopg.connect(url_of(local)) as conn:
        assert conn.execute("SELECT to_regclass('public.leftover')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM auth.users").fetchone()[0] == 0


def test_a_reset_makes_it_anew_on_the_port_it_was_made_on_unless_another_is_asked_for(local):
    """As `up` and `url` find it: a reset without a port went back to 54322, where another server
    may listen (a newcomer's review: `status` then reached that one)."""
    cli, home, port = local
    result = cli("local", "reset", "--home", str(home), env={"APPDB_LOCAL_PORT": ""})
    assert result.returncode == 0, result.stderr
    assert f"@127.0.0.1:{port}/postgres" in result.stdout and "notice" not in result.stderr
    assert f"@127.0.0.1:{port}/postgres" in cli("local", "url", "--home", str(home), env={"APPDB_LOCAL_PORT": ""}).stdout


def test_local_url_without_a_cluster_says_how_to_start_one(tmp_path):
    result = run_appdb("local", "url", "--home", str(tmp_path / "none"))
    assert result.returncode == 2
    assert result.stderr.startswith("appdb: error: no local database in ") and "local up" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- a folder nobody else can change under `local up` (attack review) -----------------------


@pytest.fixture(scope="module")
def other_user():
    with throwaway_os_user("appdb_homeprobe") as account:
        yield account


def refused(home: Path, *args: str) -> str:
    result = run_appdb("local", "up", "--home", str(home), "--port", str(free_port()), *args)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    return line


def test_a_home_of_another_user_is_refused_and_nothing_in_it_changes(tmp_path, other_user):
    home = open_folder("appdb-foreign-") / "local"
    victim = open_folder("appdb-victim-")
    try:
        home.mkdir()
        os.chown(home, other_user.pw_uid, other_user.pw_gid)
        (home / "log").symlink_to(victim)  # what that user would plant
        line = refused(home)
        assert f"{home} belongs to the OS user appdb_homeprobe" in line
        assert victim.stat().st_uid == os.geteuid() and mode(victim) == 0o755
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
        shutil.rmtree(victim, ignore_errors=True)


def test_a_home_under_a_folder_others_may_write_to_is_refused(tmp_path):
    shared = open_folder("appdb-shared-")
    try:
        shared.chmod(0o777)  # not sticky: anyone may rename what is in it
        assert "may be written by others" in refused(shared / "local")
        shared.chmod(0o1777)  # sticky, as /tmp: fine (refused later only if the server user cannot enter it)
        result = run_appdb("local", "url", "--home", str(shared / "local"))
        assert "no local database in" in result.stderr
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_group_of_the_owners_own_may_write_but_a_shared_one_may_not(other_user):
    """umask 002 makes 0775 folders; with a user private group that is no one else's write."""
    base = open_folder("appdb-group-")
    try:
        base.chmod(0o775)
        gid = os.stat(base).st_gid
        own = all(a.pw_uid == os.geteuid() for a in pwd.getpwall() if a.pw_gid == gid)
        result = run_appdb("local", "url", "--home", str(base / "local"))
        assert "no local database in" in result.stderr  # got past the folder checks
        if own:
            up = run_appdb("local", "up", "--home", str(base / "local"), "--port", str(free_port()))
            assert "may be written by others" not in up.stderr
            run_appdb("local", "down", "--home", str(base / "local"))
        os.chown(base, -1, other_user.pw_gid)  # a group someone else is in
        assert "may be written by others" in refused(base / "local")
        # Reading a URL, or stopping a server, changes nothing there: not refused for it.
        last = run_appdb("local", "url", "--home", str(base / "local"))
        assert last.returncode == 0 or "no local database in" in last.stderr, last.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_link_or_a_file_inside_home_is_never_followed(tmp_path):
    base = open_folder("appdb-planted-")
    victim = open_folder("appdb-victim-")
    try:
        home = base / "local"
        home.mkdir()
        (home / "log").symlink_to(victim)
        line = refused(home)
        assert line == (f"appdb: error: {home / 'log'} is a link or a file, not the local database's own folder: "
                        "remove it ('bin/appdb local reset' makes the cluster anew)")
        assert victim.stat().st_uid == os.geteuid() and mode(victim) == 0o755
    finally:
        subprocess.run([sys.executable, "-m", "appdb", "local", "down", "--home", str(base / "local")],
                       capture_output=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(victim, ignore_errors=True)


@pytest.mark.parametrize("make, says", [
    ("file", "is not a folder"),
    ("link", "is a link: point APPDB_LOCAL_HOME (or --home) at the folder itself"),
    ("dollar", "holds a character pg_ctl passes through a shell"),
])
def test_a_home_that_is_no_folder_of_ours_is_one_line_in_every_local_command(tmp_path, make, says):
    base = open_folder("appdb-odd-home-")
    try:
        home = base / ("cmd$(touch pwned)" if make == "dollar" else "local")
        if make == "file":
            home.write_text("not a folder\n")
        elif make == "link":
            (base / "real").mkdir()
            home.symlink_to(base / "real")
        for action in ("up", "url", "password", "down", "reset"):
            result = run_appdb("local", action, "--home", str(home))
            assert result.returncode == 2, (action, result.stderr)
            assert says in result.stderr and len(result.stderr.splitlines()) == 1, (action, result.stderr)
        assert not (base / "pwned").exists() and not Path("pwned").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_server_gets_none_of_the_callers_environment_but_what_it_needs(monkeypatch):
    from appdb.local.throwaway import throwaway_cluster

    monkeypatch.setenv("MY_CLOUD_TOKEN", "ghp_pretend_secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone:hunter2@elsewhere/db")
    with throwaway_cluster("appdb-env-") as node:
        pid = node._postmaster_pid()
        assert pid is not None
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
        assert "MY_CLOUD_TOKEN" not in names and "DATABASE_URL" not in names
        assert b"ghp_pretend_secret" not in b"\0".join(environ)


def test_a_running_server_is_found_on_the_port_it_listens_on_not_one_waiting_for_a_restart():
    from appdb.local.cluster import SUPERUSER
    from appdb.local.throwaway import throwaway_cluster

    with throwaway_cluster("appdb-port-", tcp=True) as node:
        waiting = free_port()
        with node.connect(user=SUPERUSER) as conn:
            conn.execute(f"ALTER SYSTEM SET port = {waiting}")
            conn.execute("SELECT pg_reload_conf()")
        assert node.configured_port() == waiting
        assert node.listening_port() == node.port


def test_a_stale_pid_file_naming_another_process_is_never_signalled():
    """After a crash or a reboot, postmaster.pid may name a pid that went to another process."""
    from appdb.local.throwaway import throwaway_cluster

    with throwaway_cluster("appdb-stale-pid-") as node:
        node.down()
        bystander = subprocess.Popen(["sleep", "120"])
        try:
            pid_file = node.data_dir / "postmaster.pid"
            pid_file.write_text(f"{bystander.pid}\n{node.data_dir}\n")
            assert not node.is_running()
            node.down()  # nothing to stop
            node.start()  # starts beside the stale file, which it replaces
            assert node.is_running() and node._postmaster_pid() != bystander.pid
            assert bystander.poll() is None, "the bystander was signalled"
        finally:
            bystander.kill()
            bystander.wait()


def test_local_down_without_a_cluster_says_nothing_was_stopped(tmp_path):
    """Not 'local database stopped' while the one started with another APPDB_LOCAL_HOME runs on."""
    result = run_appdb("local", "down", env={"APPDB_LOCAL_HOME": str(tmp_path / "none")})
    assert result.returncode == 2
    assert result.stderr == (f"appdb: error: no local database in {tmp_path / 'none'}, so nothing was stopped: if it "
                             "was started with another APPDB_LOCAL_HOME or --home, give that one\n")


@pytest.mark.parametrize("port", ["abc", "5432x", "-1", "²", "٥٤٣٢٢", "9" * 5000, "1e3"])
def test_a_bad_APPDB_LOCAL_PORT_fails_local_in_one_line_and_no_other_command(port, tmp_path):
    result = run_appdb("local", "url", "--home", str(tmp_path / "none"), env={"APPDB_LOCAL_PORT": port})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("appdb: error: APPDB_LOCAL_PORT is ")
    assert result.stderr.endswith(", not a port number: set it to one (e.g. 54322), or unset it\n")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert run_appdb("new", "--help", env={"APPDB_LOCAL_PORT": port}).returncode == 0
    assert run_appdb("--version", env={"APPDB_LOCAL_PORT": port}).returncode == 0


def test_a_port_with_spaces_around_it_is_that_port(tmp_path):
    """As a CRLF env file leaves it: the port, not a refusal."""
    result = run_appdb("local", "url", "--home", str(tmp_path / "none"), env={"APPDB_LOCAL_PORT": " 54399\r"})
    assert result.returncode == 2 and "no local database in" in result.stderr  # got past the port


def test_a_port_out_of_range_is_refused_in_one_line(tmp_path):
    for args, env in ((["--port", "70000"], {}), ([], {"APPDB_LOCAL_PORT": "0"})):
        result = run_appdb("local", "url", "--home", str(tmp_path / "none"), *args, env=env)
        assert result.returncode == 2
        assert "is outside 1-65535" in result.stderr and len(result.stderr.splitlines()) == 1


def test_the_parser_holds_nothing_from_the_environment(tmp_path, monkeypatch, capsys):
    """The fork server builds it once, before forking workers with each caller's environment."""
    from appdb.cli import build_parser, main

    assert build_parser() is build_parser()
    for name in ("first", "second"):
        monkeypatch.setenv("APPDB_LOCAL_HOME", str(tmp_path / name))
        assert main(["local", "url"]) == 2
        assert f"no local database in {tmp_path / name}" in capsys.readouterr().err


# --- a cluster from before the passwords were random ------------------------------------


def init_the_old_way(home: Path, port: int, password: str) -> Cluster:
    """A cluster as earlier versions made it, started: initdb's pg_hba.conf (the superuser over
    TCP too), the fixed password for both logins, app_backend with the local stack's old one,
    the whole folder the server user's, a socket folder anyone may enter, no password file."""
    account = server_account()
    home.mkdir(parents=True)
    (home / "run").mkdir()
    (home / "run").chmod(0o755)
    pwfile = home / ".pwfile"
    pwfile.write_text(password + "\n")
    if account is not None:
        for path in (home, *home.rglob("*")):
            os.chown(path, account.pw_uid, account.pw_gid)
    node = Cluster(home=home, port=port)
    data = str(node.data_dir)
    node._run_server_tool("initdb", "-D", data, "-U", SUPERUSER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                          "--encoding=UTF8", "--locale=C", "--no-instructions")
    pwfile.unlink()
    with (node.data_dir / "postgresql.conf").open("a") as handle:
        handle.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{home / 'run'}'\n")
    node._run_server_tool("pg_ctl", "-D", data, "-l", str(home / "postgres.log"), "-w", "start")
    old = dict(host="127.0.0.1", port=port, dbname="postgres", user=SUPERUSER, password=password, autocommit=True)
    with psycopg.connect(**old) as conn:
        conn.execute((ROOT / "appdb" / "local" / "supabase_shape.sql").read_text())
        conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))
        conn.execute(sql.SQL("CREATE ROLE app_backend LOGIN PASSWORD {}").format(sql.Literal(OLD_BACKEND_PASSWORD)))
    with psycopg.connect(**{**old, "user": LOGIN}) as conn:
        conn.execute("CREATE TABLE public.kept (id bigint); INSERT INTO public.kept VALUES (1)")
    return node


def tcp_login(node: Cluster, user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=node.port, dbname="postgres", user=user, password=password,
                           passfile="/nonexistent", connect_timeout=10)


@pytest.mark.parametrize(("old_password", "running"), [(OLD_PASSWORDS[0], True), (OLD_PASSWORDS[1], False)])
def test_local_up_replaces_an_old_clusters_fixed_passwords_once_and_keeps_its_data(old_password, running):
    """The one with the repository's password was running; the even older one (`postgres`) was stopped."""
    base = open_folder("appdb-local-old-")
    node = init_the_old_way(base / "local", free_port(), old_password)
    try:
        if not running:
            node._run_server_tool("pg_ctl", "-D", str(node.data_dir), "-m", "fast", "-w", "stop")
        result = run_appdb("local", "up", "--home", str(node.home), "--port", str(node.port))
        assert result.returncode == 0, result.stderr
        notices = [line for line in result.stderr.splitlines() if "notice" in line]
        assert len(notices) == 1 and "random" in notices[0] and "pgpass" in notices[0], result.stderr
        assert OLD_PASSWORDS[0] not in result.stdout + result.stderr

        assert mode(node.password_file) == 0o600 and node.password_file.stat().st_uid == os.geteuid()
        assert mode(node.socket_dir) == 0o700
        for user, old in ((LOGIN, old_password), (SUPERUSER, old_password), (BACKEND, OLD_BACKEND_PASSWORD)):
            with pytest.raises(psycopg.OperationalError):
                tcp_login(node, user, old)
        with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects"):
            tcp_login(node, SUPERUSER, node.password(SUPERUSER))
        with tcp_login(node, LOGIN, node.password()) as conn:
            assert conn.execute("SELECT id FROM public.kept").fetchall() == [(1,)]
        tcp_login(node, BACKEND, node.password(BACKEND)).close()
        with node.connect(user=SUPERUSER) as conn:
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]

        again = run_appdb("local", "up", "--home", str(node.home), "--port", str(node.port))
        assert again.returncode == 0, again.stderr
        assert "notice" not in again.stderr
    finally:
        node.down()
        shutil.rmtree(base, ignore_errors=True)


# --- as root: the folder the server user cannot enter, and another OS user ----------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runs the server as postgres and makes an OS user")


@needs_root
def test_local_up_refuses_a_home_the_server_user_cannot_enter_and_changes_no_mode():
    private = Path(tempfile.mkdtemp(prefix="appdb-private-"))  # 0700 root, like /root
    try:
        home = private / "checkout" / ".appdb" / "local"
        result = run_appdb("local", "up", "--home", str(home), "--port", str(free_port()))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"appdb: error: the postgres OS user cannot enter {private} (mode 0700)")
        assert "APPDB_LOCAL_HOME" in lines[0]
        assert mode(private) == 0o700
        assert list(private.iterdir()) == []
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_local_up_starts_a_cluster_whose_folder_has_a_quote_or_backslash_in_its_name():
    """The socket folder goes into postgresql.conf as a quoted string: a quote in it must not end the string."""
    base = open_folder("appdb-odd-")
    home = base / "o'dd\\home"
    port = str(free_port())
    try:
        result = run_appdb("local", "up", "--home", str(home), "--port", port)
        assert result.returncode == 0, result.stderr
        url = run_appdb("local", "url", "--home", str(home), "--port", port).stdout.strip()
        with psycopg.connect(url, connect_timeout=10) as conn:
            assert conn.execute("SHOW unix_socket_directories").fetchone()[0] == str(home / "run")
    finally:
        run_appdb("local", "down", "--home", str(home), "--port", port)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def probe():
    """A throwaway OS user, removed afterwards (when this test made it)."""
    with throwaway_os_user(PROBE) as account:
        yield account


def as_probe(account: pwd.struct_passwd, command: list[str], env: dict[str, str] | None = None,
             cwd: str = "/") -> subprocess.CompletedProcess:
    return subprocess.run(command, user=account.pw_uid, group=account.pw_gid, extra_groups=[], cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **(env or {})},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def readable():
    """appdb and psycopg where the probe user can read them (the checkout may be closed to it)."""
    root, pythonpath = readable_checkout()
    yield root, pythonpath
    shutil.rmtree(root, ignore_errors=True)


def probe_python(account: pwd.struct_passwd, code: str, pythonpath: str, env: dict[str, str] | None = None,
                 cwd: str = "/") -> subprocess.CompletedProcess:
    """Python with psycopg as the probe user: the system's python3 with a readable copy of the packages."""
    return as_probe(account, ["/usr/bin/python3", "-c", code], {"PYTHONPATH": pythonpath, **(env or {})}, cwd=cwd)


CONNECT = """
import os, sys, psycopg
try:
    psycopg.connect(os.environ["CONNINFO"], connect_timeout=5).close()
    print("CONNECTED")
except psycopg.OperationalError as exc:
    print("REFUSED", str(exc).strip().splitlines()[0])
"""


@needs_root
def test_another_os_user_gets_nothing_by_socket_or_tcp(local, probe, readable):
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 for the probe user")
    _, home, port = local
    node = Cluster(home=home, port=int(port))
    assert as_probe(probe, ["cat", str(node.password_file)]).returncode != 0
    assert as_probe(probe, ["ls", str(home)]).returncode != 0
    assert as_probe(probe, ["ls", str(node.socket_dir)]).returncode != 0

    def attempt(**params: str) -> str:
        conninfo = psycopg.conninfo.make_conninfo(port=port, dbname="postgres", passfile="/nonexistent", **params)
        result = probe_python(probe, CONNECT, readable[1], {"CONNINFO": conninfo})
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    for user in ROLES:
        # the socket: its folder is closed to this user, whatever the password
        assert attempt(host=str(node.socket_dir), user=user, password=node.password(user)).startswith("REFUSED")
        # TCP without the password
        assert attempt(host="127.0.0.1", user=user).startswith("REFUSED")
    # TCP with a leaked superuser password: still refused
    refused = attempt(host="127.0.0.1", user=SUPERUSER, password=node.password(SUPERUSER))
    assert "pg_hba.conf rejects" in refused
    # the control: the same user does get in with the postgres login's password
    assert attempt(host="127.0.0.1", user=LOGIN, password=node.password()) == "CONNECTED"


@needs_root
def test_an_ordinary_user_runs_its_own_cluster_with_the_same_rules(probe, readable):
    """Not root: the server runs as the user, every folder and file is theirs, 0700/0600."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 for the probe user")
    base = open_folder("appdb-local-user-")
    os.chown(base, probe.pw_uid, probe.pw_gid)
    home, port = base / "local", str(free_port())
    appdb = "import sys; from appdb.cli import main; raise SystemExit(main(sys.argv[1:]))"
    copy, pythonpath = readable
    env = {"PYTHONPATH": pythonpath, "APPDB_SQL_DIR": str(copy / "sql")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return as_probe(probe, ["/usr/bin/python3", "-c", appdb, *args], env)

    try:
        result = cli("local", "up", "--home", str(home), "--port", port)
        assert result.returncode == 0, result.stderr
        node = Cluster(home=home, port=int(port))
        for folder in (home, node.data_dir, node.socket_dir, node.log_dir):
            assert folder.stat().st_uid == probe.pw_uid and mode(folder) == 0o700, folder
        assert node.password_file.stat().st_uid == probe.pw_uid and mode(node.password_file) == 0o600
        superuser = probe_python(probe, "from appdb.local.cluster import Cluster, SUPERUSER; import sys\n"
                                        f"print(Cluster(home={str(home)!r}, port={port}).connect(user=SUPERUSER)"
                                        ".execute('SELECT current_user').fetchone()[0])", pythonpath, env)
        assert superuser.stdout.strip() == SUPERUSER, superuser.stderr
    finally:
        cli("local", "down", "--home", str(home), "--port", port)
        shutil.rmtree(base, ignore_errors=True)


# --- bin/deploy-local, in a clone-like checkout -------------------------------------------

FAKE_PULUMI = """#!/bin/sh
# Stands in for the Pulumi CLI: an empty local stack, and an `up` that records what it was given.
case "$1 $2" in
    "stack select") exit 0 ;;
    "stack export") echo '{"deployment": {}}' ;;
    "config get") case "$3" in appdb:dbPort) echo "$FAKE_PULUMI_PORT" ;; appdb:dbHost) echo 127.0.0.1 ;; esac ;;
    "up "*|"up") printf '%s\\n%s\\n' "$PGPASSWORD" "$APPDB_BACKEND_PASSWORD" > "$FAKE_PULUMI_SAW" ;;
esac
"""


def clone_like(base: Path) -> Path:
    """The files a clone has, with the project's virtualenv (bin/setup then has nothing to do)."""
    checkout = base / "appdb"
    checkout.mkdir()
    for name in ("bin", "appdb", "components", "sql"):
        shutil.copytree(ROOT / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__main__.py", "Pulumi.yaml", "Pulumi.local.yaml", "requirements.txt", "requirements-dev.txt",
                 "requirements-uv.txt", "pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, checkout / name)
    (checkout / ".venv").symlink_to(ROOT / ".venv")
    return checkout


def traced(command: list[str], trace: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``command`` under strace: every program it starts, with its full argv, lands in ``trace``."""
    return subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-s", "100000", "-o", str(trace), *command],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to see every command line")
def test_deploy_local_hands_the_passwords_over_in_the_environment_never_on_a_command_line():
    base = open_folder("appdb-deploy-local-")
    checkout = clone_like(base)
    fake = base / "fake-bin"
    fake.mkdir()
    (fake / "pulumi").write_text(FAKE_PULUMI)
    (fake / "pulumi").chmod(0o755)
    port = str(free_port())
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "APPDB_", "PULUMI_", "VIRTUAL_ENV")) and k not in ("DATABASE_URL", "PYTHONPATH")}
    env.update(APPDB_LOCAL_PORT=port, FAKE_PULUMI_SAW=str(base / "saw"), FAKE_PULUMI_PORT=port)
    # Without any Pulumi CLI, whether or not this machine has one.
    system_path = os.pathsep.join(folder for folder in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if not (Path(folder) / "pulumi").exists())
    env["PATH"] = system_path
    node = Cluster(home=checkout / ".appdb" / "local", port=int(port))
    try:
        # Started untraced first: strace follows every child, and the server outlives the script.
        started = subprocess.run(["bin/appdb", "local", "up"], env=env, cwd=checkout, capture_output=True, text=True,
                                 timeout=120, check=False)
        assert started.returncode == 0, started.stderr
        # A stack that would connect elsewhere (whatever listens there would get the password): refused.
        elsewhere = subprocess.run(["bin/deploy-local"], env={**env, "PATH": f"{fake}:{system_path}",
                                                              "FAKE_PULUMI_PORT": "54322"},
                                   cwd=checkout, capture_output=True, text=True, timeout=120, check=False)
        assert elsewhere.returncode == 2, elsewhere.stderr
        assert (f"deploy-local: error: the local database listens on 127.0.0.1:{port}, but the local stack "
                "connects to 127.0.0.1:54322") in elsewhere.stderr
        assert not (base / "saw").exists()
        with_pulumi = traced(["bin/deploy-local"], base / "trace-pulumi", {**env, "PATH": f"{fake}:{system_path}"},
                             checkout)
        assert with_pulumi.returncode == 0, with_pulumi.stderr
        assert (base / "saw").read_text().splitlines() == [node.password(), node.password(BACKEND)]
        assert mode(checkout / ".pulumi-state") == 0o700

        without = traced(["bin/deploy-local"], base / "trace-alone", env, checkout)
        assert without.returncode == 0, without.stderr
        assert "the Pulumi CLI is not installed" in without.stderr
        assert "verify" in without.stdout + without.stderr

        secrets_ = [node.password(role) for role in ROLES]
        for trace in ("trace-pulumi", "trace-alone"):
            text = (base / trace).read_text()
            assert "execve(" in text and "local\", \"password" in text  # the trace did see the commands
            for secret in secrets_:
                assert secret not in text, f"a password on a command line ({trace})"
            assert secrets_[0] not in with_pulumi.stdout + with_pulumi.stderr + without.stdout + without.stderr
    finally:
        node.down()
        shutil.rmtree(base, ignore_errors=True)


def test_a_start_that_fails_says_the_server_s_own_reason_in_its_one_line():
    """A port taken between the probe and the server's bind (seen once in CI) names itself."""
    import socket

    from appdb.errors import AppdbError
    from appdb.local.throwaway import throwaway_cluster

    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(AppdbError) as failed:
            with throwaway_cluster(tcp=True, port=port):
                pass
    message = str(failed.value)
    assert re.match(r"the local PostgreSQL did not start \(could not bind IPv4 address \"127\.0\.0\.1\": "
                    r"Address already in use\): see /\S+/postgres\.log$", message), message
    assert "\n" not in message


def test_local_up_on_a_taken_port_says_how_to_use_another_in_its_one_line():
    """A newcomer's review: the server's reason alone said nothing of APPDB_LOCAL_PORT."""
    import socket

    base = open_folder("appdb-local-taken-")
    home = base / "checkout" / ".appdb" / "local"
    port = free_port()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            result = run_appdb("local", "up", "--home", str(home), "--port", str(port))
        assert result.returncode == 1
        message = result.stderr
        assert message.startswith("appdb: error: the local PostgreSQL did not start (could not bind"), message
        assert message.endswith(f"port {port} is taken: stop what listens there, or make the local database anew on "
                                f"another port (it wipes it): APPDB_LOCAL_PORT=<port> bin/appdb local reset --home {home}, and "
                                "keep APPDB_LOCAL_PORT set for bin/deploy-local (which then says how to point the local "
                                "stack at that port)\n"), message
        assert message.count("\n") == 1
    finally:
        run_appdb("local", "down", "--home", str(home), "--port", str(port))
        shutil.rmtree(base, ignore_errors=True)


def test_a_free_port_comes_from_below_the_range_outgoing_connections_take_theirs_from():
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ports:
        ephemeral = int(ports.read().split()[0])
    taken = {free_port() for _ in range(50)}
    assert all(1024 <= port < ephemeral for port in taken), sorted(taken)
    assert len(taken) > 1  # picked at random, not one port for every caller


def test_a_failed_start_gives_this_attempt_s_reason_never_an_older_line_of_the_log():
    """A bad setting stops the server before it logs that it is starting: the reason must be the
    configuration error, not an earlier run's ERROR (which may quote a password) (attack review)."""
    from appdb.errors import AppdbError
    from appdb.local.cluster import SUPERUSER
    from appdb.local.throwaway import throwaway_cluster

    with throwaway_cluster(tcp=True) as cluster:
        with cluster.connect(user=SUPERUSER) as conn:
            with pytest.raises(psycopg.errors.SyntaxError):
                conn.execute("ALTER ROLE postgres PASSWORD Sup3rSecretPw9")
        cluster.down()
        server_file = cluster.data_dir / "postgresql.conf"
        subprocess.run(["sh", "-c", f"echo \"shared_buffers = 'bogus'\" >> '{server_file}'"], check=True)
        with pytest.raises(AppdbError) as failed:
            cluster.start()
    message = str(failed.value)
    assert "Sup3rSecretPw9" not in message and "syntax error" not in message, message
    assert "shared_buffers" in message or "configuration file" in message, message


@pytest.mark.parametrize("kind", ["link", "fifo", "endless"])
def test_a_failed_start_reads_its_log_only_as_the_server_s_plain_file(tmp_path, kind):
    """The log is the server's OS user's, so what it makes of it must not choose what root reads:
    not another file through a link, not a pipe that never ends or never opens (attack review)."""
    from appdb.local.cluster import Cluster, server_account

    cluster = Cluster(home=tmp_path / "home", port=free_port())
    cluster.log_dir.mkdir(parents=True)
    account = server_account()
    owner = (account.pw_uid, account.pw_gid) if account else (os.getuid(), os.getgid())
    elsewhere = tmp_path / "root-only"
    elsewhere.write_text("2026-12-07 UTC [1] FATAL:  root-only-content\n")
    os.chown(elsewhere, *owner)  # even a file of the server's user is read only where the log is
    if kind == "link":
        cluster.logfile.symlink_to(elsewhere)
    elif kind == "fifo":
        os.mkfifo(cluster.logfile)
    else:
        cluster.logfile.symlink_to("/dev/zero")
    os.lchown(cluster.logfile, *owner)
    assert cluster._why_not_started(0) is None
