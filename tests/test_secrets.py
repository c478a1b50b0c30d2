"""No password in any message or on any command line, whatever the DSN's form; no part of one in a
failed connect's message.

Each nasty password is tried in every form a person might write it (a URL percent-encoded
or not, key=value quoted or not, PGPASSWORD) against a port nobody listens on and against
the test cluster, where it is the wrong password. Whatever libpq makes of it (a parse
error, a mis-split URL, a refused connection, a failed login), the CLI must exit 2 with
one line and no traceback, and no run of 4 or more of the password's characters may
appear anywhere in its output. Shorter passwords are not searched for (appdb/redact.py
says why); the messages are built so they do not get there.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from appdb import connection
from appdb.errors import ConfigError
from appdb.redact import MIN_RUN, redact, secrets_in
from tests.helpers import ROOT, SQL_DIR, Database, free_port, write_migration

NASTY = [
    "Pc7%zzq-Hw",        # invalid percent-encoding when written raw in a URL
    "Pc7%41q-Hw",        # valid percent-encoding: libpq would decode it
    "Pc7 Hw9 Tq4",       # spaces
    "Pc7'Hw9'Tq4",       # single quotes
    'Pc7"Hw9"Tq4',       # double quotes
    "Pc7@Hw9-Tq4",       # an @: a raw URL splits here
    "Pc7:Hw9-Tq4",       # a colon
    "Pc7/Hw9-Tq4",       # a slash: a raw URL ends its host here
    "Pc7?Hw9-Tq4",
    "Pc7#Hw9-Tq4",
    "Pc7\\Hw9-Tq4",      # a backslash: key=value escapes with it
    "Pç7ß-Hw9€Tq4",      # non-ASCII
    "Pc7 =Hw9 x=Tq4",    # looks like more key=value pairs
    "a",                 # too short to search for: still exit 2, one line
]
FORMS = ["url-encoded", "url-raw", "kv-quoted", "kv-raw", "pgpassword"]


def kv_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dsn_for(form: str, password: str, host: str, port: int | str, dbname: str) -> tuple[str, dict[str, str]]:
    """The DSN for --dsn and any environment, with ``password`` written the way ``form`` says."""
    if form == "url-encoded":
        return f"postgresql://postgres:{quote(password, safe='')}@{host}:{port}/{dbname}", {}
    if form == "url-raw":
        return f"postgresql://postgres:{password}@{host}:{port}/{dbname}", {}
    if form == "kv-quoted":
        return f"host={host} port={port} user=postgres dbname={dbname} password={kv_quote(password)}", {}
    if form == "kv-raw":
        return f"host={host} port={port} user=postgres dbname={dbname} password={password}", {}
    return f"postgresql://postgres@{host}:{port}/{dbname}", {"PGPASSWORD": password}


def runs_of(secret: str) -> set[str]:
    """Every stretch of MIN_RUN characters of the secret, as written and percent-encoded."""
    found = set()
    for form in {secret, quote(secret, safe=""), quote(secret)}:
        found |= {form[i:i + MIN_RUN] for i in range(len(form) - MIN_RUN + 1)}
    return found


def assert_kept_secret(result: subprocess.CompletedProcess, password: str) -> str:
    """Exit 2, one line, no traceback, and not a run of the password's characters: the line."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appdb: error: "), output
    leaked = sorted(run for run in runs_of(password) if run in output)
    assert not leaked, f"{leaked} of the password in: {output}"
    return lines[0]


def run_cli(*args: str | bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m appdb ARGS`` with no PG* variable or DATABASE_URL from the test's environment."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    full_env.update({"APPDB_SQL_DIR": str(SQL_DIR), "PYTHONPATH": str(ROOT)})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appdb", *args], capture_output=True, env=full_env, cwd=ROOT,
                          timeout=60, check=False, text=not any(isinstance(a, bytes) for a in args))


def main_in_process(monkeypatch, capsys, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """appdb.cli.main(ARGS) in this process, as the CLI would run it: for the big tables, fast."""
    from appdb.cli import main

    for name in [n for n in os.environ if n.startswith("PG")] + ["DATABASE_URL"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("password", NASTY)
def test_no_run_of_a_nasty_password_appears_when_nothing_listens(monkeypatch, capsys, password, form):
    dsn, env = dsn_for(form, password, "127.0.0.1", free_port(), "postgres")
    assert_kept_secret(main_in_process(monkeypatch, capsys, "status", "--dsn", dsn, env=env), password)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("password", NASTY)
def test_no_run_of_a_nasty_password_appears_when_the_server_refuses_it(cluster, monkeypatch, capsys, password, form):
    params = cluster.params(tcp=True)  # no database of its own: the login never gets in
    dsn, env = dsn_for(form, password, params["host"], params["port"], params["dbname"])
    line = assert_kept_secret(main_in_process(monkeypatch, capsys, "verify", "--dsn", dsn, env=env), password)
    assert "authentication failed" in line or "malformed connection string" in line, line


@pytest.mark.parametrize("form", FORMS)
def test_the_command_line_keeps_the_secret_in_every_form(cluster, form):
    """The same through a real process, once per form, with the password that breaks the most."""
    password = "Pc7 '%zz@Hw9/Tq4"
    params = cluster.params(tcp=True)
    for host, port in ((params["host"], free_port()), (params["host"], params["port"])):
        dsn, env = dsn_for(form, password, host, port, params["dbname"])
        assert_kept_secret(run_cli("apply", "--dsn", dsn, env=env), password)


@pytest.mark.parametrize("password", ["Pc7%zzq-Hw", "Pc7 Hw9 Tq4", "Pc7@Hw9-Tq4"])
def test_the_password_stays_out_when_it_comes_from_database_url(password):
    result = run_cli("apply", env={"DATABASE_URL": f"postgresql://postgres:{password}@127.0.0.1:{free_port()}/db"})
    assert_kept_secret(result, password)


def test_a_dsn_given_without_dash_dash_dsn_is_not_echoed_by_the_usage_error():
    password = "Pc7 Hw9@Tq4"
    result = run_cli("status", f"postgresql://postgres:{password}@127.0.0.1:1/db")
    assert "unrecognized arguments" in assert_kept_secret(result, password)


@pytest.mark.parametrize("raw", [
    b"postgresql://postgres:Pc7\xffHw9-Tq4@127.0.0.1:1/db",
    b"host=127.0.0.1 port=1 password=Pc7\xffHw9-Tq4",
])
def test_a_dsn_that_is_not_utf8_is_a_usage_error_not_a_traceback(raw):
    result = run_cli(b"status", b"--dsn", raw)
    result.stdout, result.stderr = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    line = assert_kept_secret(result, "Pc7\ufffdHw9-Tq4")
    assert "not valid UTF-8" in line
    assert "Hw9-Tq4" not in line


def test_a_malformed_dsn_names_the_kind_of_problem_never_libpqs_text():
    result = run_cli("status", "--dsn", "postgresql://u:Pc7%zzq-Hw@127.0.0.1:1/db")
    line = assert_kept_secret(result, "Pc7%zzq-Hw")
    assert "malformed connection string: invalid percent-encoding" in line
    assert "the text is not shown" in line
    unterminated = run_cli("status", "--dsn", "host=127.0.0.1 password='Pc7 Hw9 Tq4")
    assert "an unterminated quote" in assert_kept_secret(unterminated, "Pc7 Hw9 Tq4")


@pytest.mark.parametrize("dsn, env, named", [
    ("host=127.0.0.1 port=1 connect_timeout=abc password=Pc7-Hw9-Tq4", {}, "connect_timeout"),
    ("postgresql://u:Pc7-Hw9-Tq4@127.0.0.1:1/db?connect_timeout=abc", {}, "connect_timeout"),
    ("host=127.0.0.1 port=abc password=Pc7-Hw9-Tq4", {}, "port"),
    ("postgresql://u:Pc7-Hw9-Tq4@127.0.0.1:99999/db", {}, "port"),
    ("host=127.0.0.1 port=1 foo=bar password=Pc7-Hw9-Tq4", {}, "unknown parameter name"),
    ("postgresql://u:Pc7-Hw9-Tq4@127.0.0.1:1/db?foo=bar", {}, "unknown parameter name"),
    ("host=127.0.0.1 port=1 sslmode=bogus password=Pc7-Hw9-Tq4", {}, "sslmode"),
    ("postgresql://u:Pc7-Hw9-Tq4@127.0.0.1:1/db?sslmode=bogus", {}, "sslmode"),
    ("postgresql://u:Pc7-Hw9-Tq4@127.0.0.1/db", {"PGPORT": "abc"}, "port"),
    ("postgresql://u:Pc7-Hw9-Tq4@127.0.0.1:1/db", {"PGCONNECT_TIMEOUT": "soon"}, "connect_timeout"),
    ("postgresql://u:Pc7-Hw9-Tq4@127.0.0.1:1/db", {"PGSSLMODE": "bogus"}, "sslmode"),
    ("host=127.0.0.1 port=1 target_session_attrs=bogus password=Pc7-Hw9-Tq4", {}, "target_session_attrs"),
])
def test_a_bad_dsn_parameter_is_a_usage_error_that_names_the_parameter_not_its_value(dsn, env, named):
    line = assert_kept_secret(run_cli("status", "--dsn", dsn, env=env), "Pc7-Hw9-Tq4")
    assert "malformed connection string" in line and named in line
    assert "abc" not in line and "bogus" not in line and "soon" not in line


# --- the redaction itself, for text we did not write -------------------------------------------


def test_redact_masks_a_password_libpq_split_in_two():
    # libpq reads postgresql://u:Pc7@Hw9-Tq4@h/db as password "Pc7", host "Hw9-Tq4@h".
    dsn = "postgresql://u:Pc7@Hw9-Tq4@h/db"
    text = 'could not translate host name "Hw9-Tq4@h" to address'
    assert "Hw9-Tq4" not in redact(text, secrets_in(dsn))
    assert "could not translate host name" in redact(text, secrets_in(dsn))


def test_redact_finds_key_value_secrets_even_unterminated_or_unquoted_with_spaces():
    assert "Pc7 Hw9 Tq4" in secrets_in("host=h password='Pc7 Hw9 Tq4")
    assert "Pc7 Hw9" in secrets_in("host=h password=Pc7 Hw9 port=5")
    assert "Hw9-Tq4" in secrets_in("host=h sslpassword=Hw9-Tq4")
    assert "Pc7?Hw9" in secrets_in("postgresql://u@h/db?password=Pc7?Hw9&sslmode=require")


def test_a_short_secret_is_not_searched_for_and_does_not_garble_messages():
    assert redact("a database error at line 1", {"a"}) == "a database error at line 1"


# --- pg_dump: no secret on its command line ------------------------------------------------------

STUB = """#!{python}
import json, os, sys
if sys.argv[1:] == ["--version"]:
    print("pg_dump (PostgreSQL) 18.99")  # new enough for every server
    sys.exit(0)
service = os.environ.get("PGSERVICEFILE")
record = {{"argv": sys.argv, "cmdline": open("/proc/self/cmdline", "rb").read().decode(errors="replace"),
          "PGPASSWORD": os.environ.get("PGPASSWORD"), "service_file": service,
          "service_text": open(service).read() if service else None,
          "service_mode": oct(os.stat(service).st_mode & 0o777) if service else None,
          "folder_mode": oct(os.stat(os.path.dirname(service)).st_mode & 0o777) if service else None}}
json.dump(record, open({record!r}, "w"))
# A pg_dump that quotes its secrets back, as libpq's errors quote what they choke on.
print("pg_dump: error: connection failed for password " + os.environ.get("PGPASSWORD", "") + " " +
      (record["service_text"] or ""), file=sys.stderr)
sys.exit(1)
"""


def test_pull_gives_pg_dump_its_password_and_sslpassword_outside_its_argv(db, tmp_path):
    record = tmp_path / "record.json"
    stub = tmp_path / "pg_dump"
    stub.write_text(STUB.format(python=sys.executable, record=str(record)))
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    params = db.tcp_params
    password, sslpassword = params["password"], "Ss9 'Kq2@Wz7"
    dsn = (f"host={params['host']} port={params['port']} user={params['user']} dbname={params['dbname']} "
           f"password={kv_quote(password)} sslpassword={kv_quote(sslpassword)} sslmode=disable")
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()

    result = run_cli("pull", "adopt", "--dsn", dsn, "--sql-dir", str(sql_dir),
                     env={"APPDB_PG_DUMP": str(stub)})

    seen = json.loads(record.read_text())
    for secret in (password, sslpassword):
        assert secret not in " ".join(seen["argv"]) and secret not in seen["cmdline"]
    assert seen["PGPASSWORD"] == password
    assert seen["service_text"] == f"[appdb_pg_dump]\nsslpassword={sslpassword}\n"
    assert (seen["service_mode"], seen["folder_mode"]) == ("0o600", "0o700")
    assert not Path(seen["service_file"]).exists(), "the service file outlives pg_dump"
    assert "service=appdb_pg_dump" in " ".join(seen["argv"])
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith("appdb: error: pg_dump failed") and "\n" not in line
    for secret in (password, sslpassword):
        assert not [run for run in runs_of(secret) if run in result.stdout + result.stderr], line
    assert list(sql_dir.iterdir()) == []


def test_a_real_pg_dump_logs_in_with_a_nasty_password_from_the_environment(db, tmp_path):
    password = "Pq7 'x\"@:/?#\\%zz-ß"
    login = f"pull_{os.getpid()}"
    with db.admin_connect() as conn:
        conn.execute(f"DROP ROLE IF EXISTS {login}")
        conn.execute(f"CREATE ROLE {login} LOGIN")
        conn.execute(psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            psycopg.sql.Identifier(login), psycopg.sql.Literal(password)))
        conn.execute(f"GRANT USAGE ON SCHEMA app TO {login}")
    try:
        db.execute("CREATE TABLE app.pulled (id bigint PRIMARY KEY)")
        db.execute(f"GRANT SELECT ON app.pulled TO {login}")
        params = db.tcp_params
        url = f"postgresql://{login}:{quote(password, safe='')}@{params['host']}:{params['port']}/{params['dbname']}"
        sql_dir = tmp_path / "sql"
        sql_dir.mkdir()
        result = run_cli("pull", "adopt", "--dsn", url, "--sql-dir", str(sql_dir))
        assert result.returncode == 0, result.stderr
        assert "CREATE TABLE IF NOT EXISTS app.pulled" in next(sql_dir.glob("001_*.sql")).read_text()
    finally:
        with db.admin_connect() as conn:
            conn.execute(f"DROP OWNED BY {login}")
            conn.execute(f"DROP ROLE {login}")


# --- the transaction pooler, however it is reached ------------------------------------------------


def test_the_transaction_pooler_reached_through_a_service_file_is_refused_after_connecting(
        db: Database, tmp_path, monkeypatch):
    params = db.tcp_params
    service = tmp_path / "pg_service.conf"
    service.write_text("[pooled]\n" + "".join(f"{key}={value}\n" for key, value in params.items()))
    for name in [n for n in os.environ if n.startswith("PG")] + ["DATABASE_URL"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGSERVICEFILE", str(service))
    monkeypatch.setenv("PGSERVICE", "pooled")
    # The test cluster stands in for port 6543: nothing in the DSN or PG* names its port.
    monkeypatch.setattr(connection, "TRANSACTION_POOLER_PORT", int(params["port"]))
    assert "port" not in connection.connection_params("")  # the early check cannot see it
    opened: list[psycopg.Connection] = []
    real_connect = psycopg.connect

    def recording_connect(*args, **kwargs):
        opened.append(real_connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(psycopg, "connect", recording_connect)

    with pytest.raises(ConfigError, match="transaction pooler"):
        connection.connect(None)

    assert len(opened) == 1 and opened[0].closed, "refused after connecting, and the connection closed"


def test_a_server_notice_under_v_is_redacted_like_every_other_line(db, tmp_path):
    """A migration may RAISE NOTICE anything, the login's password included: -v logs it masked."""
    password = db.cluster.password()
    write_migration(tmp_path, "001_notice.sql",
                    f"DO $$ BEGIN RAISE NOTICE 'the password is {password}'; END $$;\n")
    from psycopg.conninfo import make_conninfo

    result = db.run_cli("apply", "-v", sql_dir=tmp_path, env={"DATABASE_URL": make_conninfo(**db.tcp_params)})
    assert result.returncode == 0, result.stderr
    assert "server notice: the password is " in result.stderr
    assert password not in result.stderr + result.stdout
    assert password[:8] not in result.stderr


def _machine_name_to_loopback() -> str | None:
    """This machine's own name when it resolves to a loopback address (Debian's /etc/hosts: 127.0.1.1)."""
    import ipaddress
    import socket

    name = socket.gethostname()
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}
    except OSError:
        return None
    return name if found and all(ipaddress.ip_address(a.partition("%")[0]).is_loopback for a in found) else None


@pytest.mark.parametrize("host, env", [
    ("host=127.0.0.1", {}), ("host=LOCALHOST", {}), ("host=127.1", {}), ("host=::ffff:127.0.0.1", {}),
    ("host=127.0.0.1,db.example.com", {}), ("", {"PGHOST": "127.0.0.1"}), ("", {"PGHOSTADDR": "127.0.0.1"}),
    ("", {"PGHOSTADDR": "::ffff:127.0.0.1"}), ("machine-name", {}), ("service=local", {}),
    ("", {"PGSERVICE": "local"}),
])
def test_a_program_on_a_local_port_that_asks_for_the_password_in_clear_never_gets_it(tmp_path, host, env):
    """As one could, on the port of a stopped local database: appdb answers only SCRAM there,
    however the host is written or given: the machine's own name, an IPv4 address mapped into IPv6."""
    import socket
    import threading

    if host == "machine-name":
        name = _machine_name_to_loopback()
        if name is None:
            pytest.skip("this machine's name does not resolve to a loopback address here")
        host = f"host={name}"
    # A service's entry names the host (and PGHOST elsewhere would lose to it, as libpq orders them).
    services = tmp_path / "pg_service.conf"
    services.write_text("[local]\nhost=127.0.0.1\n")
    env = {**env, "PGSERVICEFILE": str(services)}

    password = "squatted-Pw-1234"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received = bytearray()

    def fake_server() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(8192)  # the startup packet (or an SSL request: refused)
                conn.sendall(b"N")
                conn.recv(8192)
                conn.sendall(b"R\x00\x00\x00\x08\x00\x00\x00\x03")  # AuthenticationCleartextPassword
                while chunk := conn.recv(8192):
                    received.extend(chunk)
            except OSError:
                pass

    thread = threading.Thread(target=fake_server, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    full_env.update(PYTHONPATH=str(ROOT), PGPASSWORD=password, APPDB_SQL_DIR=str(SQL_DIR), **env)
    done = subprocess.run([sys.executable, "-m", "appdb", "status", "--dsn",
                           f"{host} port={port} user=postgres dbname=postgres sslmode=prefer connect_timeout=3"],
                          env=full_env, capture_output=True, text=True, timeout=60, check=False)
    thread.join(10)
    listener.close()
    assert done.returncode == 2
    assert "asked for the password other than by SCRAM" in done.stderr and len(done.stderr.splitlines()) == 1
    assert password.encode() not in bytes(received)


@pytest.mark.parametrize("host, local", [
    ("127.0.0.1", True), ("127.1", True), ("2130706433", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", True), ("localhost", True), ("Localhost.", True), ("api.localhost", True),
    ("192.0.2.1", False), ("::ffff:192.0.2.1", False), ("/var/run/postgresql", False), ("", False),
    ("no-such-host.invalid", False),
])
def test_which_hosts_are_this_machine(host, local):
    """What gets SCRAM only (connection._this_machine); 192.0.2.0/24 is TEST-NET-1, nobody's."""
    assert connection._this_machine(host) is local


def test_an_address_of_this_machines_own_interface_is_this_machine_too():
    """A program of another user may listen on any of the machine's addresses, not only loopback."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: the kernel only picks the route
        except OSError:
            pytest.skip("no route off this machine to find an interface address by")
        own = probe.getsockname()[0]
    assert connection._this_machine(own)


def test_a_link_local_address_of_this_machine_with_its_scope_is_this_machine():
    """fe80::...%eth0 binds only with its scope: without it, the bind failed and the address passed
    for another machine's (an attack review's finding)."""
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as table:
            rows = [line.split() for line in table]
    except OSError:
        pytest.skip("no /proc/net/if_inet6 here")
    local = [(row[0], row[5]) for row in rows if row[0].startswith("fe80")]
    if not local:
        pytest.skip("no link-local IPv6 address on this machine")
    hexa, interface = local[0]
    address = ":".join(hexa[i:i + 4] for i in range(0, 32, 4))
    assert connection._this_machine(f"{address}%{interface}")
    assert not connection._this_machine(f"fe80::dead:beef:1%{interface}") or \
        any(row[0] == "fe800000000000000000deadbeef0001" for row in rows)


def test_a_connection_failure_names_the_services_host_and_port(tmp_path):
    """Through service=NAME the message names where libpq went, not localhost:5432."""
    from tests.helpers import free_port

    port = free_port()
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[there]\nhost=127.0.0.1\nport={port}\ndbname=elsewhere\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    done = subprocess.run([sys.executable, "-m", "appdb", "status", "--dsn", "service=there"], cwd=ROOT,
                          env={**env, "PGSERVICEFILE": str(services), "PYTHONPATH": str(ROOT),
                               "APPDB_SQL_DIR": str(SQL_DIR)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"@127.0.0.1:{port}/elsewhere" in done.stderr and len(done.stderr.splitlines()) == 1


# --- from an attack review: the other ways a password gets in, and the masks themselves ----------


def _echoing_server(listener) -> None:
    """A program on a port that asks for the password in clear and says it back in its FATAL."""
    import struct

    conn, _ = listener.accept()
    with conn:
        conn.settimeout(5)
        try:
            while True:  # SSL and GSS encryption requests: refused; then the startup packet
                length, code = struct.unpack("!ii", conn.recv(8))
                conn.recv(length - 8) if length > 8 else None
                if code in (80877103, 80877104):
                    conn.sendall(b"N")
                    continue
                break
            conn.sendall(b"R\x00\x00\x00\x08\x00\x00\x00\x03")  # AuthenticationCleartextPassword
            message = conn.recv(8192)
            sent = message[5:].split(b"\0")[0]
            fields = b"SFATAL\0VFATAL\0C28P01\0Minvalid login, you sent " + sent + b"\0\0"
            conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)
        except (OSError, struct.error):
            pass


@pytest.mark.parametrize("where", ["service file", "password file"])
def test_a_password_from_a_service_or_password_file_is_masked_too(tmp_path, where):
    """libpq takes it from a file appdb never parsed: a server that says it back (one asked for it
    in clear: require_auth=password, as a user may write for a remote server) is masked."""
    import socket
    import threading

    password = "FromAFile-Pw-9x7q"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    thread = threading.Thread(target=_echoing_server, args=(listener,), daemon=True)
    thread.start()
    env = {}
    if where == "service file":
        (tmp_path / "svc.conf").write_text(
            f"[evil]\nhost=127.0.0.1\nport={port}\nuser=weird\npassword={password}\nrequire_auth=password\n")
        env["PGSERVICEFILE"] = str(tmp_path / "svc.conf")
        dsn = "service=evil"
    else:
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"# a comment\n127.0.0.1:{port}:*:weird:{password.replace(':', chr(92) + ':')}\n")
        passfile.chmod(0o600)
        env["PGPASSFILE"] = str(passfile)
        dsn = f"host=127.0.0.1 port={port} user=weird require_auth=password connect_timeout=5"
    result = run_cli("status", "--dsn", dsn, env=env)
    thread.join(10)
    listener.close()
    assert result.returncode == 2, result.stderr
    assert "invalid login, you sent ********" in result.stderr, result.stderr
    assert password not in result.stdout + result.stderr


@pytest.mark.parametrize("args", [
    ["status", "postgresql://weird@127.0.0.1:1/postgres?%70assword=Enc0ded-Pw-4q"],
    ["status", "--dsnn=postgresql://weird@127.0.0.1:1/postgres?pass%77ord=Enc0ded-Pw-4q"],
    ["status", "-v", "postgresql://weird@127.0.0.1:1/postgres?PASSWORD=Enc0ded-Pw-4q"],
])
def test_a_percent_encoded_password_keyword_is_not_echoed_by_a_usage_error(args):
    """libpq percent-decodes a URL's query keywords too: ?%70assword= sets the password."""
    result = run_cli(*args)
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr, result.stderr
    assert "Enc0ded-Pw-4q" not in result.stdout + result.stderr


def test_a_message_others_can_write_masks_a_whole_password_never_its_pieces(db, tmp_path):
    """A migration's error that lists candidates: masking each four-character piece of the password
    found in it would tell which candidates are in the password (an attack review read the local
    password back that way). The whole password is masked; its pieces, like any other text, are not."""
    from psycopg.conninfo import make_conninfo

    password = db.cluster.password()
    pieces = [password[i:i + 4] for i in range(0, 12, 4)]
    probe = " ".join(f"[{piece}]" for piece in ["zzzz", *pieces]) + f" whole: {password}"
    write_migration(tmp_path, "001_probe.sql", f"DO $$ BEGIN RAISE EXCEPTION '{probe}'; END $$;\n")
    result = db.run_cli("apply", sql_dir=tmp_path, env={"DATABASE_URL": make_conninfo(**db.tcp_params)})
    assert result.returncode == 1
    line = result.stderr.strip()
    assert password not in line and "whole: ********" in line, line
    # Every candidate comes out as it went in: the message tells nothing of which are the password's.
    assert " ".join(f"[{piece}]" for piece in ["zzzz", *pieces]) in line, line


def test_a_percent_encoded_byte_that_is_no_utf8_text_is_a_usage_error_in_one_line():
    result = run_cli("status", "--dsn", "postgresql://u:ab%FFcdefgh@127.0.0.1:1/postgres")
    line = assert_kept_secret(result, "ab%FFcdefgh")
    assert "is not UTF-8 text" in line


def test_the_hint_for_a_bad_port_is_not_cut_by_the_masks():
    """The hint used to read "password='a b'", which the key=value mask took for a password."""
    line = run_cli("status", "--dsn", "host=127.0.0.1 port=abc").stderr.strip()
    assert "put it in single quotes ('a b')" in line and "********" not in line, line


def test_a_server_that_closes_the_connection_is_named_as_such(tmp_path):
    """libpq's last line alone ("before or while processing the request.") said nothing."""
    import socket
    import threading

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def close_each() -> None:
        for _ in range(4):  # libpq may try again without an encryption request
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(8192)

    thread = threading.Thread(target=close_each, daemon=True)
    thread.start()
    result = run_cli("status", "--dsn", f"host=127.0.0.1 port={port} user=u sslmode=disable gssencmode=disable "
                     "connect_timeout=5")
    listener.close()
    line = result.stderr.strip()
    assert result.returncode == 2 and "the server closed the connection unexpectedly" in line, line


def test_the_password_file_is_read_as_libpq_reads_it(tmp_path):
    """The password ends at its own unescaped colon; a backslash at the line's end is kept (libpq's
    passwordFromFile); both were read otherwise, so the real password went unmasked."""
    from appdb.redact import passfile_secrets

    passfile = tmp_path / "pgpass"
    passfile.write_text("# comment\n127.0.0.1:5432:*:u1:pass:word\n*:*:*:u2:trail\\\n*:*:*:u3:es\\:ca\\\\pe\n"
                        "too:few:fields\n")
    assert passfile_secrets(str(passfile)) == {"pass", "trail\\", "es:ca\\pe"}


def test_a_password_percent_encoded_in_lower_case_is_masked_too():
    assert redact("seen: p%c3%a9-secret-%2fx", ["pé-secret-/x"], pieces=False) == "seen: ********"


def test_the_password_file_is_read_whole_line_by_line_and_only_if_it_is_a_file(tmp_path):
    """From a third attack review: a FIFO held appdb at open; a form feed, an indented #, or a
    password past the first MiB hid a password libpq reads."""
    import os

    from appdb.redact import passfile_secrets

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert passfile_secrets(str(fifo)) == set() and passfile_secrets(str(tmp_path)) == set()
    passfile = tmp_path / "pgpass"
    passfile.write_bytes(b"*:*:*:*:Form\x0cTail\r\n  #x:*:*:*:IndentHash99\n#c:*:*:*:NotOne\n"
                         + b"#" * (1 << 20) + b"\n*:*:*:*:HugeTailPw1234\n")
    assert passfile_secrets(str(passfile)) == {"Form\x0cTail", "IndentHash99", "HugeTailPw1234"}
