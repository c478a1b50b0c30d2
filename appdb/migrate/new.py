"""``appdb new NAME``: the next numbered migration and its revert, from templates."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from appdb.errors import ConfigError
from appdb.migrate.files import REVERT_DIR, Migration, discover

_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def _template(name: str) -> str:
    return resources.files("appdb.migrate").joinpath("templates", name).read_text(encoding="utf-8")


def slug(name: str) -> str:
    """The file-name form of a migration's name, or a usage error."""
    text = name.strip().lower().replace("-", "_").replace(" ", "_")
    if not _NAME.match(text):
        raise ConfigError(f"migration name {name!r}: use lower-case letters, digits and underscores")
    return text


def next_version(migrations: list[Migration]) -> str:
    """The version after the highest, 3 digits wide: a new migration always runs last."""
    number = (migrations[-1].sort_key + 1) if migrations else 1
    return f"{number:03d}"


def new_migration(sql_dir: Path, name: str) -> tuple[Path, Path]:
    """Create NNN_name.sql and revert/NNN_name.sql from the templates."""
    text = slug(name)
    version = next_version(discover(sql_dir))
    forward = sql_dir / f"{version}_{text}.sql"
    revert = sql_dir / REVERT_DIR / forward.name
    title = text.replace("_", " ")
    revert.parent.mkdir(exist_ok=True)
    forward.write_text(_template("migration.sql").format(id=version, title=title), encoding="utf-8")
    revert.write_text(_template("revert.sql").format(id=version, title=title), encoding="utf-8")
    return forward, revert
