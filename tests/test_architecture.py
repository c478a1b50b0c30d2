"""The engine's layers, as the folders show them: imports go downward only, and no Pulumi.

``appdb/__init__.py`` is the code map. A package may import only itself and the ones
below it, read here from every module's import statements (top level and inside
functions alike), so a shortcut taken in a hurry fails the suite instead of blurring
the architecture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "appdb"
BOTTOM = {"errors", "connection", "access", "redact", "libpq"}
# What each part of the engine may import (besides the standard library and psycopg).
ALLOWED: dict[str, set[str]] = {
    "bottom": BOTTOM,
    "migrate": BOTTOM | {"migrate"},
    "checks": BOTTOM | {"migrate", "checks"},
    "local": BOTTOM | {"local"},
    "schema": BOTTOM | {"migrate", "local", "schema"},
    "adopt": BOTTOM | {"migrate", "checks", "local", "schema", "adopt"},
}


def layer(module: Path) -> str:
    """The part of the engine a file belongs to: its subpackage, or 'bottom', 'cli', '__main__'."""
    parts = module.relative_to(ENGINE).with_suffix("").parts
    if len(parts) > 1:
        return parts[0]
    name = parts[0]
    if name in BOTTOM or name == "__init__":
        return "bottom"
    return name


def imported(module: Path) -> set[str]:
    """Every module this file imports, dotted, wherever the import statement stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def engine_parts(names: set[str]) -> set[str]:
    """The engine parts among imported names: 'migrate' for appdb.migrate.files, 'errors' for appdb.errors."""
    parts = set()
    for name in names:
        pieces = name.split(".")
        if pieces[0] == "appdb" and len(pieces) > 1 and pieces[1] != "__version__":
            parts.add(pieces[1])
    return parts


MODULES = sorted(ENGINE.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(ENGINE)))
def test_the_engine_never_imports_pulumi(module):
    assert not any(name.split(".")[0].startswith("pulumi") for name in imported(module)), module


@pytest.mark.parametrize("module", [m for m in MODULES if layer(m) in ALLOWED], ids=lambda p: str(p.relative_to(ENGINE)))
def test_imports_go_downward_only(module):
    upward = engine_parts(imported(module)) - ALLOWED[layer(module)]
    assert not upward, f"{module.relative_to(ENGINE)} ({layer(module)}) imports {sorted(upward)}"


def test_only_the_entry_points_import_the_cli():
    """``__main__`` and the fork server (which runs the CLI in a warm process) sit above it."""
    for module in MODULES:
        if layer(module) not in ("cli", "__main__", "forkserver"):
            assert "cli" not in engine_parts(imported(module)), module


def test_only_main_imports_the_fork_server():
    """Besides the fork server's own modules (appdb/forkserver/), which import one another."""
    for module in MODULES:
        if layer(module) not in ("__main__", "forkserver"):
            assert "forkserver" not in engine_parts(imported(module)), module


def test_the_rule_sees_an_upward_import(tmp_path):
    """The check itself can fail: a migrate module importing checks is caught."""
    bad = ENGINE / "migrate" / "files.py"
    fake = tmp_path / "files.py"
    fake.write_text("from appdb.checks import catalog\n")
    assert engine_parts(imported(fake)) - ALLOWED[layer(bad)] == {"checks"}
