"""What the end-to-end tests share: finding the real Pulumi engine, a copy of the project, the CLI.

The Pulumi CLI, its python language host and the provider plugins come from outside
the package registries, so CI never has them: every engine test skips, saying why,
when ``pulumi`` is not on PATH or the pinned plugin versions are not installed.

Each test deploys a copy of the project (as another clone would be) from a temp
folder, with a ``file://`` backend in another temp folder, so the program is proven
to need no absolute path and no state of this checkout.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from appdb.migrate.files import discover

ROOT = Path(__file__).resolve().parent.parent
# pyproject.toml and uv.lock: Pulumi's uv toolchain (Pulumi.yaml) needs the one and syncs to the other.
PROJECT_FILES = ("Pulumi.yaml", "Pulumi.local.yaml", "Pulumi.prod.yaml", "__main__.py", "requirements.txt",
                 "pyproject.toml", "uv.lock")
# Where bin/setup puts the pinned uv, which the python language host runs from PATH.
TOOLCHAIN_BIN = ROOT / ".venv" / "bin"
PROJECT_DIRS = ("appdb", "bin", "components", "sql")
# The local stack's documented passphrase (Pulumi.local.yaml): it guards nothing real.
PASSPHRASE = "appdb-local"
PLUGINS = {"postgresql": "pulumi_postgresql", "command": "pulumi_command"}
PULUMI_TIMEOUT_S = 600


def plugin_version(package: str) -> str:
    """The plugin version the SDK package asks for (its pulumi-plugin.json)."""
    manifest = json.loads(resources.files(package).joinpath("pulumi-plugin.json").read_text())
    return str(manifest["version"]).lstrip("v")


def toolchain_env() -> dict[str, str]:
    """PATH with the project's .venv/bin first, as bin/deploy-local sets it: Pulumi runs uv from there."""
    return {"PATH": f"{TOOLCHAIN_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@functools.cache
def engine_missing() -> str | None:
    """Why the engine tests cannot run here, or None when they can."""
    if not (TOOLCHAIN_BIN / "uv").exists():
        return f"uv is not in {TOOLCHAIN_BIN} (Pulumi.yaml's toolchain): run bin/setup"
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return ("the Pulumi CLI is not on PATH (install it: https://www.pulumi.com/docs/install/); "
                "the mock tests (tests/test_pulumi_program.py) and tests/test_rollback.py cover the program")
    listed = subprocess.run([pulumi, "plugin", "ls", "--json"], capture_output=True, text=True,
                            timeout=120, check=False)
    try:
        installed = {(p.get("name"), str(p.get("version", "")).lstrip("v"))
                     for p in json.loads(listed.stdout or "[]") if p.get("kind") == "resource"}
    except ValueError:
        return f"`pulumi plugin ls --json` did not answer in JSON: {listed.stderr.strip()[:200]}"
    missing = [f"{name} v{plugin_version(package)}" for name, package in PLUGINS.items()
               if (name, plugin_version(package)) not in installed]
    if missing:
        return (f"Pulumi provider plugin(s) not installed: {', '.join(missing)} "
                "(pulumi plugin install resource NAME VERSION)")
    return None


def migration_files() -> list[str]:
    """The forward files in sql/, oldest first: what a rollback removes, newest first."""
    return [migration.filename for migration in discover(ROOT / "sql")]


def migration_ids() -> list[str]:
    return [migration.id for migration in discover(ROOT / "sql")]


def copy_project(target: Path) -> Path:
    """The Pulumi project copied elsewhere, its .venv linked: the program must not care where it is."""
    target.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, target / name)
    for name in PROJECT_DIRS:
        # With the bytecode bin/setup wrote (valid here: copy2 keeps each source's mtime).
        shutil.copytree(ROOT / name, target / name)
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


def remove_migration(project: Path, filename: str) -> None:
    (project / "sql" / filename).unlink()
    (project / "sql" / "revert" / filename).unlink()


def restore_migration(project: Path, filename: str) -> None:
    shutil.copy2(ROOT / "sql" / filename, project / "sql" / filename)
    shutil.copy2(ROOT / "sql" / "revert" / filename, project / "sql" / "revert" / filename)


def pulumi(stack, *args: str, check: bool = True, timeout: float = PULUMI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """The CLI itself, in the stack's project with its workspace's environment.

    For what the Automation API does differently from a person at a shell: its
    ``export_stack()`` shows secrets in plain text, which ``pulumi stack export`` does not.
    """
    workspace = stack.workspace
    env = {**os.environ, **(workspace.env_vars or {})}
    result = subprocess.run(["pulumi", *args, "--stack", stack.name, "--non-interactive"],
                            cwd=workspace.work_dir, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"pulumi {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def assert_no_plaintext_secret(stack, secrets: list[str]) -> None:
    """No secret's text in what a person sees: the state as exported, and the outputs."""
    assert all(len(secret) >= 12 for secret in secrets), "scan for real secrets, not common words"
    exported = pulumi(stack, "stack", "export").stdout
    outputs = pulumi(stack, "stack", "output", "--json").stdout
    assert json.loads(exported)["deployment"]["resources"], "the export holds the state"
    for secret in secrets:
        assert secret not in exported, "a secret is in plain text in `pulumi stack export`"
        assert secret not in outputs, "a secret is in plain text in `pulumi stack output --json`"


def ops(counts) -> dict[str, int]:
    """An OpMap with plain string keys ("create", "delete", ...)."""
    return {str(getattr(op, "value", op)): count for op, count in (counts or {}).items() if count}


def changes(result) -> dict[str, int]:
    summary = getattr(result, "change_summary", None)
    if summary is None:
        summary = result.summary.resource_changes
    return ops(summary)


def urns(stack) -> list[str]:
    return [r["urn"] for r in stack.export_stack().deployment.get("resources", [])]
