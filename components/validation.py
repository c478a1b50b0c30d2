"""Checks on the values the components are given, each naming the offending input.

Components never read config (``__main__.py`` does); they validate what they are
handed and name the offending input in the message, the way Pulumi's component
guidelines ask.
"""

from __future__ import annotations

import re
from typing import Any

from appdb.access import TRANSACTION_POOLER_PORT

# An unquoted PostgreSQL identifier: what a role or schema name may be without
# quoting, and at most NAMEDATALEN - 1 bytes.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_MAX_IDENTIFIER_BYTES = 63



def identifier(value: Any, input_name: str) -> str:
    """``value`` if it is a plain lower-case SQL identifier; otherwise a ValueError naming the input."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value) or len(value.encode()) > _MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"{input_name}: {value!r} is not a valid role or schema name; use lower-case letters, "
            f"digits and underscores, starting with a letter or underscore, at most {_MAX_IDENTIFIER_BYTES} bytes"
        )
    return value


def port(value: Any, input_name: str) -> int:
    """A TCP port that is not Supabase's transaction pooler."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{input_name}: {value!r} is not a TCP port")
    if value == TRANSACTION_POOLER_PORT:
        raise ValueError(
            f"{input_name}: port 6543 is Supabase's transaction pooler, which breaks session settings and "
            "advisory locks; use the direct connection (5432) or the session pooler"
        )
    return value
