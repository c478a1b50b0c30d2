"""End to end through the Automation API and the CLI: the real Pulumi engine and providers.

Two kinds of database:

* a fresh database on the session's Supabase-shaped cluster (the ``db`` fixture),
  reached over TCP, whose cluster-wide roles the stack adopts (the template's program baseline,
  appdb/schema/fresh.py, made them), so other tests' databases keep working after a destroy;
* a brand-new Supabase-shaped cluster of its own, deployed with the local stack file as
  it is (only the port differs): exactly what a newcomer's first ``bin/deploy-local`` meets.

Only what is true on the engine is asserted. The engine runs in parallel whatever does
not depend on each other, and it prints ``[secret]`` for every occurrence of a secret's
text; the Automation API's ``export_stack()`` shows secrets in plain text, so the secret
scan reads what ``pulumi stack export`` and ``pulumi stack output --json`` print instead.
These tests skip, saying why, where the Pulumi CLI or its plugins are missing (CI).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from appdb.local.cluster import BACKEND, Cluster, temporary_home
from tests.helpers import free_port
from tests.pulumi_engine import (
    PASSPHRASE,
    assert_no_plaintext_secret,
    changes,
    copy_project,
    engine_missing,
    migration_files,
    migration_ids,
    pulumi,
    remove_migration,
    toolchain_env,
    urns,
)

pytestmark = pytest.mark.skipif(engine_missing() is not None, reason=engine_missing() or "")

# The program baseline (appdb/schema/fresh.py's program_baseline) creates these roles cluster-wide; the
# stacks on the shared cluster adopt them.
BASELINE_ROLES = ("app_writer", "app_reader", "app_backend")
FRESH_DATABASES = 5


def workspace_env(state: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    state.mkdir(parents=True, exist_ok=True)
    return {"PULUMI_BACKEND_URL": state.as_uri(), "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true", **toolchain_env(), **(extra or {})}


def open_stack(work_dir: Path, state: Path, stack_name: str, env: dict[str, str] | None = None):
    from pulumi import automation

    return automation.create_or_select_stack(
        stack_name=stack_name,
        work_dir=str(work_dir),
        opts=automation.LocalWorkspaceOptions(work_dir=str(work_dir), env_vars=workspace_env(state, env)),
    )


def shared_cluster_stack(tmp_path: Path, db, stack_name: str, **config: str):
    """A stack on the ``db`` fixture's database, adopting the cluster's baseline roles."""
    from pulumi import automation

    work_dir = copy_project(tmp_path / "clone" / "appdb")
    stack = open_stack(work_dir, tmp_path / "state", stack_name)
    tcp = db.tcp_params
    values = {
        "appdb:dbHost": automation.ConfigValue(tcp["host"]),
        "appdb:dbPort": automation.ConfigValue(str(tcp["port"])),
        "appdb:dbName": automation.ConfigValue(tcp["dbname"]),
        "appdb:dbUser": automation.ConfigValue(tcp["user"]),
        "appdb:dbPassword": automation.ConfigValue(tcp["password"], secret=True),
        "appdb:backendPassword": automation.ConfigValue(db.cluster.password(BACKEND), secret=True),
        "appdb:sslMode": automation.ConfigValue("disable"),
    }
    for index, role in enumerate(BASELINE_ROLES):
        values[f"appdb:adoptRoles[{index}]"] = automation.ConfigValue(role)
    for key, value in config.items():
        values[f"appdb:{key}"] = automation.ConfigValue(value)
    stack.set_all_config(values, path=True)
    return stack, work_dir


def local_stack_on_a_new_cluster(root: Path):
    """A new Supabase-shaped cluster and the local stack file as committed, but for the port.

    The passwords come from the cluster's own file through the environment, as bin/deploy-local passes them.
    """
    from pulumi import automation

    cluster = Cluster(home=temporary_home("appdb-e2e-"), port=free_port())
    cluster.up()
    work_dir = copy_project(root / "clone" / "appdb")
    stack = open_stack(work_dir, root / "state", "local",
                       {"PGPASSWORD": cluster.password(), "APPDB_BACKEND_PASSWORD": cluster.password(BACKEND)})
    stack.set_config("appdb:dbPort", automation.ConfigValue(str(cluster.port)))
    return cluster, stack, work_dir


def ledger(connectable) -> list[str]:
    with connectable.connect() as conn:
        if conn.execute("SELECT to_regclass('appdb.migrations')").fetchone()[0] is None:
            return []
        return [row[0] for row in conn.execute("SELECT id FROM appdb.migrations ORDER BY id")]


def test_local_stack_lifecycle_preview_up_noop_edit_rollback_destroy(db, tmp_path):
    stack, work_dir = shared_cluster_stack(tmp_path, db, "local")
    ids, files = migration_ids(), migration_files()

    # preview: the plan creates everything and runs nothing.
    preview = stack.preview(diff=True)
    assert changes(preview).get("create", 0) > 10, changes(preview)
    assert ledger(db) == []

    # up: migrations applied, verification passed and exported as plain data.
    up = stack.up(on_output=print)
    verification = up.outputs["verification"]
    assert verification.secret is False
    assert verification.value["ok"] is True, verification.value
    assert {check["name"] for check in verification.value["checks"]} >= {"memberships_user_fk", "memberships_user_unique"}
    assert [m["id"] for m in up.outputs["migrations"].value] == ids
    assert ledger(db) == ids
    assert up.outputs["backend"].value["user"] == "app_backend"
    assert_no_plaintext_secret(stack, [db.tcp_params["password"], db.cluster.password(BACKEND)])

    # A second up changes nothing.
    again = stack.up()
    assert set(changes(again)) == {"same"}, changes(again)

    # Renaming a file to another spelling of its version (027 -> 0027): at most an update,
    # never a create and delete, whose delete would be the revert. Then back again.
    for before, after in ((files[0], "0" + files[0]), ("0" + files[0], files[0])):
        for folder in (work_dir / "sql", work_dir / "sql" / "revert"):
            (folder / before).rename(folder / after)
        renamed = stack.up(on_output=print)
        assert not {"create", "delete", "replace"} & set(changes(renamed)), changes(renamed)
        assert ledger(db) == ids, "a rename must never revert"
        assert [m["id"] for m in renamed.outputs["migrations"].value] == ids

    # Editing an applied migration: an update (never a replacement), which the engine refuses.
    newest = work_dir / "sql" / files[-1]
    original = newest.read_text()
    newest.write_text(original + "\n-- edited after it was applied\n")
    edit_preview = stack.preview(diff=True)
    assert "replace" not in changes(edit_preview) and "delete" not in changes(edit_preview), changes(edit_preview)
    assert changes(edit_preview).get("update", 0) >= 1
    from pulumi import automation

    with pytest.raises(automation.CommandError) as refused:
        stack.up()
    assert ids[-1] in str(refused.value)
    assert ledger(db) == ids, "editing a migration must never revert it"
    newest.write_text(original)
    restored = stack.up()
    assert not {"create", "delete", "replace"} & set(changes(restored)), changes(restored)

    # Removing the newest migration (deploying an earlier commit): its revert runs, and verification passes.
    remove_migration(work_dir, files[-1])
    rollback = stack.up(on_output=print)
    assert changes(rollback).get("delete") == 1, changes(rollback)
    assert "replace" not in changes(rollback)
    assert ledger(db) == ids[:-1]
    assert rollback.outputs["verification"].value["ok"] is True
    assert [m["id"] for m in rollback.outputs["migrations"].value] == ids[:-1]

    # destroy on local: reverts the rest, drops the schema; the adopted roles stay for the other tests.
    stack.destroy(on_output=print)
    assert db.execute("SELECT to_regclass('app.memberships')")[0][0] is None
    assert db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'app'")[0][0] == 0
    roles = {row[0] for row in db.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(BASELINE_ROLES),))}
    assert roles == set(BASELINE_ROLES)
    stack.workspace.remove_stack("local")


def test_prod_refuses_a_revert_that_loses_data_and_keeps_the_stack_consistent(db, tmp_path):
    from pulumi import automation

    db.load_state("production")
    rows = db.execute("SELECT count(*) FROM app.memberships")[0][0]
    assert rows > 0
    stack, work_dir = shared_cluster_stack(tmp_path, db, "prod", protectSchema="true", allowDataLoss="false")
    ids = migration_ids()

    up = stack.up(on_output=print)
    assert up.outputs["verification"].value["ok"] is True, up.outputs["verification"].value
    assert ledger(db) == ids
    assert db.execute("SELECT count(*) FROM app.memberships")[0][0] == rows  # adopted, not recreated

    # Roll back past every migration: harmless reverts run newest first, the first that
    # would drop rows is refused, and the stack still records exactly what is applied.
    for name in migration_files():
        remove_migration(work_dir, name)
    with pytest.raises(automation.CommandError) as refused:
        stack.up(on_output=print)
    assert "allow-data-loss" in str(refused.value) or "data loss" in str(refused.value)
    applied = ledger(db)
    assert applied and applied == ids[: len(applied)], applied
    assert db.execute("SELECT count(*) FROM app.memberships")[0][0] == rows
    in_state = {urn.rsplit("::", 1)[1] for urn in urns(stack)}
    for migration_id in ids:
        assert (f"migration-{migration_id}" in in_state) == (migration_id in applied), (migration_id, in_state)
    # The schema is protected: leave the throwaway database to the fixture, and the state to tmp.


def test_the_first_up_of_the_local_stack_succeeds_on_every_new_database(tmp_path):
    """The promise of the README's first command, five times over: no retry, no --parallel 1."""
    ids = migration_ids()
    for attempt in range(FRESH_DATABASES):
        cluster, stack, _ = local_stack_on_a_new_cluster(tmp_path / f"new-{attempt}")
        try:
            started = time.monotonic()
            up = stack.up(on_output=print)
            print(f"first up on new database {attempt + 1}: {time.monotonic() - started:.1f} s")
            assert up.outputs["verification"].value["ok"] is True, up.outputs["verification"].value
            assert ledger(cluster) == ids
            assert_no_plaintext_secret(stack, [cluster.password(), cluster.password(BACKEND)])
            # No output holds a secret, so nothing printed is masked (`postgres` as a password
            # once turned backendUrl into "[secret]ql://...").
            printed = pulumi(stack, "stack", "output").stdout
            assert "[secret]" not in printed and "postgresql://app_backend@" in printed, printed
            # destroy, which runs the privilege deletes in reverse: it must not race either.
            stack.destroy(on_output=print)
            with cluster.connect() as conn:
                assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'app'").fetchone()[0] == 0
        finally:
            cluster.down()
            shutil.rmtree(cluster.home, ignore_errors=True)


def _privilege(db, role: str, table: str, privilege: str) -> bool:
    return db.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege))[0][0]


def test_a_hand_made_privilege_change_shows_in_a_refreshing_preview_and_up_refresh_repairs_it(db, tmp_path):
    stack, _ = shared_cluster_stack(tmp_path, db, "dev")
    stack.up(on_output=print)
    assert _privilege(db, "app_writer", "app.memberships", "SELECT")
    assert not _privilege(db, "anon", "app.memberships", "SELECT")

    # Someone in the SQL editor:
    db.execute("REVOKE SELECT ON app.memberships FROM app_writer")
    db.execute("GRANT SELECT ON app.memberships TO anon")

    plain = stack.preview(diff=True)
    refreshing = stack.preview(diff=True, refresh=True)
    assert changes(refreshing).get("update", 0) >= 2, changes(refreshing)
    assert changes(refreshing).get("update", 0) > changes(plain).get("update", 0)
    assert "replace" not in changes(refreshing) and "delete" not in changes(refreshing)

    repaired = stack.up(refresh=True, on_output=print)
    assert _privilege(db, "app_writer", "app.memberships", "SELECT")
    assert not _privilege(db, "anon", "app.memberships", "SELECT")
    assert repaired.outputs["verification"].value["ok"] is True
    assert set(changes(stack.preview(refresh=True))) <= {"same"}


SLOW_MIGRATION = """-- A migration that takes a while, so the test can kill `pulumi up` while it runs.
-- appdb:step slow statement_timeout=5min
CREATE TABLE IF NOT EXISTS public.e2e_runs (n bigint GENERATED ALWAYS AS IDENTITY, at timestamptz DEFAULT now());
INSERT INTO public.e2e_runs DEFAULT VALUES;
SELECT pg_sleep(8);
"""


def _wait_for_the_slow_step(cluster: Cluster, deadline_s: float = 240) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with cluster.connect() as conn:
            running = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'appdb' AND query LIKE '%pg_sleep(8)%'"
            ).fetchone()[0]
        if running:
            return
        time.sleep(0.2)
    raise AssertionError("the slow migration never started")


def test_pulumi_killed_during_a_migration_then_up_converges_and_applies_each_migration_once(tmp_path):
    cluster, stack, work_dir = local_stack_on_a_new_cluster(tmp_path / "killed")
    process: subprocess.Popen | None = None
    try:
        (work_dir / "sql" / "900_e2e_slow.sql").write_text(SLOW_MIGRATION)
        (work_dir / "sql" / "revert" / "900_e2e_slow.sql").write_text("DROP TABLE IF EXISTS public.e2e_runs;\n")
        env = {**stack.workspace.env_vars}
        # A session of its own: its plugins, which outlive the killed CLI, are ended with it below.
        process = subprocess.Popen(
            ["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack", "local"],
            cwd=work_dir, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        try:
            _wait_for_the_slow_step(cluster)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=60)
        assert "900" not in ledger(cluster)

        # The next `up`, as a person would run it after a killed deploy (docs/rollback.md).
        locked = pulumi(stack, "up", "--yes", "--skip-preview", check=False)
        if locked.returncode != 0 and "locked" in (locked.stderr + locked.stdout):
            pulumi(stack, "cancel", "--yes")
            locked = pulumi(stack, "up", "--yes", "--skip-preview", check=False)
        assert locked.returncode == 0, locked.stdout[-3000:] + locked.stderr[-2000:]
        up = stack.up(on_output=print)
        assert set(changes(up)) <= {"same"}, changes(up)
        assert up.outputs["verification"].value["ok"] is True
        assert ledger(cluster) == [*migration_ids(), "900"]
        with cluster.connect() as conn:
            assert conn.execute("SELECT count(*) FROM public.e2e_runs").fetchone()[0] == 1, "applied twice"
        stack.destroy(on_output=print)
    finally:
        if process is not None:
            _end_session(process.pid)  # the language host and providers the kill left running
        cluster.down()
        shutil.rmtree(cluster.home, ignore_errors=True)  # its own folder in /tmp, passwords included


def _end_session(session: int) -> None:
    """SIGKILL every process of ``session``: Pulumi starts each plugin in a process group of its own,
    but in its own session still."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The fields after the command's name, which is in parentheses: state, ppid, pgrp, session.
            if int(stat.read_text().rpartition(")")[2].split()[3]) == session:
                os.kill(int(stat.parent.name), signal.SIGKILL)


def test_config_changes_update_migration_commands_and_never_replace_or_revert(db, tmp_path):
    """allowDataLoss, connectTimeout, dbHost, sslMode, protectSchema: each an update at most."""
    from pulumi import automation

    stack, _ = shared_cluster_stack(tmp_path, db, "local")
    stack.up()
    for key, value in (("allowDataLoss", "false"), ("connectTimeout", "7"), ("dbHost", "localhost"),
                       ("sslMode", "prefer"), ("protectSchema", "true")):
        stack.set_config(f"appdb:{key}", automation.ConfigValue(value))
        preview = stack.preview(diff=True)
        assert not {"create", "delete", "replace"} & set(changes(preview)), (key, changes(preview))
    stack.up()
    assert ledger(db) == migration_ids()


def test_a_migration_applied_by_a_failed_up_is_reverted_when_its_file_is_removed(db, tmp_path):
    from pulumi import automation

    stack, work_dir = shared_cluster_stack(tmp_path, db, "local")
    stack.up()
    sql_dir = work_dir / "sql"
    good = int(migration_ids()[-1]) + 1  # after the project's newest
    files = {f"{good:03d}_good.sql": ("CREATE TABLE app.good (id int);\n", "DROP TABLE IF EXISTS app.good;\n"),
             f"{good + 1:03d}_bad.sql": ("CREATE TABLE app.bad (id int REFERENCES app.nope);\n",
                                         "DROP TABLE IF EXISTS app.bad;\n")}
    for name, (forward, revert) in files.items():
        (sql_dir / name).write_text(forward)
        (sql_dir / "revert" / name).write_text(revert)
    with pytest.raises(automation.CommandError):
        stack.up()
    assert ledger(db) == [*migration_ids(), f"{good:03d}"]
    for name in files:  # the commit is rolled back
        (sql_dir / name).unlink()
        (sql_dir / "revert" / name).unlink()
    stack.up()
    assert ledger(db) == migration_ids()
    assert db.execute("SELECT to_regclass('app.good')") == [(None,)]
