"""029: app.payment_events is created where missing and converges on production's older table."""

from __future__ import annotations

import psycopg
import pytest

from appdb.errors import Refused
from appdb.migrate import runner
from appdb.migrate.files import discover
from tests.helpers import SQL_DIR, foreign_keys, production

MIGRATIONS = discover(SQL_DIR)
THROUGH_029 = [m for m in MIGRATIONS if m.sort_key <= 29]
OPTIONS = runner.Options(lock_timeout=5)
USER = "00000000-0000-4000-9000-000000000001"


def apply(db, migrations=THROUGH_029, options=OPTIONS) -> None:
    with db.connect() as conn:
        runner.apply(conn, migrations, options)


def unique_keys(db) -> list[str]:
    rows = db.execute(
        """
        SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'app.payment_events'::regclass AND i.indisunique AND NOT i.indisprimary
        ORDER BY 1
        """
    )
    return [row[0] for row in rows]


EXPECTED_FKS = [
    ("payment_events_membership_id_fkey",
     "FOREIGN KEY (membership_id) REFERENCES app.memberships(membership_id) ON DELETE SET NULL", True),
    ("payment_events_user_id_fkey", "FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE SET NULL", True),
]


def test_029_creates_payment_events_with_a_unique_event_id_and_set_null_links(db):
    apply(db)

    assert foreign_keys(db, "app.payment_events") == EXPECTED_FKS
    assert unique_keys(db) == ["payment_events_stripe_event_id_key"]
    columns = {row[0] for row in db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'app.payment_events'::regclass AND attnum > 0")}
    assert {"stripe_event_id", "event_type", "payload", "user_id", "membership_id", "received_at",
            "processed_at", "processing_error"} <= columns
    assert db.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'app.payment_events'::regclass") == [(True,)]
    indexes = {row[0] for row in db.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'app.payment_events'::regclass")}
    assert {"app.payment_events_user_id_idx", "app.payment_events_membership_id_idx"} <= indexes


def test_029_stores_a_redelivered_stripe_event_once(db):
    apply(db)
    insert = ("INSERT INTO app.payment_events (stripe_event_id, event_type, payload) "
              "VALUES ('evt_1', 'invoice.paid', '{}') ON CONFLICT (stripe_event_id) DO NOTHING")
    db.execute(insert)
    db.execute(insert)
    assert db.execute("SELECT count(*) FROM app.payment_events") == [(1,)]
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("INSERT INTO app.payment_events (stripe_event_id, event_type, payload) "
                   "VALUES ('evt_1', 'invoice.paid', '{}')")


def test_029_on_the_production_state_touches_no_row_and_keeps_its_unique_index(db):
    production(db)
    before = db.execute("SELECT xmin::text, ctid::text, to_jsonb(e)::text FROM app.payment_events e ORDER BY id")

    apply(db)

    after = db.execute("SELECT xmin::text, ctid::text, (to_jsonb(e) - 'user_id' - 'membership_id' "
                       "- 'processing_error')::text FROM app.payment_events e ORDER BY id")
    assert after == before
    assert foreign_keys(db, "app.payment_events") == EXPECTED_FKS
    assert unique_keys(db) == ["payment_events_event_uniq"]  # found by its column: no second one
    triggers = db.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'app.payment_events'::regclass AND NOT tgisinternal")
    assert triggers == [("payment_events_stamp",)]
    assert db.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'app.payment_events'::regclass") == [(True,)]


def test_029_runs_again_over_itself_without_a_change(db):
    """A crash between steps is repaired by the next apply: each step is safe to run twice."""
    production(db)
    apply(db)
    before = db.snapshot()
    with db.connect() as conn:
        for step in THROUGH_029[-1].steps:
            conn.execute(step.sql)
    assert db.snapshot() == before


def test_deleting_a_user_keeps_their_payment_events_with_the_links_cleared(db):
    production(db)
    apply(db, MIGRATIONS)  # 030 too: before it, production's billing_logs blocks the deletion
    membership = db.execute("SELECT membership_id FROM app.memberships WHERE user_id = %s", (USER,))[0][0]
    db.execute("UPDATE app.payment_events SET user_id = %s, membership_id = %s WHERE stripe_event_id = 'evt_1'",
               (USER, membership))

    db.execute("DELETE FROM auth.users WHERE id = %s", (USER,))

    assert db.execute("SELECT user_id, membership_id FROM app.payment_events WHERE stripe_event_id = 'evt_1'") == [
        (None, None)]


def test_029_refuses_duplicated_event_ids_and_changes_nothing(db):
    production(db)
    with db.connect() as conn:
        conn.execute("DROP INDEX app.payment_events_event_uniq")
        conn.execute("INSERT INTO app.payment_events (stripe_event_id, event_type, payload) "
                     "VALUES ('evt_1', 'invoice.paid', '{}')")
    apply(db, [m for m in MIGRATIONS if m.sort_key <= 28])
    before = db.snapshot()

    with db.connect() as conn, pytest.raises(Refused, match="1 stripe_event_id value.*more than once"):
        runner.apply(conn, THROUGH_029, OPTIONS)

    assert db.snapshot() == before


def test_revert_029_refuses_while_events_exist_unless_data_loss_is_allowed(db):
    production(db)
    apply(db)
    with db.connect() as conn:
        with pytest.raises(Refused, match="drops app.payment_events and its 5 row"):
            runner.revert(conn, "029", OPTIONS)
        assert db.execute("SELECT count(*) FROM app.payment_events") == [(5,)]
        runner.revert(conn, "029", runner.Options(lock_timeout=5, allow_data_loss=True))
    assert db.execute("SELECT to_regclass('app.payment_events')") == [(None,)]
