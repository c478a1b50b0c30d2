"""docs/adoption.md, step by step, for a team whose own tables differ from 029 and 030.

Their production has 027 and 028 applied and a payment_events table of its own design
(the payload column is called ``body``). The shipped 029 refuses it before changing
anything; so the team takes 029 and 030 out of sql/, pulls production as the next
migration, baselines it there, and every other database gets production's tables from
it. verify keeps its memberships checks and leaves the shipped tables' checks out,
since the shipped files are gone, even though the pulled migration has the number 029.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import SHIPPED_SQL, Database, migrations_part, production, pull

SHIPPED = ("029_payment_events.sql", "030_billing_logs.sql")


def own_design(db: Database) -> Database:
    production(db)
    db.execute("ALTER TABLE app.payment_events RENAME COLUMN payload TO body")
    return db


def without_shipped(tmp_path: Path) -> Path:
    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    for name in SHIPPED:
        (sql_dir / name).unlink()
        (sql_dir / "revert" / name).unlink()
    return sql_dir


def test_the_shipped_029_refuses_a_table_of_another_design_and_changes_nothing(new_db):
    source = own_design(new_db())
    assert source.run_cli("apply", "--only", "027").returncode == 0
    assert source.run_cli("apply", "--only", "028").returncode == 0
    before = source.snapshot()
    refused = source.run_cli("apply")
    assert refused.returncode == 1
    assert "app.payment_events exists without the column(s) payload; nothing was changed" in refused.stderr
    assert source.snapshot() == before


def test_a_team_with_its_own_tables_pulls_them_as_029_baselines_production_and_builds_the_rest(new_db, tmp_path):
    sql_dir = without_shipped(tmp_path)
    source = own_design(new_db())
    assert source.run_cli("apply", sql_dir=sql_dir).returncode == 0  # production's ledger: 027, 028

    pulled = pull(source, sql_dir)
    assert pulled.returncode == 0, pulled.stderr
    assert "appdb baseline 029" in pulled.stdout
    assert (sql_dir / "029_adopt_production.sql").is_file()
    before = source.snapshot()
    recorded = source.run_cli("baseline", "029", sql_dir=sql_dir)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    after = source.snapshot()
    assert after["catalog"] == before["catalog"]
    assert {k: v for k, v in after["rows"].items() if k != "appdb.migrations"} == \
        {k: v for k, v in before["rows"].items() if k != "appdb.migrations"}
    assert source.run_cli("apply", sql_dir=sql_dir).stdout.startswith("nothing to apply")

    fresh = new_db()
    applied = fresh.run_cli("apply", sql_dir=sql_dir)
    assert applied.returncode == 0, applied.stderr
    verified = fresh.run_cli("verify", sql_dir=sql_dir)
    assert verified.returncode == 0, verified.stdout
    assert "migration 029_payment_events.sql is not in sql/: not checked" in verified.stdout
    made, there = migrations_part(fresh), migrations_part(source)
    # Their tables, as production has them. (memberships is 027's on both; the column
    # default production changed by hand is drift that appdb diff shows, not pull's to undo.)
    theirs = {k: v for k, v in there.items() if k.split(" ")[-1].startswith(("app.payment_events", "app.billing_logs"))}
    assert len(theirs) > 15
    assert {k: made.entries.get(k) for k in theirs} == theirs
    assert "column app.payment_events.body" in made
