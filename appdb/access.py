"""Who may use the ``app`` schema and its tables: the access plan, as plain data.

Also the names the Pulumi program and the engine must agree on, each defined once here:
the schema's name, the group roles, the privileges, and the port of Supabase's
transaction pooler that both refuse. No import beyond the standard library, so
components/ can import it without loading psycopg.

The Pulumi program turns this plan into ``postgresql.Grant`` and
``postgresql.DefaultPrivileges`` resources (components/grants.py); the engine reads
the same plan to give a throwaway database exactly the program's grants (the schema
snapshot) without importing Pulumi. One plan, so the two never disagree.

``app_writer`` and ``app_reader`` are fixed names: the migrations' RLS policies name them.
"""

from __future__ import annotations

from dataclasses import dataclass

# The schema the project owns: the migrations write it, the program grants on it, the checks read it.
SCHEMA = "app"
# Supabase's transaction pooler breaks session settings and advisory locks: refused as a port.
TRANSACTION_POOLER_PORT = 6543
# Supabase's API roles: anon is a request without a login, authenticated one with.
ANON, AUTHENTICATED = "anon", "authenticated"
API_ROLES = (ANON, AUTHENTICATED)

# The server's key (bypasses RLS), and the login PostgREST switches to the API roles from.
SERVICE_ROLE, AUTHENTICATOR = "service_role", "authenticator"
# Roles that are Supabase's (or PostgreSQL's), never a login this program makes its own.
SUPABASE_ROLES = frozenset({ANON, AUTHENTICATED, SERVICE_ROLE, AUTHENTICATOR, "postgres", "dashboard_user",
                            "pgbouncer"})
RESERVED_ROLE_PREFIXES = ("pg_", "supabase_")
# Roles that give whoever is in them the server's files and programs, or a superuser: on
# Supabase no other role is ever in one (supautils refuses the grant; PostgreSQL 16+ does too,
# CREATEROLE needing ADMIN on a role to grant it); a local PostgreSQL 15 does not (verify looks).
RESERVED_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files", "supabase_admin")
# Supabase's own service roles (auth, storage, realtime...): the app's roles and the API roles
# are never in one. postgres may be, on a project from before Supabase took those memberships back.
SERVICE_ROLES = ("supabase_auth_admin", "supabase_storage_admin", "supabase_realtime_admin",
                 "supabase_replication_admin", "supabase_read_only_user", "supabase_etl_admin")

WRITER = "app_writer"
READER = "app_reader"
GROUP_ROLES = {"writer": WRITER, "reader": READER}

DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
SEQUENCE_USE = ("USAGE", "SELECT")
TABLE_PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"})


@dataclass(frozen=True)
class TableAccess:
    """What one role gets in the schema.

    ``tables`` empty means every table in the schema (``GRANT ... ON ALL TABLES``);
    ``privileges`` empty means none, enforced: the grant revokes whatever was given by hand.
    ``future`` adds default privileges so tables created later get the same.
    """

    role: str
    privileges: tuple[str, ...]
    tables: tuple[str, ...] = ()
    sequence_privileges: tuple[str, ...] = ()
    schema_usage: bool = True
    future: bool = False


# The app's access plan. RLS decides which rows; these decide which tables at all.
DEFAULT_ACCESS: tuple[TableAccess, ...] = (
    TableAccess(WRITER, DML, sequence_privileges=SEQUENCE_USE, future=True),
    TableAccess(READER, ("SELECT",), future=True),
    # Supabase's API roles. service_role bypasses RLS and is the server's key.
    TableAccess(SERVICE_ROLE, DML, sequence_privileges=SEQUENCE_USE, future=True),
    # Signed-in users read their own membership through RLS, and nothing else: payment
    # events and billing logs are read by the backend, never straight from the Data API.
    TableAccess(AUTHENTICATED, ("SELECT",), tables=("memberships",)),
    # The anonymous key gets nothing in `app`, not even USAGE; an empty grant revokes strays.
    TableAccess(ANON, (), schema_usage=False),
)
