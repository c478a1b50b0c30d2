"""Nothing recorded unless whole: an INVALID index is never recorded as built.

``CREATE INDEX CONCURRENTLY`` commits its catalog entry before building. When it then
waits on an older transaction (a report, a backup, an idle-in-transaction session:
anything holding a snapshot) for longer than ``lock_timeout``, it fails and leaves an
INVALID index; a retry's ``IF NOT EXISTS`` would skip it and the migration would be
recorded as applied. These tests hold such a snapshot on a real PostgreSQL.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from appdb.errors import LockTimeout, MigrationError
from appdb.migrate import ledger, runner
from appdb.migrate.files import discover, find
from tests.helpers import SHIPPED_SQL, Database, production, write_migration

FAST = runner.Options(lock_timeout=0.2, lock_retries=2)
PATIENT = runner.Options(lock_timeout=0.2, lock_retries=30)
INDEX = "memberships_status_idx"


def with_index_migration(tmp_path: Path) -> Path:
    """sql/ plus 031, one CONCURRENTLY index build on app.memberships (a non-transactional step)."""
    sql_dir = tmp_path / "sql"
    shutil.copytree(SHIPPED_SQL, sql_dir)
    (sql_dir / "031_membership_status_index.sql").write_text(
        "-- appdb:step build transaction=false\n"
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON app.memberships (status);\n")
    (sql_dir / "revert" / "031_membership_status_index.sql").write_text(
        f"-- appdb:step drop transaction=false\nDROP INDEX CONCURRENTLY IF EXISTS app.{INDEX};\n")
    return sql_dir


@contextmanager
def snapshot_held(db: Database) -> Iterator[psycopg.Connection]:
    """Another session in a REPEATABLE READ transaction: its snapshot is older than any index build."""
    with psycopg.connect(db.dsn) as holder:
        holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT 1")
        yield holder
        holder.rollback()


def index_states(db: Database, name: str = INDEX) -> list[bool]:
    """indisvalid of every index called ``name`` in app (one entry per index)."""
    return [row[0] for row in db.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %s AND c.relnamespace = 'app'::regnamespace", (name,))]


def ledger_rows(db: Database, migration_id: str) -> int:
    return db.execute("SELECT count(*) FROM appdb.migrations WHERE id = %s", (migration_id,))[0][0]


def applied_up_to_030(db: Database, sql_dir: Path) -> None:
    with db.connect() as conn:
        runner.apply(conn, [m for m in discover(sql_dir) if m.sort_key <= 30], FAST)


def test_an_index_build_that_times_out_on_every_try_is_not_recorded_and_the_next_apply_builds_it(db, tmp_path):
    sql_dir = with_index_migration(tmp_path)
    applied_up_to_030(db, sql_dir)
    with snapshot_held(db):
        with db.connect() as conn, pytest.raises(LockTimeout, match="031, step build: lock timeout"):
            runner.apply(conn, discover(sql_dir), FAST)
        # Each try dropped the last one's leftover first: one INVALID index, not recorded.
        assert index_states(db) == [False]
        assert ledger_rows(db, "031") == 0
    with db.connect() as conn:
        done = runner.apply(conn, discover(sql_dir), FAST)

    assert [o.id for o in done] == ["031"]
    assert index_states(db) == [True]
    assert ledger_rows(db, "031") == 1


def test_a_retry_after_the_snapshot_ends_rebuilds_the_index_within_the_same_apply(db, tmp_path):
    sql_dir = with_index_migration(tmp_path)
    applied_up_to_030(db, sql_dir)
    with snapshot_held(db) as holder:
        ended = threading.Event()

        def end_snapshot() -> None:
            time.sleep(1.0)
            holder.rollback()
            ended.set()

        release = threading.Thread(target=end_snapshot)
        release.start()
        with db.connect() as conn:
            runner.apply(conn, discover(sql_dir), PATIENT)
        release.join()
        assert ended.is_set()

    assert index_states(db) == [True]
    assert ledger_rows(db, "031") == 1


def test_the_ledger_refuses_a_row_while_an_index_the_migration_builds_is_invalid(db, tmp_path):
    sql_dir = with_index_migration(tmp_path)
    applied_up_to_030(db, sql_dir)
    with snapshot_held(db), db.connect() as conn, pytest.raises(LockTimeout):
        runner.apply(conn, discover(sql_dir), runner.Options(lock_timeout=0.2, lock_retries=0))
    assert index_states(db) == [False]

    migration = find(discover(sql_dir), "031")
    with db.connect() as conn:
        with pytest.raises(MigrationError, match=rf"031 was not recorded: index app.{INDEX} .* is INVALID"):
            with conn.transaction():
                ledger.record(conn, migration, 0)
    assert ledger_rows(db, "031") == 0


def test_029_built_under_a_held_snapshot_converges_on_the_next_apply(db):
    """029's indexes are built CONCURRENTLY: the shipped migrations get the same protection."""
    migrations = [m for m in discover(SHIPPED_SQL) if m.sort_key <= 29]
    with db.connect() as conn:
        runner.apply(conn, migrations[:-1], FAST)
    with snapshot_held(db), db.connect() as conn, pytest.raises(LockTimeout, match="029, step user_id_index"):
        runner.apply(conn, migrations, FAST)
    assert index_states(db, "payment_events_user_id_idx") == [False]
    assert db.execute("SELECT count(*) FROM appdb.migrations WHERE id = '029'") == [(0,)]
    with db.connect() as conn:
        runner.apply(conn, migrations, FAST)
    assert index_states(db, "payment_events_user_id_idx") == [True]
    assert index_states(db, "payment_events_membership_id_idx") == [True]
    assert ledger_rows(db, "029") == 1


def test_pulled_migrations_name_every_index_they_build_so_the_runner_protects_them(new_db, tmp_path):
    source = production(new_db())
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    result = source.run_cli("pull", "adopt_production", sql_dir=sql_dir)
    assert result.returncode == 0, result.stderr
    pulled = discover(sql_dir)[0]
    # Indexes a constraint does not own: what pull writes as CREATE INDEX CONCURRENTLY.
    plain = {row[0] for row in source.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relnamespace = 'app'::regnamespace "
        "AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)")}
    assert plain
    assert {index.name for index in pulled.created_indexes()} == plain


def test_an_index_built_in_a_transaction_is_never_looked_up_and_one_left_invalid_on_purpose_is_recorded(
        db, tmp_path, monkeypatch):
    """Only a CONCURRENTLY build can be interrupted half-way; any other CREATE INDEX commits whole.

    ``CREATE INDEX ... ON ONLY`` a partitioned table makes an index that is INVALID by design
    until its partitions' indexes are attached: a migration that does so is recorded.
    """
    sql_dir = tmp_path / "sql"
    write_migration(sql_dir, "031_events.sql",
                    "CREATE TABLE app.events (id bigint, at date NOT NULL) PARTITION BY RANGE (at);\n"
                    "CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');\n"
                    "CREATE INDEX events_at_idx ON ONLY app.events (at);\n"
                    "CREATE INDEX IF NOT EXISTS events_id_idx ON app.events (id);\n",
                    "DROP TABLE app.events;\n")
    looked_up: list[str] = []
    real = ledger.indexes.invalid_index
    monkeypatch.setattr(ledger.indexes, "invalid_index", lambda conn, name, table: looked_up.append(name) or real(
        conn, name, table))
    with db.connect() as conn:
        runner.apply(conn, discover(sql_dir), FAST)
    assert looked_up == []
    assert index_states(db, "events_at_idx") == [False]
    assert ledger_rows(db, "031") == 1


def test_only_the_indexes_a_migration_builds_concurrently_are_checked_before_its_row(tmp_path):
    sql_dir = with_index_migration(tmp_path)
    (sql_dir / "032_plain_index.sql").write_text("CREATE INDEX memberships_plan_idx ON app.memberships (plan);\n")
    (sql_dir / "revert" / "032_plain_index.sql").write_text("DROP INDEX app.memberships_plan_idx;\n")
    found = {m.id: [(i.name, i.concurrently) for i in m.concurrent_indexes()] for m in discover(sql_dir)}
    assert found["031"] == [(INDEX, True)]
    assert found["032"] == []
    assert [(i.name, i.concurrently) for i in find(discover(sql_dir), "032").created_indexes()] == [
        ("memberships_plan_idx", False)]
