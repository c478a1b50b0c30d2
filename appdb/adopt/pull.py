"""``appdb pull NAME``: what a live database has in a schema, as the next migration and its revert.

The objects come from ``pg_dump --schema-only`` (appdb/adopt/pgdump.py) and are rewritten to
converge (appdb/adopt/converge.py). The revert must not drop what earlier migrations create,
so when ``sql/`` holds migrations they are built on a throwaway Supabase-shaped database
(appdb/schema/fresh.py) and what that database has is left out of the revert.

Everything is checked before a file is written: the name, the connection, the schema,
pg_dump and its version, the login's right to lock the tables, the rewrite. A failure
leaves ``sql/`` as it was.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

from appdb.access import SCHEMA
from appdb.adopt import converge, pgdump
from appdb.connection import connect, connection_params, resolve_dsn, scram_only_on_this_machine, where
from appdb.errors import ConfigError, MigrationError, Refused
from appdb.migrate.files import REVERT_DIR, Migration, discover
from appdb.migrate.new import next_version, slug
from appdb.schema.describe import require_schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullResult:
    forward: Path
    revert: Path
    source: str
    objects: int


def pull(dsn: str | None, sql_dir: Path, name: str, schema: str = SCHEMA) -> PullResult:
    """Write ``sql/NNN_name.sql`` and its revert from the schema of the database at ``dsn``."""
    title = slug(name)
    migrations = discover(sql_dir)
    version = next_version(migrations)
    forward = sql_dir / f"{version}_{title}.sql"
    revert = sql_dir / REVERT_DIR / forward.name
    with connect(dsn, application_name="appdb pull") as conn:
        source = where(conn)
        require_schema(conn, schema, source)
        pg_dump = pgdump.find_pg_dump(conn.info.server_version // 10000)
        pg_dump_version = pgdump.check_version(pg_dump, conn.info.server_version)
        pgdump.check_can_lock(conn, schema)
    params = connection_params(resolve_dsn(dsn))
    # pg_dump connects again, with its own libpq: SCRAM only to this machine there too (16+).
    scram_only_on_this_machine(params, libpq_major=pg_dump_version)
    dump = pgdump.dump_schema(pg_dump, params, schema)
    earlier = _earlier_description(migrations, schema)
    pulled = converge.rewrite(dump, schema, earlier)
    if pulled.is_empty:
        raise Refused(f"schema {schema} in {source} holds nothing to pull: no file was written")
    today = datetime.date.today().isoformat()
    built_from = ", ".join(m.id for m in migrations) or "none"
    forward_text = converge.forward_sql(pulled, _FORWARD_HEADER.format(
        id=version, title=title.replace("_", " "), schema=schema, source=source, date=today,
        pg_dump=pg_dump_version))
    revert_text = converge.revert_sql(pulled, _REVERT_HEADER.format(id=version, built_from=built_from),
                                      version, earlier)
    revert.parent.mkdir(exist_ok=True)
    forward.write_text(forward_text, encoding="utf-8")
    revert.write_text(revert_text, encoding="utf-8")
    return PullResult(forward, revert, source, len(pulled.drops))


def _earlier_description(migrations: list[Migration], schema: str) -> dict[str, str]:
    """What a fresh database built from the earlier migrations has: the revert keeps it."""
    if not migrations:
        return {}
    from appdb.schema.fresh import fresh_description

    log.info("building %s on a throwaway database, to keep what they create out of the revert",
             ", ".join(m.id for m in migrations))
    try:
        # No grants (access=()): pull leaves privileges out, so the revert never meets them.
        return dict(fresh_description(migrations, access=(), schema=schema).items())
    except (MigrationError, Refused) as exc:
        raise ConfigError(f"the migrations in sql/ do not build a fresh database ({exc}); "
                          "fix them before pulling") from None


_FORWARD_HEADER = """\
-- {id}: {title}, pulled from schema {schema} of {source} on {date}
-- by appdb pull (pg_dump {pg_dump} --schema-only). The schema itself, owners and grants
-- are the Pulumi program's, so they are left out.
--
-- Review it before it is committed. It converges wherever it runs: an existing table,
-- sequence, type, constraint or index (found by name) is kept as it is, and appdb diff
-- shows how it differs; functions, views, triggers and policies are replaced by the
-- pulled definitions; foreign keys are added NOT VALID and validated in the last step;
-- indexes are built CONCURRENTLY. On the database it was pulled from, record it
-- without running it: appdb baseline {id} (docs/adoption.md).
"""

_REVERT_HEADER = """\
-- Revert of {id}: drops what {id} brought, newest first, and nothing that an earlier
-- migration creates (found on a database built from: {built_from}), so their tables keep
-- their rows and lose only the pulled indexes, constraints, triggers and policies.
-- Dropping a table that holds rows is refused unless data loss is allowed on purpose
-- (appdb revert {id} --allow-data-loss; the Pulumi stacks pass it on local and dev only).
"""
