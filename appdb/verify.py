"""Post-deploy verification: what a deploy must guarantee, checked on the live catalog.

The incident was a foreign key to a table that never existed and a duplicated unique
constraint, both found by hand. These checks find them by columns, never by name
patterns, and a failed check fails the deploy (``appdb verify`` exits 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from appdb import catalog, ledger, runner
from appdb.migration import Migration

MEMBERSHIPS = "app.memberships"
EXPECTED_FK_TARGET = "auth.users(id)"


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
    return Report([
        check_ledger(conn, migrations),
        check_auth_users(conn),
        check_memberships_fk(conn),
        check_memberships_unique(conn),
        check_own_row_policy(conn),
        check_rls(conn),
        check_anon_has_no_access(conn),
        check_ledger_private(conn),
    ])


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
                                 "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER")
    ]
    if granted:
        return Check("anon_no_access", False, f"anon has privileges on: {', '.join(granted)}")
    return Check("anon_no_access", True, "anon has no privilege on app tables")


def check_ledger_private(conn: psycopg.Connection) -> Check:
    """No API role can read the ledger, which holds every revert's SQL."""
    if not ledger.exists(conn):
        return Check("ledger_private", True, "no ledger yet")
    roles = catalog.roles_that_exist(conn, catalog.API_ROLES)
    readers = [
        role for role in roles
        if conn.execute("SELECT has_schema_privilege(%s, 'appdb', 'USAGE')", (role,)).fetchone()[0]
    ]
    if readers:
        return Check("ledger_private", False, f"the appdb schema is usable by: {', '.join(readers)}")
    return Check("ledger_private", True, "no API role can use the appdb schema")
