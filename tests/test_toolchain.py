"""Pulumi's uv toolchain: what `uv run` and `uv sync` install is what the pinned requirements install.

Pulumi.yaml runs the program with ``uv run`` (the python language host's uv toolchain),
which syncs the virtualenv to uv.lock first, and ``pulumi install`` runs ``uv sync``. Both
must leave the packages bin/setup and the workflows install from requirements.lock, by hash:
otherwise a deploy would quietly change the virtualenv under the program.
"""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.helpers import ROOT


def pins(text: str) -> dict[str, str]:
    """name -> version of every ``name==version`` line, names normalised as PyPI does."""
    found = {}
    for match in re.finditer(r"^([A-Za-z0-9_.\[\]-]+)==([^\s\\;]+)", text, re.MULTILINE):
        name = re.sub(r"\[.*\]", "", match.group(1))
        found[re.sub(r"[-_.]+", "-", name).lower()] = match.group(2)
    return found


def test_pulumi_runs_the_program_with_the_uv_toolchain_in_the_project_virtualenv():
    options = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]["options"]
    assert options == {"toolchain": "uv", "virtualenv": ".venv"}


def test_the_deploy_group_pins_what_requirements_txt_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pins("\n".join(project["dependency-groups"]["deploy"] + project["project"]["dependencies"]))
    assert declared == pins((ROOT / "requirements.txt").read_text())
    assert project["tool"]["uv"]["default-groups"] == ["deploy"]


def test_uv_lock_pins_every_package_at_the_version_requirements_lock_pins():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {package["name"]: package["version"] for package in lock["package"]
              if package["name"] != "appdb" and package["name"] != "tzdata"}  # tzdata: Windows only
    assert locked == pins((ROOT / "requirements.lock").read_text())


def test_uv_itself_is_pinned_by_hash_at_the_version_the_lock_script_makes():
    text = (ROOT / "requirements-uv.txt").read_text()
    [(name, version)] = pins(text).items()
    assert name == "uv" and len(re.findall(r"--hash=sha256:[0-9a-f]{64}", text)) >= 2
    assert f"UV_VERSION={version}\n" in (ROOT / "ci" / "lock-requirements.sh").read_text()
