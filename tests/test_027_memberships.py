"""027 converges from every state it can meet, on a real Supabase-shaped PostgreSQL."""

from __future__ import annotations

import pytest

from appdb.checks import verify
from appdb.errors import Refused
from appdb.migrate import runner
from appdb.migrate.files import discover
from tests.helpers import SQL_DIR

MIGRATIONS = discover(SQL_DIR)
ONLY_027 = [m for m in MIGRATIONS if m.id == "027"]

PROFILES_STATE = """
INSERT INTO auth.users (id) SELECT ('00000000-0000-4000-a000-' || lpad(n::text, 12, '0'))::uuid
FROM generate_series(1, 3) n;
CREATE TABLE app.profiles (user_id uuid PRIMARY KEY);
INSERT INTO app.profiles SELECT id FROM auth.users;
CREATE TABLE app.memberships (
    membership_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL UNIQUE REFERENCES app.profiles (user_id),
    plan_interval text
);
INSERT INTO app.memberships (user_id, plan_interval) SELECT user_id, 'month' FROM app.profiles;
"""


def apply_027(db) -> None:
    with db.connect() as conn:
        runner.apply(conn, ONLY_027, runner.Options(lock_timeout=5))


def fk_rows(db) -> list[tuple]:
    return db.execute(
        """
        SELECT conname, confrelid::regclass::text, confdeltype, convalidated FROM pg_constraint
        WHERE conrelid = 'app.memberships'::regclass AND contype = 'f' ORDER BY conname
        """
    )


def memberships(db) -> list[tuple]:
    return db.execute("SELECT membership_id, user_id, plan_interval FROM app.memberships ORDER BY user_id")


def test_027_creates_the_table_from_nothing(db):
    apply_027(db)

    assert fk_rows(db) == [("memberships_user_id_fkey", "auth.users", "c", True)]
    columns = {row[0] for row in db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'app.memberships'::regclass AND attnum > 0")}
    assert {"membership_id", "user_id", "status", "plan_interval", "stripe_customer_id",
            "stripe_subscription_id", "stripe_price_id", "current_period_end",
            "cancel_at_period_end", "created_at", "updated_at"} <= columns
    assert db.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'app.memberships'::regclass") == [(True,)]


def test_027_rejects_a_plan_interval_outside_month_and_year(db):
    apply_027(db)
    db.execute("INSERT INTO auth.users (id) VALUES ('00000000-0000-4000-a000-000000000001')")
    with pytest.raises(Exception, match="memberships_plan_interval_check"):
        db.execute("INSERT INTO app.memberships (user_id, plan_interval) "
                   "VALUES ('00000000-0000-4000-a000-000000000001', 'week')")


def test_027_on_the_production_state_touches_no_row(db):
    db.load_state("production")
    before = memberships(db)
    xmins = db.execute("SELECT xmin::text, ctid::text FROM app.memberships ORDER BY user_id")

    apply_027(db)

    assert memberships(db) == before
    assert db.execute("SELECT xmin::text, ctid::text FROM app.memberships ORDER BY user_id") == xmins
    assert fk_rows(db) == [("memberships_user_id_fkey", "auth.users", "c", True)]
    uniques = db.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'app.memberships'::regclass "
                         "AND contype = 'u' ORDER BY conname")
    assert uniques == [("memberships_user_id_key",), ("memberships_user_unique",)]


def test_027_replaces_a_foreign_key_to_profiles_without_touching_rows(db):
    with db.connect() as conn:
        conn.execute(PROFILES_STATE)
    before = memberships(db)

    apply_027(db)

    assert fk_rows(db) == [("memberships_user_id_fkey", "auth.users", "c", True)]
    assert memberships(db) == before


def test_027_finds_a_foreign_key_by_its_column_not_its_name(db):
    with db.connect() as conn:
        conn.execute(PROFILES_STATE.replace("REFERENCES app.profiles (user_id)", ""))
        conn.execute("ALTER TABLE app.memberships ADD CONSTRAINT fk_whatever "
                     "FOREIGN KEY (user_id) REFERENCES app.profiles (user_id)")

    apply_027(db)

    assert fk_rows(db) == [("memberships_user_id_fkey", "auth.users", "c", True)]


def test_027_renames_a_right_foreign_key_with_an_unexpected_name(db):
    with db.connect() as conn:
        conn.execute(PROFILES_STATE.replace("REFERENCES app.profiles (user_id)", ""))
        conn.execute("ALTER TABLE app.memberships ADD CONSTRAINT legacy_user_fk "
                     "FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE")
        oid = conn.execute("SELECT oid FROM pg_constraint WHERE conname = 'legacy_user_fk'").fetchone()[0]

    apply_027(db)

    assert fk_rows(db) == [("memberships_user_id_fkey", "auth.users", "c", True)]
    assert db.execute("SELECT oid FROM pg_constraint WHERE conname = 'memberships_user_id_fkey'") == [(oid,)]


def test_027_refuses_orphans_and_leaves_the_database_exactly_as_it_was(db):
    with db.connect() as conn:
        conn.execute(PROFILES_STATE)
        conn.execute("INSERT INTO app.profiles VALUES ('00000000-0000-4000-b000-000000000001'), "
                     "('00000000-0000-4000-b000-000000000002')")
        conn.execute("INSERT INTO app.memberships (user_id) SELECT user_id FROM app.profiles "
                     "WHERE user_id::text LIKE '%-b000-%'")
    before = db.snapshot()

    with pytest.raises(Refused, match=r"2 app.memberships row\(s\) have a user_id with no auth.users row"):
        apply_027(db)

    assert db.snapshot() == before


def test_027_adds_missing_columns_and_rls_to_an_adopted_table(db):
    with db.connect() as conn:
        conn.execute(PROFILES_STATE)

    apply_027(db)

    row = db.execute("SELECT status, cancel_at_period_end, stripe_price_id FROM app.memberships LIMIT 1")
    assert row == [("incomplete", False, None)]
    assert db.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'app.memberships'::regclass") == [(True,)]
    assert db.execute("SELECT conname, convalidated FROM pg_constraint "
                      "WHERE conname = 'memberships_plan_interval_check'") == [("memberships_plan_interval_check", True)]


def test_027_adds_the_unique_constraint_an_adopted_table_lacks(db):
    with db.connect() as conn:
        conn.execute(PROFILES_STATE.replace("NOT NULL UNIQUE", "NOT NULL"))

    apply_027(db)

    with db.connect() as conn:
        report = {check.name: check for check in verify.run(conn, MIGRATIONS).checks}["memberships_user_unique"]
    assert report.ok, report.detail


def test_027_every_step_can_run_again_after_a_crash_between_steps(db):
    """Run each step, then all of them again, as the next apply after a crash would."""
    with db.connect() as conn:
        conn.execute(PROFILES_STATE)
    migration = ONLY_027[0]
    with db.connect() as conn:
        for step in migration.steps:
            conn.execute(step.sql)
        for step in migration.steps:
            conn.execute(step.sql)

    assert fk_rows(db) == [("memberships_user_id_fkey", "auth.users", "c", True)]


def test_027_never_leaves_user_id_without_a_foreign_key_between_steps(db):
    with db.connect() as conn:
        conn.execute(PROFILES_STATE)
    migration = ONLY_027[0]
    with db.connect() as conn:
        for step in migration.steps:
            conn.execute(step.sql)
            assert len(fk_rows(db)) >= 1, f"no foreign key after step {step.name}"
