"""The migration file model: naming, steps, checksums, and squawk's verdict on sql/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appdb.errors import ConfigError
from appdb.migration import checksum, discover, find, parse_steps
from tests.conftest import ROOT, SQL_DIR


def write(sql_dir: Path, name: str, text: str = "SELECT 1;\n", revert: str | None = "-- no-op\n") -> None:
    (sql_dir / "revert").mkdir(parents=True, exist_ok=True)
    (sql_dir / name).write_text(text)
    if revert is not None:
        (sql_dir / "revert" / name).write_text(revert)


def test_the_project_migrations_are_found_in_order():
    assert [(m.id, m.name) for m in discover(SQL_DIR)] == [
        ("027", "memberships"), ("028", "fix_memberships_unique_constraint"),
        ("029", "payment_events"), ("030", "billing_logs")]


def test_027_is_split_into_its_steps_and_validates_with_a_generous_timeout():
    migration = find(discover(SQL_DIR), "027")
    assert [s.name for s in migration.steps] == ["preflight", "table", "foreign_key", "validate"]
    assert migration.steps[0].statement_timeout == migration.steps[-1].statement_timeout == "1h"
    assert all(s.transactional for s in migration.steps)


def test_step_markers_split_a_file_and_carry_options():
    steps = parse_steps("SELECT 1;\n-- appdb:step build transaction=false\nCREATE INDEX CONCURRENTLY i ON t (c);\n", "x.sql")
    assert [(s.name, s.transactional, s.first_line) for s in steps] == [("main", True, 1), ("build", False, 3)]


def test_a_comment_only_file_is_one_empty_step():
    steps = parse_steps("-- nothing to do\n", "x.sql")
    assert len(steps) == 1 and steps[0].is_empty


@pytest.mark.parametrize("marker, message", [
    ("-- appdb:step", "needs a name"),
    ("-- appdb:step s frobnicate=1", "unknown step option"),
    ("-- appdb:step s transaction=maybe", "transaction must be true or false"),
    ("-- appdb:step s statement_timeout=soon", "not a duration"),
])
def test_a_malformed_step_marker_is_a_config_error(marker, message):
    with pytest.raises(ConfigError, match=message):
        parse_steps(f"{marker}\nSELECT 1;\n", "x.sql")


def test_a_step_name_used_twice_is_a_config_error():
    with pytest.raises(ConfigError, match="used twice"):
        parse_steps("-- appdb:step a\nSELECT 1;\n-- appdb:step a\nSELECT 2;\n", "x.sql")


def test_the_checksum_normalises_line_endings():
    assert checksum("a\r\nb\n") == checksum("a\nb\n") != checksum("a\nc\n")


def test_two_migrations_with_the_same_id_are_refused(tmp_path):
    write(tmp_path, "029_a.sql")
    write(tmp_path, "029_b.sql")
    with pytest.raises(ConfigError, match="two migrations share version 029"):
        discover(tmp_path)


def test_a_migration_without_a_revert_is_refused(tmp_path):
    write(tmp_path, "029_a.sql", revert=None)
    with pytest.raises(ConfigError, match="has no revert"):
        discover(tmp_path)


def test_a_badly_named_file_is_refused(tmp_path):
    write(tmp_path, "add-things.sql")
    with pytest.raises(ConfigError, match="NNN_snake_description.sql"):
        discover(tmp_path)


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no migrations directory"):
        discover(tmp_path / "nope")


def test_squawk_finds_nothing_in_sql():
    squawk = Path(sys.executable).parent / "squawk"
    files = sorted(str(p.relative_to(ROOT)) for p in SQL_DIR.rglob("*.sql"))
    result = subprocess.run([str(squawk), *files], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_squawk_would_catch_an_unsafe_foreign_key(tmp_path):
    """The lint is live: a validated ADD FOREIGN KEY on an existing table is flagged."""
    squawk = Path(sys.executable).parent / "squawk"
    unsafe = tmp_path / "029_unsafe.sql"
    unsafe.write_text("ALTER TABLE app.memberships ADD CONSTRAINT f FOREIGN KEY (user_id) REFERENCES auth.users (id);\n")
    result = subprocess.run([str(squawk), str(unsafe)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "constraint-missing-not-valid" in result.stdout
