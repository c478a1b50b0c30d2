"""What the command resources share: how they call the engine, and the digest that re-runs them.

pulumi-command 1.x runs a command's create or update again only when an input changes.
``migrations-apply`` and ``verify`` carry a digest of what they depend on (the
migrations' versions and checksums; the role and grant settings), so they run again
exactly when that changes, and a no-op ``up`` runs nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Relative to the project, where the provider runs commands: nothing machine-specific in an input.
APPDB = "./bin/appdb"


def digest(value: Any) -> str:
    """sha256 of ``value``'s canonical JSON: equal settings give equal digests, on any machine."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
