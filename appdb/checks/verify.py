"""Post-deploy verification: what a deploy must guarantee, checked on the live catalog.

The incident was a foreign key to a table that never existed and a duplicated unique
constraint, both found by hand. These checks find them by columns, never by name
patterns, and a failed check fails the deploy (``appdb verify`` exits 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from appdb.checks import catalog
from appdb.migrate import runner
from appdb.migrate.files import Migration

MEMBERSHIPS = "app.memberships"
PAYMENT_EVENTS = "app.payment_events"
BILLING_LOGS = "app.billing_logs"
# The migrations that make them, by file name: their checks apply once the file is in
# sql/. By name, not number: a team whose own tables differ replaces 029 and 030 with a
# pulled migration (docs/adoption.md), which may take the number 029 but not these checks.
PAYMENT_EVENTS_MIGRATION, BILLING_LOGS_MIGRATION = "029_payment_events.sql", "030_billing_logs.sql"
EXPECTED_FK_TARGET = "auth.users(id)"
# 029 and 030's links: (column, target); both ON DELETE SET NULL, so deleting a user is
# never blocked and the payment records outlive it.
PAYMENT_LINKS = (("user_id", "auth.users(id)"), ("membership_id", "app.memberships(membership_id)"))
# Privileges an API role must not hold on the payment tables (the backend serves them).
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
# pg_trigger.tgtype bits.
_ROW, _BEFORE, _DELETE, _UPDATE = 1, 2, 8, 16


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "checks": [check.as_dict() for check in self.checks]}


def run(conn: psycopg.Connection, migrations: list[Migration]) -> Report:
    """Every check, each independent of the others' results."""
    on_disk = {m.filename for m in migrations}
    payment_events = PAYMENT_EVENTS_MIGRATION in on_disk
    billing_logs = BILLING_LOGS_MIGRATION in on_disk
    return Report([
        check_ledger(conn, migrations),
        check_auth_users(conn),
        check_memberships_fk(conn),
        check_memberships_unique(conn),
        check_own_row_policy(conn),
        *_when(payment_events, PAYMENT_EVENTS_MIGRATION, [
            ("payment_events_rls", lambda: check_table_rls(conn, "payment_events_rls", PAYMENT_EVENTS)),
            ("payment_events_event_id_unique", lambda: check_payment_events_unique(conn)),
            ("payment_events_links", lambda: check_links(conn, "payment_events_links", PAYMENT_EVENTS)),
        ]),
        *_when(billing_logs, BILLING_LOGS_MIGRATION, [
            ("billing_logs_rls", lambda: check_table_rls(conn, "billing_logs_rls", BILLING_LOGS)),
            ("billing_logs_links", lambda: check_links(conn, "billing_logs_links", BILLING_LOGS)),
            ("billing_logs_append_only", lambda: check_billing_logs_append_only(conn)),
        ]),
        check_payment_tables_private(conn),
        check_valid_indexes(conn),
        check_rls(conn),
        check_anon_has_no_access(conn),
        check_ledger_private(conn),
    ])


def _when(present: bool, filename: str, checks: list[tuple[str, Callable[[], Check]]]) -> list[Check]:
    """A table's checks where its migration is in sql/; during a code rollback that removed
    the migration (its revert still to run, or already run) they hold by saying so."""
    if present:
        return [check() for _, check in checks]
    return [Check(name, True, f"migration {filename} is not in sql/: not checked") for name, _ in checks]


def check_ledger(conn: psycopg.Connection, migrations: list[Migration]) -> Check:
    """Files and ledger agree; a removed migration is a revert still to run, not a failure."""
    states = runner.status(conn, migrations)
    changed = [s.id for s in states if s.state == runner.CHANGED]
    pending = [s.id for s in states if s.state == runner.PENDING]
    removed = [s.id for s in states if s.state == runner.REMOVED]
    problems = []
    if changed:
        problems.append(f"changed after apply: {', '.join(changed)}")
    if pending:
        problems.append(f"pending: {', '.join(pending)}")
    notes = [f"applied: {sum(s.state == runner.APPLIED for s in states)}"]
    if removed:
        notes.append(f"removed, revert pending: {', '.join(removed)}")
    return Check("ledger", not problems, "; ".join(problems + notes))


def check_auth_users(conn: psycopg.Connection) -> Check:
    ok = catalog.table_exists(conn, "auth.users")
    return Check("auth_users", ok, "auth.users exists" if ok else "auth.users does not exist")


def check_memberships_fk(conn: psycopg.Connection) -> Check:
    """Exactly one FK on (user_id): to auth.users(id), ON DELETE CASCADE, validated."""
    name = "memberships_user_fk"
    if not catalog.table_exists(conn, MEMBERSHIPS):
        return Check(name, False, "app.memberships does not exist")
    keys = catalog.foreign_keys(conn, MEMBERSHIPS, ("user_id",))
    if not keys:
        return Check(name, False, "no foreign key on app.memberships(user_id)")
    found = "; ".join(key.describe() for key in keys)
    if len(keys) > 1:
        return Check(name, False, f"{len(keys)} foreign keys on app.memberships(user_id): {found}")
    key = keys[0]
    ok = key.target == EXPECTED_FK_TARGET and key.on_delete == "CASCADE" and key.validated
    expected = "" if ok else f"; expected -> {EXPECTED_FK_TARGET} ON DELETE CASCADE (validated)"
    return Check(name, ok, f"{found}{expected}")


def check_memberships_unique(conn: psycopg.Connection) -> Check:
    """Exactly one unique constraint or full unique index whose key is exactly (user_id)."""
    name = "memberships_user_unique"
    if not catalog.table_exists(conn, MEMBERSHIPS):
        return Check(name, False, "app.memberships does not exist")
    keys = [k for k in catalog.unique_keys(conn, MEMBERSHIPS) if k.columns == ("user_id",) and not k.partial]
    labels = ", ".join(key.label for key in keys)
    if len(keys) == 1:
        return Check(name, True, labels)
    if not keys:
        return Check(name, False, "no unique constraint or index on app.memberships(user_id)")
    return Check(name, False, f"{len(keys)} unique keys on app.memberships(user_id), expected 1: {labels}")


def check_own_row_policy(conn: psycopg.Connection) -> Check:
    """authenticated reads app.memberships through a policy that compares auth.uid() to user_id."""
    name = "memberships_own_row_policy"
    rows = conn.execute(
        """
        SELECT policyname, qual FROM pg_policies
        WHERE schemaname = 'app' AND tablename = 'memberships'
          AND 'authenticated' = ANY(roles) AND cmd IN ('SELECT', 'ALL')
        """
    ).fetchall()
    own = [policy for policy, qual in rows if qual and "auth.uid()" in qual and "user_id" in qual]
    if own:
        return Check(name, True, ", ".join(own))
    others = ", ".join(policy for policy, _ in rows) or "none"
    return Check(name, False, f"no policy lets authenticated read only its own row (policies for it: {others})")


def check_table_rls(conn: psycopg.Connection, name: str, table: str) -> Check:
    """Row level security is on for ``table``, whoever can read it today."""
    row = conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = %s::oid",
                       (catalog.relation_oid(conn, table),)).fetchone()
    if row is None:
        return Check(name, False, f"{table} does not exist")
    return Check(name, row[0], f"row level security is {'on' if row[0] else 'off'} on {table}")


def check_payment_events_unique(conn: psycopg.Connection) -> Check:
    """Exactly one unique constraint or full unique index on exactly (stripe_event_id): Stripe redelivers."""
    name = "payment_events_event_id_unique"
    if not catalog.table_exists(conn, PAYMENT_EVENTS):
        return Check(name, False, f"{PAYMENT_EVENTS} does not exist")
    keys = [k for k in catalog.unique_keys(conn, PAYMENT_EVENTS)
            if k.columns == ("stripe_event_id",) and not k.partial]
    labels = ", ".join(key.label for key in keys)
    if len(keys) == 1:
        return Check(name, True, labels)
    if not keys:
        return Check(name, False, f"no unique constraint or index on {PAYMENT_EVENTS}(stripe_event_id): "
                                  "a redelivered Stripe event would be stored twice")
    return Check(name, False, f"{len(keys)} unique keys on {PAYMENT_EVENTS}(stripe_event_id), expected 1: {labels}")


def check_links(conn: psycopg.Connection, name: str, table: str) -> Check:
    """Each link column has exactly one foreign key: to its target, ON DELETE SET NULL, validated."""
    if not catalog.table_exists(conn, table):
        return Check(name, False, f"{table} does not exist")
    found, problems = [], []
    for column, target in PAYMENT_LINKS:
        keys = catalog.foreign_keys(conn, table, (column,))
        described = "; ".join(key.describe() for key in keys)
        if len(keys) == 1 and keys[0].target == target and keys[0].on_delete == "SET NULL" and keys[0].validated:
            found.append(described)
        elif not keys:
            problems.append(f"no foreign key on {table}({column})")
        else:
            problems.append(f"{table}({column}): {described}; expected one -> {target} ON DELETE SET NULL (validated)")
    return Check(name, not problems, "; ".join(problems or found))


def check_billing_logs_append_only(conn: psycopg.Connection) -> Check:
    """An enabled BEFORE UPDATE OR DELETE row trigger keeps app.billing_logs append-only."""
    name = "billing_logs_append_only"
    oid = catalog.relation_oid(conn, BILLING_LOGS)
    if oid is None:
        return Check(name, False, f"{BILLING_LOGS} does not exist")
    rows = conn.execute(
        "SELECT tgname, tgtype, tgenabled FROM pg_trigger WHERE tgrelid = %s::oid AND NOT tgisinternal ORDER BY 1",
        (oid,),
    ).fetchall()
    guards = [tgname for tgname, tgtype, enabled in rows
              if enabled != "D" and tgtype & _ROW and tgtype & _BEFORE and tgtype & _UPDATE and tgtype & _DELETE]
    if guards:
        return Check(name, True, f"trigger {', '.join(guards)} refuses updates and deletes")
    disabled = [tgname for tgname, _, enabled in rows if enabled == "D"]
    note = f" (disabled: {', '.join(disabled)})" if disabled else ""
    return Check(name, False, f"no enabled trigger refuses UPDATE and DELETE on {BILLING_LOGS}{note}")


def check_payment_tables_private(conn: psycopg.Connection) -> Check:
    """anon and authenticated hold no privilege on the payment tables: the backend serves them."""
    roles = catalog.roles_that_exist(conn, ("anon", "authenticated"))
    granted = [
        f"{role} on {table}" for table in (PAYMENT_EVENTS, BILLING_LOGS) for role in roles
        if catalog.has_privilege(conn, role, table, TABLE_PRIVILEGES)
    ]
    if granted:
        return Check("payment_tables_private", False, f"API roles hold privileges: {', '.join(granted)}")
    return Check("payment_tables_private", True,
                 "anon and authenticated hold no privilege on app.payment_events or app.billing_logs")


def check_valid_indexes(conn: psycopg.Connection) -> Check:
    """No index in ``app`` is invalid: a ``CREATE INDEX CONCURRENTLY`` that failed (a lock
    timeout, a duplicate, a cancel) leaves one behind, which no query uses, which does not
    guarantee that the rows already there are unique, and which a retry's ``IF NOT EXISTS``
    would skip."""
    invalid = catalog.invalid_indexes(conn, "app")
    if invalid:
        found = "; ".join(index.describe() for index in invalid)
        return Check("valid_indexes", False,
                     f"{found}: a failed CREATE INDEX CONCURRENTLY left them and no query uses them; "
                     "drop each with DROP INDEX CONCURRENTLY and build it again")
    return Check("valid_indexes", True, "every index in app is valid")


def check_rls(conn: psycopg.Connection) -> Check:
    """Every app table an API role can read has row level security enabled."""
    roles = catalog.roles_that_exist(conn, ("anon", "authenticated"))
    exposed = []
    for table, rls in catalog.app_tables(conn):
        readers = catalog.readable_by(conn, f"app.{table}", roles)
        if readers and not rls:
            exposed.append(f"app.{table} (readable by {', '.join(readers)})")
    if exposed:
        return Check("rls", False, f"row level security is off on: {'; '.join(exposed)}")
    return Check("rls", True, "every app table an API role can read has row level security")


def check_anon_has_no_access(conn: psycopg.Connection) -> Check:
    """anon, the role of a request without a login, holds no privilege on any app table."""
    if not catalog.roles_that_exist(conn, ("anon",)):
        return Check("anon_no_access", True, "no anon role")
    granted = [
        f"app.{table}" for table, _ in catalog.app_tables(conn)
        if catalog.has_privilege(conn, "anon", f"app.{table}",
                                 TABLE_PRIVILEGES)
    ]
    if granted:
        return Check("anon_no_access", False, f"anon has privileges on: {', '.join(granted)}")
    return Check("anon_no_access", True, "anon has no privilege on app tables")


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
