"""Row level security on app.memberships, exercised the way PostgREST does it."""

from __future__ import annotations

import json

import psycopg
import pytest

from appdb.migrate import runner
from appdb.migrate.files import discover
from tests.helpers import SQL_DIR

ALICE = "00000000-0000-4000-c000-000000000001"
BOB = "00000000-0000-4000-c000-000000000002"


@pytest.fixture
def members(db):
    with db.connect() as conn:
        runner.apply(conn, discover(SQL_DIR), runner.Options(lock_timeout=5))
        conn.execute("GRANT SELECT ON app.memberships TO authenticated")  # components/grants.py does this
        conn.execute("INSERT INTO auth.users (id) VALUES (%s), (%s)", (ALICE, BOB))
        conn.execute("INSERT INTO app.memberships (user_id, status, plan_interval) "
                     "VALUES (%s, 'active', 'month'), (%s, 'active', 'year')", (ALICE, BOB))
    return db


def visible_as(conn: psycopg.Connection, role: str, sub: str | None) -> list[str]:
    with conn.transaction():
        conn.execute(f"SET LOCAL ROLE {role}")
        if sub is not None:
            claims = json.dumps({"sub": sub, "role": role})
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))
        rows = conn.execute("SELECT user_id::text FROM app.memberships ORDER BY user_id").fetchall()
    return [row[0] for row in rows]


def test_authenticated_reads_only_its_own_membership(members):
    with members.connect() as conn:
        assert visible_as(conn, "authenticated", ALICE) == [ALICE]
        assert visible_as(conn, "authenticated", BOB) == [BOB]


def test_authenticated_without_a_user_reads_nothing(members):
    with members.connect() as conn:
        assert visible_as(conn, "authenticated", None) == []


def test_authenticated_cannot_write_memberships(members):
    with members.connect() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        with conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute("UPDATE app.memberships SET status = 'canceled'")


def test_anon_cannot_read_memberships(members):
    with members.connect() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        visible_as(conn, "anon", None)


def test_service_role_reads_every_row(members):
    with members.connect() as conn:
        assert visible_as(conn, "service_role", None) == sorted([ALICE, BOB])


def test_the_backend_login_writes_through_the_app_writer_policy(members):
    params = members.backend_params()
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute("UPDATE app.memberships SET status = 'past_due' WHERE user_id = %s", (ALICE,))
        rows = conn.execute("SELECT count(*) FROM app.memberships").fetchone()[0]
    assert rows == 2
    assert members.execute("SELECT status FROM app.memberships WHERE user_id = %s", (ALICE,)) == [("past_due",)]


def test_deleting_the_auth_user_deletes_the_membership(members):
    members.execute("DELETE FROM auth.users WHERE id = %s", (ALICE,))
    assert members.execute("SELECT user_id::text FROM app.memberships") == [(BOB,)]
