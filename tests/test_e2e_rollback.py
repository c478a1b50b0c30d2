"""The rollback runbook (docs/rollback.md) end to end, through the Automation API.

The twin of tests/test_rollback.py with the real Pulumi engine: ``pulumi up`` of the
``local`` stack on a throwaway Supabase-shaped PostgreSQL of its own, with a ``file://``
backend in a temporary folder and the local stack's documented passphrase.

* Code rollback: removing the newest migration's files makes ``up`` delete its command,
  which runs the revert from the ledger; restoring them makes ``up`` apply it again.
* On a stack whose reverts may not lose data (prod's ``allowDataLoss: false``), removing
  every migration with rows in app.memberships fails ``up`` with the engine's refusal of
  027's revert, and the stack stays consistent: 027's command is still in the state and
  its row still in the ledger, so restoring the code converges without touching the database.
* State rollback: a checkpoint from the backend's history, turned into a deployment
  and imported with ``pulumi stack import``, leaves a stack whose preview is a no-op.

The Pulumi CLI and its provider plugins cannot be installed on every machine (they are
downloads outside the package registries): without them this module skips, saying why.
The program runs from a copy of the project, which also proves it needs no absolute path.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from appdb.local.cluster import BACKEND, Cluster, temporary_home
from tests.helpers import free_port
from tests.pulumi_engine import (
    PASSPHRASE,
    changes,
    copy_project,
    engine_missing,
    migration_files,
    migration_ids,
    ops,
    remove_migration,
    restore_migration,
    toolchain_env,
    urns,
)

pytestmark = pytest.mark.skipif(engine_missing() is not None, reason=engine_missing() or "")


@pytest.fixture
def database():
    """A Supabase-shaped cluster of its own: the program creates the schema and the roles."""
    cluster = Cluster(home=temporary_home("appdb-e2e-"), port=free_port())
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()
        shutil.rmtree(cluster.home, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "checkout")


@pytest.fixture
def backend(tmp_path: Path) -> Path:
    """The self-managed (file://) state backend's folder."""
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture
def runtime() -> Iterator[Path]:
    """XDG_RUNTIME_DIR for the deploys: where the reverts' fork server puts its socket (short: a socket's path is)."""
    folder = Path(tempfile.mkdtemp(prefix="e2e-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def stack(project: Path, database: Cluster, backend: Path, runtime: Path):
    from pulumi import automation as auto

    # The local stack file holds no password: the cluster's own, as bin/deploy-local exports them.
    env = {"PULUMI_BACKEND_URL": backend.as_uri(), "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
           "PULUMI_SKIP_UPDATE_CHECK": "true", "PGPASSWORD": database.password(),
           "APPDB_BACKEND_PASSWORD": database.password(BACKEND), "XDG_RUNTIME_DIR": str(runtime),
           **toolchain_env()}
    workspace_opts = auto.LocalWorkspaceOptions(work_dir=str(project), env_vars=env)
    stack = auto.create_or_select_stack(stack_name="local", work_dir=str(project), opts=workspace_opts)
    stack.set_all_config({
        "appdb:dbHost": auto.ConfigValue("127.0.0.1"),
        "appdb:dbPort": auto.ConfigValue(str(database.port)),
        "appdb:sslMode": auto.ConfigValue("disable"),
        "appdb:protectSchema": auto.ConfigValue("false"),
        "appdb:allowDataLoss": auto.ConfigValue("true"),
    })
    try:
        yield stack
    finally:
        # The database goes with its throwaway cluster; only the state needs removing.
        stack.workspace.remove_stack("local", force=True)


def ledger(cluster: Cluster) -> list[str]:
    with cluster.connect() as conn:
        if conn.execute("SELECT to_regclass('appdb.migrations')").fetchone()[0] is None:
            return []
        return [row[0] for row in conn.execute("SELECT id FROM appdb.migrations ORDER BY id")]


def test_code_rollback_runs_the_revert_from_the_ledger_and_rolls_forward(stack, project, database):
    ids, newest = migration_ids(), migration_files()[-1]
    first = stack.up(on_output=print)
    assert first.outputs["verification"].value["ok"] is True
    assert ledger(database) == ids

    remove_migration(project, newest)
    rolled_back = stack.up(on_output=print)
    assert changes(rolled_back).get("delete") == 1, changes(rolled_back)
    assert ledger(database) == ids[:-1]
    assert rolled_back.outputs["verification"].value["ok"] is True
    assert not any(urn.endswith(f"::migration-{ids[-1]}") for urn in urns(stack))

    restore_migration(project, newest)
    forward = stack.up(on_output=print)
    assert changes(forward).get("create") == 1, changes(forward)
    assert ledger(database) == ids
    assert forward.outputs["verification"].value["ok"] is True


def test_a_revert_that_would_lose_rows_fails_up_and_leaves_the_stack_consistent(stack, project, database, runtime):
    from pulumi import automation as auto

    ids, files = migration_ids(), migration_files()
    assert files[0].startswith("027_"), "027 makes app.memberships, the table with rows here"
    stack.set_config("appdb:allowDataLoss", auto.ConfigValue("false"))
    stack.up(on_output=print)
    with database.connect() as conn:
        conn.execute("INSERT INTO auth.users (id, aud, role, email) VALUES "
                     "('00000000-0000-4000-9000-000000000001', 'authenticated', 'authenticated', 'a@example.com')")
        conn.execute("INSERT INTO app.memberships (user_id, status, plan_interval) "
                     "VALUES ('00000000-0000-4000-9000-000000000001', 'active', 'month')")

    for name in files:
        remove_migration(project, name)
    with pytest.raises(auto.CommandError) as failed:
        stack.up(on_output=print)
    assert "refused" in str(failed.value) and "--allow-data-loss" in str(failed.value)
    # The deletes shared a fork server (appdb/forkserver/): the first started it, and the
    # refusal of the last, served, reached Pulumi's output and failed the deploy all the same.
    assert list((runtime / "appdb").glob("*.sock")), "the reverts started no fork server"
    # The later reverts drop empty tables or nothing and ran, newest first; 027's was refused
    # and is still on record, in the ledger and in the state alike.
    assert ledger(database) == ids[:1]
    assert any(urn.endswith(f"::migration-{ids[0]}") for urn in urns(stack))
    assert not any(urn.endswith(f"::migration-{later}") for later in ids[1:] for urn in urns(stack))
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM app.memberships").fetchone()[0] == 1

    # Runbook: restore the code; `up` converges and the rows are untouched.
    for name in files:
        restore_migration(project, name)
    recovered = stack.up(on_output=print)
    assert recovered.outputs["verification"].value["ok"] is True
    assert ledger(database) == ids
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM app.memberships").fetchone()[0] == 1


def test_state_rollback_imports_a_checkpoint_from_the_backends_history(stack, backend):
    from pulumi import automation as auto

    stack.up(on_output=print)
    good = stack.export_stack()
    history = sorted((backend / ".pulumi" / "history").rglob("*.checkpoint.json"))
    assert history, "the file:// backend keeps a checkpoint per update"

    # A checkpoint file is {"version", "checkpoint": {"stack", "config", "latest"}}; `pulumi
    # stack import` takes {"version", "deployment"} (docs/rollback.md shows the jq line).
    checkpoint = json.loads(history[-1].read_text())
    restored = auto.Deployment(version=checkpoint["version"], deployment=checkpoint["checkpoint"]["latest"])
    stack.import_stack(restored)
    assert sorted(urns(stack)) == sorted(r["urn"] for r in good.deployment["resources"])
    preview = stack.preview(on_output=print)
    assert set(ops(preview.change_summary)) <= {"same"}, preview.change_summary


def test_a_stack_deployed_with_one_engine_process_per_migration_is_updated_in_place_and_nothing_reverts(
        stack, database):
    """Stacks deployed before migrations-apply, whose migration commands ran ``apply --only ID``.

    Their state is made here from a deployment of this program: the old create and update on
    every migration command, and no migrations-apply. The next ``up`` updates each command in
    place (a replacement's delete would be the revert) and creates migrations-apply, which
    finds nothing pending; the ``up`` after that changes nothing.
    """
    ids = migration_ids()
    stack.up(on_output=print)
    deployment = stack.export_stack()
    resources = deployment.deployment["resources"]
    apply_urn = next(r["urn"] for r in resources if r["urn"].endswith("::migrations-apply"))
    older = []
    for resource in resources:
        if resource["urn"] == apply_urn:
            continue
        resource["dependencies"] = [urn for urn in resource.get("dependencies") or [] if urn != apply_urn]
        for key, urns_of_key in (resource.get("propertyDependencies") or {}).items():
            resource["propertyDependencies"][key] = [urn for urn in urns_of_key if urn != apply_urn]
        name = resource["urn"].rsplit("::", 1)[1]
        if name.startswith("migration-"):
            command = f"./bin/appdb apply --only {name.removeprefix('migration-')}"
            for part in ("inputs", "outputs"):
                resource[part]["create"] = resource[part]["update"] = command
        older.append(resource)
    deployment.deployment["resources"] = older
    stack.import_stack(deployment)
    applied_at = _applied_at(database)

    preview = stack.preview(diff=True)
    assert ops(preview.change_summary) == {"create": 1, "update": len(ids), "same": ops(
        preview.change_summary)["same"]}, preview.change_summary
    upgraded = stack.up(on_output=print)
    assert not {"delete", "replace"} & set(changes(upgraded)), changes(upgraded)
    assert upgraded.outputs["verification"].value["ok"] is True
    assert _applied_at(database) == applied_at, "no migration was reverted or applied again"
    assert set(changes(stack.up())) == {"same"}


def _applied_at(cluster: Cluster) -> list[tuple]:
    with cluster.connect() as conn:
        return conn.execute("SELECT id, applied_at FROM appdb.migrations ORDER BY id").fetchall()
