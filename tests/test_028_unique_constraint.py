"""028 leaves exactly one unique constraint on app.memberships(user_id), never zero."""

from __future__ import annotations

from appdb.migrate import runner
from appdb.migrate.files import discover
from tests.helpers import SQL_DIR

MIGRATIONS = discover(SQL_DIR)


def apply_all(db) -> None:
    with db.connect() as conn:
        runner.apply(conn, MIGRATIONS, runner.Options(lock_timeout=5))


def unique_constraints(db) -> list[str]:
    rows = db.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'app.memberships'::regclass "
                      "AND contype = 'u' ORDER BY conname")
    return [row[0] for row in rows]


def test_028_drops_the_duplicate_when_both_constraints_exist(db):
    db.load_state("production")
    rows = db.execute("SELECT membership_id, user_id, status, plan_interval, stripe_customer_id FROM app.memberships ORDER BY user_id")

    apply_all(db)

    assert unique_constraints(db) == ["memberships_user_id_key"]
    assert db.execute("SELECT membership_id, user_id, status, plan_interval, stripe_customer_id FROM app.memberships ORDER BY user_id") == rows


def test_028_keeps_the_only_unique_constraint(db):
    db.load_state("production")
    db.execute("ALTER TABLE app.memberships DROP CONSTRAINT memberships_user_id_key")

    apply_all(db)

    assert unique_constraints(db) == ["memberships_user_unique"]


def test_028_is_a_no_op_on_a_fresh_table(db):
    apply_all(db)

    assert unique_constraints(db) == ["memberships_user_id_key"]


def test_028_keeps_memberships_user_unique_when_it_covers_other_columns(db):
    db.load_state("production")
    with db.connect() as conn:
        conn.execute("ALTER TABLE app.memberships DROP CONSTRAINT memberships_user_unique")
        conn.execute("ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_unique "
                     "UNIQUE (user_id, stripe_customer_id)")

    apply_all(db)

    assert unique_constraints(db) == ["memberships_user_id_key", "memberships_user_unique"]
