"""The rollback runbook (docs/rollback.md) end to end, through the Automation API.

The twin of tests/test_rollback.py with the real Pulumi engine: ``pulumi up`` of the
``local`` stack on a throwaway Supabase-shaped PostgreSQL of its own, with a ``file://``
backend in a temporary folder and the local stack's documented passphrase.

* Code rollback: removing 028's files makes ``up`` delete its command, which runs the
  revert from the ledger; restoring them makes ``up`` apply it again.
* On a stack whose reverts may not lose data (prod's ``allowDataLoss: false``), removing
  027 with rows in the table fails ``up`` with the engine's refusal, and the stack stays
  consistent: 027's command is still in the state and its row still in the ledger, so
  restoring the code converges without touching the database.
* State rollback: a checkpoint from the backend's history, turned into a deployment
  and imported with ``pulumi stack import``, leaves a stack whose preview is a no-op.

The Pulumi CLI and its provider plugins cannot be installed on every machine (they are
downloads outside the package registries): without them this module skips, saying why.
The program runs from a copy of the project, which also proves it needs no absolute path.
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from appdb.local import Cluster

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("Pulumi.yaml", "Pulumi.local.yaml", "__main__.py", "requirements.txt")
PROJECT_DIRS = ("appdb", "bin", "components", "sql")
# The local stack's documented passphrase (Pulumi.local.yaml): it guards nothing real.
PASSPHRASE = "appdb-local"
PLUGINS = {"postgresql": "pulumi_postgresql", "command": "pulumi_command"}


def _plugin_version(package: str) -> str:
    """The plugin version the SDK package asks for (its pulumi-plugin.json)."""
    manifest = json.loads(resources.files(package).joinpath("pulumi-plugin.json").read_text())
    return str(manifest["version"]).lstrip("v")
FILE_027 = "027_memberships.sql"
FILE_028 = "028_fix_memberships_unique_constraint.sql"


@functools.cache
def _missing_pulumi() -> str | None:
    """Why the engine tests cannot run here, or None when they can."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return ("the Pulumi CLI is not on PATH (install it: https://www.pulumi.com/docs/install/); "
                "tests/test_rollback.py covers the same rollback through the commands' own path")
    listed = subprocess.run([pulumi, "plugin", "ls", "--json"], capture_output=True, text=True,
                            timeout=120, check=False)
    try:
        installed = {(p.get("name"), str(p.get("version", "")).lstrip("v"))
                     for p in json.loads(listed.stdout or "[]") if p.get("kind") == "resource"}
    except ValueError:
        return f"`pulumi plugin ls --json` did not answer in JSON: {listed.stderr.strip()[:200]}"
    missing = [f"{name} v{_plugin_version(package)}" for name, package in PLUGINS.items()
               if (name, _plugin_version(package)) not in installed]
    if missing:
        return (f"Pulumi provider plugin(s) not installed: {', '.join(missing)} "
                "(pulumi plugin install resource NAME VERSION)")
    return None


pytestmark = pytest.mark.skipif(_missing_pulumi() is not None, reason=_missing_pulumi() or "")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def database(tmp_path: Path):
    """A Supabase-shaped cluster of its own: the program creates the schema and the roles."""
    cluster = Cluster(home=tmp_path / "pg", port=free_port())
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Pulumi project copied elsewhere, its .venv linked: the program must not care where it is."""
    target = tmp_path / "checkout"
    target.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, target / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


@pytest.fixture
def backend(tmp_path: Path) -> Path:
    """The self-managed (file://) state backend's folder."""
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture
def stack(project: Path, database: Cluster, backend: Path):
    from pulumi import automation as auto

    env = {"PULUMI_BACKEND_URL": backend.as_uri(), "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
           "PULUMI_SKIP_UPDATE_CHECK": "true"}
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


def remove(project: Path, filename: str) -> None:
    (project / "sql" / filename).unlink()
    (project / "sql" / "revert" / filename).unlink()


def restore(project: Path, filename: str) -> None:
    shutil.copy2(ROOT / "sql" / filename, project / "sql" / filename)
    shutil.copy2(ROOT / "sql" / "revert" / filename, project / "sql" / "revert" / filename)


def ops(counts) -> dict[str, int]:
    """An OpMap with plain string keys ("create", "delete", ...)."""
    return {getattr(op, "value", op): count for op, count in (counts or {}).items()}


def changes(result) -> dict[str, int]:
    return ops(result.summary.resource_changes)


def urns(stack) -> list[str]:
    return [r["urn"] for r in stack.export_stack().deployment.get("resources", [])]


def test_code_rollback_runs_the_revert_from_the_ledger_and_rolls_forward(stack, project, database):
    first = stack.up(on_output=print)
    assert first.outputs["verification"].value["ok"] is True
    assert ledger(database) == ["027", "028"]

    remove(project, FILE_028)
    rolled_back = stack.up(on_output=print)
    assert changes(rolled_back).get("delete") == 1, changes(rolled_back)
    assert ledger(database) == ["027"]
    assert rolled_back.outputs["verification"].value["ok"] is True
    assert not any(urn.endswith("::migration-028") for urn in urns(stack))

    restore(project, FILE_028)
    forward = stack.up(on_output=print)
    assert changes(forward).get("create") == 1, changes(forward)
    assert ledger(database) == ["027", "028"]
    assert forward.outputs["verification"].value["ok"] is True


def test_a_revert_that_would_lose_rows_fails_up_and_leaves_the_stack_consistent(stack, project, database):
    from pulumi import automation as auto

    stack.set_config("appdb:allowDataLoss", auto.ConfigValue("false"))
    stack.up(on_output=print)
    with database.connect() as conn:
        conn.execute("INSERT INTO auth.users (id, aud, role, email) VALUES "
                     "('00000000-0000-4000-9000-000000000001', 'authenticated', 'authenticated', 'a@example.com')")
        conn.execute("INSERT INTO app.memberships (user_id, status, plan_interval) "
                     "VALUES ('00000000-0000-4000-9000-000000000001', 'active', 'month')")

    remove(project, FILE_028)
    remove(project, FILE_027)
    with pytest.raises(auto.CommandError) as failed:
        stack.up(on_output=print)
    assert "refused" in str(failed.value) and "--allow-data-loss" in str(failed.value)
    # 028's harmless revert ran (newest first); 027's was refused and is still on record.
    assert ledger(database) == ["027"]
    assert any(urn.endswith("::migration-027") for urn in urns(stack))
    assert not any(urn.endswith("::migration-028") for urn in urns(stack))
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM app.memberships").fetchone()[0] == 1

    # Runbook: restore the code; `up` converges and the rows are untouched.
    restore(project, FILE_027)
    restore(project, FILE_028)
    recovered = stack.up(on_output=print)
    assert recovered.outputs["verification"].value["ok"] is True
    assert ledger(database) == ["027", "028"]
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
