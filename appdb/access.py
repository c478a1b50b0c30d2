"""Who may use the ``app`` schema and its tables: the access plan, as plain data.

The Pulumi program turns this plan into ``postgresql.Grant`` and
``postgresql.DefaultPrivileges`` resources (components/grants.py); the engine reads
the same plan to give a throwaway database exactly the program's grants (the schema
snapshot) without importing Pulumi. One plan, so the two never disagree.

``app_writer`` and ``app_reader`` are fixed names: the migrations' RLS policies name them.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    TableAccess("authenticated", ("SELECT",), tables=("memberships",)),
    # The anonymous key gets nothing in `app`, not even USAGE; an empty grant revokes strays.
    TableAccess("anon", (), schema_usage=False),
)
