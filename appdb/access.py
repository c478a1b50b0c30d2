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

# Roles that are Supabase's (or PostgreSQL's), never a login this program makes its own.
SUPABASE_ROLES = frozenset({ANON, AUTHENTICATED, "service_role", "authenticator", "postgres", "dashboard_user",
                            "pgbouncer"})
RESERVED_ROLE_PREFIXES = ("pg_", "supabase_")

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
    TableAccess("service_role", DML, sequence_privileges=SEQUENCE_USE, future=True),
    # Signed-in users read their own membership through RLS, and nothing else: payment
    # events and billing logs are read by the backend, never straight from the Data API.
    TableAccess(AUTHENTICATED, ("SELECT",), tables=("memberships",)),
    # The anonymous key gets nothing in `app`, not even USAGE; an empty grant revokes strays.
    TableAccess(ANON, (), schema_usage=False),
)
