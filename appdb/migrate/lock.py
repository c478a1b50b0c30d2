"""The migration lock: one appdb run at a time per database.

A session advisory lock on a stable key, polled with ``pg_try_advisory_lock`` up to a
deadline rather than waited on (a blocking wait cannot be bounded or reported). It is
freed in ``finally`` and, if the process dies, by the server when the session ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from appdb.errors import MigrationError

log = logging.getLogger(__name__)

# 'appdb' in ASCII: stable across releases, so old and new versions exclude each other.
LOCK_KEY = 0x6170706462
# The lock in pg_locks: a bigint key shows as its high half (classid) and low half (objid), objsubid 1.
_IN_PG_LOCKS = (f"locktype = 'advisory' AND granted AND classid = {LOCK_KEY >> 32} "
                f"AND objid = {LOCK_KEY & 0xFFFFFFFF} AND objsubid = 1")
# True while this session holds the lock: checked after every step, since a step could let go of
# it (DISCARD ALL, pg_advisory_unlock_all()) and another run start.
HELD = f"EXISTS (SELECT FROM pg_catalog.pg_locks WHERE {_IN_PG_LOCKS} AND pid = pg_catalog.pg_backend_pid())"


def holder(conn: psycopg.Connection) -> str:
    """Who holds the lock, for the message when we give up."""
    row = conn.execute(
        f"""
        SELECT a.pid, coalesce(nullif(a.application_name, ''), '?'), coalesce(a.usename, '?')
        FROM (SELECT pid FROM pg_catalog.pg_locks WHERE {_IN_PG_LOCKS}) AS l
        JOIN pg_catalog.pg_stat_activity AS a USING (pid)
        LIMIT 1
        """
    ).fetchone()
    return f"pid {row[0]} ({row[1]}, user {row[2]})" if row else "another session"


@contextmanager
def migration_lock(conn: psycopg.Connection, wait: float) -> Iterator[None]:
    """Hold the lock for the block, or fail after ``wait`` seconds of polling."""
    deadline = time.monotonic() + wait
    delay = 0.05
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MigrationError(
                f"another appdb run holds the migration lock ({holder(conn)}); gave up after {wait:g} s "
                "(--wait): let it finish, or end it, then run again"
            )
        log.info("waiting for the migration lock held by %s", holder(conn))
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 1.0)
    try:
        yield
    finally:
        if not conn.closed:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            except psycopg.Error:
                log.debug("could not release the migration lock; the server frees it with the session")
