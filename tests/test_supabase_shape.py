"""The Supabase shape every cluster the project starts has, held against a checked list.

``tests/supabase/expected_shape.json`` was built from databases made of Supabase's own SQL
(docs/supabase.md names the upstream commits) on PostgreSQL 15 and 17;
``tests/supabase/read_shape.sql`` reads the same facts back from a live database. Any
difference (a role's attribute or membership, a column of ``auth.users``, an auth function,
an extension, a default privilege) fails here, on whichever major the suite runs.

The behaviour tests below are the differences that made the local database pass what
Supabase refuses (issue 18): each would pass on the old imitation and fail on Supabase.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.helpers import TEMPLATE, Database

HERE = Path(__file__).resolve().parent / "supabase"
EXPECTED = json.loads((HERE / "expected_shape.json").read_text())
READ_SHAPE = (HERE / "read_shape.sql").read_text()
ATTRIBUTES = ("superuser", "inherit", "createrole", "createdb", "login", "replication", "bypassrls")

Grant = tuple[str, str, bool]


def read_shape(conn: psycopg.Connection) -> dict:
    return conn.execute(READ_SHAPE).fetchone()[0]


def _table_all() -> set[str]:
    """The 7 table privileges "ALL" means in the list (MAINTAIN, 17+, is added where it applies)."""
    return set(EXPECTED["table_all"]["15"])


def expected_acl(entries: list[dict], major: int, table: bool) -> set[Grant]:
    """The compact list's ACL for this major: "ALL" on a table is the 7 privileges, and MAINTAIN too on 17+."""
    every = _table_all()
    out = set()
    for entry in entries:
        privileges = sorted(every) if entry["privileges"] == "ALL" else entry["privileges"]
        out |= {(entry["grantee"], p, entry["grantable"]) for p in privileges}
    if table and major >= 17:
        for grantee in {g for g, _, _ in out}:
            if every <= {p for g, p, _ in out if g == grantee}:
                out.add((grantee, "MAINTAIN", False))
    return out


def actual_acl(acl: list[dict] | None) -> set[Grant]:
    return {(a["grantee"], a["privilege"], a["grantable"]) for a in acl or []}


def compare_sets(path: str, want: set, got: set) -> list[str]:
    return ([f"{path}: missing {x}" for x in sorted(want - got, key=repr)]
            + [f"{path}: unexpected {x}" for x in sorted(got - want, key=repr)])


def role_differences(actual: dict, major: int) -> list[str]:
    known, out = set(EXPECTED["roles"]), []
    for name, want in EXPECTED["roles"].items():
        got = actual["roles"].get(name)
        if got is None:
            out.append(f"role {name}: missing")
            continue
        out += [f"role {name}.{key}: expected {want[key]}, got {got[key]}" for key in ATTRIBUTES if want[key] != got[key]]
        if sorted(want["settings"]) != sorted(got["settings"]):
            out.append(f"role {name}.settings: expected {want['settings']}, got {got['settings']}")
        if major >= 16:
            members = {(m["role"], m.get("admin_16", m["admin"]), m["inherit_16"], m["set_16"]) for m in want["member_of"]}
        else:
            members = {(m["role"], m["admin"], None, None) for m in want["member_of"]}
        held = {(m["role"], m["admin"], m["inherit"], m["set"]) for m in got["member_of"]
                if m["role"] in known or m["role"].startswith("pg_")}
        out += compare_sets(f"role {name}.member_of", members, held)
    out += [f"role {name}: not in the checked list" for name in actual["roles"]
            if name.startswith("supabase_") and name not in known]
    return out


def auth_users_differences(actual: dict, major: int) -> list[str]:
    want, got = EXPECTED["auth_users"], actual["auth_users"]
    if "columns" not in got:
        return ["auth.users: missing"]
    out = [f"auth.users.{key}: expected {want[key]}, got {got[key]}"
           for key in ("owner", "rls", "force_rls", "policies") if want[key] != got[key]]
    names = [c["name"] for c in got["columns"]]
    if [c["name"] for c in want["columns"]] != names:
        out.append(f"auth.users columns: expected {[c['name'] for c in want['columns']]}, got {names}")
    by_name = {c["name"]: c for c in got["columns"]}
    out += [f"auth.users.{c['name']}: expected {c}, got {by_name[c['name']]}"
            for c in want["columns"] if c["name"] in by_name and by_name[c["name"]] != c]
    out += compare_sets("auth.users indexes", {i["def"] for i in want["indexes"]}, {i["def"] for i in got["indexes"]})
    out += compare_sets("auth.users constraints", {(c["name"], c["type"], c["def"]) for c in want["constraints"]},
                        {(c["name"], c["type"], c["def"]) for c in got["constraints"]})
    out += compare_sets("auth.users privileges", expected_acl(want["acl"], major, table=True), actual_acl(got["acl"]))
    return out


def differences(actual: dict) -> list[str]:
    """Every way ``actual`` (read_shape.sql's reading) differs from the checked list, one line each."""
    major = actual["server_major"]
    out = []
    if EXPECTED["database"]["owner"] != actual["database"]["owner"]:
        out.append(f"database owner: expected {EXPECTED['database']['owner']}, got {actual['database']['owner']}")
    out += compare_sets("database privileges", expected_acl(EXPECTED["database"]["acl"], major, table=False),
                        actual_acl(actual["database"]["acl"]))
    out += role_differences(actual, major)
    for name, want in EXPECTED["schemas"].items():
        got = actual["schemas"].get(name)
        if got is None:
            out.append(f"schema {name}: missing")
            continue
        if want["owner"] != got["owner"]:
            out.append(f"schema {name} owner: expected {want['owner']}, got {got['owner']}")
        out += compare_sets(f"schema {name} privileges", expected_acl(want["acl"], major, False), actual_acl(got["acl"]))
    out += compare_sets("extensions", {(x, e["schema"], e["owner"]) for x, e in EXPECTED["extensions"].items()},
                        {(x, e["schema"], e["owner"]) for x, e in actual["extensions"].items()})
    out += auth_users_differences(actual, major)
    for name, want in EXPECTED["auth_functions"].items():
        got = actual["auth_functions"].get(name)
        if got is None:
            out.append(f"auth.{name}(): missing")
            continue
        out += [f"auth.{name}().{key}: expected {want[key]!r}, got {got.get(key)!r}"
                for key in want if key != "acl" and want[key] != got.get(key)]
        out += compare_sets(f"auth.{name}() privileges", expected_acl(want["acl"], major, False), actual_acl(got["acl"]))
    every, scopes, wanted = _table_all(), set(EXPECTED["schemas"]), set()
    for entry in EXPECTED["default_privileges"]:
        privileges = sorted(every) if entry["privileges"] == "ALL" else entry["privileges"]
        if entry["objtype"] == "r" and entry["privileges"] == "ALL" and major >= 17:
            privileges = [*privileges, "MAINTAIN"]
        wanted |= {(entry["for_role"], entry["schema"], entry["objtype"], entry["grantee"], p, entry["grantable"])
                   for p in privileges}
    held = {(x["for_role"], x["schema"], x["objtype"], x["grantee"], x["privilege"], x["grantable"])
            for x in actual["default_privileges"] if x["schema"] in scopes}
    out += compare_sets("default privileges", wanted, held)
    return out


def test_the_tests_template_has_supabases_shape(cluster):
    """The database every test copies: roles, auth, extensions, grants and default privileges as on Supabase."""
    with cluster.connect(TEMPLATE) as conn:
        assert differences(read_shape(conn)) == []


def test_the_shape_applied_again_to_a_database_is_still_supabases(cluster, db: Database):
    """`local up` re-applies the shape to an existing database every time: it must converge, not pile up."""
    cluster.shape(db.name)
    cluster.shape(db.name)
    with db.connect() as conn:
        assert differences(read_shape(conn)) == []


def test_the_checker_sees_a_difference(cluster, db: Database):
    """The comparison is not vacuous: one changed attribute and one extra grant are both reported."""
    with db.admin_connect() as conn:
        conn.execute("BEGIN")
        conn.execute("ALTER ROLE authenticated NOINHERIT")
        conn.execute("GRANT SELECT ON auth.users TO service_role")
        found = differences(read_shape(conn))
        conn.execute("ROLLBACK")
    assert "role authenticated.inherit: expected True, got False" in found
    assert "auth.users privileges: unexpected ('service_role', 'SELECT', False)" in found


# --- what Supabase does that the old imitation did not ----------------------------------


def test_extensions_are_on_postgress_search_path_and_not_created_again(db: Database):
    with db.connect() as conn:
        assert conn.execute("SELECT uuid_generate_v4() IS NOT NULL, gen_random_uuid() IS NOT NULL").fetchone() == (True, True)
        with pytest.raises(psycopg.errors.DuplicateObject):
            conn.execute("CREATE EXTENSION pgcrypto")


def test_a_schema_named_like_the_login_is_not_on_its_search_path_as_on_hosted_supabase(db: Database):
    """Hosted projects' search_path is "\\$user", public, extensions: the first entry names a schema
    called \\$user, so $user never expands (supabase/supabase#20842). An unqualified table goes to
    public there even when a schema named postgres exists; so it must here."""
    with db.connect() as conn:
        conn.execute("CREATE SCHEMA postgres")
        try:
            assert conn.execute("SHOW search_path").fetchone() == ('"\\$user", public, extensions',)
            conn.execute("CREATE TABLE unqualified (id int)")
            assert conn.execute("SELECT to_regclass('public.unqualified') IS NOT NULL, "
                                "to_regclass('postgres.unqualified') IS NULL").fetchone() == (True, True)
        finally:
            conn.execute("DROP TABLE IF EXISTS public.unqualified, postgres.unqualified")
            conn.execute("DROP SCHEMA postgres")


def test_the_services_own_grants_are_supabases(cluster):
    """Storage's and Realtime's admins have what their init scripts grant on the database the shape
    ran in (the checked list has the first; a parameter's grant is the cluster's, not a database's)."""
    with cluster.connect(TEMPLATE) as conn:
        assert conn.execute(
            "SELECT has_database_privilege('supabase_storage_admin', current_database(), 'CREATE'), "
            "has_parameter_privilege('supabase_realtime_admin', 'log_min_messages', 'SET'), "
            "has_parameter_privilege('postgres', 'log_min_messages', 'SET')").fetchone() == (True, True, False)

def test_a_duplicate_email_is_refused_as_on_supabase(db: Database):
    db.execute("INSERT INTO auth.users (id, email) VALUES (gen_random_uuid(), 'ada@example.com')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("INSERT INTO auth.users (id, email) VALUES (gen_random_uuid(), 'ada@example.com')")


def test_postgres_can_grant_select_on_auth_users(db: Database):
    """SELECT on auth.users WITH GRANT OPTION: a migration's GRANT really grants."""
    db.execute("GRANT SELECT ON auth.users TO app_reader")
    assert db.execute("SELECT has_table_privilege('app_reader', 'auth.users', 'SELECT')") == [(True,)]
    db.execute("REVOKE SELECT ON auth.users FROM app_reader")


def test_postgres_cannot_create_in_auth_and_service_role_cannot_read_auth_users(db: Database):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("CREATE TABLE auth.mine (id int)")
    assert db.execute("SELECT has_table_privilege('service_role', 'auth.users', 'SELECT'), "
                      "pg_has_role('postgres', 'supabase_auth_admin', 'MEMBER')") == [(False, False)]


def test_confirmed_at_is_generated_from_the_confirmations(db: Database):
    db.execute("INSERT INTO auth.users (id, email, email_confirmed_at) "
               "VALUES ('00000000-0000-4000-8000-0000000000aa', 'x@example.com', now())")
    assert db.execute("SELECT confirmed_at IS NOT NULL FROM auth.users") == [(True,)]
