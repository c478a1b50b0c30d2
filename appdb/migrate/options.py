"""How patient the runner is: the one home of its defaults, which the CLI's flags show.

Apart from the runner (appdb/migrate/runner.py) so that the CLI can build its parser
from these defaults without importing psycopg.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    """``lock_timeout`` per statement and ``wait`` for another run's migration lock, in
    seconds; retries of a step after a lock timeout; whether a revert may lose data."""

    lock_timeout: float = 1.0
    lock_retries: int = 10
    wait: float = 300.0
    statement_timeout: str = "60s"
    allow_data_loss: bool = False
