"""030: app.billing_logs, append-only, converging on production's older table."""

from __future__ import annotations

import psycopg
import pytest

from appdb.errors import Refused
from appdb.migrate import runner
from appdb.migrate.files import discover
from tests.helpers import SQL_DIR, foreign_keys, production

MIGRATIONS = discover(SQL_DIR)
THROUGH_030 = [m for m in MIGRATIONS if m.sort_key <= 30]
OPTIONS = runner.Options(lock_timeout=5)
USER = "00000000-0000-4000-9000-000000000001"


def apply(db, migrations=THROUGH_030) -> None:
    with db.connect() as conn:
        runner.apply(conn, migrations, OPTIONS)


EXPECTED_FKS = [
    ("billing_logs_membership_id_fkey",
     "FOREIGN KEY (membership_id) REFERENCES app.memberships(membership_id) ON DELETE SET NULL", True),
    ("billing_logs_user_id_fkey", "FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE SET NULL", True),
]


@pytest.fixture
def logged(db):
    """The production state deployed: billing rows that belong to auth users."""
    production(db)
    apply(db)
    return db


def test_030_creates_billing_logs_with_set_null_links_and_rls(db):
    apply(db)
    assert foreign_keys(db, "app.billing_logs") == EXPECTED_FKS
    assert db.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'app.billing_logs'::regclass") == [(True,)]
    db.execute("INSERT INTO app.billing_logs (action, amount_cents, currency) VALUES ('refund', 900, 'eur')")
    assert db.execute("SELECT action, detail::text FROM app.billing_logs") == [("refund", "{}")]


def test_030_on_the_production_state_touches_no_row_and_replaces_the_blocking_key(db):
    production(db)
    before = db.execute("SELECT xmin::text, ctid::text FROM app.billing_logs ORDER BY id")

    apply(db)

    assert db.execute("SELECT xmin::text, ctid::text FROM app.billing_logs ORDER BY id") == before
    assert foreign_keys(db, "app.billing_logs") == EXPECTED_FKS  # the NO ACTION key on user_id is gone
    policies = db.execute("SELECT polname FROM pg_policy WHERE polrelid = 'app.billing_logs'::regclass ORDER BY 1")
    assert policies == [("billing_logs_backend",), ("billing_logs_reader_select",), ("billing_logs_writer_all",)]


@pytest.mark.parametrize("statement", [
    "UPDATE app.billing_logs SET action = 'edited'",
    "UPDATE app.billing_logs SET user_id = NULL, detail = '{}'",
    "DELETE FROM app.billing_logs",
    "TRUNCATE app.billing_logs",
])
def test_billing_logs_refuse_every_change_but_an_insert(logged, statement):
    with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
        logged.execute(statement)
    assert logged.execute("SELECT count(*) FROM app.billing_logs") == [(5,)]


def test_the_backend_login_writes_billing_logs_but_cannot_edit_them(logged):
    """app_backend (in app_writer, with the program's DML grant) passes RLS; the trigger still refuses."""
    # The program's plan (appdb/access.py) gives app_writer USAGE on the schema's sequences.
    logged.execute("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA app TO app_writer")
    params = logged.backend_params()
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute("INSERT INTO app.billing_logs (action) VALUES ('checkout_started')")
        assert conn.execute("SELECT count(*) FROM app.billing_logs").fetchone() == (6,)
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("DELETE FROM app.billing_logs WHERE action = 'checkout_started'")


def test_deleting_a_user_is_not_blocked_and_keeps_their_billing_rows_unlinked(logged):
    membership = logged.execute("SELECT membership_id FROM app.memberships WHERE user_id = %s", (USER,))[0][0]
    logged.execute("INSERT INTO app.billing_logs (user_id, membership_id, action, stripe_customer_id) "
                   "VALUES (%s, %s, 'plan_changed', 'cus_1')", (USER, membership))

    logged.execute("DELETE FROM auth.users WHERE id = %s", (USER,))

    rows = logged.execute("SELECT user_id, membership_id, stripe_customer_id FROM app.billing_logs "
                          "WHERE action = 'plan_changed' OR detail ->> 'amount_cents' = '900' ORDER BY id")
    assert rows == [(None, None, None), (None, None, "cus_1")]


def test_030_runs_again_over_itself_without_a_change(logged):
    before = logged.snapshot()
    with logged.connect() as conn:
        for step in THROUGH_030[-1].steps:
            conn.execute(step.sql)
    assert logged.snapshot() == before


def test_revert_030_refuses_while_rows_exist_unless_data_loss_is_allowed(logged):
    with logged.connect() as conn:
        with pytest.raises(Refused, match="drops app.billing_logs and its 5 row"):
            runner.revert(conn, "030", OPTIONS)
        runner.revert(conn, "030", runner.Options(lock_timeout=5, allow_data_loss=True))
    assert logged.execute("SELECT to_regclass('app.billing_logs'), "
                          "to_regprocedure('app.billing_logs_append_only()')") == [(None, None)]
