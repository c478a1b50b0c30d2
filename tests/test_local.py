"""`appdb local`: the project's own cluster, shaped like Supabase, from the command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from appdb.local.cluster import LOCAL_PASSWORD
from tests.conftest import ROOT, free_port


@pytest.fixture(scope="module")
def local():
    """`appdb local up --seed` in a temp folder on a free port; `down` afterwards."""
    home = Path(tempfile.mkdtemp(prefix="appdb-local-test-"))
    port = str(free_port())

    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "APPDB_SQL_DIR": str(ROOT / "sql"), **(env or {})}
        return subprocess.run([sys.executable, "-m", "appdb", *args], capture_output=True, text=True,
                              cwd=ROOT, env=full_env, timeout=120, check=False)

    result = cli("local", "up", "--seed", "--home", str(home), "--port", port)
    assert result.returncode == 0, result.stderr
    try:
        yield cli, home, port
    finally:
        cli("local", "down", "--home", str(home), "--port", port)
        shutil.rmtree(home, ignore_errors=True)


def test_local_url_connects_as_the_postgres_login(local):
    cli, home, port = local
    url = cli("local", "url", "--home", str(home), "--port", port).stdout.strip()
    assert url == f"postgresql://postgres:{LOCAL_PASSWORD}@127.0.0.1:{port}/postgres"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"


def test_the_postgres_login_is_not_a_superuser_as_on_supabase(local):
    cli, home, port = local
    url = cli("local", "url", "--home", str(home), "--port", port).stdout.strip()
    with psycopg.connect(url) as conn:
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
    cli, home, port = local
    url = cli("local", "url", "--home", str(home), "--port", port).stdout.strip()
    with psycopg.connect(url) as conn:
        conn.execute("""SELECT set_config('request.jwt.claims', '{"sub": "00000000-0000-4000-8000-000000000001", "role": "authenticated"}', false)""")
        row = conn.execute("SELECT auth.uid()::text, auth.role(), auth.jwt() ->> 'role'").fetchone()
    assert row == ("00000000-0000-4000-8000-000000000001", "authenticated", "authenticated")


def test_the_engine_alone_deploys_on_the_local_database_and_creates_the_group_roles(local):
    """Without Pulumi: no app schema, no group roles; 027 makes what its policies need."""
    cli, home, port = local
    url = cli("local", "url", "--home", str(home), "--port", port).stdout.strip()
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
    assert tables == [("billing_logs",), ("memberships",), ("payment_events",)]
    for migration_id in ("030", "029", "028", "027"):
        assert cli("revert", migration_id, env=env).returncode == 0
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname IN ('app_writer', 'app_reader')").fetchone()[0] == 2


def test_local_up_twice_is_harmless(local):
    cli, home, port = local
    result = cli("local", "up", "--home", str(home), "--port", port)
    assert result.returncode == 0, result.stderr


def test_local_reset_gives_a_fresh_database(local):
    cli, home, port = local
    url = cli("local", "url", "--home", str(home), "--port", port).stdout.strip()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.leftover (id bigint)")
    assert cli("local", "reset", "--home", str(home), "--port", port).returncode == 0
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('public.leftover')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM auth.users").fetchone()[0] == 0


def test_local_up_gives_a_cluster_with_the_old_password_the_new_one_and_keeps_its_data():
    """Clusters made before the local password changed had `postgres`; `up` moves them on once."""
    from appdb.local.cluster import LEGACY_PASSWORD, Cluster

    home = Path(tempfile.mkdtemp(prefix="appdb-local-legacy-"))
    old = Cluster(home=home, port=free_port(), password=LEGACY_PASSWORD)
    old.up()
    try:
        with old.connect() as conn:
            conn.execute("CREATE TABLE public.kept (id bigint); INSERT INTO public.kept VALUES (1)")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = subprocess.run([sys.executable, "-m", "appdb", "local", "up", "--home", str(home),
                                 "--port", str(old.port)], capture_output=True, text=True, cwd=ROOT, env=env,
                                timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert "old password" in result.stderr
        new = Cluster(home=home, port=old.port)
        with psycopg.connect(new.url()) as conn:
            assert conn.execute("SELECT id FROM public.kept").fetchall() == [(1,)]
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(old.url(), connect_timeout=10)
    finally:
        old.down()
        shutil.rmtree(home, ignore_errors=True)
