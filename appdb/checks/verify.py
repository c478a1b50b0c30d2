"""Post-deploy verification: what a deploy must guarantee, checked on the live catalog.

The incident was a foreign key to a table that never existed and a duplicated unique
constraint, both found by hand. These checks find them by columns, never by name
patterns, and a failed check fails the deploy (``appdb verify`` raises
``VerificationFailed`` and exits 1).

What each migration's table must look like is data, :data:`EXPECTATIONS`: one row per
migration file, naming its table and the checks that hold on it. A new table adds a row,
not a function. The rest are schema-wide checks. The catalog is read once, up front
(:class:`Facts`), so the number of statements does not grow with tables or roles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from appdb.access import (
    ANON,
    API_ROLES,
    AUTHENTICATED,
    AUTHENTICATOR,
    GROUP_ROLES,
    RESERVED_ROLES,
    SCHEMA,
    SERVICE_ROLE,
)
from appdb.checks import catalog
from appdb.errors import VerificationFailed
from appdb.migrate import ledger
from appdb.migrate.files import Migration

AUTH_USERS = "auth.users"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


@dataclass(frozen=True)
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[str]:
        return [check.name for check in self.checks if not check.ok]

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "checks": [check.as_dict() for check in self.checks]}

    def lines(self) -> list[str]:
        return [check.line() for check in self.checks]

    def raise_if_failed(self) -> None:
        """A failed check is an error like any other, carrying this report."""
        if not self.ok:
            raise VerificationFailed(self, self.failed)


# --- what the catalog holds, read once --------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """Everything the checks look at, read in one statement per kind of fact."""

    relations: catalog.Relations
    foreign_keys: dict[int, list[catalog.ForeignKey]]
    unique_keys: dict[int, list[catalog.UniqueKey]]
    policies: list[catalog.Policy]
    triggers: dict[int, list[catalog.Trigger]]
    privileges: catalog.Privileges
    invalid_indexes: list[catalog.InvalidIndex]

    @classmethod
    def read(cls, conn: psycopg.Connection, tables: list[str]) -> Facts:
        """The catalog for ``tables`` and every table of the schema."""
        relations = catalog.relations(conn, {SCHEMA, *(t.partition(".")[0] for t in [AUTH_USERS, *tables])})
        wanted = {r.oid for r in relations.tables(SCHEMA)}
        wanted |= {r.oid for t in tables if (r := relations.get(t)) is not None}
        oids = sorted(wanted)
        return cls(
            relations=relations,
            foreign_keys=catalog.foreign_keys(conn, oids),
            unique_keys=catalog.unique_keys(conn, oids),
            policies=catalog.policies(conn, relations, oids),
            triggers=catalog.triggers(conn, oids),
            privileges=catalog.privileges(conn, API_ROLES, oids),
            invalid_indexes=catalog.invalid_indexes(conn, SCHEMA),
        )


# --- per-migration expectations, as data -------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A column that must have exactly one foreign key: to ``target``, with ``on_delete``, validated."""

    column: str
    target: str
    on_delete: str

    def expected(self) -> str:
        return f"-> {self.target} ON DELETE {self.on_delete} (validated)"

    def holds(self, key: catalog.ForeignKey) -> bool:
        return key.target == self.target and key.on_delete == self.on_delete and key.validated


@dataclass(frozen=True)
class Links:
    """Each link column has exactly one foreign key, the right one."""

    name: str
    links: tuple[Link, ...]

    def evaluate(self, table: str, oid: int, facts: Facts) -> Check:
        found, problems = [], []
        for link in self.links:
            keys = [k for k in facts.foreign_keys.get(oid, []) if k.columns == (link.column,)]
            described = "; ".join(key.describe() for key in keys)
            if len(keys) == 1 and link.holds(keys[0]):
                found.append(described)
            elif not keys:
                problems.append(f"no foreign key on {table}({link.column})")
            elif len(keys) > 1:
                problems.append(f"{len(keys)} foreign keys on {table}({link.column}): {described}; "
                                f"expected one {link.expected()}")
            else:
                problems.append(f"{table}({link.column}): {described}; expected one {link.expected()}")
        return Check(self.name, not problems, "; ".join(problems or found))


@dataclass(frozen=True)
class UniqueOn:
    """Exactly one unique constraint or full unique index whose key is exactly ``columns``."""

    name: str
    columns: tuple[str, ...]
    why: str = ""  # what goes wrong without it, added to the detail when there is none

    def evaluate(self, table: str, oid: int, facts: Facts) -> Check:
        keys = [k for k in facts.unique_keys.get(oid, []) if k.columns == self.columns and not k.partial]
        labels = ", ".join(key.label for key in keys)
        on = f"{table}({', '.join(self.columns)})"
        if len(keys) == 1:
            return Check(self.name, True, labels)
        if not keys:
            return Check(self.name, False, f"no unique constraint or index on {on}{': ' + self.why if self.why else ''}")
        return Check(self.name, False, f"{len(keys)} unique keys on {on}, expected 1: {labels}")


@dataclass(frozen=True)
class OwnRowPolicy:
    """``role`` reads the table through a policy that compares ``auth.uid()`` to ``column``."""

    name: str
    role: str
    column: str

    def evaluate(self, table: str, oid: int, facts: Facts) -> Check:
        policies = [p for p in facts.policies if p.table == table and self.role in p.roles
                    and p.command in ("SELECT", "ALL")]
        own = [p.name for p in policies if p.using and "auth.uid()" in p.using and self.column in p.using]
        if own:
            return Check(self.name, True, ", ".join(own))
        others = ", ".join(p.name for p in policies) or "none"
        return Check(self.name, False,
                     f"no policy lets {self.role} read only its own row (policies for it: {others})")


@dataclass(frozen=True)
class RowSecurity:
    """Row level security is on for the table, whoever can read it today."""

    name: str

    def evaluate(self, table: str, oid: int, facts: Facts) -> Check:
        rls = facts.relations.get(table).rls
        return Check(self.name, rls, f"{table} has row level security {'on' if rls else 'off'}")


@dataclass(frozen=True)
class AppendOnly:
    """An enabled BEFORE UPDATE OR DELETE row trigger keeps the table append-only."""

    name: str

    def evaluate(self, table: str, oid: int, facts: Facts) -> Check:
        triggers = facts.triggers.get(oid, [])
        guards = [t.name for t in triggers if t.refuses_update_and_delete()]
        if guards:
            return Check(self.name, True, f"trigger {', '.join(guards)} refuses updates and deletes")
        disabled = [t.name for t in triggers if t.enabled == "D"]
        note = f" (disabled: {', '.join(disabled)})" if disabled else ""
        return Check(self.name, False, f"no enabled trigger refuses UPDATE and DELETE on {table}{note}")


Expectation = Links | UniqueOn | OwnRowPolicy | RowSecurity | AppendOnly


@dataclass(frozen=True)
class TableExpectations:
    """What the table a migration makes must look like after every deploy.

    Keyed by file name, not number: a team whose own tables differ replaces 029 and 030
    with a pulled migration (docs/adoption.md), which may take the number 029 but not
    these checks. While the file is not in sql/ (a code rollback removed it, its revert
    still to run or already run) its checks hold by saying so. ``private``: the API roles
    hold no privilege on it (the backend serves it), checked by ``payment_tables_private``.
    """

    migration: str
    table: str
    checks: tuple[Expectation, ...]
    private: bool = False


# 029 and 030's links: both ON DELETE SET NULL, so deleting a user is never blocked and
# the payment records outlive it.
PAYMENT_LINKS = (Link("user_id", "auth.users(id)", "SET NULL"),
                 Link("membership_id", "app.memberships(membership_id)", "SET NULL"))

EXPECTATIONS: tuple[TableExpectations, ...] = (
    TableExpectations("027_memberships.sql", "app.memberships", (
        Links("memberships_user_fk", (Link("user_id", "auth.users(id)", "CASCADE"),)),
        UniqueOn("memberships_user_unique", ("user_id",)),
        OwnRowPolicy("memberships_own_row_policy", AUTHENTICATED, "user_id"),
    )),
    TableExpectations("029_payment_events.sql", "app.payment_events", (
        RowSecurity("payment_events_rls"),
        UniqueOn("payment_events_event_id_unique", ("stripe_event_id",),
                 why="a redelivered Stripe event would be stored twice"),
        Links("payment_events_links", PAYMENT_LINKS),
    ), private=True),
    TableExpectations("030_billing_logs.sql", "app.billing_logs", (
        RowSecurity("billing_logs_rls"),
        Links("billing_logs_links", PAYMENT_LINKS),
        AppendOnly("billing_logs_append_only"),
    ), private=True),
)


def table_checks(expected: TableExpectations, on_disk: set[str], facts: Facts) -> list[Check]:
    """One row's checks: held by saying so while its file is not in sql/, failed while its table is missing."""
    if expected.migration not in on_disk:
        return [Check(c.name, True, f"migration {expected.migration} is not in sql/: not checked")
                for c in expected.checks]
    relation = facts.relations.get(expected.table)
    if relation is None:
        return [Check(c.name, False, f"{expected.table} does not exist") for c in expected.checks]
    return [c.evaluate(expected.table, relation.oid, facts) for c in expected.checks]


# --- the report --------------------------------------------------------------------------


def run(conn: psycopg.Connection, migrations: list[Migration]) -> Report:
    """Every check, each independent of the others' results; the catalog is read once."""
    on_disk = {m.filename for m in migrations}
    facts = Facts.read(conn, [e.table for e in EXPECTATIONS])
    per_table = [check for expected in EXPECTATIONS for check in table_checks(expected, on_disk, facts)]
    schema_wide: list[Callable[[Facts], Check]] = [
        check_payment_tables_private, check_valid_indexes, check_rls, check_anon_has_no_access,
    ]
    return Report([
        check_ledger(conn, migrations),
        check_auth_users(facts),
        *per_table,
        *(check(facts) for check in schema_wide),
        check_ledger_private(conn),
        check_reserved_roles(conn),
    ])


def check_ledger(conn: psycopg.Connection, migrations: list[Migration]) -> Check:
    """Files and ledger agree; a removed migration is a revert still to run, not a failure."""
    current = ledger.status(conn, migrations)
    changed, pending = current.ids(ledger.CHANGED), current.ids(ledger.PENDING)
    removed = current.ids(ledger.REMOVED)
    problems = []
    if changed:
        problems.append(f"changed after apply: {', '.join(changed)}")
    if pending:
        problems.append(f"pending: {', '.join(pending)}")
    notes = [f"applied: {len(current.ids(ledger.APPLIED))}"]
    if removed:
        notes.append(f"removed, revert pending: {', '.join(removed)}")
    return Check("ledger", not problems, "; ".join(problems + notes))


def check_auth_users(facts: Facts) -> Check:
    ok = facts.relations.get(AUTH_USERS) is not None
    return Check("auth_users", ok, f"{AUTH_USERS} exists" if ok else f"{AUTH_USERS} does not exist")


def check_payment_tables_private(facts: Facts) -> Check:
    """anon and authenticated hold no privilege on the private tables: the backend serves them."""
    private = [e.table for e in EXPECTATIONS if e.private]
    granted = [f"{role} on {table}" for table in private if (r := facts.relations.get(table)) is not None
               for role in facts.privileges.holders(r.oid)]
    if granted:
        return Check("payment_tables_private", False, f"API roles hold privileges: {', '.join(granted)}")
    return Check("payment_tables_private", True,
                 f"{' and '.join(API_ROLES)} hold no privilege on {' or '.join(private)}")


def check_valid_indexes(facts: Facts) -> Check:
    """No index in the schema is invalid: a ``CREATE INDEX CONCURRENTLY`` that failed (a lock
    timeout, a duplicate, a cancel) leaves one behind, which no query uses, which does not
    guarantee that the rows already there are unique, and which a retry's ``IF NOT EXISTS``
    would skip."""
    if facts.invalid_indexes:
        found = "; ".join(index.describe() for index in facts.invalid_indexes)
        return Check("valid_indexes", False,
                     f"{found}: a failed CREATE INDEX CONCURRENTLY left them and no query uses them; "
                     "drop each with DROP INDEX CONCURRENTLY and build it again")
    return Check("valid_indexes", True, f"every index in {SCHEMA} is valid")


def check_rls(facts: Facts) -> Check:
    """Every table of the schema an API role can read has row level security enabled."""
    exposed = [f"{table.qualified} (readable by {', '.join(readers)})"
               for table in facts.relations.tables(SCHEMA)
               if not table.rls and (readers := facts.privileges.readers(table.oid))]
    if exposed:
        return Check("rls", False, f"row level security is off on: {'; '.join(exposed)}")
    return Check("rls", True, f"every {SCHEMA} table an API role can read has row level security")


def check_anon_has_no_access(facts: Facts) -> Check:
    """anon, the role of a request without a login, holds no privilege on any table of the schema."""
    if ANON not in facts.privileges.roles:
        return Check("anon_no_access", True, "no anon role")
    granted = [table.qualified for table in facts.relations.tables(SCHEMA)
               if ANON in facts.privileges.holders(table.oid)]
    if granted:
        return Check("anon_no_access", False, f"anon has privileges on: {', '.join(granted)}")
    return Check("anon_no_access", True, f"anon has no privilege on {SCHEMA} tables")


def check_ledger_private(conn: psycopg.Connection) -> Check:
    """Only the ledger's owner holds any privilege on schema ``appdb`` or anything in it.

    The ledger holds every revert's SQL, which runs with the deploy login's rights: a role
    that can write it can run SQL as the deploy login. So any grant fails, to anyone
    (PUBLIC included), of anything, on the schema, its tables, their columns or a function
    in it, and so does an object in it that another role owns. The one exception is the
    read-only login of the previews and the drift check, which may read the ledger
    (USAGE on the schema, SELECT on the table) and nothing more.
    """
    name = "ledger_private"
    objects = catalog.ledger_objects(conn)
    if not objects:
        return Check(name, True, "no ledger yet")
    owner = objects[0].owner  # the schema's: the deploy login that created the ledger
    problems = [f"{o.what} is owned by {o.owner}, not by {owner}" for o in objects if o.owner != owner]
    for obj in objects:
        for grantee, privileges in obj.grants:
            if grantee == catalog.LEDGER_READER and privileges == catalog.LEDGER_READS.get(obj.what):
                continue
            problems.append(f"{grantee} has {', '.join(privileges)} on {obj.what}")
    if problems:
        return Check(name, False, f"{'; '.join(problems)}: only {owner}, the ledger's owner, may hold privileges "
                                  f"in schema appdb (and {catalog.LEDGER_READER} read it); revoke them")
    return Check(name, True, f"only {owner}, the ledger's owner, holds privileges on schema appdb and its objects "
                             f"(direct grants and PUBLIC checked)")


def check_reserved_roles(conn: psycopg.Connection) -> Check:
    """No role but a superuser is in a role that hands out the server's files and programs (a
    member of pg_execute_server_program runs programs as the server's OS user) or a superuser's
    rights; no app or API role is in a Supabase service role (supabase_auth_admin writes schema
    auth). Supabase refuses such a grant; locally, on PostgreSQL 15, only this check does."""
    found = catalog.reserved_memberships(conn, (*GROUP_ROLES.values(), *API_ROLES, SERVICE_ROLE, AUTHENTICATOR))
    if found:
        listed = "; ".join(f"{member} is in {role}" for member, role in found)
        return Check("reserved_roles", False, f"{listed}: Supabase refuses these memberships; revoke them "
                                              "and take them out of the migration that granted them")
    return Check("reserved_roles", True, f"no role but a superuser is in {', '.join(RESERVED_ROLES)}, "
                                         "and no app or API role in a Supabase service role")


def check_names() -> list[str]:
    """The name of every check ``run`` can report, in its order: README's table lists exactly these."""
    return ["ledger", "auth_users", *(c.name for e in EXPECTATIONS for c in e.checks),
            "payment_tables_private", "valid_indexes", "rls", "anon_no_access", "ledger_private", "reserved_roles"]
