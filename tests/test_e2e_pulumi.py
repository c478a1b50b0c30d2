"""End to end through the Automation API: the real Pulumi engine and providers on a throwaway database.

Each test deploys a copy of the project (as another clone would be) from a temp
folder, with a ``file://`` backend in another temp folder and the passphrase from
the environment, against a fresh database on the session's Supabase-shaped cluster
(the ``db`` fixture) over TCP.

The Pulumi CLI and its provider plugins cannot be installed on every machine, so
these tests, and only these, skip when ``pulumi`` is not on PATH or the
``postgresql``/``command`` plugins of the pinned versions are missing, and say so.
Install them with::

    curl -fsSL https://get.pulumi.com | sh
    pulumi plugin install resource postgresql v3.18.2
    pulumi plugin install resource command v1.2.1
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[1]
LOCAL_PASSPHRASE = "appdb-local"
# The baseline (tests/states/pulumi_baseline.sql) creates these roles cluster-wide with this
# password; the stacks adopt them, so other tests' databases keep working after a destroy.
BASELINE_ROLES = ("app_writer", "app_reader", "app_backend")
BASELINE_BACKEND_PASSWORD = "backend-test-password"
FILE_028 = "028_fix_memberships_unique_constraint.sql"
FILE_027 = "027_memberships.sql"


def _plugin_version(package: str) -> str:
    manifest = json.loads(resources.files(package).joinpath("pulumi-plugin.json").read_text())
    return manifest["version"].lstrip("v")


def engine_missing() -> str | None:
    """Why the engine tests cannot run here, or None."""
    cli = shutil.which("pulumi")
    if cli is None:
        return "the Pulumi CLI is not on PATH (https://www.pulumi.com/docs/install/); the engine tests need it"
    listed = subprocess.run([cli, "plugin", "ls", "--json"], capture_output=True, text=True, timeout=120, check=False)
    if listed.returncode != 0:
        return f"`pulumi plugin ls` failed: {listed.stderr.strip()[:200]}"
    installed = {(p.get("name"), p.get("kind"), str(p.get("version", "")).lstrip("v")) for p in json.loads(listed.stdout or "[]")}
    wanted = {"postgresql": _plugin_version("pulumi_postgresql"), "command": _plugin_version("pulumi_command")}
    missing = [f"{name} v{version}" for name, version in wanted.items() if (name, "resource", version) not in installed]
    if missing:
        return (
            f"the Pulumi resource plugins {', '.join(missing)} are not installed "
            f"(pulumi plugin install resource NAME VERSION)"
        )
    return None


@pytest.fixture(scope="module")
def automation():
    reason = engine_missing()
    if reason:
        pytest.skip(reason)
    from pulumi import automation

    return automation


def copy_project(root: Path) -> Path:
    """The project as a fresh clone: program, engine, migrations; the virtualenv linked, not copied."""
    root.mkdir(parents=True)
    for name in ("__main__.py", "Pulumi.yaml", "Pulumi.local.yaml", "Pulumi.prod.yaml", "requirements.txt"):
        shutil.copy(PROJECT / name, root / name)
    for folder in ("components", "appdb", "bin", "sql"):
        shutil.copytree(PROJECT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".venv").symlink_to(PROJECT / ".venv")
    return root


def make_stack(automation, tmp_path: Path, db, stack_name: str, **config: str):
    work_dir = copy_project(tmp_path / "clone" / "appdb")
    state = tmp_path / "state"
    state.mkdir()
    env = {
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE": LOCAL_PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    stack = automation.create_or_select_stack(
        stack_name=stack_name,
        work_dir=str(work_dir),
        opts=automation.LocalWorkspaceOptions(env_vars=env),
    )
    tcp = db.tcp_params
    values = {
        "appdb:dbHost": automation.ConfigValue(tcp["host"]),
        "appdb:dbPort": automation.ConfigValue(str(tcp["port"])),
        "appdb:dbName": automation.ConfigValue(tcp["dbname"]),
        "appdb:dbUser": automation.ConfigValue(tcp["user"]),
        "appdb:dbPassword": automation.ConfigValue(tcp["password"], secret=True),
        "appdb:backendPassword": automation.ConfigValue(BASELINE_BACKEND_PASSWORD, secret=True),
        "appdb:sslMode": automation.ConfigValue("disable"),
    }
    for index, role in enumerate(BASELINE_ROLES):
        values[f"appdb:adoptRoles[{index}]"] = automation.ConfigValue(role)
    for key, value in config.items():
        values[f"appdb:{key}"] = automation.ConfigValue(value)
    stack.set_all_config(values, path=True)
    return stack, work_dir


def ledger(db) -> list[str]:
    return [row[0] for row in db.execute("SELECT id FROM appdb.migrations ORDER BY id")]


def changes(result: Any) -> dict[str, int]:
    summary = getattr(result, "change_summary", None)
    if summary is None:
        summary = result.summary.resource_changes or {}
    return {str(getattr(op, "value", op)): count for op, count in summary.items() if count}


def test_local_stack_lifecycle_preview_up_noop_edit_rollback_destroy(automation, db, tmp_path):
    stack, work_dir = make_stack(automation, tmp_path, db, "local")
    tcp_password = db.tcp_params["password"]

    # preview: the plan creates everything and runs nothing.
    preview = stack.preview(diff=True)
    assert changes(preview).get("create", 0) > 10, changes(preview)
    assert db.execute("SELECT to_regclass('appdb.migrations')")[0][0] is None or ledger(db) == []

    # up: migrations applied, verification passed and exported as plain data.
    up = stack.up(on_output=print)
    verification = up.outputs["verification"]
    assert verification.secret is False
    assert verification.value["ok"] is True
    assert {check["name"] for check in verification.value["checks"]} >= {"memberships_user_fk", "memberships_user_unique"}
    assert [m["id"] for m in up.outputs["migrations"].value] == ["027", "028"]
    assert ledger(db) == ["027", "028"]
    assert up.outputs["backend"].value["user"] == "app_backend"
    # No secret in plain text anywhere in the state.
    state_text = json.dumps(stack.export_stack().deployment)
    for secret in (tcp_password, BASELINE_BACKEND_PASSWORD):
        assert secret not in state_text

    # A second up changes nothing.
    again = stack.up()
    assert set(changes(again)) == {"same"}, changes(again)

    # Editing 028 after it was applied: an update (never a replacement), which the engine refuses.
    sql_028 = work_dir / "sql" / FILE_028
    original = sql_028.read_text()
    sql_028.write_text(original + "\n-- edited after it was applied\n")
    edit_preview = stack.preview(diff=True)
    assert "replace" not in changes(edit_preview) and "delete" not in changes(edit_preview), changes(edit_preview)
    assert changes(edit_preview).get("update", 0) >= 1
    with pytest.raises(automation.CommandError) as refused:
        stack.up()
    assert "028" in str(refused.value)
    assert ledger(db) == ["027", "028"], "editing a migration must never revert it"
    sql_028.write_text(original)
    restored = stack.up()
    assert not {"create", "delete", "replace"} & set(changes(restored)), changes(restored)

    # Removing 028 (deploying an earlier commit): its revert runs, and verification passes.
    sql_028.unlink()
    (work_dir / "sql" / "revert" / FILE_028).unlink()
    rollback = stack.up(on_output=print)
    assert changes(rollback).get("delete") == 1, changes(rollback)
    assert "replace" not in changes(rollback)
    assert ledger(db) == ["027"]
    assert rollback.outputs["verification"].value["ok"] is True
    assert [m["id"] for m in rollback.outputs["migrations"].value] == ["027"]

    # destroy on local: reverts 027, drops the schema; the adopted roles stay for the other tests.
    stack.destroy(on_output=print)
    assert db.execute("SELECT to_regclass('app.memberships')")[0][0] is None
    assert db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'app'")[0][0] == 0
    roles = {row[0] for row in db.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(BASELINE_ROLES),))}
    assert roles == set(BASELINE_ROLES)
    stack.workspace.remove_stack("local")


def test_prod_refuses_a_revert_that_loses_data_and_keeps_the_stack_consistent(automation, db, tmp_path):
    db.load_state("production")
    rows = db.execute("SELECT count(*) FROM app.memberships")[0][0]
    assert rows > 0
    stack, work_dir = make_stack(automation, tmp_path, db, "prod", protectSchema="true", allowDataLoss="false")

    up = stack.up(on_output=print)
    assert up.outputs["verification"].value["ok"] is True
    assert ledger(db) == ["027", "028"]
    assert db.execute("SELECT count(*) FROM app.memberships")[0][0] == rows  # adopted, not recreated

    # Roll back past 027: 028's revert is harmless and runs; 027's would drop the rows and is refused.
    for name in (FILE_028, FILE_027):
        (work_dir / "sql" / name).unlink()
        (work_dir / "sql" / "revert" / name).unlink()
    with pytest.raises(automation.CommandError) as refused:
        stack.up(on_output=print)
    assert "allow-data-loss" in str(refused.value) or "data loss" in str(refused.value)
    assert ledger(db) == ["027"]
    assert db.execute("SELECT count(*) FROM app.memberships")[0][0] == rows
    urns = [resource["urn"] for resource in stack.export_stack().deployment["resources"]]
    assert any(urn.endswith("::migration-027") for urn in urns), "027 must stay in the state after the refusal"
    assert not any(urn.endswith("::migration-028") for urn in urns)
    # The schema is protected: leave the throwaway database to the fixture, and the state to tmp.
