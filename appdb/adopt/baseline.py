"""``appdb baseline ID``: record a migration as applied, without running it, where the database has it.

Flyway calls this baseline and Supabase ``migration repair --status applied``; both take
the user's word for it. appdb checks first, by the catalog: what the migration changes
is what a throwaway Supabase-shaped database shows before and after it (appdb/schema/fresh.py,
described by appdb/schema/describe.py). The live database must have every object the migration
creates or changes, with the same definition, and none that it drops. Grants and
default privileges are left out of the comparison: the Pulumi program owns them.

Nothing runs on the live database but catalog reads and, when every check passes, the
ledger row, written under the migration lock in one transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from appdb.access import SCHEMA
from appdb.errors import MigrationError, NotThere, Refused
from appdb.migrate import ledger, statements
from appdb.migrate.files import Migration, find
from appdb.migrate.lock import migration_lock
from appdb.migrate.options import Options
from appdb.schema.describe import Description, describe, require_schema
from appdb.schema.drift import EXTRA, MISSING, Difference, compare, short

log = logging.getLogger(__name__)

# The program's, not a migration's (components/grants.py).
_PROGRAM_OWNED = ("privilege ", "default privileges ")
_SHOWN = 5


@dataclass(frozen=True)
class Change:
    """What one migration does to a schema: objects it creates or redefines, and ones it drops."""

    schema: str
    made: dict[str, str]
    dropped: frozenset[str]

    def expected(self) -> Description:
        return Description(self.schema, self.made)

    def live_part(self, live: Description) -> Description:
        """The live objects the comparison looks at: the made ones and the dropped ones."""
        wanted = set(self.made) | self.dropped
        return Description(self.schema, {k: v for k, v in live.items() if k in wanted})


def explain(difference: Difference, migration_id: str) -> str:
    """One line per object, in the migration's terms rather than a snapshot's."""
    if difference.change == MISSING:
        return f"missing: {difference.identity}: {migration_id} makes {short(difference.expected)}"
    if difference.change == EXTRA:
        return f"still there: {difference.identity}: {migration_id} drops it"
    return (f"different: {difference.identity}: {migration_id} makes {short(difference.expected)}; "
            f"the database has {short(difference.actual)}")


def refuse_row_writes(target: Migration) -> None:
    """A migration that writes rows: the catalog cannot show whether the database has them."""
    for step in target.steps:
        found = statements.first_row_write(statements.split(step.sql, str(target.path), step.first_line))
        if found:
            verb, line = found
            raise Refused(
                f"{target.path}:{line}: {target.id} writes rows ({verb}), and the catalog cannot show whether "
                "this database has them, so baseline cannot check it: apply it instead (appdb apply; written "
                "to converge), or move the rows into a migration of its own"
            )


def _query(name: str, skip: list[str]) -> sql.Composed:
    """One of this package's .sql files, with the schemas it leaves out in place of ``{skip}``."""
    text = resources.files("appdb.adopt").joinpath(name).read_text(encoding="utf-8")
    return sql.SQL(text).format(skip=sql.Literal(skip))


def _name_of(line: str) -> str:
    """An object of :data:`_OUTSIDE` by its kind and name, without its definition."""
    words = line.split()
    if line.startswith("CREATE"):  # pg_get_triggerdef: CREATE [CONSTRAINT] TRIGGER name ...
        return f"trigger {words[3] if words[1] == 'CONSTRAINT' else words[2]}"
    return " ".join(words[:4] if words[0] in ("policy", "member") else words[:2])


def _outside(conn: psycopg.Connection, schema: str) -> set[str]:
    """Every object outside ``schema`` (and the ledger's), with its definition: what a migration
    must not change for baseline to be able to vouch for it."""
    return {row[0] for row in conn.execute(_query("outside.sql", [schema, ledger.LEDGER_SCHEMA]))}


def _rows(conn: psycopg.Connection) -> dict[str, int]:
    """How many rows each table holds: a migration that writes any, however (a DO block, a function,
    CREATE TABLE AS), changes a count on the throwaway database."""
    names = [row[0] for row in conn.execute(_query("tables.sql", [ledger.LEDGER_SCHEMA]))]
    return {name: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(name))).fetchone()[0]
            for name in names}


def _owned_by_migrations(identity: str) -> bool:
    return not identity.startswith(_PROGRAM_OWNED)


def change_of(migrations: list[Migration], target: Migration, schema: str = SCHEMA) -> Change:
    """Build the migrations before ``target``, then ``target``, on a throwaway database; diff the two."""
    from appdb.schema.fresh import throwaway

    refuse_row_writes(target)
    earlier = [m for m in migrations if m.sort_key < target.sort_key]
    with throwaway(schema) as built:
        try:
            built.apply(earlier)
            before = built.describe(ledger=False)
            outside, rows = _outside(built.conn, schema), _rows(built.conn)
            built.apply([*earlier, target])
        except MigrationError as exc:
            raise MigrationError(f"{target.id} could not be built on a fresh Supabase-shaped database, which "
                                 f"baseline compares with: {exc}") from None
        after = built.describe(ledger=False)
        changed = sorted(outside ^ _outside(built.conn, schema))
        written = sorted(name for name, count in _rows(built.conn).items() if rows.get(name, 0) != count)
    if written:
        raise Refused(
            f"{target.id} writes rows ({', '.join(written[:_SHOWN])}{' and more' if len(written) > _SHOWN else ''}, "
            "on a fresh database), and the catalog cannot show whether this database has them, so baseline "
            "cannot check it: apply it instead (appdb apply; written to converge), or move the rows into a "
            "migration of its own"
        )
    if changed:
        names = sorted({_name_of(line) for line in changed})
        raise Refused(
            f"{target.id} also changes what lies outside schema {schema} ({', '.join(names[:_SHOWN])}"
            f"{' and more' if len(names) > _SHOWN else ''}), which baseline does not compare: apply it "
            "instead (appdb apply; written to converge), or move that part into a migration of its own"
        )
    made = {k: v for k, v in after.items() if before.entries.get(k) != v and _owned_by_migrations(k)}
    dropped = frozenset(k for k in before if k not in after.entries and _owned_by_migrations(k))
    return Change(schema, made, dropped)


def check_ledger(conn: psycopg.Connection, migrations: list[Migration], target: Migration) -> None:
    """Refuse a migration that is applied, or one whose earlier migrations are not."""
    current = ledger.status(conn, migrations)
    state = current.by_id()[target.id]
    if state.state != ledger.PENDING:
        when = f" ({state.applied_at}, by {state.applied_by})" if state.applied_at else ""
        raise Refused(f"{target.id} ({target.name}) is already {state.state}{when}: there is nothing to baseline")
    ledger.refuse_earlier_pending(
        migrations, target, current, f"cannot baseline {target.id}",
        "apply them first (appdb apply), or baseline them in order if this database has them too")
    # As apply: recorded after a newer one, it would be reverted out of version order.
    ledger.refuse_out_of_order([target], current)


def baseline(conn: psycopg.Connection, migrations: list[Migration], migration_id: str,
             schema: str = SCHEMA, wait: float = Options.wait) -> int:
    """Check, then record; return how many objects were compared. NotThere names what is lacking."""
    target = find(migrations, migration_id)
    require_schema(conn, schema)
    check_ledger(conn, migrations, target)
    change = change_of(migrations, target, schema)
    if not (change.made or change.dropped):
        raise Refused(
            f"{target.id} changes nothing in schema {schema} on a fresh database, so the catalog cannot show "
            "whether this database has it: apply it instead (appdb apply), which converges"
        )
    with migration_lock(conn, wait):
        check_ledger(conn, migrations, target)  # another run may have applied it meanwhile
        differences = compare(change.expected(), change.live_part(describe(conn, schema, ledger=False)))
        if differences:
            lines = [explain(d, target.id) for d in differences]
            names = ", ".join(d.identity for d in differences[:_SHOWN])
            more = f" and {len(differences) - _SHOWN} more" if len(differences) > _SHOWN else ""
            raise NotThere(
                f"{target.id} was not recorded: this database does not have what it makes ({names}{more}); "
                f"apply it instead (appdb apply), or bring the database to it first", lines)
        with conn.transaction():
            ledger.record(conn, target, duration_ms=0, applied_by=f"{conn.info.user} (baseline)")
    checked = len(change.made) + len(change.dropped)
    log.info("%s recorded as applied after comparing %d objects", target.id, checked)
    return checked
