"""``appdb new NAME``: the next numbered migration and its revert, from templates."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from appdb.errors import ConfigError
from appdb.migration import REVERT_DIR, discover

_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def _template(name: str) -> str:
    return resources.files("appdb").joinpath("templates", name).read_text(encoding="utf-8")


def new_migration(sql_dir: Path, name: str) -> tuple[Path, Path]:
    """Create NNN_name.sql and revert/NNN_name.sql; NNN follows the highest version, 3 digits wide."""
    slug = name.strip().lower().replace("-", "_").replace(" ", "_")
    if not _NAME.match(slug):
        raise ConfigError(f"migration name {name!r}: use lower-case letters, digits and underscores")
    migrations = discover(sql_dir)
    number = (migrations[-1].sort_key + 1) if migrations else 1
    version = f"{number:03d}"
    forward = sql_dir / f"{version}_{slug}.sql"
    revert = sql_dir / REVERT_DIR / forward.name
    title = slug.replace("_", " ")
    revert.parent.mkdir(exist_ok=True)
    forward.write_text(_template("migration.sql").format(id=version, title=title), encoding="utf-8")
    revert.write_text(_template("revert.sql").format(id=version, title=title), encoding="utf-8")
    return forward, revert
