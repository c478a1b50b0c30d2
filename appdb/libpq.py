"""What appdb takes from libpq's connection settings: the sslmodes it knows, and the
connect timeout appdb sets where none is given (libpq's own waits for ever).

No psycopg import: the Pulumi program (components/database.py) checks a stack's
``sslMode`` and sets the provider's timeout from these, as the engine
(appdb/connection.py) does for its own connections.
"""

# Seconds: an unreachable host fails a command, or a preview, quickly and clearly.
DEFAULT_CONNECT_TIMEOUT = 10
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
