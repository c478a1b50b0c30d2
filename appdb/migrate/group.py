"""``apply --group``: each run of consecutive pending migrations, with their ledger rows, in one
transaction (Flyway's ``group``; Alembic's default; ``psql -1``).

All of a group or none of it, with each migration's settings, checks and fresh session inside
(appdb/migrate/steps.py), and a lock timeout anywhere retries the group. Only a migration of one
transactional step whose effects need no commit joins a group (:func:`groups`); any other runs
as it would alone; a group holds at most :data:`GROUP_MAX`, and goes to the server in as few
queries as :data:`QUERY_MAX_CHARS` allows. A group's locks are held to its commit: for a new
database or a quiet window.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import psycopg
from psycopg import errors

from appdb.errors import Interrupted, LockTimeout, MigrationError
from appdb.migrate import ledger
from appdb.migrate.files import Migration, Step
from appdb.migrate.lock import HELD
from appdb.migrate.options import Options
from appdb.migrate.outcome import Outcome
from appdb.migrate.steps import (
    FRESH_SESSION,
    around_step,
    check_still_ours,
    fresh_session,
    fresh_session_within,
    lock_first,
    pause_or_give_up,
    server_message,
    set_timeouts,
    shown_path,
    step_failure,
    step_settings,
)

log = logging.getLogger(__name__)


def why_alone(migration: Migration) -> str | None:
    """Why ``apply --group`` runs a migration on its own, the one home of :func:`groupable`'s
    rule; None for a migration that may share a transaction."""
    if not all(step.transactional for step in migration.steps):
        return "a transaction=false step"
    if len(migration.steps) != 1:
        return f"{len(migration.steps)} steps"
    if migration.needs_its_commit():
        return "its text says ADD VALUE, SET CONSTRAINTS or DEFERR... (a comment counts)"
    return None


# The most migrations one --group transaction holds. Every object a migration makes or alters is a
# lock held to the commit, from one table the whole server shares: max_locks_per_transaction (64)
# times max_connections slots, a few thousand on a small Supabase instance. A group that outgrew it
# would fail with "out of shared memory"; a commit every hundred migrations costs a few milliseconds.
GROUP_MAX = 100


def groups(pending: list[Migration]) -> list[list[Migration]]:
    """``apply --group``'s transactions: the pending migrations in order, at most
    :data:`GROUP_MAX` a group. A migration that could not share a transaction as it is written
    (:func:`groupable`) is a group of its own, and runs as it would without ``--group``."""
    batches: list[list[Migration]] = []
    joinable = False  # whether the last batch is a group with room
    for migration in pending:
        joins = groupable(migration)
        if joins and joinable:
            batches[-1].append(migration)
        else:
            batches.append([migration])
        joinable = joins and len(batches[-1]) < GROUP_MAX
    return batches


def groupable(migration: Migration) -> bool:
    """One transactional step whose effects need no commit to be seen: a ``transaction=false``
    step cannot run in a transaction; steps are how a file asks for commits between its parts;
    and an enum's new value, ``SET CONSTRAINTS`` or deferred work would reach, or wait for, the
    migrations after it (:meth:`Migration.needs_its_commit`)."""
    return why_alone(migration) is None


def apply_group(conn: psycopg.Connection, batch: list[Migration], options: Options,
                 ledger_exists: bool) -> list[Outcome]:
    """Migrations and their ledger rows in one transaction: all of them, or none.

    Why: a history brought under code onto a new database is otherwise a thousand small
    transactions, and each commit costs the server more than its DDL (issue 20). Each
    migration still runs as it would alone: its step with its settings and checks, from a fresh
    session (:func:`_apply_together`). A lock timeout or deadlock anywhere rolls back the group
    and retries it from its first, with a step's backoff.
    """
    which = batch[0].id if len(batch) == 1 else f"{batch[0].id} to {batch[-1].id}"
    not_applied = f"none of {which} (one transaction, --group) was applied"
    per_query = QUERY_MAX_CHARS
    attempt = 0
    while True:
        at: list[tuple[Migration, Step]] = []  # where it is, for the error
        committing = False
        try:
            with conn.transaction():
                outcomes = _apply_together(conn, batch, options, at, per_query)
                # Once, not after every step: reading pg_locks costs as many locks as the
                # transaction holds (thousands, by the end of a long history). Before the ledger
                # rows: a run let in meanwhile may have recorded the same migrations; this one
                # rolls back, and what the other committed stays.
                if not conn.execute(f"SELECT {HELD}").fetchone()[0]:
                    raise MigrationError(
                        f"a migration of {which} let go of the migration lock (a DISCARD ALL or an advisory "
                        f"unlock?), so another run may have started meanwhile; {not_applied}: remove that "
                        "from the file"
                    )
                _record_group(conn, batch, outcomes, options, ledger_exists)
                at.clear()  # what fails from here fails the commit, not a step
                committing = True
            return outcomes
        except KeyboardInterrupt:
            if not committing:
                raise
            raise Interrupted(f"interrupted as the transaction of {which} (--group) committed: whether they "
                              "were applied is unknown: 'appdb status' tells", [m.id for m in batch]) from None
        except _Unattributed:
            # Rolled back; sent again a migration a query, which tells which one failed. Not a retry.
            per_query = 0
        except (errors.LockNotAvailable, errors.DeadlockDetected) as exc:
            migration, step = at[-1] if at else (batch[-1], batch[-1].steps[-1])
            try:
                pause_or_give_up(exc, attempt, options, migration.id, step)
            except LockTimeout as timeout:
                raise LockTimeout(f"{timeout}; {not_applied}") from None
            attempt += 1
        except psycopg.Error as exc:
            if not at:
                raise _commit_failure(exc, conn, which, [m.id for m in batch]) from None
            migration, step = at[-1]
            failure = step_failure(exc, conn, step, shown_path(migration.path), migration.id)
            raise type(failure)(f"{failure}; {not_applied}") from None
        # As a commit would between two runs: a PREPARE or LISTEN survives the rollback.
        fresh_session(conn)


def _commit_failure(exc: psycopg.Error, conn: psycopg.Connection, which: str, ids: list[str]) -> MigrationError:
    """A group's COMMIT failed: a deferred check refused it (nothing applied), or the connection
    went before the answer came (nobody here can know which way it went)."""
    if conn.broken or exc.diag.sqlstate is None:
        return MigrationError(
            f"the connection to the server was lost during the commit of {which} ({server_message(exc)}), so whether "
            "they were applied is unknown: 'appdb status' tells, and apply again finishes the job", uncertain=ids
        )
    return MigrationError(
        f"the transaction of {which} failed at its commit: {server_message(exc)} (SQLSTATE {exc.diag.sqlstate}), a "
        "deferred constraint or trigger of one of them; none of them was applied"
    )


# How much SQL one query of a group carries, in characters: past it, the next migration starts a
# query of its own. The server parses a query whole before it runs any of it, so a group of large
# data migrations sent at once would be in its memory all at once (and a query of 1 GB is refused).
QUERY_MAX_CHARS = 1_000_000


def _apply_together(conn: psycopg.Connection, batch: list[Migration], options: Options,
                    at: list[tuple[Migration, Step]], per_query: int) -> list[Outcome]:
    """A group's migrations inside the caller's transaction, as few queries as ``per_query``
    characters of their SQL allow (0: one a migration); ``at`` is given where one failed. Their
    ledger rows come with their group's (:func:`_record_group`).

    Why one query for many: a round trip and psycopg's work on each query were a fifth of
    ``apply --group``'s time over ``psql -1`` at 1,000 migrations (issue 20). Each migration still
    runs as it would alone: after a fresh session (but the group's first, which the caller made
    fresh), between its ``set_config`` calls and the reads of its settings
    (:func:`check_still_ours`). The server reads the whole text first, with the session as the
    query found it (standard_conforming_strings on, UTF-8): what a migration does to the session
    cannot change how the next one's text is read.
    """
    outcomes: list[Outcome] = []
    for chunk in _chunks(batch, per_query):
        outcomes += _run_chunk(conn, chunk, options, at, fresh=chunk[0] is not batch[0])
    return outcomes


def _chunks(batch: list[Migration], per_query: int) -> list[list[Migration]]:
    """The batch cut into queries of at most ``per_query`` characters of SQL (a larger migration alone)."""
    chunks: list[list[Migration]] = []
    size = 0
    for migration in batch:
        length = len(migration.steps[0].sql)
        if chunks and per_query and size + length <= per_query:
            chunks[-1].append(migration)
            size += length
        else:
            chunks.append([migration])
            size = length
    return chunks


class _Unattributed(Exception):
    """A group's query failed before any of its steps ran (or psycopg kept none of its results),
    so nothing tells which migration is at fault: the group is sent again one a query."""


def _run_chunk(conn: psycopg.Connection, chunk: list[Migration], options: Options,
               at: list[tuple[Migration, Step]], fresh: bool) -> list[Outcome]:
    """One query: for each migration, a fresh session (but the first's, unless ``fresh``), its
    settings set in a row named ``<mark> set``, its step, and its settings read back in a row
    named ``<mark> read``, each with the server's clock for its time."""
    parts: list[str] = []
    starts: list[int] = []  # where each step begins in the text, for the line of an error
    names: list[list[str]] = []  # each migration's settings, in the order of its rows
    length = 0
    for index, migration in enumerate(chunk):
        step = migration.steps[0]
        log.info("%s: step %s", migration.id, step.name)
        settings = step_settings(conn, step, options)
        names.append(list(settings))
        prefix, suffix = around_step(conn, tuple(settings.items()), False, _MARK)
        if index or fresh:
            prefix = f"{FRESH_SESSION};\n{prefix}"
        prefix += lock_first(conn, step)
        starts.append(length + len(prefix))
        parts += [prefix, step.sql, suffix, ";\n"]
        length += len(prefix) + len(step.sql) + len(suffix) + 2
    text = "".join(parts)
    cursor = _KeepsResults(conn)
    try:
        cursor.execute(text)
        rows = _marked_rows(cursor)
    except psycopg.Error as exc:
        index = _which_failed(exc, cursor.received, len(chunk))
        at.append((chunk[index], chunk[index].steps[0]))
        exc.appdb_text, exc.appdb_offset = text, starts[index]  # type: ignore[attr-defined]  # for the line
        raise
    if [kind for kind, _ in rows] != [_SET, _READ] * len(chunk):
        raise MigrationError(
            f"a step of {chunk[0].id}" + (f" to {chunk[-1].id}" if len(chunk) > 1 else "")
            + f" returned a result named as appdb's own checks are ({_MARK!r}...); nothing was recorded: "
            "rename that column"
        )
    outcomes: list[Outcome] = []
    for migration, settings, (_, set_row), (_, read_row) in zip(chunk, names, rows[0::2], rows[1::2]):
        step = migration.steps[0]
        at.append((migration, step))
        check_still_ours(conn, dict(zip(settings, set_row[:-1])), migration.id, step, read_row[:-1])
        seconds = max(float(read_row[-1] - set_row[-1]), 0.0)
        outcomes.append(Outcome(migration.id, migration.name, "applied", seconds, (step.name,)))
    return outcomes


# The names of a group query's own rows: random for each process that loads this (a fork server's
# workers share its), so that no file names one by chance; one built to pass breaks their count.
_MARK = f"appdb {os.urandom(6).hex()}"
_SET = f"{_MARK} set".encode()
_READ = f"{_MARK} read".encode()


class _KeepsResults(psycopg.Cursor):  # type: ignore[type-arg]
    """A cursor that keeps the results its query returned before an error. psycopg raises at the
    first error and drops those before it, which tell how far a group's query came (the rows
    named ``<mark> set`` and ``<mark> read``). Through psycopg's own check of the results
    (pinned in requirements.lock); should it change, ``received`` stays None and the group is
    sent again a migration a query (:class:`_Unattributed`)."""

    received: list[Any] | None = None

    def _check_results(self, results: list[Any]) -> None:
        self.received = results
        super()._check_results(results)


def _which_failed(exc: psycopg.Error, received: list[Any] | None, count: int) -> int:
    """The index, in its query of ``count`` migrations, of the one that failed: by the query's own
    rows that came back before the error, which only what ran could send. Not by the error's
    position: in a query of many it can point past the migration at fault (a ``BEGIN ATOMIC``
    left open takes in the text after it), or count bytes (a SQL_ASCII database). With no such
    row, the query failed before its first step ran (a syntax error anywhere, a character the
    database's encoding lacks), and is sent again a migration a query (:class:`_Unattributed`),
    which names the file as a run without ``--group`` would, at the cost of a moment."""
    if count == 1:
        return 0
    kinds = [name for name in map(_first_column, received or []) if name in (_SET, _READ)]
    if not kinds:
        raise _Unattributed() from exc
    # Past a migration's read row, what failed was the next one's fresh session or settings.
    return min(kinds.count(_SET) - 1 + (kinds[-1] == _READ), count - 1)


def _first_column(result: Any) -> bytes | None:
    return result.fname(0) if result.nfields else None


def _marked_rows(cursor: psycopg.Cursor) -> list[tuple[bytes, tuple[Any, ...]]]:  # type: ignore[type-arg]
    """The query's own rows, in order, each with its kind; every other result is the steps'."""
    rows: list[tuple[bytes, tuple[Any, ...]]] = []
    while True:
        name = _first_column(cursor.pgresult) if cursor.pgresult is not None else None
        if name in (_SET, _READ):
            rows.append((name, cursor.fetchone()))
        if not cursor.nextset():
            return rows


def _record_group(conn: psycopg.Connection, batch: list[Migration], outcomes: list[Outcome], options: Options,
                  ledger_exists: bool) -> None:
    """The group's ledger rows, in one statement, as the login that runs appdb and with a
    step's timeouts (the last migration may have changed role or settings for its session)."""
    fresh_session_within(conn)
    set_timeouts(conn, batch[-1].steps[-1], options, local=True)
    ledger.record_all(conn, [(migration, int(outcome.seconds * 1000)) for migration, outcome in zip(batch, outcomes)],
                      ledger_exists=ledger_exists)
